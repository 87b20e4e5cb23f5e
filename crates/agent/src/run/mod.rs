//! One run: borrow a pool, collect, hand tests out through a work queue, gather results,
//! write the report.
//!
//! `Run` owns the run's state and changes it only in its loop (`driver.rs`): one `select!`
//! over pool events, queue events, signals and the next deadline. The rooms:
//! `collect.rs` (collection, building the queue), `dispatch.rs` (sending tests to workers),
//! `attempts.rs` (results, retries, early stop), `faults.rs` (dead workers, signals),
//! `finish.rs` (summary, JUnit, timing store).

mod attempts;
mod collect;
mod dispatch;
mod driver;
mod faults;
mod finish;
mod options;
mod state;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use shardex_core::attempts::AttemptLedger;
use shardex_core::protocol::JunitPart;
use shardex_core::protocol::{Collection, ItemInfo, RunSettings, SessionInfo, SETTINGS_VERSION};
use shardex_core::timing::TimingStore;
use shardex_core::TestId;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tokio::time::Instant;

use crate::config::RunConfig;
use crate::pool::{LaunchSpec, Launcher, Peer, Pool, PoolSpec, ProcessLauncher};
use crate::queue::WorkQueue;
use crate::signal::{watch_signals, Interrupt};
use crate::{AgentError, RunEvent, RunSummary, TestResult};
use state::{Ending, Lane, Phase};

/// Runs the tests described by `config`, sending progress to `events`. Returns when every
/// test has a result, the run was interrupted (SIGINT/SIGTERM), or pytest failed to start.
pub async fn execute(
    config: RunConfig,
    events: UnboundedSender<RunEvent>,
) -> Result<RunSummary, AgentError> {
    let signals = watch_signals().map_err(|source| AgentError::Io {
        doing: "installing the SIGINT/SIGTERM handlers".into(),
        source,
    })?;
    execute_with(
        config,
        events,
        Box::<ProcessLauncher>::default(),
        Some(signals),
    )
    .await
}

/// `execute` with processes started by `launcher` (the daemon's `RemoteLauncher`).
pub async fn execute_through(
    config: RunConfig,
    events: UnboundedSender<RunEvent>,
    launcher: Box<dyn Launcher>,
) -> Result<RunSummary, AgentError> {
    let signals = watch_signals().map_err(|source| AgentError::Io {
        doing: "installing the SIGINT/SIGTERM handlers".into(),
        source,
    })?;
    execute_with(config, events, launcher, Some(signals)).await
}

/// `execute` with the Python side and the signals given: tests pass a scripted launcher
/// and no signal stream.
pub async fn execute_with(
    config: RunConfig,
    events: UnboundedSender<RunEvent>,
    launcher: Box<dyn Launcher>,
    signals: Option<UnboundedReceiver<Interrupt>>,
) -> Result<RunSummary, AgentError> {
    let mut timings = TimingStore::new();
    for source in &config.timings {
        timings.merge_source(source)?;
    }
    let mut pool = Pool::open(pool_spec(&config), launcher)?;
    let outcome = run_in(&mut pool, config, events, signals, timings).await;
    pool.close().await;
    outcome
}

/// One run in a pool that was opened for `config`'s settings (see `pool_spec`); the pool
/// is left ready for another run.
pub async fn run_in(
    pool: &mut Pool,
    config: RunConfig,
    events: UnboundedSender<RunEvent>,
    signals: Option<UnboundedReceiver<Interrupt>>,
    timings: TimingStore,
) -> Result<RunSummary, AgentError> {
    let mut run = Run::new(config, pool, events, timings);
    run.drive(signals).await?;
    run.flush_queue().await;
    if let Some(message) = run.fatal.take() {
        return Err(AgentError::SharedQueue(message));
    }
    run.finish()
}

/// How to open a pool for runs with `config`'s settings.
pub fn pool_spec(config: &RunConfig) -> PoolSpec {
    // shardex owns retries: pytest-rerunfailures, if installed, must not retry too (the
    // plugin takes over its options, ini keys and marker).
    // (The pool puts the plugin's bootstrap in front.)
    let mut args = vec!["-p".to_owned(), "no:rerunfailures".to_owned()];
    args.extend(config.pytest_args.iter().cloned());
    PoolSpec {
        launch: LaunchSpec {
            python: config.python.clone(),
            args,
            cwd: config.cwd.clone(),
            env: config.env.clone(),
        },
        settings: run_settings(config),
        mode: config.mode,
        slots: config.workers,
        kill_grace: config.kill_grace,
    }
}

