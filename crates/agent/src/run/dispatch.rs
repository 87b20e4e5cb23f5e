//! Sending tests to workers: keep each worker's queue topped up from the work queue, track
//! which test runs where, take back tests queued behind a stuck one, and
//! close the run when nothing is left.

use std::time::Duration;

use shardex_core::protocol::ToPython;
use shardex_core::schedule::DistMode;
use shardex_core::{TestId, WorkerId};
use tokio::time::Instant;

use super::state::{LaneState, Phase, Running};
use super::Run;
use crate::queue::Held;
use crate::{RunEvent, WorkerMode};

impl Run<'_> {
    /// Keeps the worker's queue topped up from the work queue.
    pub(super) fn fill(&mut self, slot: usize) {
        if self.phase != Phase::Dispatching
            || !self.pool.is_connected(slot)
            || self.pool.is_stopping(slot)
        {
            return;
        }
        if self.holds_back(slot) {
            return;
        }
        let Some(queue) = self.queue.as_mut() else {
            return;
        };
        let LaneState::Serving(lane) = &mut self.lanes[slot].state else {
            return;
        };
        let held = Held {
            running: lane.running.as_ref().map(|r| &r.id),
            queued: &lane.queued,
        };
        let lease = queue.lease(WorkerId(slot), held);
        if !lease.ids.is_empty() {
            lane.flushed = false;
            lane.queued.extend(lease.ids.iter().cloned());
            self.pool.send(
                slot,
                ToPython::Run {
                    ids: lease.ids,
                    slow: lease.slow,
                },
            );
            self.promote(slot);
        }
        if let LaneState::Serving(lane) = &mut self.lanes[slot].state {
            if lease.dry && !lane.flushed {
                // Nothing more for this worker now: its last queued test runs with
                // nextitem=None.
                lane.flushed = true;
                self.pool.send(slot, ToPython::Flush);
            }
        }
        self.check_all_done();
    }

    pub(super) fn fill_all(&mut self) {
        for slot in 0..self.lanes.len() {
            self.fill(slot);
        }
    }

    /// The worker runs its queue in order: when nothing runs, the head of what was sent is
    /// running from now on (its timeout counts from here).
    pub(super) fn promote(&mut self, slot: usize) {
        let idle = self.lanes[slot]
            .queue()
            .is_some_and(|q| q.running.is_none());
        if idle && self.pool.is_connected(slot) {
            self.start_next(slot);
        }
    }

    /// The head of what was sent to `slot` is running from now on. While a `retract` waits
    /// for its answer the head may be one of the tests asked back: the worker may have
    /// started it before the `retract` reached it (its `done` comes before the answer);
    /// if the answer names it, it did not start (`on_retracted`).
    pub(super) fn start_next(&mut self, slot: usize) {
        let Some(id) = self.lanes[slot].queue().and_then(|q| q.queued.front()) else {
            return;
        };
        let timeout = self.test_timeout(self.items.get(id));
        let Some(queue) = self.lanes[slot].queue_mut() else {
            return;
        };
        if let Some(id) = queue.queued.pop_front() {
            queue.running = Some(Running {
                id: id.clone(),
                started: Instant::now(),
                timeout,
            });
            self.emit(RunEvent::TestStarted {
                id,
                worker: WorkerId(slot),
            });
        }
    }

    /// Nothing left to hand out, nothing running, no retry waiting: the run closes.
    pub(super) fn check_all_done(&mut self) {
        if !matches!(self.phase, Phase::Dispatching | Phase::StoppingEarly { .. }) {
            return;
        }
        let exhausted = self.queue.as_ref().is_none_or(|q| q.is_exhausted());
        if !exhausted || self.lanes.iter().any(|l| l.busy()) || !self.delayed.is_empty() {
            return;
        }
        self.close();
    }

    /// Every test has a result: ask the processes to exit, then wait for them.
    pub(super) fn close(&mut self) {
        if self.pool.mode() == WorkerMode::Spawn {
            // No zygote: one worker records the outcomes in pytest's cache (`--lf`).
            let results = self.final_outcomes();
            if let Some(slot) = (0..self.lanes.len()).find(|&s| self.pool.is_connected(s)) {
                self.pool.send(slot, results);
            }
        }
        for slot in 0..self.lanes.len() {
            if self.pool.send(slot, ToPython::Exit) {
                self.lanes[slot].leave();
            }
        }
        tracing::debug!("closing: every test has a result");
        self.phase = Phase::Closing {
            since: Instant::now(),
        };
    }
}

/// A running test counts as stuck once it has run this many times its estimate...
const STUCK_FACTOR: f64 = 2.0;
/// ...and at least this long: the tests queued behind it may then be taken back for an idle
/// worker.
const STUCK_MIN: Duration = Duration::from_secs(1);

