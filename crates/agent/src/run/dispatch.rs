//! Sending tests to workers: keep each worker's queue topped up from the work queue, track
//! which test runs where, and close the run when nothing is left.

use shardex_core::protocol::ToPython;
use shardex_core::WorkerId;
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

    /// The head of what was sent to `slot` is running from now on.
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
