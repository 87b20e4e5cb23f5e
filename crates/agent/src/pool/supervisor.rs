//! `Pool`: the run folder, the socket, the zygote and one process per slot. It owns every
//! process-level fact (pids, connections, kill escalation) and outlives a run: a run borrows
//! it, asks for workers, sends them messages and receives `PoolEvent`s; a second run can
//! borrow it again.

use std::collections::{HashMap, VecDeque};
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use nix::sys::signal::Signal;
use shardex_core::protocol::{FromPython, Role, RunSettings, ToPython};
use shardex_core::WorkerId;
use tokio::net::UnixListener;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::conn::{spawn_acceptor, ConnEvent, ConnId, LineKind};
use super::launch::{LaunchSpec, Launcher, ProcOwner, RawEvent};
use super::rundir::RunDir;
use crate::config::WorkerMode;
use crate::{plugin, AgentError};

/// Who is on the other end of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Peer {
    Zygote,
    Worker(usize),
}

/// Why the pool stopped a worker's process group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// Its test ran past `--timeout`.
    Timeout,
    /// The run is ending (signal, or the grace after `-x` is over).
    Shutdown,
}

/// What the pool tells the run.
#[derive(Debug)]
pub enum PoolEvent {
    Connected(Peer),
    Message(Peer, Box<FromPython>),
    /// A worker process ended; `stop` says if the pool had stopped it, and why.
    WorkerExited {
        slot: usize,
        code: Option<i32>,
        signal: Option<i32>,
        stop: Option<StopReason>,
    },
    ZygoteExited {
        code: Option<i32>,
        signal: Option<i32>,
    },
    /// The zygote's connection ended: everything it sent has arrived.
    ZygoteDisconnected,
    /// A connected process sent a line the agent cannot read; its next lines are read.
    Unreadable {
        peer: Peer,
        reason: String,
        kind: LineKind,
    },
}

/// A slot's process, as far as the pool knows.
#[derive(Debug, Default)]
pub enum Proc {
    /// No process: never started, or ended.
    #[default]
    Down,
    /// Forked or spawned, not connected yet; the pid once known.
    Starting { pid: Option<u32> },
    /// Connected: it can be sent messages.
    Up {
        pid: u32,
        conn: ConnId,
        tx: UnboundedSender<ToPython>,
    },
    /// Its connection ended; the process is not reaped yet.
    Closing { pid: u32 },
}

