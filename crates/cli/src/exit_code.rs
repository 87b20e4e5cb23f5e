//! shardex's exit codes: pytest's own, so scripts that read `pytest`'s status keep working.
//! These values are a contract; never renumber them.

use shardex_agent::{RunSummary, TestResult};

/// All tests passed (or were skipped, xfailed...).
pub const OK: i32 = 0;
/// Some tests failed (including errors in setup/teardown and collection errors run past with
/// `--continue-on-collection-errors`).
pub const TESTS_FAILED: i32 = 1;
/// Interrupted by a signal, or stopped by collection errors.
pub const INTERRUPTED: i32 = 2;
/// shardex or pytest hit an internal error.
pub const INTERNAL_ERROR: i32 = 3;
/// Bad command line, configuration or input files; nothing ran.
pub const USAGE_ERROR: i32 = 4;
/// No tests were collected.
pub const NO_TESTS_COLLECTED: i32 = 5;
/// `--fail-on-flaky` and a test passed only on a retry (pytest-rerunfailures' code).
pub const FLAKY: i32 = 7;

/// The exit code of a finished run, in pytest's order of precedence.
pub fn from_summary(summary: &RunSummary) -> i32 {
    if summary.internal_error.is_some() {
        return INTERNAL_ERROR;
    }
    // A test's `pytest.exit(returncode=…)` or `KeyboardInterrupt`: pytest's status for it.
    if let Some(exit) = &summary.session_exit {
        return exit.returncode;
    }
    if summary.interrupted.is_some() {
        return INTERRUPTED;
    }
    let continue_on_errors = summary
        .session
        .as_ref()
        .is_some_and(|s| s.continue_on_collection_errors);
    let collection_errors = summary.collection_errors();
    if collection_errors > 0 && !continue_on_errors {
        return INTERRUPTED;
    }
    // pytest-cov's --cov-fail-under counts as a failed test (session.testsfailed += 1).
    if collection_errors > 0 || summary.any_test_failed() || summary.plugin_failure.is_some() {
        return TESTS_FAILED;
    }
    // The job stopped at -x/--maxfail on another node: this node's run failed too, as
    // pytest's does when -x stops it.
    if summary
        .shared
        .as_ref()
        .is_some_and(|s| s.job_stopped.is_some())
    {
        return TESTS_FAILED;
    }
    if summary.collected == 0 {
        return NO_TESTS_COLLECTED;
    }
    // pytest-rerunfailures: only a run that would otherwise pass exits 7.
    if summary.fail_on_flaky && summary.results.iter().any(TestResult::is_flaky) {
        return FLAKY;
    }
    // The zygote's session, when it played xdist's controller, ended as pytest -n would:
    // a plugin may fail a run whose tests all passed (syrupy's unused snapshots: 1,
    // `--max-warnings`: 6).
    match summary.plugin_exitstatus {
        Some(status) if status != OK && status != NO_TESTS_COLLECTED => status,
        _ => OK,
    }
}

#[cfg(test)]
mod tests {
    use shardex_agent::TestResult;
    use shardex_core::protocol::{CollectProblem, SessionExit, SessionInfo};
    use shardex_core::{Outcome, TestId, WorkerId};

    use super::*;

    fn result(outcome: Outcome) -> TestResult {
        TestResult {
            id: TestId::from("t.py::test_a"),
            worker: WorkerId(0),
            outcome,
            duration: 0.1,
            reports: Vec::new(),
            attempt: 0,
            will_retry: false,
        }
    }

    fn problem(outcome: &str) -> CollectProblem {
        CollectProblem {
            nodeid: "t.py".into(),
            outcome: outcome.into(),
            ..CollectProblem::default()
        }
    }

    #[test]
    fn codes_follow_pytest_precedence() {
        let passed = RunSummary {
            collected: 1,
            results: vec![result(Outcome::Passed)],
            ..RunSummary::default()
        };
        let failed = RunSummary {
            collected: 2,
            results: vec![result(Outcome::Passed), result(Outcome::Failed)],
            ..RunSummary::default()
        };
        let collect_error = RunSummary {
            collected: 1,
            collect_problems: vec![problem("failed")],
            results: vec![result(Outcome::Passed)],
            ..RunSummary::default()
        };
        let continued = RunSummary {
            session: Some(SessionInfo {
                continue_on_collection_errors: true,
                ..SessionInfo::default()
            }),
            ..collect_error.clone()
        };
        let plugin_failed = RunSummary {
            plugin_exitstatus: Some(1),
            ..passed.clone()
        };
        let plugin_says_nothing_ran = RunSummary {
            plugin_exitstatus: Some(NO_TESTS_COLLECTED),
            ..passed.clone()
        };
        let collect_skip_only = RunSummary {
            collect_problems: vec![problem("skipped")],
            ..RunSummary::default()
        };
        let cases: Vec<(&str, RunSummary, i32)> = vec![
            ("all passed", passed.clone(), OK),
            (
                "a plugin failed the zygote's session",
                plugin_failed,
                TESTS_FAILED,
            ),
            (
                "the zygote's session knows of no tests",
                plugin_says_nothing_ran,
                OK,
            ),
            ("a failure", failed.clone(), TESTS_FAILED),
            (
                "nothing collected",
                RunSummary::default(),
                NO_TESTS_COLLECTED,
            ),
            (
                "module skipped at collection",
                collect_skip_only,
                NO_TESTS_COLLECTED,
            ),
            ("collection error stops", collect_error, INTERRUPTED),
            ("collection error continued", continued, TESTS_FAILED),
            (
                "interrupted beats failures",
                RunSummary {
                    interrupted: Some("SIGINT".into()),
                    ..failed.clone()
                },
                INTERRUPTED,
            ),
            (
                "a test's pytest.exit(returncode=…) is the code, over failures",
                RunSummary {
                    session_exit: Some(SessionExit {
                        returncode: 0,
                        reason: "_pytest.outcomes.Exit: done".into(),
                        details: String::new(),
                    }),
                    ..failed.clone()
                },
                OK,
            ),
            (
                "internal error beats everything",
                RunSummary {
                    internal_error: Some("boom".into()),
                    interrupted: Some("SIGINT".into()),
                    ..failed
                },
                INTERNAL_ERROR,
            ),
        ];
        for (name, summary, code) in cases {
            assert_eq!(from_summary(&summary), code, "{name}");
        }
    }
}
