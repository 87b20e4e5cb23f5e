//! One run: start the Python side, collect, schedule, gather results, write the report.
//!
//! `execute` owns all run state in one task (`Run`), driven by one channel of `Ev`s: the
//! connection reader tasks, process-exit watchers, a tick (timeouts, kill deadlines) and
//! signals all feed it. Nothing else mutates run state.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use shardex_core::junit::flaky::merge_attempts;
use shardex_core::junit::write::SyntheticCase;
use shardex_core::junit::{JunitReport, SuiteInfo};
use shardex_core::protocol::{
    CollectProblem, Collection, FromPython, ItemInfo, JunitPart, PhaseReport, RetryFlags, Role,
    RunSettings, SessionInfo, TestDone, ToPython, WarningReport, SETTINGS_VERSION,
};
use shardex_core::retry::RetryBook;
use shardex_core::schedule::{Dispatch, DistMode, SchedTest, Scheduler};
use shardex_core::timing::TimingStore;
use shardex_core::{Outcome, TestId, WorkerId};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::UnixListener;
use tokio::process::Child;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use crate::config::WorkerMode;
use crate::plugin;
use crate::pool::conn::{spawn_acceptor, ConnEvent, ConnId, RunDir};
use crate::pool::process::{signal_group, signal_name, spawn_python, SpawnSpec, StderrTo};
use crate::{AgentError, RunConfig, RunEvent, RunSummary, TestResult};

/// Estimated seconds of short tests kept queued at a worker beyond its nextitem (see `fill`).
const PREFETCH_SECS: f64 = 0.05;
/// At most this many tests sent to one worker ahead of time (running one included).
const MAX_PREFETCH: usize = 64;
const TICK: Duration = Duration::from_millis(50);
/// A test without a recorded time that ran shorter than this settles its file (see
/// `settle_file`): stacking a few such tests on a worker costs little.
const SETTLE_SECS: f64 = 0.1;
/// Tests estimated at least this long are marked `slow` for the worker (see `ToPython::Run`).
const SLOW_SECS: f64 = 0.01;
/// A slot that dies this many times in a row without finishing a test is given up.
const MAX_CONSECUTIVE_CRASHES: u32 = 5;
const STDERR_TAIL_LINES: usize = 40;

