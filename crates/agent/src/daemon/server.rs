//! The daemon's one loop: it owns the warm base (and the bases being retired), the clients'
//! connections, the one-run-at-a-time lease and the timers (freshness, idle, project gone).
//! Connections only move lines; every decision is made here.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use shardex_core::daemon_key::BaseKey;
use shardex_core::fileset::{describe_changes, Snapshot};
use tokio::io::Interest;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use super::base::{Base, BaseError, BaseEvent, BaseReady, BaseSpec, ForkRequest, LaunchVars};
use super::fresh::{key_of, snapshot};
use super::place::Place;
use super::wire::{
    self, BaseStatus, ClientMsg, DaemonMsg, LaunchRequest, LineBuffer, StatusReport,
};

/// How often the watch set is re-read between runs: a change starts the rebuild at once,
/// so the next run finds it (mostly) done.
const FRESHNESS_POLL: Duration = Duration::from_millis(500);

#[derive(Clone, Debug)]
pub struct ServeConfig {
    pub place: Place,
    /// What the first base is built for (the serve's own run options).
    pub first: LaunchRequest,
    pub plugin_dir: PathBuf,
    pub idle_limit: Duration,
}

type ClientId = u64;

struct Warm {
    base: Base,
    ready: BaseReady,
    /// The run it was built for (built again for the same when stale).
    request: LaunchRequest,
    key: BaseKey,
    snapshot: Snapshot,
    generation: u32,
    build_secs: f64,
}

type Building = Pin<Box<dyn Future<Output = (Result<(Base, BaseReady), BaseError>, f64)>>>;

struct Client {
    tx: UnboundedSender<DaemonMsg>,
    pid: u32,
    /// What it waits for: an acquire (lease + fresh base) or a launch (fresh base + fork).
    pending: Option<Pending>,
    zygotes: Vec<u32>,
}

enum Pending {
    Acquire(LaunchRequest),
    Launch(LaunchRequest, [RawFd; 2]),
}

enum Inbound {
    Connected(ClientId, UnboundedSender<DaemonMsg>, u32),
    Message(ClientId, ClientMsg, Vec<RawFd>),
    Gone(ClientId),
}

pub struct Daemon {
    config: ServeConfig,
    started: Instant,
    last_activity: Instant,
    warm: Option<Warm>,
    retired: Vec<Base>,
    building: Option<(Building, LaunchRequest, BaseKey)>,
    generation: u32,
    last_rebuild: Option<String>,
    clients: BTreeMap<ClientId, Client>,
    lease: Option<ClientId>,
    waiting: VecDeque<ClientId>,
    runs: u64,
    stopping: bool,
    /// Every base's events, tagged with its pid.
    base_events_tx: UnboundedSender<(u32, BaseEvent)>,
    base_events: UnboundedReceiver<(u32, BaseEvent)>,
}

impl Daemon {
    pub fn new(config: ServeConfig) -> Self {
        let (base_events_tx, base_events) = unbounded_channel();
        Self {
            base_events_tx,
            base_events,
            config,
            started: Instant::now(),
            last_activity: Instant::now(),
            warm: None,
            retired: Vec::new(),
            building: None,
            generation: 0,
            last_rebuild: None,
            clients: BTreeMap::new(),
            lease: None,
            waiting: VecDeque::new(),
            runs: 0,
            stopping: false,
        }
    }

    /// Serves on `listener` until stopped, idle past the limit, or the project is gone.
    /// Returns why it stopped.
    pub async fn serve(mut self, listener: UnixListener) -> String {
        let (inbound_tx, mut inbound) = unbounded_channel();
        let first = self.config.first.clone();
        self.start_build(first, "starting".into());
        let mut next_id: ClientId = 0;
        let mut tick = tokio::time::interval(FRESHNESS_POLL);
        loop {
            if self.stopping {
                return "stopped by `shardex serve --stop`".into();
            }
            tokio::select! {
                accepted = listener.accept() => {
                    if let Ok((stream, _)) = accepted {
                        next_id += 1;
                        accept(stream, next_id, inbound_tx.clone());
                    }
                }
                Some(message) = inbound.recv() => self.on_inbound(message).await,
                built = poll_building(&mut self.building) => self.on_built(built).await,
                Some((base_pid, event)) = self.base_events.recv() => {
                    self.on_base_event(base_pid, event);
                }
                _ = tick.tick() => {
                    if let Some(why) = self.should_exit() {
                        return why;
                    }
                    self.check_freshness(false);
                }
            }
        }
    }

