//! The work-stealing queue: per-worker deques seeded longest-first from estimates; an idle
//! worker takes from the tail of the deque with the most estimated time left.
//!
//! PLACEHOLDER implementation: the API is fixed, the internals are being written.

use std::collections::VecDeque;

use crate::test_id::{TestId, WorkerId};

use super::plan::lpt_partition;

/// xdist's `--dist` modes that shardex honours.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DistMode {
    /// Single tests (with file affinity where it costs no balance).
    #[default]
    Load,
    /// Whole classes (else modules) stay on one worker, in order.
    LoadScope,
    /// Whole files stay on one worker, in order.
    LoadFile,
}

/// A test to schedule, in collection order.
#[derive(Clone, Debug, PartialEq)]
pub struct SchedTest {
    pub id: TestId,
    pub estimate: f64,
}

#[derive(Clone, Debug)]
pub struct Scheduler {
    deques: Vec<VecDeque<SchedTest>>,
}

impl Scheduler {
    pub fn new(tests: Vec<SchedTest>, workers: usize, mode: DistMode) -> Self {
        let _ = mode;
        let weights: Vec<f64> = tests.iter().map(|t| t.estimate).collect();
        let plan = lpt_partition(&weights, workers);
        let deques = plan
            .into_iter()
            .map(|units| units.into_iter().map(|i| tests[i].clone()).collect())
            .collect();
        Self { deques }
    }

    /// The next test for `worker`: the head of its deque, else stolen from the tail of the
    /// deque with the most estimated time left. `None` once nothing is left anywhere.
    pub fn next_for(&mut self, worker: WorkerId) -> Option<TestId> {
        if let Some(test) = self.deques.get_mut(worker.0).and_then(VecDeque::pop_front) {
            return Some(test.id);
        }
        let victim = (0..self.deques.len())
            .filter(|&w| !self.deques[w].is_empty())
            .max_by(|&a, &b| self.remaining_of(a).total_cmp(&self.remaining_of(b)))?;
        self.deques[victim].pop_back().map(|t| t.id)
    }

    /// Puts tests back at the front of `worker`'s deque (retracted from it, or left
    /// unstarted by a crash), in the given order.
    pub fn push_front(&mut self, worker: WorkerId, tests: Vec<SchedTest>) {
        let deque = &mut self.deques[worker.0];
        for test in tests.into_iter().rev() {
            deque.push_front(test);
        }
    }

    /// Removes and returns everything not yet dispatched (early stop).
    pub fn drain(&mut self) -> Vec<TestId> {
        self.deques
            .iter_mut()
            .flat_map(|d| d.drain(..).map(|t| t.id))
            .collect()
    }

    pub fn remaining(&self) -> usize {
        self.deques.iter().map(VecDeque::len).sum()
    }

    pub fn remaining_estimate(&self) -> f64 {
        (0..self.deques.len()).map(|w| self.remaining_of(w)).sum()
    }

    fn remaining_of(&self, worker: usize) -> f64 {
        self.deques[worker].iter().map(|t| t.estimate).sum()
    }
}
