//! The daemon's warm base process and its handle: `python -c BASE_BOOTSTRAP` (see
//! `plugin::base_launch_args` and `shardex_plugin/base.py`) configures pytest and collects
//! once, then forks each run's zygote on request.
//!
//! The base talks to the daemon over one end of a `socketpair(AF_UNIX, SOCK_STREAM)`: JSON
//! lines both ways, the zygote-to-be's stdout and stderr passed with each `fork` line
//! (SCM_RIGHTS, nix's safe `sendmsg`). Its end is the base's stdin: std maps an fd onto a
//! child's stdin without `unsafe` (no `pre_exec`), both ends are created close-on-exec (no
//! window where another spawn could inherit one), and the bootstrap moves the socket off
//! fd 0 and puts /dev/null there (`SHARDEX_BASE_FD=0`). The base exits when its end reads
//! EOF, killing the zygotes it forked: it never outlives this handle (nor the daemon).
//!
//! Replies are read by a thread of their own, so a fork can also be waited for without an
//! async context ([`BaseLink::fork_blocking`], for a pool's synchronous `launch_zygote`).

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc as std_mpsc, Arc, Mutex};
use std::time::Duration;

use nix::sys::socket::{
    sendmsg, socketpair, AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType, UnixAddr,
};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader as AsyncBufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio::sync::oneshot;

use crate::plugin;

/// Lines of the base's stderr kept for an error message.
const STDERR_TAIL_LINES: usize = 80;
/// How long a failed or dead base's stderr is waited for, to show its tail.
const TAIL_WAIT: Duration = Duration::from_secs(10);

/// How to start a base.
#[derive(Clone, Debug)]
pub struct BaseSpec {
    pub python: PathBuf,
    /// pytest's arguments as a run passes them after `-p shardex_plugin` (the base loads
    /// the plugin as a module only; a `-p shardex_plugin` here is dropped by the base).
    pub pytest_args: Vec<String>,
    pub cwd: PathBuf,
    /// The base's whole environment: nothing is inherited from the daemon.
    pub env: Vec<(String, String)>,
    /// Where `plugin::install` wrote the package.
    pub plugin_dir: PathBuf,
}

/// The base's `ready` message.
#[derive(Clone, Debug, PartialEq)]
pub struct BaseReady {
    pub pid: u32,
    /// Sorted absolute paths whose change makes the base stale (imported files, conftests,
    /// ini files, site-packages and their records): never the collected test modules.
    pub watch: Vec<PathBuf>,
    /// The warm-up's duration.
    pub seconds: f64,
    /// `len(sys.modules)` after the warm-up.
    pub modules: usize,
    /// Errors of the warm-up's collection (not fatal: each run collects again).
    pub errors: Vec<String>,
}

/// What the base reports after its start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BaseEvent {
    /// A forked zygote ended (the base reaped it).
    Exited {
        pid: u32,
        code: Option<i32>,
        signal: Option<i32>,
    },
    /// The base process ended without being retired or dropped. No `Exited` comes after
    /// this; zygotes it forked may still run (the base kills them only when it reads EOF).
    Died { stderr_tail: String },
    /// The base imported more modules (what its runs imported from outside the project):
    /// their files join its watch set.
    Watch { paths: Vec<PathBuf> },
}

/// The launch values the bootstrap would have popped from the environment
/// (`SHARDEX_MODE`/`SHARDEX_SOCKET`/`SHARDEX_SECRET`), given to `shardex_plugin.launched`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LaunchVars {
    pub mode: String,
    pub socket: String,
    pub secret: String,
}

impl LaunchVars {
    /// Takes the launch variables out of a zygote's whole environment (what a pool's
    /// `LaunchSpec` gives a cold zygote): the rest is the fork's `env`.
    pub fn take_from_env(env: &mut Vec<(String, String)>) -> LaunchVars {
        let mut vars = LaunchVars::default();
        env.retain(|(name, value)| {
            let slot = match name.as_str() {
                plugin::ENV_MODE => &mut vars.mode,
                plugin::ENV_SOCKET => &mut vars.socket,
                plugin::ENV_SECRET => &mut vars.secret,
                _ => return true,
            };
            value.clone_into(slot);
            false
        });
        vars
    }
}