    fn should_exit(&self) -> Option<String> {
        if !self.config.place.root.is_dir() {
            return Some(format!("{} is gone", self.config.place.root.display()));
        }
        if !self.config.place.socket().exists() {
            return Some("its socket was removed".into());
        }
        let idle = self.last_activity.elapsed();
        if self.clients.is_empty() && idle >= self.config.idle_limit {
            return Some(format!("idle for {} s", idle.as_secs()));
        }
        None
    }

    fn start_build(&mut self, request: LaunchRequest, reason: String) {
        eprintln!("shardex: daemon: building the warm process ({reason})");
        self.last_rebuild = Some(reason);
        let mut spec = base_spec(&request, &self.config.plugin_dir);
        // The base removes the socket if this daemon dies without doing it.
        spec.env.push((
            "SHARDEX_DAEMON_SOCKET".into(),
            self.config.place.socket().display().to_string(),
        ));
        let key = key_of(&request);
        let build: Building = Box::pin(async move {
            let started = Instant::now();
            let result = Base::start(&spec).await;
            (result, started.elapsed().as_secs_f64())
        });
        self.building = Some((build, request, key));
    }

    /// A rebuild when the code on disk changed (`at_launch`: the check a run's start makes,
    /// which also covers a change the last poll did not see yet).
    fn check_freshness(&mut self, at_launch: bool) -> bool {
        if self.building.is_some() {
            return false;
        }
        let Some(warm) = &self.warm else {
            return false;
        };
        let now = snapshot(warm.snapshot.paths());
        let changes = warm.snapshot.changes(&now);
        if changes.is_empty() {
            return true;
        }
        let reason = describe_changes(&changes, 3);
        tracing::info!(%reason, at_launch, "stale");
        super::fresh::forget_bytecode(&changes);
        let request = warm.request.clone();
        if let Some(old) = self.warm.take() {
            self.retire(old.base);
        }
        self.start_build(request, reason);
        false
    }

    fn retire(&mut self, mut base: Base) {
        base.retire();
        self.retired.push(base);
    }

    async fn on_built(&mut self, built: (Result<(Base, BaseReady), BaseError>, f64)) {
        let Some((_, request, key)) = self.building.take() else {
            return;
        };
        let (result, secs) = built;
        match result {
            Ok((mut base, ready)) => {
                self.generation += 1;
                base.forward_events(self.base_events_tx.clone());
                let snapshot = snapshot(ready.watch.iter().map(PathBuf::as_path));
                eprintln!(
                    "shardex: daemon: warm process {} ready in {secs:.2} s ({} modules, {} files watched)",
                    self.generation,
                    ready.modules,
                    ready.watch.len()
                );
                self.warm = Some(Warm {
                    base,
                    ready,
                    request,
                    key,
                    snapshot,
                    generation: self.generation,
                    build_secs: secs,
                });
                // Files may have changed while it was built.
                if self.check_freshness(false) {
                    self.serve_pending().await;
                }
            }
            Err(err) => {
                let reason = format!("the warm process could not be built: {err}");
                tracing::warn!(%reason);
                for client in self.clients.values_mut() {
                    if client.pending.take().is_some() {
                        let _ = client.tx.send(DaemonMsg::Refused {
                            reason: reason.clone(),
                        });
                    }
                }
            }
        }
    }

