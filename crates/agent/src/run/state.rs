//! The run's phase and each slot's lane, as enums.

use std::collections::VecDeque;

use shardex_core::TestId;
use tokio::time::Instant;

/// Where the run is. It only moves forward.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Waiting for pytest's collection.
    Collecting,
    /// Tests are being handed out.
    Dispatching,
    /// `-x`/`--maxfail` was reached at `since`: nothing new starts; running tests may finish
    /// within `--stop-grace`.
    StoppingEarly { since: Instant },
    /// Nothing is left to run: the workers were told to exit at `since`.
    Closing { since: Instant },
    /// Interrupted (a signal, an internal error) at `since`: worker groups got SIGTERM.
    /// `forced`: a second signal, everything was killed at once.
    Aborting { since: Instant, forced: bool },
}

impl Phase {
    /// No new test starts.
    pub(crate) fn dispatch_stopped(self) -> bool {
        !matches!(self, Phase::Collecting | Phase::Dispatching)
    }

    /// Since when the processes are being ended.
    pub(crate) fn ending_since(self) -> Option<Instant> {
        match self {
            Phase::Closing { since } | Phase::Aborting { since, .. } => Some(since),
            _ => None,
        }
    }
}

#[derive(Debug)]
pub(crate) struct Running {
    pub(crate) id: TestId,
    pub(crate) started: Instant,
    /// When it times out, counted from `started` (see `Run::test_timeout`).
    pub(crate) timeout: Option<std::time::Duration>,
}

/// What was sent to one worker process and not finished yet.
#[derive(Debug, Default)]
pub(crate) struct WorkerQueue {
    /// Sent, not yet started, in order.
    pub(crate) queued: VecDeque<TestId>,
    pub(crate) running: Option<Running>,
    /// Told there is nothing more for now (`flush`).
    pub(crate) flushed: bool,
}

impl WorkerQueue {
    pub(crate) fn busy(&self) -> bool {
        self.running.is_some() || !self.queued.is_empty()
    }
}

/// One slot as the run sees it.
#[derive(Debug)]
pub(crate) enum LaneState {
    /// No worker serves it: not started yet, starting, or between a death and a replacement.
    Idle,
    /// `--spawn`: connected and collecting for itself.
    Collecting,
    /// Connected and given tests.
    Serving(WorkerQueue),
    /// Told to exit: it ends the test it runs and starts nothing else.
    Leaving(WorkerQueue),
    /// Not needed in this run (fewer tests than slots).
    Unused,
    /// Crashed too often in a row: not restarted.
    GivenUp,
}

#[derive(Debug)]
pub(crate) struct Lane {
    pub(crate) state: LaneState,
    pub(crate) crashes_in_a_row: u32,
    /// Results received from the current worker process (the first lines of its spool).
    pub(crate) received: usize,
}

impl Default for Lane {
    fn default() -> Self {
        Self {
            state: LaneState::Idle,
            crashes_in_a_row: 0,
            received: 0,
        }
    }
}

impl Lane {
    pub(crate) fn queue(&self) -> Option<&WorkerQueue> {
        match &self.state {
            LaneState::Serving(q) | LaneState::Leaving(q) => Some(q),
            _ => None,
        }
    }

    pub(crate) fn queue_mut(&mut self) -> Option<&mut WorkerQueue> {
        match &mut self.state {
            LaneState::Serving(q) | LaneState::Leaving(q) => Some(q),
            _ => None,
        }
    }

    pub(crate) fn busy(&self) -> bool {
        self.queue().is_some_and(WorkerQueue::busy)
    }

    pub(crate) fn serving(&self) -> bool {
        matches!(self.state, LaneState::Serving(_))
    }

    /// Takes the lane's queue, leaving it idle (its process died).
    pub(crate) fn take_queue(&mut self) -> WorkerQueue {
        match std::mem::replace(&mut self.state, LaneState::Idle) {
            LaneState::Serving(q) | LaneState::Leaving(q) => q,
            other => {
                if matches!(other, LaneState::Unused | LaneState::GivenUp) {
                    self.state = other;
                }
                WorkerQueue::default()
            }
        }
    }

    /// Told to exit: nothing queued will start.
    pub(crate) fn leave(&mut self) -> Vec<TestId> {
        match std::mem::replace(&mut self.state, LaneState::Idle) {
            LaneState::Serving(mut q) | LaneState::Leaving(mut q) => {
                let queued = q.queued.drain(..).collect();
                self.state = LaneState::Leaving(q);
                queued
            }
            other => {
                self.state = other;
                Vec::new()
            }
        }
    }
}

/// How far the end of the run has got (Closing or Aborting).
#[derive(Debug, Default)]
pub(crate) struct Ending {
    /// When the zygote was told the final outcomes and to exit (after the workers ended).
    pub(crate) zygote_told: Option<Instant>,
    /// When the zygote was killed for taking longer than its finish time.
    pub(crate) zygote_killed: Option<Instant>,
    /// Worker processes were killed but never reported gone: the run stops waiting.
    pub(crate) gave_up_on_workers: bool,
    pub(crate) gave_up_on_zygote: bool,
}