impl Proc {
    fn pid(&self) -> Option<u32> {
        match self {
            Proc::Down => None,
            Proc::Starting { pid } => *pid,
            Proc::Up { pid, .. } | Proc::Closing { pid } => Some(*pid),
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Stop {
    reason: StopReason,
    since: Instant,
    killed: bool,
}

#[derive(Debug, Default)]
struct PoolSlot {
    proc: Proc,
    generation: u32,
    stop: Option<Stop>,
}

#[derive(Debug, Default)]
struct Zygote {
    pid: u32,
    tx: Option<UnboundedSender<ToPython>>,
    /// It connected once (a zygote that ends before connecting never disconnects).
    connected: bool,
    exited: bool,
    disconnected: bool,
}

pub struct PoolSpec {
    pub launch: LaunchSpec,
    /// The `configure` message every connection gets first (its `rundir` is filled in by
    /// the pool).
    pub settings: RunSettings,
    pub mode: WorkerMode,
    pub slots: usize,
    /// SIGTERM to SIGKILL.
    pub kill_grace: Duration,
}

pub struct Pool {
    rundir: RunDir,
    spec: PoolSpec,
    launcher: Box<dyn Launcher>,
    raw_tx: UnboundedSender<RawEvent>,
    raw_rx: UnboundedReceiver<RawEvent>,
    acceptor: JoinHandle<()>,
    conns: HashMap<ConnId, Peer>,
    zygote: Option<Zygote>,
    slots: Vec<PoolSlot>,
    /// Events made by the pool itself, delivered before the next raw one.
    pending: VecDeque<PoolEvent>,
}

impl Pool {
    /// Creates the run folder and the socket, and writes the plugin. No process starts yet.
    pub fn open(mut spec: PoolSpec, launcher: Box<dyn Launcher>) -> Result<Self, AgentError> {
        let rundir = RunDir::create().map_err(|source| AgentError::Io {
            doing: format!(
                "creating a private run folder in {}",
                std::env::temp_dir().display()
            ),
            source,
        })?;
        let plugin_dir = rundir.plugin_dir();
        plugin::install(&plugin_dir).map_err(|source| AgentError::Io {
            doing: format!("writing the pytest plugin to {}", plugin_dir.display()),
            source,
        })?;
        let socket = rundir.socket();
        let bind = || -> std::io::Result<UnixListener> {
            let listener = UnixListener::bind(&socket)?;
            std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600))?;
            Ok(listener)
        };
        let listener = bind().map_err(|source| AgentError::Io {
            doing: format!("binding the socket {}", socket.display()),
            source,
        })?;
        let (raw_tx, raw_rx) = unbounded_channel();
        let secret = new_secret().map_err(|source| AgentError::Io {
            doing: "reading /dev/urandom for the run's secret".into(),
            source,
        })?;
        let acceptor = spawn_acceptor(listener, raw_tx.clone(), secret.clone());
        spec.launch.env.extend([
            (plugin::ENV_SOCKET.to_owned(), socket.display().to_string()),
            (plugin::ENV_SECRET.to_owned(), secret),
        ]);
        let mut args = plugin::launch_args(&plugin_dir);
        args.append(&mut spec.launch.args);
        spec.launch.args = args;
        spec.settings.rundir = rundir.path.display().to_string();
        let slots = (0..spec.slots).map(|_| PoolSlot::default()).collect();
        Ok(Self {
            rundir,
            spec,
            launcher,
            raw_tx,
            raw_rx,
            acceptor,
            conns: HashMap::new(),
            zygote: None,
            slots,
            pending: VecDeque::new(),
        })
    }

    pub fn rundir(&self) -> &RunDir {
        &self.rundir
    }

    pub fn mode(&self) -> WorkerMode {
        self.spec.mode
    }

    pub fn slot_count(&self) -> usize {
        self.slots.len()
    }

    /// Changes the run settings: connections from now on get the new ones, and so does the
    /// zygote (before it forks, so its workers see them).
    pub fn reconfigure(&mut self, change: impl FnOnce(&mut RunSettings)) {
        change(&mut self.spec.settings);
        self.send_zygote(ToPython::Configure(self.spec.settings.clone()));
    }

    /// At least `slots` slots (pytest's own `-n`, from `addopts`, asked for more).
    pub fn grow(&mut self, slots: usize) {
        while self.slots.len() < slots {
            self.slots.push(PoolSlot::default());
        }
    }

    /// Starts the collecting process(es) of a run: the zygote, or in spawn mode every
    /// worker. What an earlier run left in the run folder (spools, capture and stderr
    /// files) is removed first.
    pub fn start(&mut self) -> Result<(), AgentError> {
        self.rundir
            .clear_run_files()
            .map_err(|source| AgentError::Io {
                doing: format!("clearing the run folder {}", self.rundir.path.display()),
                source,
            })?;
        match self.spec.mode {
            WorkerMode::Fork => {
                let mut spec = self.spec.launch.clone();
                spec.env.push((plugin::ENV_MODE.into(), "zygote".into()));
                let pid = self
                    .launcher
                    .launch_zygote(&spec, &self.raw_tx)
                    .map_err(|source| self.spawn_error(source))?;
                tracing::debug!(pid, "zygote started");
                self.zygote = Some(Zygote {
                    pid,
                    ..Zygote::default()
                });
                Ok(())
            }
            WorkerMode::Spawn => (0..self.slots.len()).try_for_each(|slot| self.start_worker(slot)),
        }
    }

    /// Forks (or spawns) a worker for `slot`; it announces itself with `Connected`.
    pub fn start_worker(&mut self, slot: usize) -> Result<(), AgentError> {
        let name = WorkerId(slot).to_string();
        let state = &mut self.slots[slot];
        state.generation += 1;
        state.stop = None;
        match self.spec.mode {
            WorkerMode::Fork => {
                let Some(tx) = self.zygote.as_ref().and_then(|z| z.tx.as_ref()) else {
                    return Ok(());
                };
                let _ = tx.send(ToPython::Fork { slot: name.clone() });
                state.proc = Proc::Starting { pid: None };
            }
            WorkerMode::Spawn => {
                let mut spec = self.spec.launch.clone();
                spec.env.push((plugin::ENV_MODE.into(), "worker".into()));
                spec.env.push(("PYTEST_XDIST_WORKER".into(), name.clone()));
                let owner = ProcOwner::Spawned {
                    slot,
                    generation: state.generation,
                };
                let stderr = self.rundir.stderr_file(&name);
                let pid = self
                    .launcher
                    .launch_worker(&spec, owner, stderr, &self.raw_tx)
                    .map_err(|source| AgentError::Spawn {
                        python: self.spec.launch.python.clone(),
                        source,
                    })?;
                self.slots[slot].proc = Proc::Starting { pid: Some(pid) };
            }
        }
        tracing::debug!(slot = %name, generation = self.slots[slot].generation, "worker starting");
        Ok(())
    }

    fn spawn_error(&self, source: std::io::Error) -> AgentError {
        AgentError::Spawn {
            python: self.spec.launch.python.clone(),
            source,
        }
    }

    /// Sends to a connected worker; false if it is not connected.
    pub fn send(&self, slot: usize, msg: ToPython) -> bool {
        match &self.slots[slot].proc {
            Proc::Up { tx, .. } => tx.send(msg).is_ok(),
            _ => false,
        }
    }

    /// Sends to the zygote; false if it is not connected.
    pub fn send_zygote(&self, msg: ToPython) -> bool {
        self.zygote
            .as_ref()
            .and_then(|z| z.tx.as_ref())
            .is_some_and(|tx| tx.send(msg).is_ok())
    }

    pub fn is_connected(&self, slot: usize) -> bool {
        matches!(self.slots[slot].proc, Proc::Up { .. })
    }

    /// The slot has a process (starting, connected, or not yet reaped).
    pub fn is_alive(&self, slot: usize) -> bool {
        !matches!(self.slots[slot].proc, Proc::Down)
    }

    /// The slot's process is being stopped by the pool.
    pub fn is_stopping(&self, slot: usize) -> bool {
        self.slots[slot].stop.is_some()
    }

    pub fn workers_down(&self) -> bool {
        self.slots.iter().all(|s| matches!(s.proc, Proc::Down))
    }

    /// The zygote (if any) has exited and everything it sent has arrived.
    pub fn zygote_gone(&self) -> bool {
        self.zygote
            .as_ref()
            .is_none_or(|z| z.exited && (z.disconnected || !z.connected))
    }

    /// SIGINT to the zygote's group: interrupted while it collects, pytest ends its session
    /// as on Ctrl-C (its own "Interrupted" lines, its cache).
    pub fn interrupt_zygote(&mut self) {
        if let Some(z) = self.zygote.as_ref().filter(|z| !z.exited) {
            tracing::debug!(pid = z.pid, "interrupting the zygote");
            self.launcher.signal(z.pid, Signal::SIGINT);
        }
    }

    pub fn zygote_stderr_tail(&self) -> String {
        self.launcher.zygote_stderr_tail()
    }

    /// SIGTERM to the slot's process group now, SIGKILL after the kill grace.
    pub fn stop_worker(&mut self, slot: usize, reason: StopReason) {
        let state = &mut self.slots[slot];
        if state.stop.is_some() {
            return;
        }
        let Some(pid) = state.proc.pid() else { return };
        tracing::debug!(slot = %WorkerId(slot), pid, ?reason, "stopping worker: SIGTERM");
        self.launcher.signal(pid, Signal::SIGTERM);
        state.stop = Some(Stop {
            reason,
            since: Instant::now(),
            killed: false,
        });
    }

    /// When the next SIGTERM grace runs out.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.slots
            .iter()
            .filter_map(|s| s.stop.filter(|stop| !stop.killed))
            .map(|stop| stop.since + self.spec.kill_grace)
            .min()
    }