enum Ev {
    Conn(ConnEvent),
    /// The zygote (fork mode) or a spawned worker process ended.
    ProcessExited {
        owner: ProcOwner,
        code: Option<i32>,
        signal: Option<i32>,
    },
    Signal(&'static str),
}

impl From<ConnEvent> for Ev {
    fn from(event: ConnEvent) -> Self {
        Ev::Conn(event)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ProcOwner {
    Zygote,
    /// A `--spawn` worker of this slot, in its `generation`.
    Spawned {
        slot: usize,
        generation: u32,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KillReason {
    Timeout,
    Shutdown,
}

#[derive(Debug)]
struct Running {
    id: TestId,
    started: Instant,
}

#[derive(Debug, Default)]
struct Slot {
    pid: Option<u32>,
    tx: Option<UnboundedSender<ToPython>>,
    conn: Option<ConnId>,
    /// Sent to the worker, not yet started, in order.
    queued: VecDeque<TestId>,
    running: Option<Running>,
    flushed: bool,
    /// The worker process exists (forked or spawned, not yet reaped).
    alive: bool,
    /// Spawn mode: the worker's collection arrived and matched.
    collected: bool,
    kill: Option<(KillReason, Instant, bool)>,
    generation: u32,
    consecutive_crashes: u32,
    disabled: bool,
    /// The worker was told to exit: a clean exit then is no crash.
    exit_sent: bool,
    /// Results received from the current worker process (the first lines of its spool).
    received: usize,
}

impl Slot {
    fn ready(&self) -> bool {
        self.tx.is_some() && self.alive && self.kill.is_none() && !self.disabled
    }

    fn busy(&self) -> bool {
        self.running.is_some() || !self.queued.is_empty()
    }
}

struct Run {
    config: RunConfig,
    events: UnboundedSender<RunEvent>,
    tx: UnboundedSender<Ev>,
    rundir: RunDir,
    env: Vec<(String, String)>,
    zygote: Option<Zygote>,
    session: Option<SessionInfo>,
    collection: Option<Collection>,
    items: HashMap<TestId, ItemInfo>,
    order: HashMap<TestId, usize>,
    estimates: HashMap<TestId, f64>,
    /// Files with tests that have no recorded time, until their first test ends.
    unsettled_files: HashSet<String>,
    scheduler: Option<Scheduler>,
    slots: Vec<Slot>,
    conns: HashMap<ConnId, ConnPeer>,
    /// What each process reported while it collected, kept until its collection arrives.
    collecting: HashMap<ConnId, Collecting>,
    summary: RunSummary,
    /// Finished attempts, shared with the `TestFinished` events; moved into the summary at
    /// the end.
    results: Vec<Arc<TestResult>>,
    junit_collect: Vec<JunitPart>,
    junit_tests: Vec<(usize, JunitPart)>,
    timings: TimingStore,
    stopping: Option<Instant>,
    /// When `-x`/`--maxfail` stopped dispatch.
    early_stop: Option<Instant>,
    hard_failures: u32,
    retry_book: RetryBook,
    /// Tests the scheduler handed out as risky (long, or of unknown length): a worker holds
    /// one at a time from the shared pool.
    risky: HashSet<TestId>,
    /// JUnit of failed attempts that were retried, until the test's final attempt.
    attempt_junit: HashMap<TestId, Vec<JunitPart>>,
    /// Retries waiting out `--reruns-delay`: (due, test, worker it failed on).
    delayed: Vec<(Instant, TestId, usize)>,
    finished_dispatch: bool,
    started: Instant,
    zygote_stderr: Arc<Mutex<VecDeque<String>>>,
}

/// One finished attempt of a test, from a worker or made by the agent (crash, timeout).
struct Attempt {
    id: TestId,
    outcome: Outcome,
    duration: f64,
    reports: Vec<PhaseReport>,
    junit: JunitPart,
}

#[derive(Default)]
struct Collecting {
    problems: Vec<CollectProblem>,
    warnings: Vec<WarningReport>,
}

struct Zygote {
    child: Option<Child>,
    pid: u32,
    tx: Option<UnboundedSender<ToPython>>,
    exited: bool,
    /// Its connection ended: everything it sent (its plugins' summary) has arrived.
    disconnected: bool,
}

#[derive(Clone, Copy, Debug)]
enum ConnPeer {
    Zygote,
    Worker(usize),
}

/// Runs the tests described by `config`, sending progress to `events`. Returns when every
/// test has a result, the run was interrupted (SIGINT/SIGTERM), or pytest failed to start.
pub async fn execute(
    config: RunConfig,
    events: UnboundedSender<RunEvent>,
) -> Result<RunSummary, AgentError> {
    let rundir = RunDir::create().map_err(|source| AgentError::RunDir {
        path: std::env::temp_dir(),
        source,
    })?;
    plugin::install(&plugin_dir(&rundir)).map_err(|source| AgentError::RunDir {
        path: rundir.path.clone(),
        source,
    })?;
    let listener = UnixListener::bind(rundir.socket())?;
    let (tx, rx) = unbounded_channel::<Ev>();
    let acceptor = spawn_acceptor(listener, tx.clone());
    spawn_signal_watchers(tx.clone())?;

    let mut timings = TimingStore::new();
    for source in &config.timings {
        timings.merge_source(source)?;
    }

    let env = python_env(&config, &rundir);
    let mut run = Run {
        slots: (0..config.workers).map(|_| Slot::default()).collect(),
        config,
        events,
        tx,
        rundir,
        env,
        zygote: None,
        session: None,
        collection: None,
        items: HashMap::new(),
        order: HashMap::new(),
        estimates: HashMap::new(),
        unsettled_files: HashSet::new(),
        scheduler: None,
        conns: HashMap::new(),
        collecting: HashMap::new(),
        summary: RunSummary::default(),
        results: Vec::new(),
        junit_collect: Vec::new(),
        junit_tests: Vec::new(),
        timings,
        stopping: None,
        early_stop: None,
        hard_failures: 0,
        retry_book: RetryBook::new(None),
        risky: HashSet::new(),
        attempt_junit: HashMap::new(),
        delayed: Vec::new(),
        finished_dispatch: false,
        started: Instant::now(),
        zygote_stderr: Arc::new(Mutex::new(VecDeque::new())),
    };
    let outcome = run.drive(rx).await;
    acceptor.abort();
    run.kill_everything().await;
    outcome?;
    run.finish()
}

/// Where the plugin package is written (see `plugin::install`).
fn plugin_dir(rundir: &RunDir) -> PathBuf {
    rundir.path.join("py")
}

fn python_env(config: &RunConfig, rundir: &RunDir) -> Vec<(String, String)> {
    // Only what the process needs to reach the agent, which the bootstrap removes from the
    // environment at once: the run's settings come in the `configure` message
    // (`run_settings`), and the plugin is imported without PYTHONPATH.
    let mut env = vec![(
        plugin::ENV_SOCKET.to_owned(),
        rundir.socket().display().to_string(),
    )];
    env.extend(config.env.iter().cloned());
    env
}

/// The `configure` message every connection gets first. The run id is the run folder's
/// (pid and time): the same for every process of the run, and new for each run.
fn run_settings(config: &RunConfig, rundir: &RunDir) -> RunSettings {
    let name = rundir
        .path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let retry = &config.retry;
    RunSettings {
        v: SETTINGS_VERSION,
        worker_count: u32::try_from(config.workers).unwrap_or(u32::MAX),
        testrunuid: name.trim_start_matches("shardex-").replace('-', ""),
        color: config.color,
        width: u32::try_from(config.width).unwrap_or(u32::MAX),
        retry: RetryFlags {
            reruns: retry.reruns,
            reruns_delay: retry.reruns_delay,
            only_rerun: retry.only_rerun.clone(),
            rerun_except: retry.rerun_except.clone(),
            fail_on_flaky: retry.fail_on_flaky,
            max_suite_reruns: retry.max_suite_reruns,
        },
        junit: config.junitxml.is_some(),
        loadgroup: config.dist == DistMode::LoadGroup,
        rundir: rundir.path.display().to_string(),
    }
}

fn spawn_signal_watchers(tx: UnboundedSender<Ev>) -> std::io::Result<()> {
    for (kind, name) in [
        (SignalKind::interrupt(), "KeyboardInterrupt"),
        (SignalKind::terminate(), "SIGTERM"),
    ] {
        let mut stream = signal(kind)?;
        let tx = tx.clone();
        tokio::spawn(async move {
            while stream.recv().await.is_some() {
                if tx.send(Ev::Signal(name)).is_err() {
                    return;
                }
            }
        });
    }
    Ok(())
}

impl Run {
    fn emit(&self, event: RunEvent) {
        let _ = self.events.send(event);
    }

    fn pytest_args(&self) -> Vec<String> {
        // shardex owns retries: pytest-rerunfailures, if installed, must not retry too (the
        // plugin takes over its options, ini keys and marker).
        let mut args = plugin::launch_args(&plugin_dir(&self.rundir));
        args.extend(["-p".to_owned(), "no:rerunfailures".to_owned()]);
        args.extend(self.config.pytest_args.iter().cloned());
        args
    }

    async fn drive(&mut self, mut rx: UnboundedReceiver<Ev>) -> Result<(), AgentError> {
        match self.config.mode {
            WorkerMode::Fork => self.start_zygote()?,
            WorkerMode::Spawn => {
                for slot in 0..self.slots.len() {
                    self.spawn_worker(slot)?;
                }
            }
        }
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if self.is_done() {
                return Ok(());
            }
            tokio::select! {
                ev = rx.recv() => match ev {
                    Some(ev) => self.handle(ev)?,
                    None => return Ok(()),
                },
                _ = tick.tick() => self.on_tick(),
            }
        }
    }

    /// The final outcome of every test that ran (not retried attempts), for the zygote.
    fn final_outcomes(&self) -> ToPython {
        let (mut failed, mut passed) = (Vec::new(), Vec::new());
        let ran = |r: &&Arc<TestResult>| !r.will_retry && r.outcome != Outcome::NotRun;
        for result in self.results.iter().filter(ran) {
            if result.outcome.is_failure() {
                failed.push(result.id.clone());
            } else {
                passed.push(result.id.clone());
            }
        }
        ToPython::Results { failed, passed }
    }

    fn is_done(&mut self) -> bool {
        let Some(since) = self.stopping else {
            return false;
        };
        let workers_gone = self.slots.iter().all(|s| !s.alive);
        if workers_gone {
            // Only now: the zygote reports its workers' exits, so it goes last. (`tx` is
            // taken: the outcomes are built once, not on every later loop.)
            let tx = self
                .zygote
                .as_mut()
                .filter(|z| !z.exited)
                .and_then(|z| z.tx.take());
            if let Some(tx) = tx {
                let _ = tx.send(self.final_outcomes());
                let _ = tx.send(ToPython::Exit);
            }
        }
        let all_gone = workers_gone
            && self
                .zygote
                .as_ref()
                .is_none_or(|z| z.exited && z.disconnected);
        all_gone || since.elapsed() > self.config.kill_grace * 2 + Duration::from_secs(1)
    }

    fn start_zygote(&mut self) -> Result<(), AgentError> {
        let mut env = self.env.clone();
        env.push((plugin::ENV_MODE.to_owned(), "zygote".to_owned()));
        let args = self.pytest_args();
        let mut child = spawn_python(SpawnSpec {
            python: &self.config.python,
            args: &args,
            cwd: &self.config.cwd,
            env: &env,
            stderr: StderrTo::Pipe,
        })
        .map_err(|source| AgentError::Spawn {
            python: self.config.python.clone(),
            source,
        })?;
        let pid = child.id().unwrap_or(0);
        if let Some(stderr) = child.stderr.take() {
            let tail = self.zygote_stderr.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    let mut tail = tail.lock().expect("stderr tail lock");
                    tail.push_back(line);
                    if tail.len() > STDERR_TAIL_LINES * 4 {
                        tail.pop_front();
                    }
                }
            });
        }
        self.zygote = Some(Zygote {
            child: Some(child),
            pid,
            tx: None,
            exited: false,
            disconnected: false,
        });
        self.watch_zygote();
        Ok(())
    }

