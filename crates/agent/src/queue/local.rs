//! The in-process queue: core's work-stealing `Scheduler` and its prefetch policy
//! (`shardex_core::dispatch`).

use std::collections::{HashMap, HashSet};

use shardex_core::dispatch::{plan_refill, Settler, WorkerView};
use shardex_core::schedule::{Dispatch, DistMode, SchedTest, Scheduler};
use shardex_core::{TestId, WorkerId};

use super::{Held, Lease, WorkQueue};

pub struct LocalQueue {
    scheduler: Scheduler,
    workers: usize,
    estimates: HashMap<TestId, f64>,
    groups: HashMap<TestId, String>,
    /// Tests handed out as risky (long, or of unknown length): a worker holds one at a time.
    risky: HashSet<TestId>,
    settler: Settler,
}

impl LocalQueue {
    /// `unknown[i]`: test `i` has no recorded time (its estimate is a guess). `first`: tests
    /// to hand out before the others (those that failed last time, under `-x`).
    pub fn new(
        tests: Vec<SchedTest>,
        unknown: &[bool],
        workers: usize,
        dist: DistMode,
        first: &HashSet<TestId>,
    ) -> Self {
        let estimates = tests.iter().map(|t| (t.id.clone(), t.estimate)).collect();
        let groups = tests
            .iter()
            .filter_map(|t| Some((t.id.clone(), t.group.clone()?)))
            .collect();
        let settler = Settler::new(tests.iter().map(|t| &t.id), unknown);
        Self {
            scheduler: Scheduler::with_options(tests, workers, dist, unknown, first),
            workers: workers.max(1),
            estimates,
            groups,
            risky: HashSet::new(),
            settler,
        }
    }

    /// The estimated seconds of all the work `extend` will bring (see
    /// `Scheduler::expect_total`).
    pub fn expect_total(&mut self, secs: f64) {
        self.scheduler.expect_total(secs);
    }

    /// Tests not yet handed out.
    pub fn remaining(&self) -> usize {
        self.scheduler.remaining()
    }

    /// Adds tests that arrived later (a batch from the shared queue).
    pub fn extend(&mut self, tests: Vec<SchedTest>, unknown: &[bool]) {
        for test in &tests {
            self.estimates.insert(test.id.clone(), test.estimate);
            if let Some(group) = &test.group {
                self.groups.insert(test.id.clone(), group.clone());
            }
        }
        self.settler.extend(tests.iter().map(|t| &t.id), unknown);
        self.scheduler.extend(tests, unknown);
    }

    fn sched_test(&self, id: TestId) -> SchedTest {
        SchedTest {
            estimate: self.estimates.get(&id).copied().unwrap_or(0.0),
            group: self.groups.get(&id).cloned(),
            id,
        }
    }
}

impl WorkQueue for LocalQueue {
    fn lease(&mut self, worker: WorkerId, held: Held<'_>) -> Lease {
        let estimate = |id: &TestId| self.estimates.get(id).copied().unwrap_or(0.0);
        let view = WorkerView {
            held: held.len(),
            queued_secs: held.queued.iter().map(estimate).sum(),
            risky_in_flight: held.ids().any(|id| self.risky.contains(id)),
        };
        let refill = plan_refill(&mut self.scheduler, worker, &view, self.workers);
        let mut ids = Vec::with_capacity(refill.batch.len());
        for Dispatch {
            id,
            risky,
            estimate,
        } in refill.batch
        {
            if risky {
                self.risky.insert(id.clone());
            }
            // The scheduler's estimate may be newer (see `settle_unknown`).
            if let Some(known) = self.estimates.get_mut(&id) {
                *known = estimate;
            }
            ids.push(id);
        }
        tracing::trace!(%worker, sent = ids.len(), flush = refill.flush, "lease");
        Lease {
            ids,
            slow: refill.slow,
            dry: refill.flush,
        }
    }

    fn complete(&mut self, _worker: WorkerId, id: &TestId, duration: Option<f64>) {
        if let Some(duration) = duration {
            self.settler.finished(&mut self.scheduler, id, duration);
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

    fn estimate(&self, id: &TestId) -> f64 {
        self.estimates.get(id).copied().unwrap_or(0.0)
    }
}