    /// SIGKILL for every group whose grace has run out by `now`.
    pub fn on_deadline(&mut self, now: Instant) {
        for (slot, state) in self.slots.iter_mut().enumerate() {
            let Some(stop) = state.stop.as_mut() else {
                continue;
            };
            if stop.killed || now < stop.since + self.spec.kill_grace {
                continue;
            }
            stop.killed = true;
            if let Some(pid) = state.proc.pid() {
                tracing::debug!(slot = %WorkerId(slot), pid, "kill escalation: SIGKILL");
                self.launcher.signal(pid, Signal::SIGKILL);
            }
        }
    }

    /// Signals every worker group that is alive (not the zygote).
    fn signal_workers(&mut self, signal: Signal) {
        for state in &self.slots {
            if let Some(pid) = state.proc.pid() {
                self.launcher.signal(pid, signal);
            }
        }
    }

    /// Signals every process of the pool, the zygote included.
    pub fn signal_all(&mut self, signal: Signal) {
        self.signal_workers(signal);
        if let Some(z) = self.zygote.as_ref().filter(|z| !z.exited) {
            self.launcher.signal(z.pid, signal);
        }
    }

    /// SIGKILL to the zygote's group (it took too long to finish).
    pub fn kill_zygote(&mut self) {
        if let Some(z) = self.zygote.as_ref().filter(|z| !z.exited) {
            tracing::debug!(pid = z.pid, "killing the zygote");
            self.launcher.signal(z.pid, Signal::SIGKILL);
        }
    }

