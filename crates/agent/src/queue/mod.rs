//! Where tests come from: the work-queue interface between the run loop and a queue
//! implementation. The local scheduler (`local.rs`) is the first; a queue shared by several
//! machines is another. The run loop does not know which one it has.

pub mod local;
pub mod redis;
pub mod shared;

use std::collections::VecDeque;

use shardex_core::{TestId, WorkerId};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::sync::oneshot;

pub use local::LocalQueue;
pub use shared::SharedQueue;

/// What a worker holds already: the test it runs and those queued behind it.
#[derive(Clone, Copy, Debug)]
pub struct Held<'a> {
    pub running: Option<&'a TestId>,
    pub queued: &'a VecDeque<TestId>,
}

impl Held<'_> {
    pub fn len(&self) -> usize {
        self.queued.len() + usize::from(self.running.is_some())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn ids(&self) -> impl Iterator<Item = &TestId> {
        self.running.into_iter().chain(self.queued)
    }
}

/// Tests handed to one worker.
#[derive(Debug, Default, PartialEq)]
pub struct Lease {
    pub ids: Vec<TestId>,
    /// Positions in `ids` of tests that may take a while (the worker sends what it holds
    /// back before starting one).
    pub slow: Vec<u32>,
    /// Nothing more for this worker for now: its last queued test runs with
    /// `nextitem=None`.
    pub dry: bool,
}

/// Something a queue learned later than a `lease` call (from the shared queue's task):
/// the run hands it back to `WorkQueue::absorb`.
#[derive(Debug)]
pub enum QueueEvent {
    Shared(shared::News),
}

/// What the run must do about an absorbed event.
#[derive(Debug, PartialEq)]
pub enum QueueSignal {
    /// Work may have arrived, or nothing more will: ask again for every worker.
    Refilled,
    /// The job stops (`-x`/`--maxfail` reached, here or on another node).
    Stop(String),
    /// A line for the user.
    Note(String),
    /// This node's result of a test came second: another node's counts.
    RanTwice(TestId),
    /// The run cannot go on.
    Fatal(String),
}

pub trait WorkQueue: Send {
    /// Tests for `worker`, given what it holds.
    fn lease(&mut self, worker: WorkerId, held: Held<'_>) -> Lease;
    /// An attempt of `id` ended; `duration` is `None` when it says nothing of the test's
    /// usual length (a crash or a timeout).
    fn complete(&mut self, worker: WorkerId, id: &TestId, duration: Option<f64>);
    /// Tests leased to `worker` that it never started (it died): back to the queue.
    fn give_back(&mut self, worker: WorkerId, ids: Vec<TestId>);
    /// A failed test runs again on `worker`, before anything else it has.
    fn retry(&mut self, worker: WorkerId, id: TestId);
    /// `worker` is gone: a scope it had started may go to another worker.
    fn release(&mut self, worker: WorkerId);
    /// Stop everywhere: nothing more is leased. Returns what was never leased.
    fn stop(&mut self) -> Vec<TestId>;
    /// Nothing is left to lease, for any worker.
    fn is_exhausted(&self) -> bool;
    /// Estimated seconds of work not yet leased.
    fn remaining_estimate(&self) -> f64;
    /// Estimated seconds of one test (a guess for one without a recorded time).
    fn estimate(&self, id: &TestId) -> f64;
    /// The final result of `id` is known (after its retries); `hard_failure`: it failed.
    fn settled(&mut self, _id: &TestId, _hard_failure: bool) {}
    /// Events of a queue that learns things asynchronously; `None` for one that answers
    /// every call at once.
    fn subscribe(&mut self) -> Option<UnboundedReceiver<QueueEvent>> {
        None
    }
    /// Takes in an event from `subscribe`'s receiver.
    fn absorb(&mut self, _event: QueueEvent) -> Vec<QueueSignal> {
        vec![QueueSignal::Refilled]
    }
    /// The run is over: a queue that talks to others sends what it has not sent yet; the
    /// receiver gets the signals that this brings back.
    fn flush(&mut self) -> Option<oneshot::Receiver<Vec<QueueSignal>>> {
        None
    }
    /// Counts for the summary of a node that shared its queue.
    fn shared_summary(&self) -> Option<shared::SharedSummary> {
        None
    }
}