    fn watch_zygote(&mut self) {
        let Some(child) = self.zygote.as_mut().and_then(|z| z.child.take()) else {
            return;
        };
        let tx = self.tx.clone();
        tokio::spawn(wait_child(child, ProcOwner::Zygote, tx));
    }

    fn spawn_worker(&mut self, slot: usize) -> Result<(), AgentError> {
        let name = WorkerId(slot).to_string();
        let mut env = self.env.clone();
        env.push((plugin::ENV_MODE.to_owned(), "worker".to_owned()));
        env.push(("PYTEST_XDIST_WORKER".to_owned(), name.clone()));
        let stderr = std::fs::File::create(self.rundir.stderr_file(&name))?;
        let args = self.pytest_args();
        let child = spawn_python(SpawnSpec {
            python: &self.config.python,
            args: &args,
            cwd: &self.config.cwd,
            env: &env,
            stderr: StderrTo::File(stderr),
        })
        .map_err(|source| AgentError::Spawn {
            python: self.config.python.clone(),
            source,
        })?;
        let state = &mut self.slots[slot];
        state.generation += 1;
        state.pid = child.id();
        state.alive = true;
        state.collected = false;
        let owner = ProcOwner::Spawned {
            slot,
            generation: state.generation,
        };
        tokio::spawn(wait_child(child, owner, self.tx.clone()));
        Ok(())
    }

    fn handle(&mut self, ev: Ev) -> Result<(), AgentError> {
        match ev {
            Ev::Conn(ConnEvent::Opened {
                conn,
                role,
                slot,
                pid,
                tx,
            }) => self.on_open(conn, role, slot, pid, tx),
            Ev::Conn(ConnEvent::Message { conn, msg }) => self.on_message(conn, *msg)?,
            Ev::Conn(ConnEvent::Closed { conn }) => match self.conns.remove(&conn) {
                Some(ConnPeer::Worker(slot)) => {
                    let state = &mut self.slots[slot];
                    if state.conn == Some(conn) {
                        state.tx = None;
                        state.conn = None;
                    }
                }
                Some(ConnPeer::Zygote) => {
                    if let Some(z) = self.zygote.as_mut() {
                        z.disconnected = true;
                    }
                }
                None => {}
            },
            Ev::Conn(ConnEvent::Invalid { conn, reason }) => {
                return Err(AgentError::Protocol {
                    peer: format!("connection {conn}"),
                    reason,
                });
            }
            Ev::ProcessExited {
                owner,
                code,
                signal,
            } => self.on_process_exit(owner, code, signal)?,
            Ev::Signal(name) => self.on_signal(name),
        }
        Ok(())
    }

    fn on_open(
        &mut self,
        conn: ConnId,
        role: Role,
        slot: Option<String>,
        pid: u32,
        tx: UnboundedSender<ToPython>,
    ) {
        // The first message on every connection: the Python side waits for it.
        let _ = tx.send(ToPython::Configure(run_settings(
            &self.config,
            &self.rundir,
        )));
        match role {
            Role::Zygote => {
                self.conns.insert(conn, ConnPeer::Zygote);
                if let Some(z) = self.zygote.as_mut() {
                    z.tx = Some(tx);
                }
            }
            Role::Worker => {
                let Some(index) = slot
                    .as_deref()
                    .and_then(|s| s.parse::<WorkerId>().ok())
                    .map(|w| w.0)
                else {
                    return;
                };
                let Some(state) = self.slots.get_mut(index) else {
                    return;
                };
                self.conns.insert(conn, ConnPeer::Worker(index));
                state.tx = Some(tx);
                state.conn = Some(conn);
                state.received = 0;
                state.pid = Some(pid);
                state.alive = true;
                state.flushed = false;
                if self.config.mode == WorkerMode::Fork {
                    self.fill(index);
                }
            }
        }
    }

    fn on_message(&mut self, conn: ConnId, msg: FromPython) -> Result<(), AgentError> {
        let peer = self.conns.get(&conn).copied();
        match msg {
            FromPython::Hello { .. } => {}
            FromPython::Session(info) => {
                if self.session.is_none() {
                    self.emit(RunEvent::SessionStarted(info.clone()));
                    if info.rerunfailures_installed && info.verbosity > 0 {
                        self.emit(RunEvent::Note(
                            "pytest-rerunfailures is installed: shardex runs the retries itself \
                             (the plugin is disabled with -p no:rerunfailures; its flags, ini keys \
                             and flaky marker are honoured)"
                                .into(),
                        ));
                    }
                    self.session = Some(info);
                }
            }
            FromPython::CollectReport(problem) => {
                if self.is_collecting(peer) {
                    self.collecting
                        .entry(conn)
                        .or_default()
                        .problems
                        .push(problem);
                }
            }
            FromPython::Collected(collection) => {
                // The first collection to arrive is the reference; what its process
                // reported while collecting counts once. Others (--spawn) only compare.
                let pending = self.collecting.remove(&conn).unwrap_or_default();
                if self.collection.is_none() {
                    for problem in pending.problems {
                        self.on_collect_problem(problem);
                    }
                    for warning in pending.warnings {
                        self.emit(RunEvent::Warning(warning.clone()));
                        self.summary.warnings.push(warning);
                    }
                }
                self.on_collected(peer, collection)?
            }
            FromPython::Forked { slot, pid } => {
                if let Ok(WorkerId(index)) = slot.parse::<WorkerId>() {
                    if let Some(state) = self.slots.get_mut(index) {
                        state.pid = Some(pid);
                        state.alive = true;
                    }
                }
            }
            FromPython::Exited {
                slot,
                pid,
                code,
                signal,
            } => {
                if let Ok(WorkerId(index)) = slot.parse::<WorkerId>() {
                    if self.slots.get(index).is_some_and(|s| s.pid == Some(pid)) {
                        self.on_worker_death(index, code, signal);
                    }
                }
            }
            FromPython::Done(done) => {
                if let Some(ConnPeer::Worker(slot)) = peer {
                    self.slots[slot].received += 1;
                    self.on_done(slot, done);
                }
            }
            FromPython::Warning(warning) => {
                if self.is_collecting(peer) {
                    self.collecting
                        .entry(conn)
                        .or_default()
                        .warnings
                        .push(warning);
                } else {
                    self.emit(RunEvent::Warning(warning.clone()));
                    self.summary.warnings.push(warning);
                }
            }
            FromPython::PluginSummary { text, failure } => {
                self.summary.plugin_summary.push_str(&text);
                if failure.is_some() {
                    self.summary.plugin_failure = failure;
                }
            }
            FromPython::Fatal { message } => {
                self.summary.internal_error.get_or_insert(message);
                self.stop("internal error");
            }
        }
        Ok(())
    }

