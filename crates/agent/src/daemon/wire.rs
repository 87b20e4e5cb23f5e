//! What `shardex run` and the daemon say to each other on `.shardex/daemon.sock`: JSON
//! lines, with file descriptors (the zygote's stdout and stderr) passed by `SCM_RIGHTS` on
//! the line that needs them. Every read goes through `recvmsg`, so the descriptors of a line
//! have arrived by the time the line is complete (the kernel delivers them with its first
//! byte).

use std::collections::VecDeque;
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, RawFd};
use std::path::PathBuf;

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};
use serde::{Deserialize, Serialize};

/// The build a client and a daemon must share: the version, and the plugin's and the
/// binary's identity (two builds of one version differ in development).
pub fn build_identity() -> String {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for (name, source) in crate::plugin::FILES {
        name.hash(&mut hasher);
        source.hash(&mut hasher);
    }
    if let Ok(meta) = std::env::current_exe().and_then(std::fs::metadata) {
        meta.len().hash(&mut hasher);
        meta.modified().ok().hash(&mut hasher);
    }
    format!("{}+{:016x}", env!("CARGO_PKG_VERSION"), hasher.finish())
}

/// How a zygote is started: what `ProcessLauncher` would run, split for the base.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LaunchRequest {
    pub python: PathBuf,
    /// pytest's arguments (what follows the bootstrap and its package dir).
    pub pytest_args: Vec<String>,
    pub cwd: PathBuf,
    /// The zygote's whole environment, launch variables included.
    pub env: Vec<(String, String)>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum ClientMsg {
    Hello {
        build: String,
        pid: u32,
    },
    /// A run is about to start: make the base fresh for it (rebuilding it when the code
    /// on disk or the run's setting differ) and reserve the daemon for this run.
    Acquire(LaunchRequest),
    /// Fork the run's zygote; the line carries 2 descriptors: its stdout and stderr.
    Launch(LaunchRequest),
    Status,
    Stop,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum DaemonMsg {
    Hello {
        build: String,
        pid: u32,
    },
    /// A line for the user's stderr (waiting for another run, rebuilding and why).
    Note {
        text: String,
    },
    /// The base is fresh for this run and the daemon is this client's until it hangs up.
    Ready {
        generation: u32,
    },
    Launched {
        pid: u32,
        generation: u32,
    },
    /// The daemon cannot serve this run: the client runs without it (saying why).
    Refused {
        reason: String,
    },
    Exited {
        pid: u32,
        code: Option<i32>,
        signal: Option<i32>,
    },
    Status(StatusReport),
    Stopping,
}

/// `shardex serve --status`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    pub pid: u32,
    pub root: PathBuf,
    pub uptime_secs: f64,
    pub idle_secs: f64,
    pub idle_limit_secs: f64,
    pub runs: u64,
    /// The warm base: pid, generation, how long it took to build, modules, watched files.
    pub base: Option<BaseStatus>,
    pub building: Option<String>,
    pub last_rebuild: Option<String>,
    /// Proportional set size in bytes: the daemon, the base.
    pub daemon_pss: Option<u64>,
    pub busy_with: Option<u32>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BaseStatus {
    pub pid: u32,
    pub generation: u32,
    pub build_secs: f64,
    pub modules: usize,
    pub watched: usize,
    pub pss: Option<u64>,
}

/// One end of a connection: lines in, lines out, descriptors with them.
#[derive(Debug, Default)]
pub struct LineBuffer {
    bytes: Vec<u8>,
    fds: VecDeque<RawFd>,
}

const MAX_LINE: usize = 16 << 20;

impl LineBuffer {
    /// One `recvmsg` on `fd` (blocking or not, as the socket is); Ok(0) at EOF.
    pub fn fill(&mut self, fd: RawFd) -> std::io::Result<usize> {
        let mut chunk = [0u8; 64 * 1024];
        let mut space = nix::cmsg_space!([RawFd; 4]);
        let (read, fds) = {
            let mut iov = [IoSliceMut::new(&mut chunk)];
            let msg = recvmsg::<()>(fd, &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)
                .map_err(std::io::Error::from)?;
            let mut fds = Vec::new();
            if let Ok(cmsgs) = msg.cmsgs() {
                for cmsg in cmsgs {
                    if let ControlMessageOwned::ScmRights(received) = cmsg {
                        fds.extend(received);
                    }
                }
            }
            (msg.bytes, fds)
        };
        self.fds.extend(fds);
        self.bytes.extend_from_slice(&chunk[..read]);
        if self.bytes.len() > MAX_LINE {
            return Err(std::io::Error::other("a line over 16 MiB"));
        }
        Ok(read)
    }

    /// The next complete line, if one has arrived.
    pub fn next_line(&mut self) -> Option<Vec<u8>> {
        let end = self.bytes.iter().position(|b| *b == b'\n')?;
        let mut line: Vec<u8> = self.bytes.drain(..=end).collect();
        line.pop();
        Some(line)
    }

    /// The `n` descriptors that came with the line just taken (closed by the caller).
    pub fn take_fds(&mut self, n: usize) -> Option<Vec<RawFd>> {
        if self.fds.len() < n {
            return None;
        }
        Some(self.fds.drain(..n).collect())
    }
}

impl Drop for LineBuffer {
    fn drop(&mut self) {
        close_all(self.fds.drain(..));
    }
}

/// Closes descriptors received by `SCM_RIGHTS`: ours once received.
pub fn close_all(fds: impl IntoIterator<Item = RawFd>) {
    for fd in fds {
        let _ = nix::unistd::close(fd);
    }
}

/// Sends `msg` as one line, with `fds` attached to it.
pub fn send<T: Serialize>(socket: &impl AsRawFd, msg: &T, fds: &[RawFd]) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(msg).map_err(std::io::Error::other)?;
    line.push(b'\n');
    let fd = socket.as_raw_fd();
    let rights = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &rights };
    let mut sent = sendmsg::<()>(
        fd,
        &[IoSlice::new(&line)],
        cmsgs,
        MsgFlags::MSG_NOSIGNAL,
        None,
    )
    .map_err(std::io::Error::from)?;
    while sent < line.len() {
        sent += sendmsg::<()>(
            fd,
            &[IoSlice::new(&line[sent..])],
            &[],
            MsgFlags::MSG_NOSIGNAL,
            None,
        )
        .map_err(std::io::Error::from)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;

    #[test]
    fn lines_and_descriptors_arrive_together() {
        let (a, b) = UnixStream::pair().unwrap();
        let (mut pipe_read, pipe_write) = std::io::pipe().unwrap();
        let request = LaunchRequest {
            python: "/venv/bin/python".into(),
            pytest_args: vec!["-x".into()],
            cwd: "/proj".into(),
            env: vec![("A".into(), "1".into())],
        };
        send(
            &a,
            &ClientMsg::Launch(request.clone()),
            &[pipe_write.as_raw_fd()],
        )
        .unwrap();
        drop(pipe_write);
        send(&a, &ClientMsg::Status, &[]).unwrap();
        let mut buffer = LineBuffer::default();
        let mut lines = Vec::new();
        while lines.len() < 2 {
            assert!(buffer.fill(b.as_raw_fd()).unwrap() > 0);
            while let Some(line) = buffer.next_line() {
                lines.push(serde_json::from_slice::<ClientMsg>(&line).unwrap());
            }
        }
        assert_eq!(lines, [ClientMsg::Launch(request), ClientMsg::Status]);
        let fds = buffer
            .take_fds(1)
            .expect("the descriptor came with its line");
        // The received descriptor is the pipe's write end: what goes in comes out.
        let mut writer = std::fs::OpenOptions::new()
            .write(true)
            .open(format!("/proc/self/fd/{}", fds[0]))
            .unwrap();
        writer.write_all(b"hi").unwrap();
        drop(writer);
        close_all(fds);
        let mut got = String::new();
        pipe_read.read_to_string(&mut got).unwrap();
        assert_eq!(got, "hi");
    }
}