/// One zygote to fork: it runs `python -m pytest ARGS` as a cold zygote would, in `cwd`,
/// with exactly `env` (launch variables taken out), writing to `stdout` and `stderr`.
#[derive(Debug)]
pub struct ForkRequest {
    /// pytest's arguments, `-p shardex_plugin` included (what follows `-c BOOTSTRAP
    /// PACKAGE_DIR` in a cold launch).
    pub args: Vec<String>,
    pub cwd: PathBuf,
    pub env: Vec<(String, String)>,
    pub launch: LaunchVars,
    /// Borrowed: sent to the base with the request; the caller closes its copies after
    /// the fork returns (the daemon holds them as raw descriptors received by SCM_RIGHTS).
    pub stdout: RawFd,
    pub stderr: RawFd,
}

#[derive(Debug, thiserror::Error)]
pub enum BaseError {
    #[error("{doing}: {source}")]
    Io {
        doing: String,
        source: std::io::Error,
    },
    /// The base did not get ready: its message (or that it ended) and its stderr's tail.
    #[error("the warm base process failed: {message}")]
    Failed {
        message: String,
        stderr_tail: String,
    },
    #[error("the warm base process is gone")]
    Gone,
    #[error("the warm base process refused to fork: {0}")]
    ForkFailed(String),
    #[error("the warm base process did not answer within {0:?}")]
    Timeout(Duration),
}

type Reply = Result<u32, String>;

enum Waiter {
    Async(oneshot::Sender<Reply>),
    Blocking(std_mpsc::Sender<Reply>),
}

impl Waiter {
    fn answer(self, reply: Reply) {
        match self {
            Waiter::Async(tx) => {
                let _ = tx.send(reply);
            }
            Waiter::Blocking(tx) => {
                let _ = tx.send(reply);
            }
        }
    }
}

#[derive(Default)]
struct Waiters {
    /// The reader saw EOF: nobody will answer any more.
    closed: bool,
    by_id: HashMap<u64, Waiter>,
}

struct Shared {
    /// Our end of the socket (the reader thread holds a clone).
    writer: Mutex<UnixStream>,
    waiters: Mutex<Waiters>,
    next_id: AtomicU64,
    /// Retired or dropped: the base's exit is expected (no `Died`).
    stopping: AtomicBool,
}

/// The base process. Dropping it ends the base (EOF on its socket: it kills its zygotes
/// and exits) unless it was retired.
pub struct Base {
    link: BaseLink,
    events: UnboundedReceiver<BaseEvent>,
    pid: u32,
    retired: bool,
}

/// A cloneable handle that forks and kills zygotes of a base, usable from any thread (for
/// a pool `Launcher`, whose `launch_zygote` is synchronous). It does not keep the base
/// alive: once the [`Base`] is dropped, its requests fail with [`BaseError::Gone`].
#[derive(Clone)]
pub struct BaseLink {
    shared: Arc<Shared>,
}

impl Base {
    /// Starts the base and waits for `ready` (or its failure: `Failed` with the message and
    /// stderr's tail). Dropping the future before it resolves ends the base.
    pub async fn start(spec: &BaseSpec) -> Result<(Base, BaseReady), BaseError> {
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::Stream,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(|errno| io_error("creating the base's socket pair", errno.into()))?;
        let child = spawn_base(spec, theirs)?;
        let pid = child.id().unwrap_or(0);
        let writer = UnixStream::from(ours);
        let reader = writer
            .try_clone()
            .map_err(|source| io_error("cloning the base's socket", source))?;
        let shared = Arc::new(Shared {
            writer: Mutex::new(writer),
            waiters: Mutex::new(Waiters::default()),
            next_id: AtomicU64::new(1),
            stopping: AtomicBool::new(false),
        });
        let (events_tx, events) = unbounded_channel();
        let (ready_tx, ready_rx) = oneshot::channel();
        spawn_reader(reader, Arc::clone(&shared), events_tx.clone(), ready_tx)?;
        watch_process(child, Arc::clone(&shared), events_tx);
        let mut base = Base {
            link: BaseLink { shared },
            events,
            pid,
            retired: false,
        };
        match ready_rx.await {
            Ok(Ok(ready)) => Ok((base, ready)),
            Ok(Err(message)) => Err(base.failure(message).await),
            Err(_) => Err(base
                .failure("the base process ended before it was ready".into())
                .await),
        }
    }