    /// Whether `peer` has not sent its collection yet.
    fn is_collecting(&self, peer: Option<ConnPeer>) -> bool {
        match peer {
            Some(ConnPeer::Zygote) | None => self.collection.is_none(),
            Some(ConnPeer::Worker(slot)) => {
                self.config.mode == WorkerMode::Spawn && !self.slots[slot].collected
            }
        }
    }

    fn on_collect_problem(&mut self, problem: CollectProblem) {
        self.junit_collect.push(problem.junit.clone());
        self.emit(RunEvent::CollectProblem(problem.clone()));
        self.summary.collect_problems.push(problem);
    }

    fn on_collected(
        &mut self,
        peer: Option<ConnPeer>,
        collection: Collection,
    ) -> Result<(), AgentError> {
        if let Some(reference) = &self.collection {
            // A spawn-mode worker collected for itself: it must see the same tests.
            if let Some(ConnPeer::Worker(slot)) = peer {
                let ours: HashSet<&TestId> = reference.items.iter().map(|i| &i.id).collect();
                let theirs: HashSet<&TestId> = collection.items.iter().map(|i| &i.id).collect();
                if ours != theirs {
                    return Err(AgentError::CollectionMismatch {
                        diff: collection_diff(&ours, &theirs, slot),
                    });
                }
                self.slots[slot].collected = true;
                self.fill(slot);
            }
            return Ok(());
        }
        let interrupted = collection.errors > 0
            && !self
                .session
                .as_ref()
                .is_some_and(|s| s.continue_on_collection_errors);
        self.load_timing_store();
        let suite_cap = self
            .config
            .retry
            .max_suite_reruns
            .or_else(|| self.session.as_ref().and_then(|s| s.max_suite_reruns));
        self.retry_book = RetryBook::new(suite_cap);
        self.summary.collected = collection.items.len();
        self.summary.deselected = collection.deselected;
        let ids: Vec<TestId> = collection.items.iter().map(|i| i.id.clone()).collect();
        let estimates = self.timings.estimates(&ids);
        let tests: Vec<SchedTest> = collection
            .items
            .iter()
            .zip(&estimates)
            .map(|(item, &estimate)| SchedTest {
                id: item.id.clone(),
                estimate,
                group: item.group.clone(),
            })
            .collect();
        let workers = self.slots.len().min(tests.len()).max(1);
        self.emit(RunEvent::Collected {
            total: tests.len(),
            deselected: collection.deselected,
            report_lines: collection.report_lines.clone(),
            workers,
            estimated_total: estimates.iter().sum(),
        });
        self.summary.workers = workers;
        for (index, item) in collection.items.iter().enumerate() {
            self.order.insert(item.id.clone(), index);
            self.items.insert(item.id.clone(), item.clone());
        }
        self.estimates = ids.into_iter().zip(estimates).collect();
        let unknown: Vec<bool> = tests
            .iter()
            .map(|t| self.timings.get(&t.id).is_none())
            .collect();
        self.unsettled_files = tests
            .iter()
            .zip(&unknown)
            .filter(|(_, &u)| u)
            .map(|(t, _)| t.id.file().to_owned())
            .collect();
        self.scheduler = Some(Scheduler::with_unknown(
            tests,
            workers,
            self.config.dist,
            &unknown,
        ));
        // Fewer tests than workers: the extra slots are never started (or are sent away).
        for slot in workers..self.slots.len() {
            self.slots[slot].disabled = true;
            if let Some(tx) = &self.slots[slot].tx {
                let _ = tx.send(ToPython::Exit);
            }
        }
        let nothing_to_run = interrupted
            || self.summary.collected == 0
            || self.session.as_ref().is_some_and(|s| s.collectonly);
        self.collection = Some(collection);
        if nothing_to_run {
            self.finished_dispatch = true;
            self.stop_gracefully();
            return Ok(());
        }
        match self.config.mode {
            WorkerMode::Fork => {
                for slot in 0..workers {
                    self.fork(slot);
                }
            }
            WorkerMode::Spawn => {
                if let Some(ConnPeer::Worker(slot)) = peer {
                    self.slots[slot].collected = true;
                    self.fill(slot);
                }
            }
        }
        Ok(())
    }

    fn fork(&mut self, slot: usize) {
        let Some(tx) = self.zygote.as_ref().and_then(|z| z.tx.clone()) else {
            return;
        };
        let state = &mut self.slots[slot];
        state.generation += 1;
        state.alive = true;
        state.pid = None;
        let _ = tx.send(ToPython::Fork {
            slot: WorkerId(slot).to_string(),
        });
    }

    /// Keeps the worker's queue topped up from the scheduler.
    fn fill(&mut self, slot: usize) {
        if self.dispatch_stopped() || self.finished_dispatch {
            return;
        }
        let workers = self.slots.len().max(1);
        let Some(scheduler) = self.scheduler.as_mut() else {
            return;
        };
        let state = &mut self.slots[slot];
        if !state.ready() || (self.config.mode == WorkerMode::Spawn && !state.collected) {
            return;
        }
        let mut batch = Vec::new();
        let mut slow = Vec::new();
        // The worker starts a test only once it knows the test after it (its nextitem), so
        // one must be queued behind the running test. Short tests get more, sent in one
        // message, so the worker never waits for a round trip and messages stay few.
        let have = |state: &Slot| state.queued.len() + usize::from(state.running.is_some());
        // With half the maximum queued nothing is needed, whatever the estimates: the common
        // case, without the sums below.
        let enough = have(state) >= 2 && have(state) >= MAX_PREFETCH / 2;
        if !enough {
            let mut prefetched: f64 = state
                .queued
                .iter()
                .map(|id| self.estimates.get(id).copied().unwrap_or(0.0))
                .sum();
            let mut risky_in_flight = state
                .running
                .iter()
                .map(|r| &r.id)
                .chain(&state.queued)
                .any(|id| self.risky.contains(id));
            // Near the end less is sent ahead: a prefetched test can no longer be stolen.
            let budget = PREFETCH_SECS.min(scheduler.remaining_estimate() / (4 * workers) as f64);
            let refill = have(state) < 2 || prefetched < budget / 2.0;
            while refill && (have(state) < 2 || (have(state) < MAX_PREFETCH && prefetched < budget))
            {
                // Rather a second risky test than none: with nothing queued the worker would
                // have to run its test with nextitem=None, tearing down session fixtures.
                let next = scheduler
                    .next_for_opts(WorkerId(slot), !risky_in_flight)
                    .or_else(|| {
                        risky_in_flight
                            .then(|| scheduler.next_for_opts(WorkerId(slot), true))
                            .flatten()
                    });
                tracing::debug!(slot, risky_in_flight, have = have(state), next = ?next, "fill");
                match next {
                    Some(Dispatch {
                        id,
                        risky,
                        estimate,
                    }) => {
                        if risky {
                            self.risky.insert(id.clone());
                            risky_in_flight = true;
                        }
                        // The scheduler's estimate may be newer (see `settle_unknown`).
                        prefetched += estimate;
                        if let Some(known) = self.estimates.get_mut(&id) {
                            *known = estimate;
                        }
                        if risky || estimate >= SLOW_SECS {
                            slow.push(batch.len() as u32);
                        }
                        state.queued.push_back(id.clone());
                        batch.push(id);
                    }
                    None => break,
                }
            }
        }
        let Some(tx) = state.tx.clone() else { return };
        if !batch.is_empty() {
            state.flushed = false;
            let _ = tx.send(ToPython::Run { ids: batch, slow });
            self.promote(slot);
        }
        let state = &mut self.slots[slot];
        let Some(scheduler) = self.scheduler.as_ref() else {
            return;
        };
        if !scheduler.has_work_for(WorkerId(slot)) && !state.flushed {
            // Nothing more for this worker now: its last queued test runs with nextitem=None.
            state.flushed = true;
            let _ = tx.send(ToPython::Flush);
        }
        self.check_all_done();
    }

