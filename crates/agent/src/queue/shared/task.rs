//! The task that talks to Redis for one node: joins (or seeds) the job's queue, takes
//! batches when the queue asks, renews the leases of what this node holds (which is also
//! how it hears of a job-wide stop), acknowledges final results. One connection, one call
//! at a time; every call has a timeout, and Redis failing for longer than `LOST_AFTER` is
//! a lost queue (the node goes on without it).

use std::collections::HashMap;
use std::time::Duration;

use shardex_core::queue_plan::{seed_plan, SeedPlan};
use shardex_core::schedule::{DistMode, SchedTest};
use shardex_core::TestId;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::{Command, News};
use crate::config::SharedQueueConfig;
use crate::queue::redis::{Ack, QueueUrl, Remote, RemoteError, RemoteOptions, Taken};
use crate::queue::QueueEvent;

/// Which node this is, for the queue and for messages.
#[derive(Clone, Debug)]
pub struct NodeIdentity {
    pub index: u32,
    pub total: u32,
    /// Where index and total came from (a CI's name, `--node-total`), for messages.
    pub source: String,
    /// The queue's URL without its password.
    pub shown: String,
}

/// How often leases are renewed, which is also how soon a job-wide stop is seen.
const RENEW_EVERY: Duration = Duration::from_millis(400);
/// How often a node with nothing to take asks again (leases held elsewhere may expire).
const POLL_EVERY: Duration = Duration::from_millis(250);
/// How long Redis may fail before the node goes on without it.
const LOST_AFTER: Duration = Duration::from_secs(5);
const CALL_TIMEOUT: Duration = Duration::from_secs(3);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the nodes that did not seed wait for the one that does.
const SEED_WAIT: Duration = Duration::from_secs(60);
/// Keys live this long: longer than any CI job, and nothing is left behind for good.
const KEY_TTL: Duration = Duration::from_secs(12 * 3600);

/// This node's collection, to seed the queue from.
pub(super) struct Suite {
    pub(super) tests: Vec<SchedTest>,
    pub(super) unknown: Vec<bool>,
    pub(super) dist: DistMode,
}

pub(super) fn spawn(
    config: SharedQueueConfig,
    node: NodeIdentity,
    suite: Suite,
    maxfail: u32,
    commands: UnboundedReceiver<Command>,
    events: UnboundedSender<QueueEvent>,
) {
    let task = Task {
        config,
        node,
        maxfail,
        commands,
        events,
        held: HashMap::new(),
        wanted: None,
        pending: Vec::new(),
        failing_since: None,
        take_now: false,
    };
    tokio::spawn(task.run(suite));
}

struct Task {
    config: SharedQueueConfig,
    node: NodeIdentity,
    maxfail: u32,
    commands: UnboundedReceiver<Command>,
    events: UnboundedSender<QueueEvent>,
    /// Leases of the tests this node took and has not acknowledged.
    held: HashMap<TestId, u64>,
    /// A batch the queue asked for: (tests, micros).
    wanted: Option<(u32, u64)>,
    pending: Vec<Ack>,
    failing_since: Option<Instant>,
    /// A batch was asked for since the last take: take at once.
    take_now: bool,
}

/// Why the loop ended.
enum End {
    /// The queue is gone (dropped) or flushed.
    Done,
    /// Redis is lost: answer what comes without it.
    Lost,
}

impl Task {
    fn tell(&self, news: News) {
        let _ = self.events.send(QueueEvent::Shared(news));
    }

    async fn run(mut self, suite: Suite) {
        let Some(mut remote) = self.join(suite).await else {
            return self.without_remote().await;
        };
        if let End::Lost = self.serve(&mut remote).await {
            self.without_remote().await;
        }
    }