    /// Ends the pool: no process of it survives.
    pub async fn close(mut self) {
        self.acceptor.abort();
        self.signal_all(Signal::SIGKILL);
        // Let the exit watchers reap what was just killed.
        tokio::task::yield_now().await;
    }

    /// The next event for the run (cancel-safe: a raw event is handled whole before the
    /// next await). `None` when every source is gone.
    pub async fn recv(&mut self) -> Result<Option<PoolEvent>, AgentError> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Ok(Some(event));
            }
            let Some(raw) = self.raw_rx.recv().await else {
                return Ok(None);
            };
            if let Some(event) = self.translate(raw)? {
                return Ok(Some(event));
            }
        }
    }

    fn translate(&mut self, raw: RawEvent) -> Result<Option<PoolEvent>, AgentError> {
        Ok(match raw {
            RawEvent::Conn(ConnEvent::Opened {
                conn,
                role,
                slot,
                pid,
                tx,
            }) => self.on_open(conn, role, slot.as_deref(), pid, tx),
            RawEvent::Conn(ConnEvent::Message { conn, msg }) => {
                let Some(&peer) = self.conns.get(&conn) else {
                    return Ok(None);
                };
                self.on_message(peer, *msg)
            }
            RawEvent::Conn(ConnEvent::Closed { conn }) => match self.conns.remove(&conn) {
                Some(Peer::Worker(slot)) => {
                    let state = &mut self.slots[slot];
                    if let Proc::Up { pid, .. } = state.proc {
                        state.proc = Proc::Closing { pid };
                    }
                    None
                }
                Some(Peer::Zygote) => {
                    let z = self.zygote.as_mut().expect("a zygote connection");
                    z.disconnected = true;
                    z.tx = None;
                    Some(PoolEvent::ZygoteDisconnected)
                }
                None => None,
            },
            RawEvent::Conn(ConnEvent::Invalid { conn, reason, kind }) => {
                if kind == LineKind::Hello {
                    // A process of this pool speaking another protocol version, or not
                    // a plugin at all.
                    let peer = format!("connection {conn}");
                    return Err(AgentError::Protocol { peer, reason });
                }
                // Unknown: a connection the pool ignores (a dead worker's, or not ours).
                let Some(&peer) = self.conns.get(&conn) else {
                    return Ok(None);
                };
                Some(PoolEvent::Unreadable { peer, reason, kind })
            }
            RawEvent::ProcessExited {
                owner: ProcOwner::Zygote,
                code,
                signal,
            } => {
                if let Some(z) = self.zygote.as_mut() {
                    z.exited = true;
                }
                tracing::debug!(?code, ?signal, "zygote exited");
                self.orphan_forked_workers();
                Some(PoolEvent::ZygoteExited { code, signal })
            }
            RawEvent::ProcessExited {
                owner: ProcOwner::Spawned { slot, generation },
                code,
                signal,
            } => {
                if self.slots[slot].generation != generation {
                    return Ok(None);
                }
                Some(self.worker_exited(slot, code, signal))
            }
        })
    }

    fn on_open(
        &mut self,
        conn: ConnId,
        role: Role,
        slot: Option<&str>,
        pid: u32,
        tx: UnboundedSender<ToPython>,
    ) -> Option<PoolEvent> {
        // The first message on every connection: the Python side waits for it.
        let _ = tx.send(ToPython::Configure(self.spec.settings.clone()));
        match role {
            Role::Zygote => {
                let z = self.zygote.as_mut()?;
                if z.tx.is_some() || z.pid != pid {
                    return None; // not the process we started
                }
                z.tx = Some(tx);
                z.connected = true;
                self.conns.insert(conn, Peer::Zygote);
                Some(PoolEvent::Connected(Peer::Zygote))
            }
            Role::Worker => {
                let index = slot?.parse::<WorkerId>().ok()?.0;
                let state = self.slots.get_mut(index)?;
                // Only a slot we started, by the process we started, may connect.
                match state.proc {
                    Proc::Starting { pid: None } => {}
                    Proc::Starting { pid: Some(known) } if known == pid => {}
                    _ => return None,
                }
                state.proc = Proc::Up { pid, conn, tx };
                self.conns.insert(conn, Peer::Worker(index));
                tracing::debug!(slot = %WorkerId(index), pid, "worker connected");
                Some(PoolEvent::Connected(Peer::Worker(index)))
            }
        }
    }

    fn on_message(&mut self, peer: Peer, msg: FromPython) -> Option<PoolEvent> {
        match (msg, peer) {
            (FromPython::Hello { .. }, _) => None,
            (FromPython::Forked { slot, pid }, Peer::Zygote) => {
                let index = slot.parse::<WorkerId>().ok()?.0;
                let state = self.slots.get_mut(index)?;
                if let Proc::Starting { pid: known @ None } = &mut state.proc {
                    *known = Some(pid);
                }
                None
            }
            (
                FromPython::Exited {
                    slot,
                    pid,
                    code,
                    signal,
                },
                Peer::Zygote,
            ) => {
                let index = slot.parse::<WorkerId>().ok()?.0;
                (self.slots.get(index)?.proc.pid() == Some(pid))
                    .then(|| self.worker_exited(index, code, signal))
            }
            (msg, peer) => Some(PoolEvent::Message(peer, Box::new(msg))),
        }
    }

    /// Forked workers are the zygote's children: with it gone nobody reports their exit.
    /// They are killed and reported ended (after the zygote's own exit).
    fn orphan_forked_workers(&mut self) {
        if self.spec.mode != WorkerMode::Fork {
            return;
        }
        for slot in 0..self.slots.len() {
            if let Some(pid) = self.slots[slot].proc.pid() {
                self.launcher.signal(pid, Signal::SIGKILL);
            }
            if !matches!(self.slots[slot].proc, Proc::Down) {
                let event = self.worker_exited(slot, None, None);
                self.pending.push_back(event);
            }
        }
    }

    fn worker_exited(&mut self, slot: usize, code: Option<i32>, signal: Option<i32>) -> PoolEvent {
        let state = &mut self.slots[slot];
        if let Proc::Up { conn, .. } = state.proc {
            // Whatever its connection still delivers is ignored: the spool has it all.
            self.conns.remove(&conn);
        }
        state.proc = Proc::Down;
        let stop = state.stop.take().map(|s| s.reason);
        tracing::trace!(slot = %WorkerId(slot), ?code, ?signal, ?stop, "worker exited");
        PoolEvent::WorkerExited {
            slot,
            code,
            signal,
            stop,
        }
    }
}

/// 128 random bits, hex: what a process must present in its hello to be one of ours.
fn new_secret() -> std::io::Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}