    async fn on_inbound(&mut self, message: Inbound) {
        self.last_activity = Instant::now();
        match message {
            Inbound::Connected(id, tx, pid) => {
                let _ = tx.send(DaemonMsg::Hello {
                    build: wire::build_identity(),
                    pid: std::process::id(),
                });
                self.clients.insert(
                    id,
                    Client {
                        tx,
                        pid,
                        pending: None,
                        zygotes: Vec::new(),
                    },
                );
            }
            Inbound::Message(id, msg, fds) => self.on_message(id, msg, fds).await,
            Inbound::Gone(id) => self.on_gone(id).await,
        }
    }

    async fn on_message(&mut self, id: ClientId, msg: ClientMsg, fds: Vec<RawFd>) {
        let Some(client) = self.clients.get_mut(&id) else {
            wire::close_all(fds);
            return;
        };
        match msg {
            ClientMsg::Hello { pid, .. } => client.pid = pid,
            ClientMsg::Status => {
                let report = self.status();
                self.send(id, DaemonMsg::Status(report));
            }
            ClientMsg::Stop => {
                self.send(id, DaemonMsg::Stopping);
                self.stopping = true;
            }
            ClientMsg::Acquire(request) => {
                client.pending = Some(Pending::Acquire(request));
                if self.lease.is_none() {
                    self.lease = Some(id);
                } else if self.lease != Some(id) {
                    let holder = self
                        .lease
                        .and_then(|l| self.clients.get(&l))
                        .map_or(0, |c| c.pid);
                    self.waiting.push_back(id);
                    self.note(id, format!("the daemon is serving another run (pid {holder}); waiting for it to end"));
                    return;
                }
                self.serve_pending().await;
            }
            ClientMsg::Launch(request) => {
                let [stdout, stderr] = fds[..] else {
                    wire::close_all(fds);
                    self.send(
                        id,
                        DaemonMsg::Refused {
                            reason: "a launch without its 2 descriptors".into(),
                        },
                    );
                    return;
                };
                if self.lease != Some(id) {
                    wire::close_all([stdout, stderr]);
                    self.send(
                        id,
                        DaemonMsg::Refused {
                            reason: "launch before acquire".into(),
                        },
                    );
                    return;
                }
                client.pending = Some(Pending::Launch(request, [stdout, stderr]));
                self.serve_pending().await;
            }
        }
    }

    /// Serves the lease holder's pending request when the base is fresh for it; else makes
    /// it so (a rebuild, for which it waits).
    async fn serve_pending(&mut self) {
        let Some(id) = self.lease else { return };
        let Some(request) =
            self.clients
                .get(&id)
                .and_then(|c| c.pending.as_ref())
                .map(|p| match p {
                    Pending::Acquire(r) | Pending::Launch(r, _) => r.clone(),
                })
        else {
            return;
        };
        let wanted = key_of(&request);
        if let Some((_, _, building_key)) = &self.building {
            if building_key.differences(&wanted).is_empty() {
                return; // on_built serves it
            }
        }
        let reasons = match &self.warm {
            Some(warm) => warm.key.differences(&wanted),
            None if self.building.is_some() => vec!["a rebuild".into()],
            None => vec!["no warm process".into()],
        };
        if !reasons.is_empty() || !self.check_freshness(true) {
            if self.building.is_none() || !reasons.is_empty() {
                if let Some(old) = self.warm.take() {
                    self.retire(old.base);
                }
                self.building = None;
                self.start_build(
                    request,
                    format!("this run differs in {}", reasons.join(", ")),
                );
            }
            let why = self.last_rebuild.clone().unwrap_or_default();
            self.note(id, format!("rebuilding the warm process ({why})"));
            return;
        }
        let Some(pending) = self.clients.get_mut(&id).and_then(|c| c.pending.take()) else {
            return;
        };
        let generation = self.generation;
        match pending {
            Pending::Acquire(_) => self.send(id, DaemonMsg::Ready { generation }),
            Pending::Launch(request, fds) => self.fork(id, request, fds).await,
        }
    }

