//! `shardex run`'s side: find the project's daemon, check it is this user's and this
//! build's, reserve it for the run (`acquire`: it makes its base fresh), and launch the
//! run's zygote through it (`RemoteLauncher`, the pool's `Launcher`). Everything else of
//! the run is the client's own, exactly as without a daemon.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::sync::mpsc::UnboundedSender;

use super::place::{addressable, check_private, Place};
use super::wire::{self, ClientMsg, DaemonMsg, LaunchRequest, LineBuffer, StatusReport};
use crate::pool::{LaunchSpec, Launcher, ProcOwner, ProcessLauncher, RawEvent};

const STDERR_TAIL_LINES: usize = 160;
/// How long a daemon may take to answer a hello, a status or a launch (a rebuild is
/// waited for separately: it reports notes while it works).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// What looking for the daemon found.
#[derive(Debug)]
pub enum Found {
    /// No socket: no daemon for this project.
    None,
    /// A daemon that cannot serve this client (stale socket, other build, other user):
    /// the line says what, and the run goes on without it.
    Unusable(String),
    Connected(DaemonClient),
}

#[derive(Debug)]
pub struct DaemonClient {
    stream: UnixStream,
    buffer: LineBuffer,
    pub daemon_pid: u32,
    pub socket: PathBuf,
    /// Set when the daemon is another build: it may be asked for its status or to stop,
    /// not to serve a run (the line says so).
    pub other_build: Option<String>,
}

/// Connects to the daemon of `place` and says hello.
pub fn find(place: &Place) -> Found {
    let socket = place.socket();
    if std::fs::symlink_metadata(&socket).is_err() {
        return orphaned_lock(place);
    }
    if let Err(err) = check_private(&socket, 0o077) {
        return Found::Unusable(format!("not using the daemon's socket: {err}"));
    }
    let stream = match connect(&socket) {
        Ok(stream) => stream,
        Err(err) if err.kind() == std::io::ErrorKind::ConnectionRefused => {
            // Nobody listens: the daemon died without cleaning up. The lock says so too.
            if !lock_is_held(place) {
                let _ = std::fs::remove_file(&socket);
                return Found::Unusable(
                    "the daemon of this project is gone (its stale socket was removed); \
                     running without it"
                        .into(),
                );
            }
            return Found::Unusable(format!(
                "the daemon does not answer ({err}); running without it"
            ));
        }
        Err(err) => {
            return Found::Unusable(format!(
                "cannot reach the daemon ({err}); running without it"
            ))
        }
    };
    let me = nix::unistd::getuid().as_raw();
    match nix::sys::socket::getsockopt(&stream, nix::sys::socket::sockopt::PeerCredentials) {
        Ok(cred) if cred.uid() == me => {}
        _ => {
            return Found::Unusable(
                "the daemon's socket is served by another user; not using it".into(),
            )
        }
    }
    let mut client = DaemonClient {
        stream,
        buffer: LineBuffer::default(),
        daemon_pid: 0,
        socket,
        other_build: None,
    };
    match client.hello() {
        Ok(()) => Found::Connected(client),
        Err(why) => Found::Unusable(why),
    }
}

fn connect(socket: &Path) -> std::io::Result<UnixStream> {
    let (path, _open_folder) = addressable(socket)?;
    let stream = UnixStream::connect(path)?;
    stream.set_read_timeout(Some(ANSWER_TIMEOUT))?;
    Ok(stream)
}

/// No socket: no daemon, unless one died and its warm process removed the socket. Its
/// lock file (removed by a daemon that ends normally) says so once.
fn orphaned_lock(place: &Place) -> Found {
    let pid = place.lock_holder();
    if pid.is_empty() || lock_is_held(place) {
        return Found::None;
    }
    let _ = std::fs::remove_file(place.lock());
    Found::Unusable(format!(
        "the daemon of this project (pid {pid}) is gone; running without it"
    ))
}

/// Whether a live daemon holds the project's lock.
pub fn lock_is_held(place: &Place) -> bool {
    let Ok(file) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(place.lock())
    else {
        return false;
    };
    match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
        Ok(_released_on_drop) => false,
        Err(_) => true,
    }
}