    fn check_all_done(&mut self) {
        if self.finished_dispatch || self.stopping.is_some() {
            return;
        }
        let Some(scheduler) = &self.scheduler else {
            return;
        };
        if scheduler.remaining() > 0
            || self.slots.iter().any(Slot::busy)
            || !self.delayed.is_empty()
        {
            return;
        }
        self.finished_dispatch = true;
        self.stop_gracefully();
    }

    /// Every test has a result: ask the processes to exit, then wait for them.
    fn stop_gracefully(&mut self) {
        if self.config.mode == WorkerMode::Spawn {
            // No zygote: one worker records the outcomes in pytest's cache (`--lf`).
            let results = self.final_outcomes();
            if let Some(tx) = self.slots.iter().find_map(|s| s.tx.as_ref()) {
                let _ = tx.send(results);
            }
        }
        for state in &mut self.slots {
            if let Some(tx) = &state.tx {
                let _ = tx.send(ToPython::Exit);
                state.exit_sent = true;
            }
        }
        self.stopping = Some(Instant::now());
    }

    fn requeue(&mut self, slot: usize, ids: Vec<TestId>) {
        if ids.is_empty() {
            return;
        }
        let tests = ids
            .into_iter()
            .map(|id| SchedTest {
                estimate: self.estimates.get(&id).copied().unwrap_or(0.0),
                group: self.items.get(&id).and_then(|item| item.group.clone()),
                id,
            })
            .collect();
        if let Some(scheduler) = self.scheduler.as_mut() {
            scheduler.push_front(WorkerId(slot), tests);
        }
        self.finished_dispatch = false;
        for other in 0..self.slots.len() {
            self.fill(other);
        }
    }

    fn on_done(&mut self, slot: usize, done: TestDone) {
        let state = &mut self.slots[slot];
        if state.running.as_ref().is_some_and(|r| r.id == done.id) {
            state.running = None;
        } else if let Some(pos) = state.queued.iter().position(|q| q == &done.id) {
            state.queued.remove(pos);
        }
        state.consecutive_crashes = 0;
        if self.dispatch_stopped() {
            // The worker had already started its next test when the stop reached it: that
            // test ran after all.
            if let Some(pos) = self.summary.not_run.iter().position(|t| t == &done.id) {
                self.summary.not_run.swap_remove(pos);
            }
        }
        let outcome = Outcome::from_reports(&done.reports);
        let verdict = done.retry.as_ref().map(|v| (v.eligible, v.reruns, v.delay));
        self.finish_attempt(
            slot,
            Attempt {
                id: done.id,
                outcome,
                duration: done.duration,
                reports: done.reports,
                junit: done.junit,
            },
            verdict,
        );
        self.promote(slot);
        self.fill(slot);
        self.check_all_done();
    }

    /// One attempt of a test ended. A failure the retry rules allow goes back to the
    /// scheduler (its failed reports become pytest-rerunfailures' "rerun" reports);
    /// otherwise this is the test's final result, and a failure is a hard failure that
    /// counts toward `-x`/`--maxfail`.
    fn finish_attempt(&mut self, slot: usize, attempt: Attempt, verdict: Option<(bool, u32, f64)>) {
        let Attempt {
            id,
            outcome,
            duration,
            mut reports,
            junit,
        } = attempt;
        let failed = outcome.is_failure();
        let mut cancelled = false;
        let retry = match verdict {
            Some((eligible, reruns, delay)) if failed => {
                if self.dispatch_stopped() {
                    // The run is stopping: no retry starts, but a test with retries left
                    // did not fail for good: it is not run, not a hard failure.
                    cancelled = eligible && self.retry_book.attempts(&id) < reruns;
                    None
                } else {
                    self.retry_book
                        .grant(&id, eligible, reruns)
                        .then_some(delay)
                }
            }
            _ => None,
        };
        let will_retry = retry.is_some() || cancelled;
        let attempt_index = self.retry_book.attempts(&id) - u32::from(retry.is_some());
        if will_retry {
            for report in reports.iter_mut().filter(|r| r.outcome == "failed") {
                report.category = "rerun".into();
                report.letter = "R".into();
                report.word = "RERUN".into();
            }
            self.attempt_junit
                .entry(id.clone())
                .or_default()
                .push(junit);
            match retry {
                Some(delay) => self.schedule_retry(id.clone(), slot, delay),
                None => self.summary.not_run.push(id.clone()),
            }
        } else {
            let junit = match self.attempt_junit.remove(&id) {
                Some(mut parts) => {
                    parts.push(junit);
                    merge_attempts(&parts, !failed)
                }
                None => junit,
            };
            let index = self.order.get(&id).copied().unwrap_or(usize::MAX);
            self.junit_tests.push((index, junit));
            if matches!(outcome, Outcome::Crashed | Outcome::TimedOut) {
                // A crash's duration says nothing about the test's usual length.
            } else {
                self.timings.record(id.clone(), duration);
                self.settle_file(&id, duration);
            }
        }
        let result = TestResult {
            id,
            worker: WorkerId(slot),
            outcome,
            duration,
            reports,
            attempt: attempt_index,
            will_retry,
        };
        let result = Arc::new(result);
        self.emit(RunEvent::TestFinished(Arc::clone(&result)));
        self.results.push(result);
        if failed && !will_retry {
            self.hard_failures += 1;
            let maxfail = self.effective_maxfail();
            if maxfail > 0 && self.hard_failures >= maxfail {
                self.stop_early();
            }
        }
    }

    /// The first test of a file without recorded times that ends quickly settles the rest
    /// of that file: they are no longer handed out one at a time (see
    /// `Scheduler::settle_unknown`). Without this, a run with no timings (the first one)
    /// would send every test in its own round trip.
    fn settle_file(&mut self, id: &TestId, duration: f64) {
        if self.unsettled_files.is_empty() {
            return;
        }
        let Some(file) = self.unsettled_files.take(id.file()) else {
            return;
        };
        if duration < SETTLE_SECS {
            if let Some(scheduler) = self.scheduler.as_mut() {
                scheduler.settle_unknown(&file, duration);
            }
        }
    }

    fn effective_maxfail(&self) -> u32 {
        if self.config.maxfail > 0 {
            self.config.maxfail
        } else {
            self.session.as_ref().map_or(0, |s| s.maxfail)
        }
    }