/// The `configure` message for the Python side. The run id is new for each run and the same
/// for every process of it.
fn run_settings(config: &RunConfig) -> RunSettings {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    RunSettings {
        v: SETTINGS_VERSION,
        worker_count: u32::try_from(config.workers).unwrap_or(u32::MAX),
        testrunuid: format!("{:x}{nanos:x}", std::process::id()),
        color: config.color,
        width: u32::try_from(config.width).unwrap_or(u32::MAX),
        retry: config.retry.clone(),
        junit: config.junitxml.is_some(),
        loadgroup: config.dist == shardex_core::schedule::DistMode::LoadGroup,
        rundir: String::new(),
        timeout: config.timeout.map(|t| t.as_secs_f64()),
    }
}

/// How long the end of a run waits for the shared queue to take its last acknowledgements.
const QUEUE_FLUSH: std::time::Duration = std::time::Duration::from_secs(10);

/// One finished attempt of a test, from a worker or made by the agent (crash, timeout).
struct Attempt {
    id: TestId,
    outcome: shardex_core::Outcome,
    duration: f64,
    reports: Vec<shardex_core::protocol::PhaseReport>,
    junit: JunitPart,
}

/// What a process reported while it collected, kept until its collection arrives.
#[derive(Default)]
struct Collecting {
    problems: Vec<shardex_core::protocol::CollectProblem>,
    warnings: Vec<shardex_core::protocol::WarningReport>,
}

struct Run<'p> {
    config: RunConfig,
    pool: &'p mut Pool,
    events: UnboundedSender<RunEvent>,
    phase: Phase,
    lanes: Vec<Lane>,
    /// Workers the run uses (`-n`; pytest's own `-n` from addopts when shardex got none).
    workers: usize,
    queue: Option<Box<dyn WorkQueue>>,
    session: Option<SessionInfo>,
    collection: Option<Collection>,
    items: HashMap<TestId, ItemInfo>,
    order: HashMap<TestId, usize>,
    collecting: HashMap<Peer, Collecting>,
    summary: RunSummary,
    /// Finished attempts, shared with the `TestFinished` events; moved into the summary at
    /// the end.
    results: Vec<Arc<TestResult>>,
    junit_collect: Vec<JunitPart>,
    junit_tests: Vec<(usize, JunitPart)>,
    /// JUnit of failed attempts that were retried, until the test's final attempt.
    attempt_junit: HashMap<TestId, Vec<JunitPart>>,
    timings: TimingStore,
    /// Retries granted and hard failures counted (`-x`/`--maxfail`).
    ledger: AttemptLedger,
    /// Retries waiting out `--reruns-delay`: (due, test, worker it failed on).
    delayed: VecDeque<(Instant, TestId, usize)>,
    ending: Ending,
    started: Instant,
    /// Why the run cannot go on (the shared queue refused this node).
    fatal: Option<String>,
}

impl<'p> Run<'p> {
    fn new(
        config: RunConfig,
        pool: &'p mut Pool,
        events: UnboundedSender<RunEvent>,
        timings: TimingStore,
    ) -> Self {
        Self {
            lanes: (0..pool.slot_count()).map(|_| Lane::default()).collect(),
            workers: pool.slot_count(),
            config,
            pool,
            events,
            phase: Phase::Collecting,
            queue: None,
            session: None,
            collection: None,
            items: HashMap::new(),
            order: HashMap::new(),
            collecting: HashMap::new(),
            summary: RunSummary::default(),
            results: Vec::new(),
            junit_collect: Vec::new(),
            junit_tests: Vec::new(),
            attempt_junit: HashMap::new(),
            timings,
            ledger: AttemptLedger::default(),
            delayed: VecDeque::new(),
            ending: Ending::default(),
            started: Instant::now(),
            fatal: None,
        }
    }

    /// A shared queue sends what it has not sent (acknowledgements); what comes back
    /// (a result that came second) still changes this node's counts.
    async fn flush_queue(&mut self) {
        let Some(queue) = self.queue.as_mut() else {
            return;
        };
        if let Some(outcome) = queue.shared_summary() {
            if let Some(shared) = self.summary.shared.as_mut() {
                shared.reclaimed = outcome.reclaimed;
                shared.without_queue = outcome.without_queue;
            }
        }
        let Some(flushed) = queue.flush() else {
            return;
        };
        match tokio::time::timeout(QUEUE_FLUSH, flushed).await {
            Ok(Ok(signals)) => {
                for signal in signals {
                    self.on_queue_signal(signal);
                }
            }
            _ => self.emit(RunEvent::Note(format!(
                "warning: the shared queue did not take this node's last results within {} s: \
                 other nodes may run those tests again",
                QUEUE_FLUSH.as_secs()
            ))),
        }
    }

    fn emit(&self, event: RunEvent) {
        let _ = self.events.send(event);
    }
}