    /// `Failed` with the stderr's tail (the base exits after a failure: its `Died` carries it).
    async fn failure(&mut self, message: String) -> BaseError {
        let stderr_tail = loop {
            match tokio::time::timeout(TAIL_WAIT, self.events.recv()).await {
                Ok(Some(BaseEvent::Died { stderr_tail })) => break stderr_tail,
                Ok(Some(BaseEvent::Exited { .. } | BaseEvent::Watch { .. })) => continue,
                Ok(None) | Err(_) => break String::new(),
            }
        };
        BaseError::Failed {
            message,
            stderr_tail,
        }
    }

    /// Forks a zygote; returns its pid (its process group).
    pub async fn fork(&mut self, req: ForkRequest) -> Result<u32, BaseError> {
        self.link.fork(req).await
    }

    /// A handle for forking from elsewhere (another task, a thread, a sync `Launcher`).
    pub fn link(&self) -> BaseLink {
        self.link.clone()
    }

    /// What the base reports: zygotes' exits, its own death. Closed once the base has
    /// ended (after `retire`, when its last zygote was reaped).
    pub fn events(&mut self) -> &mut UnboundedReceiver<BaseEvent> {
        &mut self.events
    }

    /// Sends every later event to `to`, tagged with this base's pid (the daemon reads the
    /// events of its warm base and of those it retired on one channel). `events()` is
    /// empty from then on.
    pub fn forward_events(&mut self, to: UnboundedSender<(u32, BaseEvent)>) {
        let (_, closed) = unbounded_channel();
        let mut events = std::mem::replace(&mut self.events, closed);
        let pid = self.pid;
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                if to.send((pid, event)).is_err() {
                    return;
                }
            }
        });
    }

    /// SIGKILLs the zygote `pid`'s process group (if it is still the base's child).
    pub fn kill(&mut self, pid: u32) {
        self.link.kill(pid);
    }

    /// Forks no more; the base exits once its last zygote was reaped and reported (the
    /// events keep coming until then, then the channel closes). The handle may be dropped
    /// after this without killing those zygotes.
    pub fn retire(&mut self) {
        self.retired = true;
        self.link.shared.stopping.store(true, Ordering::SeqCst);
        let _ = self.link.send_line(&json!({"t": "retire"}), None);
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }
}

impl Drop for Base {
    fn drop(&mut self) {
        if !self.retired {
            self.link.shared.stopping.store(true, Ordering::SeqCst);
            // EOF for the base (and the reader), whoever else holds a clone of the socket.
            let writer = self.link.shared.writer.lock().expect("base socket lock");
            let _ = writer.shutdown(std::net::Shutdown::Both);
        }
    }
}

impl BaseLink {
    /// Forks a zygote; returns its pid (its process group).
    pub async fn fork(&self, req: ForkRequest) -> Result<u32, BaseError> {
        let (tx, rx) = oneshot::channel();
        self.request(req, Waiter::Async(tx))?;
        reply(rx.await.map_err(|_| BaseError::Gone)?)
    }

    /// [`BaseLink::fork`] for synchronous code, inside or outside a tokio runtime (the reply
    /// is read by a thread, not a task): blocks the calling thread until the base answers
    /// (a few milliseconds: a fork) or `timeout` passes.
    pub fn fork_blocking(&self, req: ForkRequest, timeout: Duration) -> Result<u32, BaseError> {
        let (tx, rx) = std_mpsc::channel();
        self.request(req, Waiter::Blocking(tx))?;
        match rx.recv_timeout(timeout) {
            Ok(answer) => reply(answer),
            Err(std_mpsc::RecvTimeoutError::Timeout) => Err(BaseError::Timeout(timeout)),
            Err(std_mpsc::RecvTimeoutError::Disconnected) => Err(BaseError::Gone),
        }
    }

    /// SIGKILLs the zygote `pid`'s process group (if it is still the base's child).
    pub fn kill(&self, pid: u32) {
        let _ = self.send_line(&json!({"t": "kill", "pid": pid}), None);
    }

    fn request(&self, req: ForkRequest, waiter: Waiter) -> Result<(), BaseError> {
        let id = self.shared.next_id.fetch_add(1, Ordering::SeqCst);
        {
            let mut waiters = self.shared.waiters.lock().expect("base waiters lock");
            if waiters.closed {
                return Err(BaseError::Gone);
            }
            waiters.by_id.insert(id, waiter);
        }
        let env: serde_json::Map<String, Value> = req
            .env
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        let line = json!({
            "t": "fork",
            "id": id,
            "args": req.args,
            "cwd": req.cwd.display().to_string(),
            "env": env,
            "launch": {"mode": req.launch.mode, "socket": req.launch.socket, "secret": req.launch.secret},
        });
        let fds = [req.stdout, req.stderr];
        let sent = self.send_line(&line, Some(&fds));
        // Ours are closed now: the base has its own copies (or failed to get them).
        drop(req);
        sent.inspect_err(|_| {
            let mut waiters = self.shared.waiters.lock().expect("base waiters lock");
            waiters.by_id.remove(&id);
        })
    }

