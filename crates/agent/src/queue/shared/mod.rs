//! The queue shared by every node of a CI job: this node's local scheduler (file and class
//! affinity, prefetch, retries stay here), fed with batches that a task (`task.rs`) takes
//! from Redis. The run loop calls it like the local queue; what the task learns arrives as
//! `QueueEvent`s that the run hands back to `absorb`.
//!
//! Fallbacks, so that nothing is silently lost: Redis unreachable at the start, and this
//! node runs its share of the static split (every node computes the same one: each test
//! once); Redis lost mid-run, and it runs what is left of the share it was seeded with
//! (not acknowledged by itself: at least once, flagged as run without the queue).

mod task;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use shardex_core::history::{Evidence, RunIdentity, TestRun};
use shardex_core::queue_plan::Entry;
use shardex_core::schedule::{split_for_nodes, DistMode, SchedTest};
use shardex_core::{TestId, WorkerId};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio::sync::oneshot;

use super::{Held, Lease, LocalQueue, QueueEvent, QueueSignal, WorkQueue};
use crate::config::SharedQueueConfig;
use crate::queue::redis::{Ack, Leased};

pub use task::NodeIdentity;

/// What the task tells the queue.
#[derive(Debug)]
pub enum News {
    /// Times the project's earlier runs recorded on Redis, for tests without one here.
    Estimates(Vec<(TestId, f64)>),
    /// The queue is seeded; `share` is this node's list as seeded.
    Joined {
        share: Vec<Entry>,
        seeded_by: u32,
        seeded_here: bool,
    },
    /// Redis could not be reached to join: run the static split.
    Unreachable(String),
    /// The run cannot go on (the collection differs from the seeded one; no seed came).
    Fatal(String),
    Batch(Vec<Leased>),
    /// Nothing to take now; other nodes hold leases that may still come back.
    Drained,
    /// Every test of the job is acknowledged.
    Exhausted,
    Stopped(String),
    /// Acknowledgements: whether each was the first for its test.
    Acked(Vec<(TestId, bool)>),
    /// Redis went away mid-run.
    Lost(String),
}

/// What the task is asked to do.
#[derive(Debug)]
pub(crate) enum Command {
    Want {
        max_tests: u32,
        want_micros: u64,
    },
    Ack(Ack),
    /// Send what is pending, answer with the acknowledgements' results, and end.
    Flush(oneshot::Sender<Vec<(TestId, bool)>>),
}

/// Where the shared queue stands, as this node knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Remote {
    Joining,
    Open,
    Drained,
    Exhausted,
    Stopped,
    /// No queue: this node runs a fixed set of tests (static split, or its seeded share).
    Alone,
}

/// Tests taken per batch, per worker: enough that workers never wait for a round trip,
/// few enough that the end of the job stays balanced across nodes.
const BATCH_TESTS_PER_WORKER: u32 = 6;
const BATCH_MICROS_PER_WORKER: u64 = 400_000;

pub struct SharedQueue {
    local: LocalQueue,
    workers: usize,
    node: NodeIdentity,
    dist: DistMode,
    /// This node's collection: only these ids are ever run (never one read from Redis).
    tests: HashMap<TestId, SchedTest>,
    unknown: HashSet<TestId>,
    remote: Remote,
    want_in_flight: bool,
    commands: UnboundedSender<Command>,
    events: Option<UnboundedReceiver<QueueEvent>>,
    /// Leases of the tests taken and not yet acknowledged.
    leases: HashMap<TestId, u64>,
    /// Tests with a final result here.
    settled: HashSet<TestId>,
    /// The tests this node was seeded with (for running without the queue).
    seeded_share: Vec<TestId>,
    summary: SharedSummary,
}

/// What the shared queue adds to this node's summary.
#[derive(Clone, Debug, Default)]
pub struct SharedSummary {
    pub reclaimed: usize,
    pub without_queue: Vec<TestId>,
}

impl SharedQueue {
    /// Starts the task that joins the queue for `plan` (this node's collection).
    pub fn start(
        config: &SharedQueueConfig,
        node: NodeIdentity,
        tests: Vec<SchedTest>,
        unknown: &[bool],
        workers: usize,
        dist: DistMode,
        maxfail: u32,
    ) -> Self {
        let (commands, command_rx) = unbounded_channel();
        let (event_tx, events) = unbounded_channel();
        task::spawn(
            config.clone(),
            node.clone(),
            task::Suite {
                tests: tests.clone(),
                unknown: unknown.to_vec(),
                dist,
            },
            maxfail,
            command_rx,
            event_tx,
        );
        Self::new(node, tests, unknown, workers, dist, commands, events)
    }