    /// Dispatch is over: interrupted, or stopped early by -x/--maxfail.
    fn dispatch_stopped(&self) -> bool {
        self.stopping.is_some() || self.early_stop.is_some()
    }

    /// A retry goes near the front of the queue of another worker that is free (a fresh
    /// state), else of the one it failed on; after `delay` seconds if asked.
    fn schedule_retry(&mut self, id: TestId, failed_on: usize, delay: f64) {
        if delay > 0.0 {
            let due = Instant::now() + Duration::from_secs_f64(delay);
            self.delayed.push((due, id, failed_on));
            return;
        }
        let idle_other = (0..self.slots.len())
            .find(|&s| s != failed_on && self.slots[s].ready() && !self.slots[s].busy());
        let target = idle_other.unwrap_or(failed_on);
        let estimate = self.estimates.get(&id).copied().unwrap_or(0.0);
        if let Some(scheduler) = self.scheduler.as_mut() {
            scheduler.push_next(
                WorkerId(target),
                SchedTest {
                    id,
                    estimate,
                    group: None,
                },
            );
        }
        self.finished_dispatch = false;
        self.fill(target);
        for other in 0..self.slots.len() {
            self.fill(other);
        }
    }

    /// `-x`/`--maxfail` reached: nothing new starts anywhere; running tests may finish
    /// within `--stop-grace`, then their workers are stopped and those tests count as not
    /// run (pytest's `-x` exits 1, not 2).
    fn stop_early(&mut self) {
        if self.dispatch_stopped() {
            return;
        }
        self.summary.stopped = Some(format!("stopping after {} failures", self.hard_failures));
        if let Some(scheduler) = self.scheduler.as_mut() {
            self.summary.not_run.extend(scheduler.drain());
        }
        self.summary
            .not_run
            .extend(self.delayed.drain(..).map(|(_, id, _)| id));
        for state in &mut self.slots {
            self.summary.not_run.extend(state.queued.drain(..));
            if let Some(tx) = &state.tx {
                // The worker ends the test it runs, starts nothing else, and exits.
                let _ = tx.send(ToPython::Exit);
                state.exit_sent = true;
            }
        }
        self.early_stop = Some(Instant::now());
        self.check_all_done();
    }

    /// The worker runs its queue in order: when nothing runs, the head of what was sent is
    /// running from now on (its timeout counts from here).
    fn promote(&mut self, slot: usize) {
        let state = &self.slots[slot];
        if state.running.is_some() || !state.alive || state.tx.is_none() {
            return;
        }
        self.start_next(slot);
    }

    /// The head of what was sent to `slot` is running from now on.
    fn start_next(&mut self, slot: usize) {
        if let Some(id) = self.slots[slot].queued.pop_front() {
            self.slots[slot].running = Some(Running {
                id: id.clone(),
                started: Instant::now(),
            });
            self.emit(RunEvent::TestStarted {
                id,
                worker: WorkerId(slot),
            });
        }
    }

    /// A dead worker's results that did not reach us (held back to be sent together, or
    /// still unread in its socket) are in its spool file: take them as if they had arrived,
    /// so that the test it died in is the one after them. Call once the slot is marked dead.
    fn recover_spooled(&mut self, slot: usize) {
        let name = WorkerId(slot).to_string();
        let received = std::mem::take(&mut self.slots[slot].received);
        let path = self.rundir.results_file(&name);
        let Ok(text) = std::fs::read_to_string(&path) else {
            return;
        };
        // Removed, so a replacement that dies before it opens its own is not read twice.
        let _ = std::fs::remove_file(&path);
        let unseen: Vec<TestDone> = text
            .lines()
            .skip(received)
            .filter_map(|line| serde_json::from_str::<TestDone>(line).ok())
            .map(TestDone::expand)
            .collect();
        if unseen.is_empty() {
            return;
        }
        for done in unseen {
            self.on_done(slot, done);
        }
        // A worker runs its tests in order: it was in the one after its last result.
        if self.slots[slot].running.is_none() {
            self.start_next(slot);
        }
    }

    fn on_worker_death(&mut self, slot: usize, code: Option<i32>, signal: Option<i32>) {
        {
            let state = &mut self.slots[slot];
            state.alive = false;
            state.tx = None;
            state.pid = None;
            // Whatever its connection still delivers is ignored: the spool has it all.
            if let Some(conn) = state.conn.take() {
                self.conns.remove(&conn);
            }
        }
        self.recover_spooled(slot);
        let name = WorkerId(slot).to_string();
        let kill = self.slots[slot].kill.take();
        let running = self.slots[slot].running.take();
        let queued: Vec<TestId> = self.slots[slot].queued.drain(..).collect();
        let exit_sent = std::mem::take(&mut self.slots[slot].exit_sent);
        // Told to exit, the worker ends the test it runs (its result arrives on its own
        // connection) or exits before starting the one we counted as running.
        let stopped_by_us = matches!(kill, Some((KillReason::Shutdown, _, _)))
            || (exit_sent && code == Some(0) && signal.is_none());
        if let Some(running) = running.as_ref().filter(|_| stopped_by_us) {
            // Stopped after -x/--maxfail's grace, or by a signal: not a result of the test.
            self.summary.not_run.push(running.id.clone());
        } else if let Some(running) = running {
            let elapsed = running.started.elapsed().as_secs_f64();
            let (outcome, message) = match kill {
                Some((KillReason::Timeout, _, _)) => (
                    Outcome::TimedOut,
                    format!(
                        "Timeout: {} ran longer than --timeout {}s; worker {name}'s process group was killed",
                        running.id,
                        self.config.timeout.map(|t| t.as_secs_f64()).unwrap_or_default()
                    ),
                ),
                _ => (
                    Outcome::Crashed,
                    format!("WorkerCrashed: worker {name} {} while running {}", describe_exit(code, signal), running.id),
                ),
            };
            let tail = self.crash_output(&name);
            self.record_synthetic(slot, running.id, outcome, message, tail, elapsed);
            if outcome == Outcome::Crashed {
                self.slots[slot].consecutive_crashes += 1;
            }
        } else if !self.dispatch_stopped() {
            self.slots[slot].consecutive_crashes += 1;
        }
        if self.dispatch_stopped() {
            self.summary.not_run.extend(queued);
            self.check_all_done();
            return;
        }
        if let Some(scheduler) = self.scheduler.as_mut() {
            // A scope this worker had started may now go to another worker.
            scheduler.release(WorkerId(slot));
        }
        if self.slots[slot].consecutive_crashes >= MAX_CONSECUTIVE_CRASHES {
            self.slots[slot].disabled = true;
            self.emit(RunEvent::Note(format!(
                "worker {name} crashed {MAX_CONSECUTIVE_CRASHES} times in a row; not restarting it"
            )));
        }
        self.requeue(slot, queued);
        let work_left = self.scheduler.as_ref().is_some_and(|s| s.remaining() > 0);
        if !self.slots[slot].disabled && work_left {
            self.emit(RunEvent::Note(format!("replacing worker {name}")));
            match self.config.mode {
                WorkerMode::Fork => self.fork(slot),
                WorkerMode::Spawn => {
                    if let Err(err) = self.spawn_worker(slot) {
                        self.emit(RunEvent::Note(format!(
                            "cannot restart worker {name}: {err}"
                        )));
                        self.slots[slot].disabled = true;
                    }
                }
            }
        }
        if work_left && self.slots.iter().all(|s| s.disabled) {
            self.summary
                .internal_error
                .get_or_insert_with(|| "every worker crashed repeatedly; giving up".into());
            self.stop("no workers left");
        }
        self.check_all_done();
    }