    async fn fork(&mut self, id: ClientId, request: LaunchRequest, fds: [RawFd; 2]) {
        let Some(warm) = self.warm.as_mut() else {
            wire::close_all(fds);
            return;
        };
        let (env, launch) = split_launch_vars(&request.env);
        let fork = ForkRequest {
            args: request.pytest_args.clone(),
            cwd: request.cwd.clone(),
            env,
            launch,
            stdout: fds[0],
            stderr: fds[1],
        };
        let result = warm.base.fork(fork).await;
        wire::close_all(fds);
        match result {
            Ok(pid) => {
                self.runs += 1;
                if let Some(client) = self.clients.get_mut(&id) {
                    client.zygotes.push(pid);
                }
                self.send(
                    id,
                    DaemonMsg::Launched {
                        pid,
                        generation: self.generation,
                    },
                );
            }
            Err(err) => self.send(
                id,
                DaemonMsg::Refused {
                    reason: format!("the warm process could not fork: {err}"),
                },
            ),
        }
    }

    fn on_base_event(&mut self, base_pid: u32, event: BaseEvent) {
        match event {
            BaseEvent::Exited { pid, code, signal } => {
                if let Some(client) = self.clients.values_mut().find(|c| c.zygotes.contains(&pid)) {
                    client.zygotes.retain(|z| *z != pid);
                    let _ = client.tx.send(DaemonMsg::Exited { pid, code, signal });
                }
            }
            BaseEvent::Watch { paths } => {
                if let Some(warm) = self.warm.as_mut().filter(|w| w.base.pid() == base_pid) {
                    let added = super::fresh::snapshot(paths.iter().map(PathBuf::as_path));
                    warm.snapshot.extend(added.stamps());
                }
            }
            BaseEvent::Died { stderr_tail } => {
                self.retired.retain(|b| b.pid() != base_pid);
                // The warm base (not a retired one) died: build another at once.
                if self.warm.as_ref().is_some_and(|w| w.base.pid() == base_pid) {
                    let old = self.warm.take().expect("checked");
                    let tail = stderr_tail.lines().last().unwrap_or("").trim().to_owned();
                    let reason = if tail.is_empty() {
                        "the warm process died".to_owned()
                    } else {
                        format!("the warm process died: {tail}")
                    };
                    self.start_build(old.request, reason);
                }
            }
        }
    }

    async fn on_gone(&mut self, id: ClientId) {
        let Some(client) = self.clients.remove(&id) else {
            return;
        };
        if let Some(Pending::Launch(_, fds)) = client.pending {
            wire::close_all(fds);
        }
        // A run that ended without its zygote ending (a killed client): end it.
        for pid in client.zygotes {
            for base in self
                .warm
                .iter_mut()
                .map(|w| &mut w.base)
                .chain(self.retired.iter_mut())
            {
                base.kill(pid);
            }
        }
        self.waiting.retain(|w| *w != id);
        if self.lease == Some(id) {
            self.lease = self.waiting.pop_front();
            if let Some(next) = self.lease {
                self.note(next, "the other run ended".into());
                self.serve_pending().await;
            }
        }
    }

    fn note(&self, id: ClientId, text: String) {
        self.send(id, DaemonMsg::Note { text });
    }

    fn send(&self, id: ClientId, msg: DaemonMsg) {
        if let Some(client) = self.clients.get(&id) {
            let _ = client.tx.send(msg);
        }
    }

    fn status(&self) -> StatusReport {
        StatusReport {
            pid: std::process::id(),
            root: self.config.place.root.clone(),
            uptime_secs: self.started.elapsed().as_secs_f64(),
            idle_secs: self.last_activity.elapsed().as_secs_f64(),
            idle_limit_secs: self.config.idle_limit.as_secs_f64(),
            runs: self.runs,
            base: self.warm.as_ref().map(|w| BaseStatus {
                pid: w.ready.pid,
                generation: w.generation,
                build_secs: w.build_secs,
                modules: w.ready.modules,
                watched: w.snapshot.len(),
                pss: super::fresh::pss_bytes(w.ready.pid),
            }),
            building: self.building.as_ref().and(self.last_rebuild.clone()),
            last_rebuild: self.last_rebuild.clone(),
            daemon_pss: super::fresh::pss_bytes(std::process::id()),
            busy_with: self.lease.and_then(|l| self.clients.get(&l)).map(|c| c.pid),
        }
    }
}

