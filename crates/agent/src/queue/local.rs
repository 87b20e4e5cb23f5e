//! The in-process queue: core's work-stealing `Scheduler`, plus the prefetch policy that
//! decides how much to send a worker ahead.

use std::collections::{HashMap, HashSet};

use shardex_core::schedule::{Dispatch, DistMode, SchedTest, Scheduler};
use shardex_core::{TestId, WorkerId};

use super::{Held, Lease, WorkQueue};

/// Estimated seconds of short tests kept queued at a worker beyond its nextitem.
const PREFETCH_SECS: f64 = 0.05;
/// At most this many tests sent to one worker ahead of time (running one included).
const MAX_PREFETCH: usize = 64;
/// A test without a recorded time that ran shorter than this settles its file (see
/// `settle_file`): stacking a few such tests on a worker costs little.
const SETTLE_SECS: f64 = 0.1;
/// Tests estimated at least this long are marked `slow` for the worker.
const SLOW_SECS: f64 = 0.01;

pub struct LocalQueue {
    scheduler: Scheduler,
    workers: usize,
    estimates: HashMap<TestId, f64>,
    groups: HashMap<TestId, String>,
    /// Tests handed out as risky (long, or of unknown length): a worker holds one at a time.
    risky: HashSet<TestId>,
    /// Files with tests that have no recorded time, until their first test ends.
    unsettled_files: HashSet<String>,
}

impl LocalQueue {
    /// `unknown[i]`: test `i` has no recorded time (its estimate is a guess).
    pub fn new(tests: Vec<SchedTest>, unknown: &[bool], workers: usize, dist: DistMode) -> Self {
        let estimates = tests.iter().map(|t| (t.id.clone(), t.estimate)).collect();
        let groups = tests
            .iter()
            .filter_map(|t| Some((t.id.clone(), t.group.clone()?)))
            .collect();
        let unsettled_files = tests
            .iter()
            .zip(unknown)
            .filter(|(_, &u)| u)
            .map(|(t, _)| t.id.file().to_owned())
            .collect();
        Self {
            scheduler: Scheduler::with_unknown(tests, workers, dist, unknown),
            workers: workers.max(1),
            estimates,
            groups,
            risky: HashSet::new(),
            unsettled_files,
        }
    }

    fn sched_test(&self, id: TestId) -> SchedTest {
        SchedTest {
            estimate: self.estimates.get(&id).copied().unwrap_or(0.0),
            group: self.groups.get(&id).cloned(),
            id,
        }
    }

    /// The first test of a file without recorded times that ends quickly settles the rest
    /// of that file: they are no longer handed out one at a time. Without this, a run with
    /// no timings (the first one) would send every test in its own round trip.
    fn settle_file(&mut self, id: &TestId, duration: f64) {
        if self.unsettled_files.is_empty() {
            return;
        }
        let Some(file) = self.unsettled_files.take(id.file()) else {
            return;
        };
        if duration < SETTLE_SECS {
            self.scheduler.settle_unknown(&file, duration);
        }
    }
}

impl WorkQueue for LocalQueue {
    /// The worker starts a test only once it knows the test after it (its nextitem), so one
    /// must be queued behind the running test. Short tests get more, sent in one message,
    /// so the worker never waits for a round trip and messages stay few.
    fn lease(&mut self, worker: WorkerId, held: Held<'_>) -> Lease {
        let mut lease = Lease::default();
        let mut have = held.len();
        // With half the maximum queued nothing is needed, whatever the estimates: the
        // common case, without the sums below.
        let enough = have >= MAX_PREFETCH / 2;
        if !enough {
            let estimate = |id: &TestId| self.estimates.get(id).copied().unwrap_or(0.0);
            let mut prefetched: f64 = held.queued.iter().map(estimate).sum();
            let mut risky_in_flight = held.ids().any(|id| self.risky.contains(id));
            // Near the end less is sent ahead: a prefetched test can no longer be stolen.
            let budget =
                PREFETCH_SECS.min(self.scheduler.remaining_estimate() / (4 * self.workers) as f64);
            let refill = have < 2 || prefetched < budget / 2.0;
            while refill && (have < 2 || (have < MAX_PREFETCH && prefetched < budget)) {
                // Rather a second risky test than none: with nothing queued the worker
                // would run its test with nextitem=None, tearing down session fixtures.
                let next = self
                    .scheduler
                    .next_for_opts(worker, !risky_in_flight)
                    .or_else(|| {
                        risky_in_flight
                            .then(|| self.scheduler.next_for_opts(worker, true))
                            .flatten()
                    });
                tracing::trace!(%worker, risky_in_flight, have, next = ?next, "lease");
                let Some(Dispatch {
                    id,
                    risky,
                    estimate,
                }) = next
                else {
                    break;
                };
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
                    lease.slow.push(lease.ids.len() as u32);
                }
                lease.ids.push(id);
                have += 1;
            }
        }
        lease.dry = !self.scheduler.has_work_for(worker);
        lease
    }

    fn complete(&mut self, _worker: WorkerId, id: &TestId, duration: Option<f64>) {
        self.risky.remove(id);
        if let Some(duration) = duration {
            self.settle_file(id, duration);
        }
    }

    fn give_back(&mut self, worker: WorkerId, ids: Vec<TestId>) {
        if ids.is_empty() {
            return;
        }
        let tests = ids.into_iter().map(|id| self.sched_test(id)).collect();
        self.scheduler.push_front(worker, tests);
    }

    fn retry(&mut self, worker: WorkerId, id: TestId) {
        let mut test = self.sched_test(id);
        // A retry is a single test, never part of a group unit.
        test.group = None;
        self.scheduler.push_next(worker, test);
    }

    fn release(&mut self, worker: WorkerId) {
        self.scheduler.release(worker);
    }

    fn stop(&mut self) -> Vec<TestId> {
        self.scheduler.drain()
    }

    fn is_exhausted(&self) -> bool {
        self.scheduler.remaining() == 0
    }

    fn remaining_estimate(&self) -> f64 {
        self.scheduler.remaining_estimate()
    }
}
