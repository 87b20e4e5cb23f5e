//! The attempts of each test: whether a failed one is retried, cancelled by a stop or
//! final, and when the hard failures reach `--maxfail`. Also where a retry runs.

use crate::retry::RetryBook;
use crate::test_id::{TestId, WorkerId};

/// The retry rules' verdict on one failed attempt, as the worker reports it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Verdict {
    /// The test's rules allow a rerun of this failure.
    pub eligible: bool,
    /// `--reruns` (or the marker's) for this test.
    pub reruns: u32,
    /// `--reruns-delay`, seconds.
    pub delay: f64,
}

/// What becomes of one attempt.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Decision {
    /// Failed, and runs again after `delay` seconds (0: at once). Its failed reports are
    /// rerunfailures' "rerun" reports.
    Retry { delay: f64 },
    /// Failed with retries left, but dispatch has stopped: not run, not a hard failure
    /// (its failed reports are "rerun" reports too).
    CancelledByStop,
    /// The test's last attempt. `hard_failure`: it failed, and counts toward `--maxfail`.
    Final { hard_failure: bool },
}

impl Decision {
    /// The attempt is not the test's result: a retry follows or the stop cancelled it.
    pub fn will_retry(self) -> bool {
        match self {
            Decision::Retry { .. } | Decision::CancelledByStop => true,
            Decision::Final { .. } => false,
        }
    }
}

/// [`AttemptLedger::record`]'s answer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Recorded {
    pub decision: Decision,
    /// 0 for a test's first attempt, 1 for its first retry, ...
    pub attempt: u32,
    /// This hard failure brought the count to `--maxfail`: stop dispatch (once).
    pub maxfail_reached: bool,
}

/// Retries granted and hard failures counted over a run.
#[derive(Clone, Debug, Default)]
pub struct AttemptLedger {
    book: RetryBook,
    maxfail: Option<u32>,
    hard_failures: u32,
}

impl AttemptLedger {
    /// `max_suite_reruns`: rerunfailures' cap on retries over the run. `maxfail`: stop
    /// after this many hard failures; `None` or `Some(0)`: never (as pytest's 0).
    pub fn new(max_suite_reruns: Option<u32>, maxfail: Option<u32>) -> Self {
        Self {
            book: RetryBook::new(max_suite_reruns),
            maxfail: maxfail.filter(|&m| m > 0),
            hard_failures: 0,
        }
    }

    /// One attempt of `id` ended. `verdict`: the retry rules' answer (absent when the
    /// worker gave none: never retried). `dispatch_stopped`: interrupted or stopped early;
    /// no retry starts then.
    pub fn record(
        &mut self,
        id: &TestId,
        failed: bool,
        verdict: Option<Verdict>,
        dispatch_stopped: bool,
    ) -> Recorded {
        let decision = match verdict.filter(|_| failed) {
            Some(v) if dispatch_stopped => {
                if v.eligible && self.book.attempts(id) < v.reruns {
                    Decision::CancelledByStop
                } else {
                    Decision::Final { hard_failure: true }
                }
            }
            Some(v) if self.book.grant(id, v.eligible, v.reruns) => {
                Decision::Retry { delay: v.delay }
            }
            _ => Decision::Final {
                hard_failure: failed,
            },
        };
        let granted = matches!(decision, Decision::Retry { .. });
        let attempt = self.book.attempts(id) - u32::from(granted);
        let mut maxfail_reached = false;
        if let Decision::Final { hard_failure: true } = decision {
            self.hard_failures += 1;
            maxfail_reached = self.maxfail == Some(self.hard_failures);
        }
        Recorded {
            decision,
            attempt,
            maxfail_reached,
        }
    }

    /// Hard failures so far (final attempts that failed).
    pub fn hard_failures(&self) -> u32 {
        self.hard_failures
    }

    /// The effective `--maxfail` (`None`: never stop).
    pub fn maxfail(&self) -> Option<u32> {
        self.maxfail
    }

    /// Retries granted over the run, all tests together.
    pub fn retries_granted(&self) -> u32 {
        self.book.retries_granted()
    }

    /// Retries granted to `id` so far.
    pub fn retries_of(&self, id: &TestId) -> u32 {
        self.book.attempts(id)
    }
}