    /// One JSON line, `fds` attached to its first byte. A blocking write: the base reads
    /// its socket whenever it is not forking.
    fn send_line(&self, msg: &Value, fds: Option<&[i32]>) -> Result<(), BaseError> {
        let mut bytes = msg.to_string().into_bytes();
        bytes.push(b'\n');
        let writer = self.shared.writer.lock().expect("base socket lock");
        let fd = writer.as_raw_fd();
        let rights;
        let cmsgs: &[ControlMessage<'_>] = match fds {
            Some(fds) => {
                rights = [ControlMessage::ScmRights(fds)];
                &rights
            }
            None => &[],
        };
        let mut sent = 0;
        while sent < bytes.len() {
            let iov = [std::io::IoSlice::new(&bytes[sent..])];
            let attach = if sent == 0 { cmsgs } else { &[] };
            match sendmsg::<UnixAddr>(fd, &iov, attach, MsgFlags::MSG_NOSIGNAL, None) {
                Ok(n) => sent += n,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(nix::errno::Errno::EPIPE | nix::errno::Errno::ENOTCONN) => {
                    return Err(BaseError::Gone)
                }
                Err(errno) => return Err(io_error("writing to the base's socket", errno.into())),
            }
        }
        Ok(())
    }
}

fn reply(answer: Reply) -> Result<u32, BaseError> {
    answer.map_err(|message| {
        if message.is_empty() {
            BaseError::Gone
        } else {
            BaseError::ForkFailed(message)
        }
    })
}

fn io_error(doing: &str, source: std::io::Error) -> BaseError {
    BaseError::Io {
        doing: doing.to_owned(),
        source,
    }
}

/// `python -c BASE_BOOTSTRAP PACKAGE_DIR ARGS` with `socket` as its stdin, in its own
/// process group, stdout to /dev/null, stderr piped (for the tail).
fn spawn_base(spec: &BaseSpec, socket: OwnedFd) -> Result<Child, BaseError> {
    let mut command = Command::new(&spec.python);
    command
        .args(plugin::base_launch_args(&spec.plugin_dir))
        .args(&spec.pytest_args)
        .current_dir(&spec.cwd)
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env(plugin::ENV_BASE_FD, "0")
        .stdin(Stdio::from(socket))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0);
    let child = command.spawn().map_err(|source| {
        io_error(
            &format!("starting the base process {}", spec.python.display()),
            source,
        )
    });
    // The command held the base's end of the socket: closed here, so that the base's exit
    // is the socket's EOF.
    drop(command);
    child
}

/// The thread that reads the base's lines: the first answers `start`, then replies go to
/// their waiters and exits to the events.
fn spawn_reader(
    stream: UnixStream,
    shared: Arc<Shared>,
    events: UnboundedSender<BaseEvent>,
    ready: oneshot::Sender<Result<BaseReady, String>>,
) -> Result<(), BaseError> {
    let body = move || {
        let mut ready = Some(ready);
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            let Ok(msg) = serde_json::from_str::<Value>(&line) else {
                tracing::warn!(line, "unreadable line from the base process");
                continue;
            };
            match msg["t"].as_str().unwrap_or("") {
                "ready" | "failed" => {
                    if let Some(tx) = ready.take() {
                        let _ = tx.send(parse_ready(&msg));
                    }
                }
                "forked" | "fork_failed" => answer_fork(&shared, &msg),
                "exited" => {
                    let _ = events.send(BaseEvent::Exited {
                        pid: as_u32(&msg["pid"]).unwrap_or(0),
                        code: as_i32(&msg["code"]),
                        signal: as_i32(&msg["signal"]),
                    });
                }
                "watch" => {
                    let paths = msg["paths"]
                        .as_array()
                        .map(|paths| {
                            paths
                                .iter()
                                .filter_map(Value::as_str)
                                .map(PathBuf::from)
                                .collect()
                        })
                        .unwrap_or_default();
                    let _ = events.send(BaseEvent::Watch { paths });
                }
                other => tracing::debug!(kind = other, "unexpected message from the base"),
            }
        }
        let mut waiters = shared.waiters.lock().expect("base waiters lock");
        waiters.closed = true;
        for (_, waiter) in waiters.by_id.drain() {
            waiter.answer(Err(String::new()));
        }
    };
    std::thread::Builder::new()
        .name("shardex-base-reader".into())
        .spawn(body)
        .map(|_| ())
        .map_err(|source| io_error("starting the base's reader thread", source))
}