    /// Connects and joins (or seeds) the queue; `None` when the node must go on without it.
    async fn join(&mut self, suite: Suite) -> Option<Remote> {
        let config = &self.config;
        let connected = connect(
            &config.url,
            &config.build,
            self.node.index,
            config.ca_file.clone(),
            config.lease_floor,
        )
        .await;
        let mut remote = match connected {
            Ok(remote) => remote,
            Err(err) => {
                self.tell(News::Unreachable(err));
                return None;
            }
        };
        let plan = self.plan(&mut remote, suite).await;
        match remote.join(&plan, SEED_WAIT).await {
            Ok(joined) => {
                self.tell(News::Joined {
                    share: joined.share,
                    seeded_by: joined.seeded_by,
                    seeded_here: joined.seeded_here,
                });
                Some(remote)
            }
            // Redis failing (or the queue vanishing) while joining: the static split.
            Err(
                err @ (RemoteError::Unreachable(_) | RemoteError::Timeout(_) | RemoteError::Lost),
            ) => {
                self.tell(News::Unreachable(err.to_string()));
                None
            }
            // This node cannot join this job's queue (another collection, another node
            // count, no seed): running anyway would run a wrong share.
            Err(err) => {
                self.tell(News::Fatal(err.to_string()));
                None
            }
        }
    }

    /// The seed plan, from this node's timings and, for tests they do not know, the
    /// project's timings on Redis (whichever node seeds, its plan is the one used).
    async fn plan(&mut self, remote: &mut Remote, suite: Suite) -> SeedPlan {
        let Suite {
            mut tests,
            unknown,
            dist,
        } = suite;
        let project = self.config.project.clone().unwrap_or_default();
        match remote.read_timings(&project).await {
            Ok(recorded) if !recorded.is_empty() => {
                let recorded: HashMap<TestId, f64> = recorded.into_iter().collect();
                let mut learned = Vec::new();
                for (test, unknown) in tests.iter_mut().zip(&unknown) {
                    if let Some(&secs) = recorded.get(&test.id).filter(|_| *unknown) {
                        test.estimate = secs;
                        learned.push((test.id.clone(), secs));
                    }
                }
                self.tell(News::Estimates(learned));
            }
            Ok(_) => {}
            Err(err) => tracing::debug!(%err, "no timings from the shared queue"),
        }
        seed_plan(&tests, self.node.total as usize, dist)
    }

    async fn serve(&mut self, remote: &mut Remote) -> End {
        let mut next_renew = Instant::now() + RENEW_EVERY;
        let mut next_take = Instant::now();
        loop {
            if std::mem::take(&mut self.take_now) {
                next_take = Instant::now();
            }
            let take_due = self.wanted.is_some().then_some(next_take);
            tokio::select! {
                command = self.commands.recv() => {
                    let Some(command) = command else { return End::Done };
                    let flush = self.on_command(command).or_else(|| self.absorb_queued());
                    if let Some(reply) = flush {
                        let results = self.send_acks(remote).await.unwrap_or_default();
                        let _ = reply.send(results);
                        return End::Done;
                    }
                },
                () = tokio::time::sleep_until(next_renew) => {
                    next_renew = Instant::now() + RENEW_EVERY;
                    let held: Vec<(TestId, u64)> =
                        self.held.iter().map(|(id, lease)| (id.clone(), *lease)).collect();
                    match remote.renew(&held).await {
                        Ok(Some(reason)) => self.tell(News::Stopped(reason)),
                        Ok(None) => self.failing_since = None,
                        Err(err) => if self.failed(err) { return End::Lost },
                    }
                },
                () = sleep_until_or_pending(take_due) => {
                    match self.take(remote).await {
                        Ok(poll_again) => next_take = Instant::now() + poll_again,
                        Err(err) => {
                            next_take = Instant::now() + POLL_EVERY;
                            if self.failed(err) { return End::Lost }
                        }
                    }
                },
            }
            if !self.pending.is_empty() {
                match self.send_acks(remote).await {
                    Ok(results) => self.tell(News::Acked(results)),
                    Err(err) => {
                        if self.failed(err) {
                            return End::Lost;
                        }
                    }
                }
            }
        }
    }