    /// The queue without its task: `commands` go to whoever plays the task (tests).
    fn new(
        node: NodeIdentity,
        tests: Vec<SchedTest>,
        unknown: &[bool],
        workers: usize,
        dist: DistMode,
        commands: UnboundedSender<Command>,
        events: UnboundedReceiver<QueueEvent>,
    ) -> Self {
        let unknown_ids = tests
            .iter()
            .zip(unknown)
            .filter(|(_, &u)| u)
            .map(|(t, _)| t.id.clone())
            .collect();
        Self {
            local: LocalQueue::new(Vec::new(), &[], workers, dist, &HashSet::new()),
            workers: workers.max(1),
            node,
            dist,
            tests: tests.into_iter().map(|t| (t.id.clone(), t)).collect(),
            unknown: unknown_ids,
            remote: Remote::Joining,
            want_in_flight: false,
            commands,
            events: Some(events),
            leases: HashMap::new(),
            settled: HashSet::new(),
            seeded_share: Vec::new(),
            summary: SharedSummary::default(),
        }
    }

    /// Adds tests of this node's collection to the local scheduler.
    fn run_here(&mut self, ids: impl IntoIterator<Item = TestId>) -> usize {
        let tests: Vec<SchedTest> = ids
            .into_iter()
            .filter_map(|id| self.tests.get(&id).cloned())
            .collect();
        let unknown: Vec<bool> = tests.iter().map(|t| self.unknown.contains(&t.id)).collect();
        let n = tests.len();
        if n > 0 {
            self.local.extend(tests, &unknown);
        }
        n
    }

    /// Asks the task for a batch when what is left here runs low.
    fn maybe_want(&mut self) {
        if self.want_in_flight || !matches!(self.remote, Remote::Open | Remote::Drained) {
            return;
        }
        let workers = self.workers as u64;
        let low = self.local.remaining() < self.workers
            || self.local.remaining_estimate() * 1e6
                < (workers * BATCH_MICROS_PER_WORKER / 2) as f64;
        if !low {
            return;
        }
        self.want_in_flight = true;
        tracing::trace!(left = self.local.remaining(), "want a batch");
        let _ = self.commands.send(Command::Want {
            max_tests: BATCH_TESTS_PER_WORKER * self.workers as u32,
            want_micros: workers * BATCH_MICROS_PER_WORKER,
        });
    }

    /// Redis cannot be reached to join: this node runs its share of the static split.
    fn run_static_share(&mut self, reason: &str) -> Vec<QueueSignal> {
        let mut by_id: Vec<SchedTest> = self.tests.values().cloned().collect();
        by_id.sort_by(|a, b| a.id.cmp(&b.id));
        let total_secs: f64 = by_id.iter().map(|t| t.estimate).sum();
        let all = by_id.len();
        let shares = split_for_nodes(&by_id, self.node.total as usize, self.dist);
        let share = shares
            .into_iter()
            .nth(self.node.index as usize)
            .unwrap_or_else(|| shardex_core::schedule::NodeShare {
                ids: Vec::new(),
                estimate: 0.0,
            });
        let estimate = share.estimate;
        let n = self.run_here(share.ids);
        self.remote = Remote::Alone;
        vec![
            QueueSignal::Note(format!(
                "warning: the shared queue at {} is unreachable ({reason}): this node runs \
                 its share of the static split",
                self.node.shown
            )),
            QueueSignal::Note(format!(
                "node {} of {} ({}): running {n} of {all} tests, estimated {estimate:.2} s \
                 of {total_secs:.2} s",
                self.node.index + 1,
                self.node.total,
                self.node.source,
            )),
            QueueSignal::Refilled,
        ]
    }

    /// Redis went away mid-run: this node runs what is left of its seeded share that it
    /// has not run itself (and does not hold: those run anyway).
    fn run_without_queue(&mut self, reason: &str) -> Vec<QueueSignal> {
        let left: Vec<TestId> = self
            .seeded_share
            .iter()
            .filter(|id| !self.settled.contains(*id) && !self.leases.contains_key(*id))
            .cloned()
            .collect();
        self.remote = Remote::Alone;
        self.want_in_flight = false;
        // What this node holds runs here too, and no acknowledgement will say so.
        let held: Vec<TestId> = self.leases.drain().map(|(id, _)| id).collect();
        self.run_here(left.iter().cloned());
        self.summary.without_queue.extend(left);
        self.summary.without_queue.extend(held);
        let n = self.summary.without_queue.len();
        vec![
            QueueSignal::Note(format!(
                "warning: lost the shared queue at {} ({reason}): this node runs the rest of \
                 its seeded share without it ({n} tests; some may also run on other nodes)",
                self.node.shown
            )),
            QueueSignal::Refilled,
        ]
    }

