//! What to send a worker next: the prefetch policy over the scheduler (how many tests to
//! queue ahead, at most one risky test in flight, when to flush), and which files of tests
//! without a recorded time have turned out short. Pure decisions: the run loop applies them.

use std::collections::HashSet;

use crate::schedule::{Dispatch, Scheduler};
use crate::test_id::{TestId, WorkerId};

/// Estimated seconds of short tests kept queued at a worker beyond its nextitem.
pub const PREFETCH_SECS: f64 = 0.05;
/// At most this many tests held by one worker (running one included).
pub const MAX_PREFETCH: usize = 64;
/// Tests estimated at least this long are marked `slow` for the worker.
pub const SLOW_SECS: f64 = 0.01;
/// A test without a recorded time that ran shorter than this settles its file (see
/// [`Settler`]): stacking a few such tests on a worker costs little.
pub const SETTLE_SECS: f64 = 0.1;

/// What the run loop knows of one worker's queue when it refills it.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct WorkerView {
    /// Tests the worker holds: the running one (if any) plus those sent and not started.
    pub held: usize,
    /// Sum of the estimates of the tests sent and not started (the running one excluded).
    pub queued_secs: f64,
    /// A test the scheduler handed out as risky is running or queued on this worker.
    pub risky_in_flight: bool,
}

/// The decision of [`plan_refill`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Refill {
    /// Tests to send, in order (one `Run` message). The caller records the risky ones and
    /// the estimates (the scheduler's may be newer, see `Scheduler::settle_unknown`).
    pub batch: Vec<Dispatch>,
    /// Indexes into `batch` of the tests to mark slow: risky, or estimated at
    /// [`SLOW_SECS`] or more.
    pub slow: Vec<u32>,
    /// The scheduler has nothing more for this worker now: its last queued test must run
    /// with nextitem=None. Send one flush per stretch (not again until a new batch is sent).
    pub flush: bool,
}

/// Tops a worker's queue up from `scheduler`. `workers`: the run's worker count.
///
/// The worker starts a test only once it knows the test after it (its nextitem), so one
/// must be queued behind the running test. Short tests get more, sent in one message, so
/// the worker never waits for a round trip and messages stay few. Near the end less is sent
/// ahead: a prefetched test can no longer be stolen.
pub fn plan_refill(
    scheduler: &mut Scheduler,
    worker: WorkerId,
    view: &WorkerView,
    workers: usize,
) -> Refill {
    let mut out = Refill::default();
    let mut held = view.held;
    // With half the maximum held nothing is needed, whatever the estimates.
    let enough = held >= (MAX_PREFETCH / 2).max(2);
    if !enough {
        let mut prefetched = view.queued_secs;
        let mut risky_in_flight = view.risky_in_flight;
        let budget =
            PREFETCH_SECS.min(scheduler.remaining_estimate() / (4 * workers.max(1)) as f64);
        let refill = held < 2 || prefetched < budget / 2.0;
        while refill && (held < 2 || (held < MAX_PREFETCH && prefetched < budget)) {
            // Rather a second risky test than none: with nothing queued the worker would
            // have to run its test with nextitem=None, tearing down session fixtures.
            let next = scheduler
                .next_for_opts(worker, !risky_in_flight)
                .or_else(|| {
                    risky_in_flight
                        .then(|| scheduler.next_for_opts(worker, true))
                        .flatten()
                });
            let Some(dispatch) = next else { break };
            risky_in_flight |= dispatch.risky;
            prefetched += dispatch.estimate;
            if dispatch.risky || dispatch.estimate >= SLOW_SECS {
                out.slow.push(out.batch.len() as u32);
            }
            held += 1;
            out.batch.push(dispatch);
        }
    }
    out.flush = !scheduler.has_work_for(worker);
    out
}

/// Files with tests that have no recorded time, until their first test ends. The first
/// test of such a file that ends quickly settles the rest of it: they are no longer handed
/// out one at a time (see `Scheduler::settle_unknown`). Without this, a run with no timings
/// (the first one) would send every test in its own round trip.
#[derive(Clone, Debug, Default)]
pub struct Settler {
    unsettled: HashSet<String>,
}