    fn record_synthetic(
        &mut self,
        slot: usize,
        id: TestId,
        outcome: Outcome,
        message: String,
        tail: String,
        elapsed: f64,
    ) {
        let item = self.items.get(&id);
        let file = item
            .map(|i| i.file.clone())
            .unwrap_or_else(|| id.file().to_owned());
        let line = item.and_then(|i| i.line);
        let text = if tail.is_empty() {
            message.clone()
        } else {
            format!("{message}\n\n{tail}")
        };
        let junit = SyntheticCase {
            nodeid: id.as_str(),
            file: &file,
            line,
            time: elapsed,
            element: "failure",
            message: &message,
            text: &text,
        }
        .to_part();
        let report = PhaseReport {
            when: "call".into(),
            outcome: "failed".into(),
            category: "failed".into(),
            letter: "F".into(),
            word: "FAILED".into(),
            duration: elapsed,
            longrepr: Some(format!("{text}\n")),
            // The reporter derives pytest's head line from the nodeid.
            head_line: None,
            crash_message: Some(message.clone()),
            crash_line: Some(format!("{file}: {message}")),
            skip: None,
            wasxfail: None,
        };
        // No Python exception to judge: the agent applies the same rules to the text.
        let rules = item
            .and_then(|i| i.retry.clone())
            .or_else(|| self.session.as_ref().map(|s| s.retry.clone()))
            .unwrap_or_default();
        let eligible = rules.synthetic_failure_is_retryable(&message);
        self.finish_attempt(
            slot,
            Attempt {
                id,
                outcome,
                duration: elapsed,
                reports: vec![report],
                junit,
            },
            Some((eligible, rules.reruns, rules.delay)),
        );
    }

    /// What a dead worker left: the test's captured output so far (pytest's capture files,
    /// which the plugin puts in the run folder) and the tail of the worker's own stderr
    /// (faulthandler's traceback on a segfault).
    fn crash_output(&self, slot: &str) -> String {
        let mut sections = Vec::new();
        for (index, stream) in [(0, "stdout"), (1, "stderr")] {
            let path = self.rundir.path.join(format!("{slot}.capture{index}"));
            let text = std::fs::read(&path)
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default();
            if !text.trim().is_empty() {
                sections.push(format!(
                    "----- captured {stream} before the worker died -----\n{}",
                    text.trim_end()
                ));
            }
        }
        let tail = stderr_tail(&self.rundir.stderr_file(slot));
        if !tail.trim().is_empty() {
            sections.push(format!(
                "----- worker {slot} stderr (last lines) -----\n{tail}"
            ));
        }
        sections.join("\n")
    }

    fn on_process_exit(
        &mut self,
        owner: ProcOwner,
        code: Option<i32>,
        signal: Option<i32>,
    ) -> Result<(), AgentError> {
        match owner {
            ProcOwner::Zygote => {
                if let Some(z) = self.zygote.as_mut() {
                    z.exited = true;
                    z.tx = None;
                }
                if self.collection.is_none() && self.stopping.is_none() {
                    let tail: Vec<String> = self
                        .zygote_stderr
                        .lock()
                        .expect("stderr tail lock")
                        .iter()
                        .cloned()
                        .collect();
                    return Err(AgentError::EarlyExit {
                        code,
                        status: describe_exit(code, signal),
                        stderr_tail: tail.join("\n"),
                    });
                }
                if self.stopping.is_none() {
                    // Without the zygote no worker can be replaced; finish what is running.
                    self.summary.internal_error.get_or_insert_with(|| {
                        format!("the pytest zygote process {}", describe_exit(code, signal))
                    });
                    self.stop("zygote died");
                }
            }
            ProcOwner::Spawned { slot, generation } => {
                if self.slots[slot].generation != generation {
                    return Ok(());
                }
                if self.collection.is_none() && self.stopping.is_none() {
                    let tail = stderr_tail(&self.rundir.stderr_file(&WorkerId(slot).to_string()));
                    return Err(AgentError::EarlyExit {
                        code,
                        status: describe_exit(code, signal),
                        stderr_tail: tail,
                    });
                }
                self.on_worker_death(slot, code, signal);
            }
        }
        Ok(())
    }

    fn on_signal(&mut self, name: &'static str) {
        if self.stopping.is_some() {
            // Second signal: no more grace.
            self.kill_all(Signal::SIGKILL);
            self.stopping = Some(Instant::now() - self.config.kill_grace * 3);
            return;
        }
        self.summary.interrupted = Some(name.to_owned());
        self.stop(name);
    }

    /// Stops dispatch at once; what never ran is recorded as not run; running tests' groups
    /// get SIGTERM now and SIGKILL after the grace.
    fn stop(&mut self, _why: &str) {
        if self.stopping.is_some() {
            return;
        }
        if let Some(scheduler) = self.scheduler.as_mut() {
            self.summary.not_run.extend(scheduler.drain());
        }
        let now = Instant::now();
        for state in &mut self.slots {
            self.summary.not_run.extend(state.queued.drain(..));
            if let Some(running) = state.running.take() {
                self.summary.not_run.push(running.id);
            }
            if let Some(pid) = state.pid.filter(|_| state.alive) {
                signal_group(pid, Signal::SIGTERM);
                state.kill = Some((KillReason::Shutdown, now, false));
            }
        }
        self.stopping = Some(now);
    }

    fn kill_all(&mut self, sig: Signal) {
        for state in &self.slots {
            if let Some(pid) = state.pid.filter(|_| state.alive) {
                signal_group(pid, sig);
            }
        }
        if let Some(z) = &self.zygote {
            if !z.exited {
                signal_group(z.pid, sig);
            }
        }
    }