    fn take_batch(&mut self, batch: Vec<Leased>) -> Vec<QueueSignal> {
        self.want_in_flight = false;
        if self.remote == Remote::Alone {
            return Vec::new();
        }
        self.remote = Remote::Open;
        let mut ids = Vec::with_capacity(batch.len());
        let mut foreign = Vec::new();
        for leased in batch {
            if !self.tests.contains_key(&leased.id) {
                // Never run an id read from Redis that this node did not collect.
                foreign.push(leased.id.to_string());
                continue;
            }
            if leased.reclaimed {
                self.summary.reclaimed += 1;
            }
            self.leases.insert(leased.id.clone(), leased.lease);
            ids.push(leased.id);
        }
        self.run_here(ids);
        let mut signals = vec![QueueSignal::Refilled];
        if !foreign.is_empty() {
            signals.push(QueueSignal::Note(format!(
                "warning: the shared queue handed out {} test id(s) this node did not collect \
                 (ignored): {}",
                foreign.len(),
                foreign.join(", ")
            )));
        }
        signals
    }
}

impl WorkQueue for SharedQueue {
    fn lease(&mut self, worker: WorkerId, held: Held<'_>) -> Lease {
        // A worker with nothing more here is told so at once (its last test runs with its
        // parent as nextitem), even with a batch on its way: holding its last test back
        // until the batch comes would stall it on a slow or failing Redis.
        let lease = self.local.lease(worker, held);
        self.maybe_want();
        lease
    }

    fn complete(&mut self, worker: WorkerId, id: &TestId, duration: Option<f64>) {
        self.local.complete(worker, id, duration);
    }

    fn settled(&mut self, id: &TestId, hard_failure: bool) {
        self.settled.insert(id.clone());
        if let Some(lease) = self.leases.remove(id) {
            let _ = self.commands.send(Command::Ack(Ack {
                id: id.clone(),
                lease,
                hard_failure,
            }));
        }
    }

    fn give_back(&mut self, worker: WorkerId, ids: Vec<TestId>) {
        self.local.give_back(worker, ids);
    }

    fn retry(&mut self, worker: WorkerId, id: TestId) {
        self.local.retry(worker, id);
    }

    fn release(&mut self, worker: WorkerId) {
        self.local.release(worker);
    }

    fn stop(&mut self) -> Vec<TestId> {
        // Nothing more is taken: the job stops (the acknowledgement of the failure that
        // stopped this node tells the others).
        self.remote = Remote::Stopped;
        self.want_in_flight = false;
        self.local.stop()
    }

    fn is_exhausted(&self) -> bool {
        self.local.is_exhausted()
            && matches!(
                self.remote,
                Remote::Exhausted | Remote::Stopped | Remote::Alone
            )
    }

    fn remaining_estimate(&self) -> f64 {
        self.local.remaining_estimate()
    }

    fn estimate(&self, id: &TestId) -> f64 {
        self.tests.get(id).map_or(0.0, |t| t.estimate)
    }

    fn subscribe(&mut self) -> Option<UnboundedReceiver<QueueEvent>> {
        self.events.take()
    }