/// Taking back tests queued behind a stuck test. A worker is sent its running test and at
/// least its nextitem; when the running test hangs, what is queued behind it would wait
/// while other workers are idle. Once the running test has run for max(2 × its estimate,
/// 1 s) and a worker is idle with nothing to lease, the agent sends `retract` for the
/// queued tests; the worker's reader thread answers at once with those it had not started
/// (`retracted`), and they go to the idle worker. The moment is one of the run loop's
/// deadlines (`next_retract`), never a polling tick.
impl Run<'_> {
    /// When `running` counts as stuck; `None`: never (an absurd estimate).
    fn stuck_at(&self, running: &Running) -> Option<Instant> {
        let estimate = self.queue.as_ref().map_or(0.0, |q| q.estimate(&running.id));
        let after = Duration::try_from_secs_f64(estimate * STUCK_FACTOR)
            .unwrap_or(Duration::MAX)
            .max(STUCK_MIN);
        running.started.checked_add(after)
    }

    /// The lane takes no new tests now: a `retract` waits for its answer, or its running
    /// test is stuck (what it would be sent would wait behind it). Its next `done` ends this.
    fn holds_back(&self, slot: usize) -> bool {
        let Some(queue) = self.lanes[slot].queue() else {
            return false;
        };
        if !queue.retracting.is_empty() {
            return true;
        }
        let stuck = queue.running.as_ref().and_then(|r| self.stuck_at(r));
        stuck.is_some_and(|at| Instant::now() >= at)
    }

    /// A worker that runs nothing, holds nothing and was told there is nothing for it.
    fn idle_and_dry(&self, slot: usize) -> bool {
        let lane = &self.lanes[slot];
        lane.serving()
            && !lane.busy()
            && lane.queue().is_some_and(|q| q.flushed)
            && self.pool.is_connected(slot)
            && !self.pool.is_stopping(slot)
    }

    fn any_idle_and_dry(&self) -> bool {
        (0..self.lanes.len()).any(|s| self.idle_and_dry(s))
    }

    /// Whether `queued` must stay on the worker running `running`: in the modes that keep a
    /// unit on one worker (a scope, a file, an `xdist_group`), the rest of the running
    /// test's unit does.
    fn same_unit(&self, running: &TestId, queued: &TestId) -> bool {
        match self.config.dist {
            DistMode::Load => false,
            DistMode::LoadFile => running.file() == queued.file(),
            DistMode::LoadScope => running.scope() == queued.scope(),
            DistMode::LoadGroup => {
                let group = |id: &TestId| self.items.get(id).and_then(|i| i.group.as_deref());
                group(running).is_some() && group(running) == group(queued)
            }
        }
    }

    /// The tests a `retract` would ask back from `slot` and when: the queued tests behind
    /// its running test, once that one is stuck (none while a `retract` is unanswered).
    fn retractable(&self, slot: usize) -> Option<(Instant, Vec<TestId>)> {
        let lane = &self.lanes[slot];
        let queue = lane.queue().filter(|_| lane.serving())?;
        let running = queue.running.as_ref()?;
        if !queue.retracting.is_empty() || self.pool.is_stopping(slot) {
            return None;
        }
        let ids: Vec<TestId> = queue
            .queued
            .iter()
            .filter(|id| !self.same_unit(&running.id, id))
            .cloned()
            .collect();
        if ids.is_empty() {
            return None;
        }
        Some((self.stuck_at(running)?, ids))
    }

    /// The next moment a `retract` is due, while a worker is idle and dry.
    pub(super) fn next_retract(&self) -> Option<Instant> {
        if self.phase != Phase::Dispatching || !self.any_idle_and_dry() {
            return None;
        }
        (0..self.lanes.len())
            .filter_map(|s| self.retractable(s).map(|(at, _)| at))
            .min()
    }

    /// Asks back the tests queued behind each stuck test, while a worker is idle and dry.
    pub(super) fn retract_stuck(&mut self, now: Instant) {
        if self.phase != Phase::Dispatching || !self.any_idle_and_dry() {
            return;
        }
        for slot in 0..self.lanes.len() {
            let Some((at, ids)) = self.retractable(slot).filter(|(at, _)| now >= *at) else {
                continue;
            };
            let Some(queue) = self.lanes[slot].queue_mut() else {
                continue;
            };
            let running = queue.running.as_ref().map(|r| r.id.clone());
            tracing::debug!(slot = %WorkerId(slot), ?running, ?ids, late = ?now - at, "retract");
            queue.retracting.extend(ids.iter().cloned());
            self.pool.send(slot, ToPython::Retract { ids });
        }
    }

    /// The worker's answer to a `retract`: `ids` it removed from its queue go to an idle
    /// worker; the others it had started, and they stay its own.
    pub(super) fn on_retracted(&mut self, slot: usize, ids: Vec<TestId>) {
        let Some(queue) = self.lanes[slot].queue_mut() else {
            return;
        };
        let mut back = Vec::new();
        for id in ids {
            if !queue.retracting.remove(&id) {
                tracing::debug!(slot = %WorkerId(slot), test = %id, "retracted but not asked back");
                continue;
            }
            if queue.running.as_ref().is_some_and(|r| r.id == id) {
                // Counted as running after the test before it ended: it never started.
                queue.running = None;
            } else if let Some(pos) = queue.queued.iter().position(|q| *q == id) {
                queue.queued.remove(pos);
            } else {
                continue;
            }
            back.push(id);
        }
        queue.retracting.clear();
        queue.retracted.extend(back.iter().cloned());
        tracing::debug!(slot = %WorkerId(slot), ?back, "retracted");
        if self.phase == Phase::Dispatching {
            // Straight to an idle worker, in order; others may steal from it.
            let target = (0..self.lanes.len())
                .find(|&s| s != slot && self.idle_and_dry(s))
                .unwrap_or(slot);
            if let Some(queue) = self.queue.as_mut() {
                queue.give_back(WorkerId(target), back);
            }
        } else {
            self.summary.not_run.extend(back);
        }
        self.promote(slot);
        self.fill_all();
        self.check_all_done();
    }

    /// A result from a worker for a test it gave back: it must not count twice (the test
    /// runs elsewhere). Never expected, since the worker only gives back what it did not
    /// start; kept as a guard.
    pub(super) fn is_retracted_result(&self, slot: usize, id: &TestId) -> bool {
        self.lanes[slot].queue().is_some_and(|q| {
            q.retracted.contains(id)
                && q.running.as_ref().is_none_or(|r| r.id != *id)
                && !q.queued.contains(id)
        })
    }
}