fn answer_fork(shared: &Shared, msg: &Value) {
    let Some(id) = msg["id"].as_u64() else { return };
    let waiter = shared
        .waiters
        .lock()
        .expect("base waiters lock")
        .by_id
        .remove(&id);
    let Some(waiter) = waiter else { return };
    let answer = match (msg["t"].as_str(), as_u32(&msg["pid"])) {
        (Some("forked"), Some(pid)) => Ok(pid),
        _ => Err(msg["message"]
            .as_str()
            .unwrap_or("no reason given")
            .to_owned()),
    };
    waiter.answer(answer);
}

fn parse_ready(msg: &Value) -> Result<BaseReady, String> {
    if msg["t"] != "ready" {
        return Err(msg["message"]
            .as_str()
            .unwrap_or("no reason given")
            .to_owned());
    }
    let strings = |key: &str| -> Vec<String> {
        msg[key]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    Ok(BaseReady {
        pid: as_u32(&msg["pid"]).unwrap_or(0),
        watch: strings("watch").into_iter().map(PathBuf::from).collect(),
        seconds: msg["seconds"].as_f64().unwrap_or(0.0),
        modules: msg["modules"]
            .as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(0),
        errors: strings("errors"),
    })
}

fn as_u32(value: &Value) -> Option<u32> {
    value.as_u64().and_then(|n| u32::try_from(n).ok())
}

fn as_i32(value: &Value) -> Option<i32> {
    value.as_i64().and_then(|n| i32::try_from(n).ok())
}

/// Keeps the stderr tail and, when the base ends unexpectedly, reports `Died` with it.
fn watch_process(mut child: Child, shared: Arc<Shared>, events: UnboundedSender<BaseEvent>) {
    let tail = Arc::new(Mutex::new(VecDeque::new()));
    let reading = child.stderr.take().map(|stderr| {
        let tail = Arc::clone(&tail);
        tokio::spawn(async move {
            let mut lines = AsyncBufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let mut tail = tail.lock().expect("stderr tail lock");
                tail.push_back(line);
                if tail.len() > STDERR_TAIL_LINES {
                    tail.pop_front();
                }
            }
        })
    });
    tokio::spawn(async move {
        let _ = child.wait().await;
        if let Some(reading) = reading {
            // Only the base and its zygotes-to-be hold the pipe; a zygote gets its own stderr.
            let _ = tokio::time::timeout(TAIL_WAIT, reading).await;
        }
        if !shared.stopping.load(Ordering::SeqCst) {
            let lines: Vec<String> = tail.lock().expect("stderr tail lock").drain(..).collect();
            let _ = events.send(BaseEvent::Died {
                stderr_tail: lines.join("\n"),
            });
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn launch_variables_are_taken_out_of_the_environment() {
        let mut env = vec![
            ("PATH".to_owned(), "/bin".to_owned()),
            (plugin::ENV_MODE.to_owned(), "zygote".to_owned()),
            (plugin::ENV_SOCKET.to_owned(), "/tmp/s".to_owned()),
            (plugin::ENV_SECRET.to_owned(), "ab".to_owned()),
        ];
        let vars = LaunchVars::take_from_env(&mut env);
        assert_eq!(
            vars,
            LaunchVars {
                mode: "zygote".into(),
                socket: "/tmp/s".into(),
                secret: "ab".into()
            }
        );
        assert_eq!(env, [("PATH".to_owned(), "/bin".to_owned())]);
    }

    #[test]
    fn ready_and_failed_lines() {
        let ready = serde_json::json!({"t": "ready", "pid": 7, "watch": ["/a", "/b"], "seconds": 1.5, "modules": 9, "errors": ["E"]});
        assert_eq!(
            parse_ready(&ready),
            Ok(BaseReady {
                pid: 7,
                watch: vec!["/a".into(), "/b".into()],
                seconds: 1.5,
                modules: 9,
                errors: vec!["E".into()],
            })
        );
        let failed = serde_json::json!({"t": "failed", "message": "broken"});
        assert_eq!(parse_ready(&failed), Err("broken".to_owned()));
    }
}