    fn flush(&mut self) -> Option<oneshot::Receiver<Vec<QueueSignal>>> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(Command::Flush(tx)).ok()?;
        let (signals_tx, signals_rx) = oneshot::channel();
        tokio::spawn(async move {
            let acked = rx.await.unwrap_or_default();
            let _ = signals_tx.send(ran_twice(acked));
        });
        Some(signals_rx)
    }

    fn shared_summary(&self) -> Option<SharedSummary> {
        Some(self.summary.clone())
    }

    fn absorb(&mut self, event: QueueEvent) -> Vec<QueueSignal> {
        let QueueEvent::Shared(news) = event;
        tracing::trace!(?news, remote = ?self.remote, want = self.want_in_flight, "shared queue news");
        match news {
            News::Estimates(known) => {
                for (id, secs) in known {
                    if let Some(test) = self.tests.get_mut(&id) {
                        test.estimate = secs;
                        self.unknown.remove(&id);
                    }
                }
                Vec::new()
            }
            News::Joined {
                share,
                seeded_by,
                seeded_here,
            } => {
                // Batches are formed against the node's whole share, not each batch alone.
                let micros: u64 = share.iter().map(|e| e.micros).sum();
                self.local.expect_total(micros as f64 / 1e6);
                self.seeded_share = share.into_iter().flat_map(|e| e.ids).collect();
                if self.remote == Remote::Joining {
                    self.remote = Remote::Open;
                }
                self.maybe_want();
                let how = if seeded_here {
                    "seeded it".to_owned()
                } else {
                    format!("seeded by node {}", seeded_by + 1)
                };
                vec![QueueSignal::Note(format!(
                    "shared queue: {how}; {} of this node's seeded share",
                    plural(self.seeded_share.len(), "test")
                ))]
            }
            News::Unreachable(reason) => self.run_static_share(&reason),
            News::Fatal(message) => vec![QueueSignal::Fatal(message)],
            News::Batch(batch) => self.take_batch(batch),
            News::Drained => {
                if self.remote != Remote::Alone {
                    self.remote = Remote::Drained;
                }
                vec![QueueSignal::Refilled]
            }
            News::Exhausted => {
                self.want_in_flight = false;
                if self.remote != Remote::Alone {
                    self.remote = Remote::Exhausted;
                }
                vec![QueueSignal::Refilled]
            }
            News::Stopped(reason) => {
                self.want_in_flight = false;
                self.remote = Remote::Stopped;
                vec![QueueSignal::Stop(reason)]
            }
            News::Acked(results) => ran_twice(results),
            News::Lost(reason) => {
                // Nothing is left to take once the job's tests are all acknowledged (or it
                // stopped): losing Redis then changes nothing.
                if matches!(
                    self.remote,
                    Remote::Alone | Remote::Exhausted | Remote::Stopped
                ) {
                    return Vec::new();
                }
                if self.remote == Remote::Joining {
                    return self.run_static_share(&reason);
                }
                self.run_without_queue(&reason)
            }
        }
    }
}

#[cfg(test)]
mod tests;

/// Tests whose acknowledgement from this node came second.
fn ran_twice(acked: Vec<(TestId, bool)>) -> Vec<QueueSignal> {
    acked
        .into_iter()
        .filter(|(_, first)| !first)
        .map(|(id, _)| QueueSignal::RanTwice(id))
        .collect()
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

/// The name the project's timings are kept under: the configured one, else the rootdir's.
pub fn project_name(config: &SharedQueueConfig, rootdir: &str) -> String {
    config.project.clone().unwrap_or_else(|| {
        std::path::Path::new(rootdir)
            .file_name()
            .map_or_else(|| rootdir.to_owned(), |n| n.to_string_lossy().into_owned())
    })
}

/// After the run: leaves this node's report (JSON) for `shardex report`, its tests' times
/// for the project's next runs, and its tests' outcomes for the project's history (`None`:
/// none kept). An error is the reason, for one line.
pub async fn publish(
    config: &SharedQueueConfig,
    node: u32,
    report_json: &str,
    timings: &[(TestId, f64)],
    project: &str,
    history: Option<(&RunIdentity, &[TestRun])>,
) -> Result<(), String> {
    let mut remote = task::connect(
        &config.url,
        &config.build,
        node,
        config.ca_file.clone(),
        config.lease_floor,
    )
    .await?;
    remote
        .publish_report(report_json)
        .await
        .map_err(|e| e.to_string())?;
    if !timings.is_empty() {
        remote
            .write_timings(project, timings)
            .await
            .map_err(|e| e.to_string())?;
    }
    if let Some((run, tests)) = history.filter(|(_, tests)| !tests.is_empty()) {
        remote
            .write_history(project, run, tests)
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// The history of `project` kept on the shared queue's Redis (`shardex flaky`).
pub async fn read_history(
    url: &str,
    ca_file: Option<std::path::PathBuf>,
    project: &str,
) -> Result<Evidence, String> {
    // Reading takes no lease and belongs to no build: neither is used.
    let mut remote = task::connect(url, "", 0, ca_file, Duration::from_secs(10)).await?;
    remote
        .read_history(project)
        .await
        .map_err(|e| e.to_string())
}

/// The job's state for `shardex report`; `None` while no node has seeded its queue.
pub async fn job_state(
    url: &str,
    build: &str,
    ca_file: Option<std::path::PathBuf>,
) -> Result<Option<crate::queue::redis::JobState>, String> {
    // Reading the job's state takes no lease: the floor is never used.
    let mut remote = task::connect(url, build, 0, ca_file, Duration::from_secs(10)).await?;
    remote.job_state().await.map_err(|e| e.to_string())
}