    /// Records a command; a flush is returned for the loop to answer.
    fn on_command(&mut self, command: Command) -> Option<oneshot::Sender<Vec<(TestId, bool)>>> {
        match command {
            Command::Want {
                max_tests,
                want_micros,
            } => {
                // Asked for work: take now, not at the next poll.
                if self.wanted.is_none() {
                    self.take_now = true;
                }
                self.wanted = Some((max_tests, want_micros));
            }
            Command::Ack(ack) => self.pending.push(ack),
            Command::Flush(reply) => return Some(reply),
        }
        None
    }

    /// Commands that arrived together are handled together (acknowledgements go in one
    /// call).
    fn absorb_queued(&mut self) -> Option<oneshot::Sender<Vec<(TestId, bool)>>> {
        let mut flush = None;
        while let Ok(command) = self.commands.try_recv() {
            if let Some(reply) = self.on_command(command) {
                flush = Some(reply);
            }
        }
        flush
    }

    /// Takes a batch; returns when to ask again if the queue still wants one.
    async fn take(&mut self, remote: &mut Remote) -> Result<Duration, RemoteError> {
        let Some((max_tests, want_micros)) = self.wanted else {
            return Ok(POLL_EVERY);
        };
        let taken = remote.take(max_tests, want_micros).await?;
        self.failing_since = None;
        match taken {
            Taken::Tests(batch) => {
                self.wanted = None;
                for leased in &batch {
                    self.held.insert(leased.id.clone(), leased.lease);
                }
                self.tell(News::Batch(batch));
            }
            Taken::Drained => self.tell(News::Drained),
            Taken::Exhausted => {
                self.wanted = None;
                self.tell(News::Exhausted);
            }
            Taken::Stopped(reason) => {
                self.wanted = None;
                self.tell(News::Stopped(reason));
            }
        }
        Ok(POLL_EVERY)
    }

    async fn send_acks(&mut self, remote: &mut Remote) -> Result<Vec<(TestId, bool)>, RemoteError> {
        if self.pending.is_empty() {
            return Ok(Vec::new());
        }
        let firsts = remote.ack(&self.pending, self.maxfail).await?;
        self.failing_since = None;
        let acks = std::mem::take(&mut self.pending);
        Ok(acks
            .into_iter()
            .zip(firsts.into_iter().chain(std::iter::repeat(true)))
            .map(|(ack, first)| {
                self.held.remove(&ack.id);
                (ack.id, first)
            })
            .collect())
    }

    /// A call failed: whether the queue is now lost (it vanished, or Redis has failed for
    /// `LOST_AFTER`).
    fn failed(&mut self, err: RemoteError) -> bool {
        let since = *self.failing_since.get_or_insert_with(Instant::now);
        tracing::debug!(%err, "shared queue call failed");
        if matches!(err, RemoteError::Lost) || since.elapsed() >= LOST_AFTER {
            self.tell(News::Lost(err.to_string()));
            return true;
        }
        false
    }

    /// No Redis: every request gets its answer at once (flushes: no acknowledgements).
    async fn without_remote(mut self) {
        while let Some(command) = self.commands.recv().await {
            if let Command::Flush(reply) = command {
                let _ = reply.send(Vec::new());
                return;
            }
        }
    }
}

/// A connection to `build`'s queue at `url`; an error is the reason, without the password.
pub(super) async fn connect(
    url: &str,
    build: &str,
    node: u32,
    ca_file: Option<std::path::PathBuf>,
    lease_floor: Duration,
) -> Result<Remote, String> {
    let options = RemoteOptions {
        call_timeout: CALL_TIMEOUT,
        connect_timeout: CONNECT_TIMEOUT,
        ttl: KEY_TTL,
        lease_floor,
        ca_file,
    };
    let url = QueueUrl::parse(url)?;
    Remote::connect(&url, build, node, options)
        .await
        .map_err(|e| e.to_string())
}

async fn sleep_until_or_pending(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