impl Settler {
    /// `unknown[i]`: `ids[i]` has no recorded time (as given to `Scheduler::with_unknown`).
    pub fn new<'a>(ids: impl IntoIterator<Item = &'a TestId>, unknown: &[bool]) -> Self {
        let unsettled = ids
            .into_iter()
            .zip(unknown)
            .filter(|(_, &u)| u)
            .map(|(id, _)| id.file().to_owned())
            .collect();
        Self { unsettled }
    }

    /// Tests that arrived later (`Scheduler::extend`), as in `new`.
    pub fn extend<'a>(&mut self, ids: impl IntoIterator<Item = &'a TestId>, unknown: &[bool]) {
        let more = Self::new(ids, unknown);
        self.unsettled.extend(more.unsettled);
    }

    /// A test's final attempt ended after `duration` seconds (not a crash or timeout,
    /// whose duration says nothing of the test). The first result of an unsettled file
    /// decides it: quick, and the rest of the file is settled at `duration` each in
    /// `scheduler`; returns whether it did.
    pub fn finished(&mut self, scheduler: &mut Scheduler, id: &TestId, duration: f64) -> bool {
        if self.unsettled.is_empty() || !self.unsettled.remove(id.file()) {
            return false;
        }
        if duration < SETTLE_SECS {
            scheduler.settle_unknown(id.file(), duration);
            return true;
        }
        false
    }

    /// Files not decided yet.
    pub fn pending(&self) -> usize {
        self.unsettled.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::{DistMode, SchedTest};

    fn sched(spec: &[(&str, f64)], workers: usize, unknown: &[bool]) -> Scheduler {
        let tests = spec
            .iter()
            .map(|&(id, estimate)| SchedTest {
                id: TestId::new(id),
                estimate,
                group: None,
            })
            .collect();
        Scheduler::with_unknown(tests, workers, DistMode::Load, unknown)
    }

    fn light(n: usize, secs: f64) -> Vec<(String, f64)> {
        (0..n).map(|i| (format!("a.py::t{i}"), secs)).collect()
    }

    fn ids(refill: &Refill) -> Vec<&str> {
        refill.batch.iter().map(|d| d.id.as_str()).collect()
    }

    fn borrowed(spec: &[(String, f64)]) -> Vec<(&str, f64)> {
        spec.iter().map(|(id, s)| (id.as_str(), *s)).collect()
    }

    #[test]
    fn an_idle_worker_gets_its_test_and_a_nextitem_at_least() {
        // 1 s tests: beyond the budget at once, but two are always sent.
        let spec = light(10, 1.0);
        let mut s = sched(&borrowed(&spec), 1, &[]);
        let r = plan_refill(&mut s, WorkerId(0), &WorkerView::default(), 1);
        assert_eq!(ids(&r), ["a.py::t0", "a.py::t1"]);
        assert_eq!(r.slow, [0, 1]);
        assert!(!r.flush);
        // Holding two (one running, one queued of 1 s, over the budget): nothing more.
        let view = WorkerView {
            held: 2,
            queued_secs: 1.0,
            risky_in_flight: false,
        };
        assert_eq!(
            plan_refill(&mut s, WorkerId(0), &view, 1),
            Refill::default()
        );
    }

    #[test]
    fn short_tests_are_prefetched_up_to_the_budget() {
        // 1.1 ms tests, 1000 of them (1.1 s left, budget min(0.05, 1.1/4) = 0.05 s): up to
        // the first over the budget, 46 tests.
        let spec = light(1000, 0.0011);
        let mut s = sched(&borrowed(&spec), 1, &[]);
        let r = plan_refill(&mut s, WorkerId(0), &WorkerView::default(), 1);
        assert_eq!(r.batch.len(), 46);
        assert!(r.slow.is_empty());
        // A quarter of the budget queued: no refill until it drops below half.
        let view = WorkerView {
            held: 10,
            queued_secs: 0.03,
            risky_in_flight: false,
        };
        assert!(plan_refill(&mut s, WorkerId(0), &view, 1).batch.is_empty());
        let view = WorkerView {
            held: 10,
            queued_secs: 0.02,
            risky_in_flight: false,
        };
        assert_eq!(plan_refill(&mut s, WorkerId(0), &view, 1).batch.len(), 28);
        // Half the maximum held: enough whatever the estimates.
        let view = WorkerView {
            held: MAX_PREFETCH / 2,
            queued_secs: 0.0,
            risky_in_flight: false,
        };
        assert!(plan_refill(&mut s, WorkerId(0), &view, 1).batch.is_empty());
    }

    #[test]
    fn the_budget_shrinks_near_the_end_and_caps_the_count() {
        // 0.1 ms tests: 64 at most. 20 tests of 0.1 ms on 4 workers: the budget is
        // 2 ms / 16, so 2 are sent (the second only because two are always sent).
        let spec = light(1000, 0.0001);
        let mut s = sched(&borrowed(&spec), 1, &[]);
        let r = plan_refill(&mut s, WorkerId(0), &WorkerView::default(), 1);
        assert_eq!(r.batch.len(), MAX_PREFETCH);
        let spec = light(20, 0.0001);
        let mut s = sched(&borrowed(&spec), 4, &[]);
        let r = plan_refill(&mut s, WorkerId(0), &WorkerView::default(), 4);
        assert_eq!(r.batch.len(), 2);
    }

    #[test]
    fn one_risky_test_in_flight_unless_nothing_else() {
        // Three unknown tests (pooled, risky) and light known ones.
        // 400 known tests, so that each is light (below a 32nd of a worker's share).
        let mut spec = vec![("n.py::a", 0.001), ("n.py::b", 0.001), ("n.py::c", 0.001)];
        let known = light(400, 0.001);
        spec.extend(borrowed(&known));
        let mut unknown = vec![true; 3];
        unknown.extend([false; 400]);
        let mut s = sched(&spec, 2, &unknown);
        let r = plan_refill(&mut s, WorkerId(0), &WorkerView::default(), 2);
        assert_eq!(ids(&r)[0], "n.py::a");
        assert!(r.batch[0].risky);
        assert!(r.batch[1..].iter().all(|d| !d.risky), "{r:?}");
        assert_eq!(r.slow, [0]);
        // Only risky tests left and one in flight: a second rather than none.
        let mut s = sched(&spec[..3], 2, &[true; 3]);
        let view = WorkerView {
            held: 1,
            queued_secs: 0.0,
            risky_in_flight: true,
        };
        let r = plan_refill(&mut s, WorkerId(0), &view, 2);
        assert_eq!(ids(&r), ["n.py::a"]);
    }

    #[test]
    fn flush_when_nothing_is_left_for_the_worker() {
        let mut s = sched(&[("a.py::t0", 1.0)], 1, &[]);
        let r = plan_refill(&mut s, WorkerId(0), &WorkerView::default(), 1);
        assert_eq!(ids(&r), ["a.py::t0"]);
        assert!(r.flush);
        let r = plan_refill(&mut s, WorkerId(1), &WorkerView::default(), 2);
        assert!(r.batch.is_empty() && r.flush);
    }

    proptest::proptest! {
        /// A worker that holds nothing is sent something, or flushed: never left waiting
        /// for a batch that does not come. Workers refill in a random order, each taking
        /// one batch and running it all before its next turn.
        #[test]
        fn an_empty_worker_gets_a_batch_or_a_flush(
            spec in proptest::collection::vec((0..5usize, 0..3usize, 0.0001..2.0f64, proptest::bool::ANY), 1..80),
            workers in 1..5usize,
            turns in proptest::collection::vec(0..5usize, 1..200),
        ) {
            let tests: Vec<SchedTest> = spec
                .iter()
                .enumerate()
                .map(|(i, &(f, c, e, _))| SchedTest {
                    id: TestId::new(format!("f{f}.py::C{c}::t{i}")),
                    estimate: e,
                    group: None,
                })
                .collect();
            let unknown: Vec<bool> = spec.iter().map(|s| s.3).collect();
            let mut s = Scheduler::with_unknown(tests, workers, DistMode::Load, &unknown);
            for &w in turns.iter().chain(&(0..workers).cycle().take(1000).collect::<Vec<_>>()) {
                let w = WorkerId(w % workers);
                let r = plan_refill(&mut s, w, &WorkerView::default(), workers);
                proptest::prop_assert!(!r.batch.is_empty() || r.flush);
                if s.remaining() == 0 {
                    break;
                }
            }
            proptest::prop_assert_eq!(s.remaining(), 0);
        }
    }

    #[test]
    fn a_quick_first_result_settles_its_file() {
        let spec = [
            ("a.py::t0", 0.5),
            ("a.py::t1", 0.5),
            ("b.py::t0", 0.5),
            ("c.py::t0", 0.5),
        ];
        let unknown = [true, true, true, false];
        // Two workers: with one, tests run in collection order and nothing is risky.
        let mut s = sched(&spec, 2, &unknown);
        let ids: Vec<TestId> = spec.iter().map(|(id, _)| TestId::new(*id)).collect();
        let mut settler = Settler::new(&ids, &unknown);
        assert_eq!(settler.pending(), 2);
        // Known file: nothing to decide.
        assert!(!settler.finished(&mut s, &ids[3], 0.01));
        // b.py's first result is slow: decided, not settled.
        assert!(!settler.finished(&mut s, &ids[2], 0.2));
        let before = s.remaining_estimate();
        assert!(settler.finished(&mut s, &ids[0], 0.01));
        assert!((before - s.remaining_estimate() - 0.98).abs() < 1e-9);
        // Decided once only.
        assert!(!settler.finished(&mut s, &ids[1], 0.01));
        assert_eq!(settler.pending(), 0);
    }
}