    fn on_tick(&mut self) {
        let now = Instant::now();
        let grace = self.config.kill_grace;
        if self.delayed.iter().any(|(due, _, _)| *due <= now) && !self.dispatch_stopped() {
            let (due, waiting): (Vec<_>, Vec<_>) =
                self.delayed.drain(..).partition(|(due, _, _)| *due <= now);
            self.delayed = waiting;
            for (_, id, failed_on) in due {
                self.schedule_retry(id, failed_on, 0.0);
            }
        }
        if let Some(since) = self.early_stop.filter(|_| self.stopping.is_none()) {
            if now.duration_since(since) > self.config.stop_grace {
                // The grace is over: stop whatever still runs (reported as not run).
                for state in &mut self.slots {
                    if let (Some(pid), true, None) = (state.pid, state.alive, state.kill) {
                        signal_group(pid, Signal::SIGTERM);
                        state.kill = Some((KillReason::Shutdown, now, false));
                    }
                }
            }
        }
        if let Some(timeout) = self.config.timeout {
            for state in &mut self.slots {
                let overdue = state
                    .running
                    .as_ref()
                    .is_some_and(|r| now.duration_since(r.started) > timeout);
                if overdue && state.kill.is_none() {
                    if let Some(pid) = state.pid {
                        signal_group(pid, Signal::SIGTERM);
                        state.kill = Some((KillReason::Timeout, now, false));
                    }
                }
            }
        }
        for state in &mut self.slots {
            if let Some((reason, since, false)) = state.kill {
                if now.duration_since(since) > grace {
                    if let Some(pid) = state.pid {
                        signal_group(pid, Signal::SIGKILL);
                    }
                    state.kill = Some((reason, since, true));
                }
            }
        }
        if let Some(since) = self.stopping {
            if now.duration_since(since) > grace {
                for state in &self.slots {
                    if let Some(pid) = state.pid.filter(|_| state.alive) {
                        signal_group(pid, Signal::SIGKILL);
                    }
                }
            }
            if now.duration_since(since) > grace * 2 {
                self.kill_all(Signal::SIGKILL);
            }
        }
    }

    /// Last resort at the end of a run: no process of ours may survive it.
    async fn kill_everything(&mut self) {
        self.kill_all(Signal::SIGKILL);
        // Let the exit watchers reap what was just killed.
        tokio::task::yield_now().await;
    }

    fn finish(mut self) -> Result<RunSummary, AgentError> {
        let maxfail = self.effective_maxfail();
        self.summary.fail_on_flaky = self.config.retry.fail_on_flaky
            || self.session.as_ref().is_some_and(|s| s.fail_on_flaky);
        // By now the reporter has nearly always dropped its references: no copy.
        self.summary.results = self
            .results
            .drain(..)
            .map(|r| Arc::try_unwrap(r).unwrap_or_else(|shared| (*shared).clone()))
            .collect();
        self.summary.session = self.session.clone();
        if let Some(session) = self.summary.session.as_mut() {
            session.maxfail = maxfail;
        }
        // A test whose retry never ran (the run stopped first) has no final result: like
        // every test the stop left unrun it is counted as not run, and it gets no testcase
        // (its failed attempts show as reruns in the terminal).
        self.attempt_junit.clear();
        // Deterministic output: results in collection order, not completion order.
        let order = &self.order;
        self.summary
            .results
            .sort_by_cached_key(|r| order.get(&r.id).copied().unwrap_or(usize::MAX));
        self.summary.wall = self.started.elapsed();
        if let Some(path) = self.config.junitxml.clone() {
            self.write_junit(&path)?;
        }
        self.save_timings();
        Ok(self.summary)
    }

    fn write_junit(&mut self, path: &PathBuf) -> Result<(), AgentError> {
        let session = self.session.clone().unwrap_or_default();
        self.junit_tests.sort_by_key(|(index, _)| *index);
        let mut cases = std::mem::take(&mut self.junit_collect);
        cases.extend(self.junit_tests.drain(..).map(|(_, part)| part));
        let report = JunitReport {
            suite: SuiteInfo {
                name: if session.suite_name.is_empty() {
                    "pytest".into()
                } else {
                    session.suite_name
                },
                hostname: session.hostname,
                timestamp: session.timestamp,
                time: self.summary.wall.as_secs_f64(),
            },
            cases,
        };
        let write = || -> std::io::Result<()> {
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent)?;
            }
            let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
            report.write_to(&mut out)?;
            std::io::Write::flush(&mut out)
        };
        write().map_err(|source| AgentError::Report {
            path: path.clone(),
            source,
        })
    }

    fn save_timings(&mut self) {
        let Some(path) = self.timing_store_path() else {
            return;
        };
        let mut store = TimingStore::load_store(&path).unwrap_or_default();
        for result in &self.summary.results {
            if let Some(secs) = self.timings.get(&result.id) {
                store.record(result.id.clone(), secs);
            }
        }
        if let Err(err) = store.save_store(&path) {
            tracing::warn!("cannot save timings to {}: {err}", path.display());
        }
    }

    /// Previous runs' timings (known once pytest told us its rootdir) under the `--timings`
    /// sources, which the user named and so win where both know a test.
    fn load_timing_store(&mut self) {
        let Some(path) = self.timing_store_path() else {
            return;
        };
        match TimingStore::load_store(&path) {
            Ok(mut store) => {
                store.merge(std::mem::take(&mut self.timings));
                self.timings = store;
            }
            Err(err) => self.emit(RunEvent::Note(format!(
                "ignoring the timings of previous runs: {err} (delete the file to start afresh)"
            ))),
        }
    }

    fn timing_store_path(&self) -> Option<PathBuf> {
        if self.config.no_timing_store {
            return None;
        }
        if let Some(path) = &self.config.timing_store {
            return Some(path.clone());
        }
        let rootdir = self.session.as_ref().map(|s| PathBuf::from(&s.rootdir))?;
        Some(rootdir.join(".shardex").join("timings.json"))
    }
}

async fn wait_child(mut child: Child, owner: ProcOwner, tx: UnboundedSender<Ev>) {
    use std::os::unix::process::ExitStatusExt;
    let (code, signal) = match child.wait().await {
        Ok(status) => (status.code(), status.signal()),
        Err(_) => (None, None),
    };
    let _ = tx.send(Ev::ProcessExited {
        owner,
        code,
        signal,
    });
}

fn describe_exit(code: Option<i32>, signal: Option<i32>) -> String {
    match (code, signal) {
        (_, Some(sig)) => format!("was killed by signal {sig} ({})", signal_name(sig)),
        (Some(code), None) => format!("exited (exit code {code})"),
        (None, None) => "ended".to_owned(),
    }
}

fn stderr_tail(path: &std::path::Path) -> String {
    let Ok(text) = std::fs::read_to_string(path) else {
        return String::new();
    };
    // faulthandler's report starts with this line; keep it whole (up to a cap).
    let fatal = text.rfind("Fatal Python error");
    let lines: Vec<&str> = text[fatal.unwrap_or(0)..].lines().collect();
    let limit = if fatal.is_some() {
        STDERR_TAIL_LINES * 5
    } else {
        STDERR_TAIL_LINES
    };
    lines[lines.len().saturating_sub(limit)..].join("\n")
}

fn collection_diff(reference: &HashSet<&TestId>, theirs: &HashSet<&TestId>, slot: usize) -> String {
    let mut only_ref: Vec<_> = reference
        .difference(theirs)
        .map(|id| format!("- {id}"))
        .collect();
    let mut only_theirs: Vec<_> = theirs
        .difference(reference)
        .map(|id| format!("+ {id}"))
        .collect();
    only_ref.sort();
    only_theirs.sort();
    let mut lines = vec![format!("--- first worker\n+++ gw{slot}")];
    lines.extend(only_ref.into_iter().take(20));
    lines.extend(only_theirs.into_iter().take(20));
    lines.join("\n")
}