/// Where a retry of a test that failed on `failed_on` runs: on another worker that is
/// idle (ready, holding nothing: a fresh state, and at once), the lowest first; else on
/// `failed_on`.
pub fn retry_worker<S>(slots: &[S], failed_on: WorkerId, idle: impl Fn(&S) -> bool) -> WorkerId {
    slots
        .iter()
        .enumerate()
        .find(|&(w, slot)| w != failed_on.0 && idle(slot))
        .map_or(failed_on, |(w, _)| WorkerId(w))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(eligible: bool, reruns: u32, delay: f64) -> Option<Verdict> {
        Some(Verdict {
            eligible,
            reruns,
            delay,
        })
    }

    const FINAL_FAIL: Decision = Decision::Final { hard_failure: true };
    const PASSED: Decision = Decision::Final {
        hard_failure: false,
    };

    #[test]
    fn attempts_table() {
        // (failed, verdict, stopped) in sequence for one test, and what each gives.
        type Step = (bool, Option<Verdict>, bool, Decision, u32);
        let cases: Vec<(&str, Vec<Step>)> = vec![
            ("pass", vec![(false, None, false, PASSED, 0)]),
            ("fail, no rules", vec![(true, None, false, FINAL_FAIL, 0)]),
            (
                "a passing attempt is never retried",
                vec![(false, v(true, 2, 0.0), false, PASSED, 0)],
            ),
            (
                "two reruns then final",
                vec![
                    (
                        true,
                        v(true, 2, 0.5),
                        false,
                        Decision::Retry { delay: 0.5 },
                        0,
                    ),
                    (
                        true,
                        v(true, 2, 0.5),
                        false,
                        Decision::Retry { delay: 0.5 },
                        1,
                    ),
                    (true, v(true, 2, 0.5), false, FINAL_FAIL, 2),
                ],
            ),
            (
                "flaky: passes on its retry",
                vec![
                    (
                        true,
                        v(true, 1, 0.0),
                        false,
                        Decision::Retry { delay: 0.0 },
                        0,
                    ),
                    (false, v(true, 1, 0.0), false, PASSED, 1),
                ],
            ),
            (
                "not eligible",
                vec![(true, v(false, 3, 0.0), false, FINAL_FAIL, 0)],
            ),
            (
                "stopped with retries left: cancelled",
                vec![(true, v(true, 1, 0.0), true, Decision::CancelledByStop, 0)],
            ),
            (
                "stopped, no retries left: hard failure",
                vec![
                    (
                        true,
                        v(true, 1, 0.0),
                        false,
                        Decision::Retry { delay: 0.0 },
                        0,
                    ),
                    (true, v(true, 1, 0.0), true, FINAL_FAIL, 1),
                ],
            ),
            (
                "stopped, not eligible: hard failure",
                vec![(true, v(false, 1, 0.0), true, FINAL_FAIL, 0)],
            ),
        ];
        for (name, steps) in cases {
            let mut ledger = AttemptLedger::new(None, None);
            let id = TestId::new("t.py::x");
            for (i, (failed, verdict, stopped, want, attempt)) in steps.into_iter().enumerate() {
                let got = ledger.record(&id, failed, verdict, stopped);
                assert_eq!(
                    (got.decision, got.attempt),
                    (want, attempt),
                    "{name} step {i}"
                );
                assert!(!got.maxfail_reached, "{name}");
            }
        }
    }

    #[test]
    fn the_suite_cap_limits_retries_over_all_tests() {
        let mut ledger = AttemptLedger::new(Some(1), None);
        let (a, b) = (TestId::new("t.py::a"), TestId::new("t.py::b"));
        let first = ledger.record(&a, true, v(true, 5, 0.0), false);
        assert_eq!(first.decision, Decision::Retry { delay: 0.0 });
        assert_eq!(
            ledger.record(&b, true, v(true, 5, 0.0), false).decision,
            FINAL_FAIL
        );
        assert_eq!(ledger.retries_granted(), 1);
        assert_eq!((ledger.retries_of(&a), ledger.retries_of(&b)), (1, 0));
    }

    #[test]
    fn maxfail_is_reported_once_when_reached() {
        let ids: Vec<TestId> = (0..4).map(|i| TestId::new(format!("t.py::{i}"))).collect();
        let mut ledger = AttemptLedger::new(None, Some(2));
        let reached: Vec<bool> = ids
            .iter()
            .map(|id| ledger.record(id, true, None, false).maxfail_reached)
            .collect();
        assert_eq!(reached, [false, true, false, false]);
        assert_eq!(ledger.hard_failures(), 4);
        // A retried or cancelled failure does not count.
        let mut ledger = AttemptLedger::new(None, Some(1));
        let r = ledger.record(&ids[0], true, v(true, 1, 0.0), false);
        assert!(!r.maxfail_reached && ledger.hard_failures() == 0);
        let r = ledger.record(&ids[1], true, v(true, 1, 0.0), true);
        assert!(!r.maxfail_reached && ledger.hard_failures() == 0);
        assert!(
            ledger
                .record(&ids[0], true, v(true, 1, 0.0), false)
                .maxfail_reached
        );
        // 0 and None: never.
        for maxfail in [None, Some(0)] {
            let mut ledger = AttemptLedger::new(None, maxfail);
            assert_eq!(ledger.maxfail(), None);
            assert!(ids
                .iter()
                .all(|id| !ledger.record(id, true, None, false).maxfail_reached));
        }
    }

    #[test]
    fn retry_goes_to_another_idle_worker_else_back() {
        let idle = |s: &bool| *s;
        assert_eq!(
            retry_worker(&[true, false, true], WorkerId(0), idle),
            WorkerId(2)
        );
        assert_eq!(retry_worker(&[true, true], WorkerId(1), idle), WorkerId(0));
        assert_eq!(retry_worker(&[true, false], WorkerId(0), idle), WorkerId(0));
        assert_eq!(
            retry_worker(&[false, false], WorkerId(1), idle),
            WorkerId(1)
        );
        assert_eq!(retry_worker::<bool>(&[], WorkerId(0), idle), WorkerId(0));
    }
}