impl DaemonClient {
    fn hello(&mut self) -> Result<(), String> {
        let build = wire::build_identity();
        self.send(&ClientMsg::Hello {
            build: build.clone(),
            pid: std::process::id(),
        })
        .map_err(|err| format!("cannot talk to the daemon ({err}); running without it"))?;
        match self.recv() {
            Ok(DaemonMsg::Hello { build: theirs, pid }) => {
                self.daemon_pid = pid;
                if theirs != build {
                    self.other_build = Some(format!(
                        "the daemon (pid {pid}) is another build of shardex ({theirs}, this is \
                         {build}); running without it (`shardex serve --stop` ends it)"
                    ));
                }
                Ok(())
            }
            Ok(other) => Err(format!(
                "the daemon answered {other:?} to hello; running without it"
            )),
            Err(err) => Err(format!(
                "the daemon does not answer ({err}); running without it"
            )),
        }
    }

    fn send(&self, msg: &ClientMsg) -> std::io::Result<()> {
        wire::send(&self.stream, msg, &[])
    }

    fn recv(&mut self) -> std::io::Result<DaemonMsg> {
        loop {
            if let Some(line) = self.buffer.next_line() {
                return serde_json::from_slice(&line).map_err(std::io::Error::other);
            }
            if self.buffer.fill(self.stream.as_raw_fd())? == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the daemon hung up",
                ));
            }
        }
    }

    /// Reserves the daemon for this run and makes its base fresh for `request`; `note`
    /// gets its progress lines (waiting for another run, rebuilding). Err: why the run goes
    /// on without the daemon.
    pub fn acquire(
        &mut self,
        request: LaunchRequest,
        mut note: impl FnMut(&str),
    ) -> Result<u32, String> {
        self.send(&ClientMsg::Acquire(request))
            .map_err(|err| format!("the daemon hung up ({err}); running without it"))?;
        // A rebuild or another run may take long: only silence for the timeout is an error.
        loop {
            match self.recv() {
                Ok(DaemonMsg::Ready { generation }) => return Ok(generation),
                Ok(DaemonMsg::Note { text }) => note(&text),
                Ok(DaemonMsg::Refused { reason }) => {
                    return Err(format!("{reason}; running without the daemon"))
                }
                Ok(other) => tracing::debug!(?other, "unexpected while acquiring"),
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {
                    note("still waiting for the daemon");
                }
                Err(err) => return Err(format!("the daemon hung up ({err}); running without it")),
            }
        }
    }

    pub fn status(&mut self) -> std::io::Result<StatusReport> {
        self.send(&ClientMsg::Status)?;
        loop {
            if let DaemonMsg::Status(report) = self.recv()? {
                return Ok(report);
            }
        }
    }

    /// Asks the daemon to stop; it may hang up before its answer is written, which is as
    /// good as the answer.
    pub fn stop(&mut self) -> std::io::Result<()> {
        self.send(&ClientMsg::Stop)?;
        loop {
            match self.recv() {
                Ok(DaemonMsg::Stopping) => return Ok(()),
                Ok(_) => {}
                Err(err) if err.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(err) => return Err(err),
            }
        }
    }

    pub fn into_launcher(self) -> RemoteLauncher {
        RemoteLauncher {
            client: Some(self),
            cold: ProcessLauncher::default(),
            zygote_stderr: Arc::default(),
        }
    }
}

/// The pool's launcher when a daemon serves the run: the zygote is forked from the warm
/// base; `--spawn` workers (never used with a daemon) and signals are as without it.
pub struct RemoteLauncher {
    client: Option<DaemonClient>,
    cold: ProcessLauncher,
    zygote_stderr: Arc<Mutex<VecDeque<String>>>,
}

impl std::fmt::Debug for RemoteLauncher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteLauncher").finish_non_exhaustive()
    }
}

/// The pytest arguments of a launch spec: what follows `-c BOOTSTRAP PACKAGE_DIR`.
pub fn pytest_args_of(spec: &LaunchSpec) -> Vec<String> {
    spec.args.iter().skip(3).cloned().collect()
}

/// What the zygote of a run with `config` is launched with (before the pool adds its
/// socket and secret, which do not matter to the daemon's choice of base).
pub fn request_for(config: &crate::RunConfig) -> LaunchRequest {
    let mut spec = crate::run::pool_spec(config).launch;
    let mut args = crate::plugin::launch_args(Path::new("/"));
    args.append(&mut spec.args);
    spec.args = args;
    launch_request(&spec)
}