fn base_spec(request: &LaunchRequest, plugin_dir: &Path) -> BaseSpec {
    let (env, _) = split_launch_vars(&request.env);
    BaseSpec {
        python: request.python.clone(),
        pytest_args: request.pytest_args.clone(),
        cwd: request.cwd.clone(),
        env,
        plugin_dir: plugin_dir.to_owned(),
    }
}

/// The zygote's launch variables (its role, the client's socket and secret) apart from the
/// environment the tests see.
fn split_launch_vars(env: &[(String, String)]) -> (Vec<(String, String)>, LaunchVars) {
    let mut launch = LaunchVars::default();
    let mut rest = Vec::with_capacity(env.len());
    for (name, value) in env {
        match name.as_str() {
            crate::plugin::ENV_MODE => launch.mode = value.clone(),
            crate::plugin::ENV_SOCKET => launch.socket = value.clone(),
            crate::plugin::ENV_SECRET => launch.secret = value.clone(),
            _ => rest.push((name.clone(), value.clone())),
        }
    }
    (rest, launch)
}

async fn poll_building(
    building: &mut Option<(Building, LaunchRequest, BaseKey)>,
) -> (Result<(Base, BaseReady), BaseError>, f64) {
    match building {
        Some((future, _, _)) => future.await,
        None => std::future::pending().await,
    }
}

/// Checks the peer (this user only), then moves lines between the socket and the loop.
fn accept(stream: UnixStream, id: ClientId, inbound: UnboundedSender<Inbound>) {
    let me = nix::unistd::getuid().as_raw();
    match stream.peer_cred() {
        Ok(cred) if cred.uid() == me => {}
        other => {
            tracing::warn!(?other, "a connection from another user was refused");
            return;
        }
    }
    let stream = Arc::new(stream);
    let (tx, mut outbound) = unbounded_channel::<DaemonMsg>();
    let pid = stream
        .peer_cred()
        .ok()
        .and_then(|c| c.pid())
        .map_or(0, |p| p.unsigned_abs());
    let _ = inbound.send(Inbound::Connected(id, tx, pid));
    let writer = Arc::clone(&stream);
    tokio::spawn(async move {
        while let Some(msg) = outbound.recv().await {
            if write_msg(&writer, &msg).await.is_err() {
                break;
            }
        }
    });
    tokio::spawn(async move {
        let mut buffer = LineBuffer::default();
        loop {
            let filled = read_some(&stream, &mut buffer).await;
            while let Some(line) = buffer.next_line() {
                match serde_json::from_slice::<ClientMsg>(&line) {
                    Ok(msg) => {
                        let fds = match &msg {
                            ClientMsg::Launch(_) => buffer.take_fds(2).unwrap_or_default(),
                            _ => Vec::new(),
                        };
                        let _ = inbound.send(Inbound::Message(id, msg, fds));
                    }
                    Err(err) => tracing::warn!(%err, "a malformed line from a client"),
                }
            }
            if !matches!(filled, Ok(n) if n > 0) {
                let _ = inbound.send(Inbound::Gone(id));
                return;
            }
        }
    });
}

async fn read_some(stream: &UnixStream, buffer: &mut LineBuffer) -> std::io::Result<usize> {
    loop {
        stream.readable().await?;
        match stream.try_io(Interest::READABLE, || buffer.fill(stream.as_raw_fd())) {
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => continue,
            other => return other,
        }
    }
}

async fn write_msg(stream: &UnixStream, msg: &DaemonMsg) -> std::io::Result<()> {
    loop {
        stream.writable().await?;
        match stream.try_io(Interest::WRITABLE, || wire::send(stream, msg, &[])) {
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => continue,
            other => return other,
        }
    }
}