/// What the zygote would get from `spec` if spawned here: this process's environment with
/// the spec's variables over it.
pub fn launch_request(spec: &LaunchSpec) -> LaunchRequest {
    let mut env: Vec<(String, String)> = std::env::vars()
        .filter(|(name, _)| !spec.env.iter().any(|(n, _)| n == name))
        .collect();
    env.extend(spec.env.iter().cloned());
    LaunchRequest {
        python: spec.python.clone(),
        pytest_args: pytest_args_of(spec),
        cwd: spec.cwd.clone(),
        env,
    }
}

impl Launcher for RemoteLauncher {
    fn launch_zygote(
        &mut self,
        spec: &LaunchSpec,
        events: &UnboundedSender<RawEvent>,
    ) -> std::io::Result<u32> {
        let Some(mut client) = self.client.take() else {
            // A second zygote in one run: the daemon's connection went with the first.
            return self.cold.launch_zygote(spec, events);
        };
        let (stderr_read, stderr_write) = std::io::pipe()?;
        let stdout = std::io::stdout();
        wire::send(
            &client.stream,
            &ClientMsg::Launch(launch_request(spec)),
            &[stdout.as_raw_fd(), stderr_write.as_raw_fd()],
        )?;
        drop(stderr_write);
        let pid = loop {
            match client.recv()? {
                DaemonMsg::Launched { pid, .. } => break pid,
                DaemonMsg::Note { text } => eprintln!("shardex: daemon: {text}"),
                DaemonMsg::Refused { reason } => {
                    return Err(std::io::Error::other(format!(
                        "the daemon refused to start pytest: {reason}"
                    )))
                }
                other => tracing::debug!(?other, "unexpected while launching"),
            }
        };
        keep_tail(OwnedFd::from(stderr_read), Arc::clone(&self.zygote_stderr));
        watch_exit(client, pid, events.clone());
        Ok(pid)
    }

    fn launch_worker(
        &mut self,
        spec: &LaunchSpec,
        owner: ProcOwner,
        stderr: PathBuf,
        events: &UnboundedSender<RawEvent>,
    ) -> std::io::Result<u32> {
        self.cold.launch_worker(spec, owner, stderr, events)
    }

    fn signal(&mut self, pgid: u32, signal: Signal) {
        self.cold.signal(pgid, signal);
    }

    fn zygote_stderr_tail(&self) -> String {
        let tail = self.zygote_stderr.lock().expect("stderr tail lock");
        tail.iter().cloned().collect::<Vec<_>>().join("\n")
    }
}

fn keep_tail(read: OwnedFd, tail: Arc<Mutex<VecDeque<String>>>) {
    std::thread::Builder::new()
        .name("shardex-zygote-stderr".into())
        .spawn(move || {
            for line in BufReader::new(std::fs::File::from(read)).lines() {
                let Ok(line) = line else { break };
                let mut tail = tail.lock().expect("stderr tail lock");
                tail.push_back(line);
                if tail.len() > STDERR_TAIL_LINES {
                    tail.pop_front();
                }
            }
        })
        .map(drop)
        .unwrap_or_else(|err| tracing::warn!(%err, "no thread for the zygote's stderr"));
}

/// The zygote's exit comes from the daemon (the base is its parent). If the daemon goes
/// away first, the exit is seen by polling for the process (without a status).
fn watch_exit(mut client: DaemonClient, pid: u32, events: UnboundedSender<RawEvent>) {
    let _ = client.stream.set_read_timeout(None);
    std::thread::Builder::new()
        .name("shardex-daemon".into())
        .spawn(move || {
            let (code, signal) = loop {
                match client.recv() {
                    Ok(DaemonMsg::Exited {
                        pid: ended,
                        code,
                        signal,
                    }) if ended == pid => break (code, signal),
                    Ok(_) => {}
                    Err(_) => {
                        while Path::new(&format!("/proc/{pid}")).exists() && !is_zombie(pid) {
                            std::thread::sleep(Duration::from_millis(50));
                        }
                        break (None, None);
                    }
                }
            };
            let _ = events.send(RawEvent::ProcessExited {
                owner: ProcOwner::Zygote,
                code,
                signal,
            });
            // The connection (and with it the daemon's reservation) ends with this thread.
            drop(client);
        })
        .map(drop)
        .unwrap_or_else(|err| tracing::warn!(%err, "no thread for the daemon's connection"));
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rsplit(')')
                .next()
                .map(|rest| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}
