//! What a node of a job with a shared queue leaves on Redis for `shardex report`: its counts,
//! failures, flaky and slowest tests, when it started and finished, its exit code.

use shardex_agent::{RunSummary, TestResult};
use shardex_core::job_report::{Failure, NodeReport, Slow};
use shardex_core::Category;

/// How many of its slowest tests a node reports.
const SLOWEST: usize = 10;

/// `summary`'s report for the job; times in Unix milliseconds.
pub fn node_report(
    summary: &RunSummary,
    exit_code: i32,
    started_ms: u64,
    finished_ms: u64,
) -> NodeReport {
    let shared = summary.shared.clone().unwrap_or_default();
    let counts = summary.counts();
    let count = |category: Category| counts.get(&category).copied().unwrap_or(0) as u64;
    let finals: Vec<&TestResult> = summary.results.iter().filter(|r| r.is_final()).collect();
    let failures = finals
        .iter()
        .filter(|r| r.outcome.is_failure())
        .map(|r| Failure {
            id: r.id.to_string(),
            message: failure_message(r),
        })
        .collect();
    let mut slowest: Vec<Slow> = finals
        .iter()
        .map(|r| Slow {
            id: r.id.to_string(),
            seconds: r.duration,
        })
        .collect();
    slowest.sort_by(|a, b| b.seconds.total_cmp(&a.seconds).then(a.id.cmp(&b.id)));
    slowest.truncate(SLOWEST);
    let ids = |ids: &[shardex_core::TestId]| ids.iter().map(ToString::to_string).collect();
    NodeReport {
        node: shared.node,
        nodes: shared.nodes,
        started_ms,
        finished_ms,
        exit_code,
        passed: count(Category::Passed),
        failed: count(Category::Failed),
        errors: count(Category::Error),
        skipped: count(Category::Skipped),
        xfailed: count(Category::XFailed),
        xpassed: count(Category::XPassed),
        flaky: finals
            .iter()
            .filter(|r| r.is_flaky())
            .map(|r| r.id.to_string())
            .collect(),
        failures,
        slowest,
        reclaimed: shared.reclaimed as u64,
        ran_twice: ids(&shared.ran_twice),
        without_queue: ids(&shared.without_queue),
        stopped: shared.job_stopped.or_else(|| summary.stopped.clone()),
        timeline: None,
    }
}

/// The first line of the failure's message, as pytest's short summary shows it.
fn failure_message(result: &TestResult) -> String {
    result
        .reports
        .iter()
        .filter(|r| r.outcome == "failed")
        .find_map(|r| r.crash_message.as_deref())
        .and_then(|m| m.lines().next())
        .unwrap_or("failed")
        .to_owned()
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use shardex_core::protocol::PhaseReport;
    use shardex_core::{Outcome, SharedOutcome, TestId, WorkerId};

    use super::*;

    fn result(
        id: &str,
        outcome: Outcome,
        category: &'static str,
        secs: f64,
        attempt: u32,
    ) -> TestResult {
        TestResult {
            id: TestId::from(id),
            worker: WorkerId(0),
            outcome,
            duration: secs,
            reports: vec![PhaseReport {
                when: Cow::Borrowed("call"),
                outcome: Cow::Borrowed(if category == "failed" {
                    "failed"
                } else {
                    "passed"
                }),
                category: Cow::Borrowed(category),
                letter: Cow::Borrowed(""),
                word: Cow::Borrowed(""),
                duration: secs,
                longrepr: None,
                head_line: None,
                crash_message: (category == "failed")
                    .then(|| "AssertionError: 1 != 2\nmore".into()),
                crash_line: None,
                skip: None,
                wasxfail: None,
            }],
            attempt,
            will_retry: false,
        }
    }

    #[test]
    fn counts_failures_flaky_and_slowest() {
        let summary = RunSummary {
            collected: 3,
            results: vec![
                result("t.py::a", Outcome::Passed, "passed", 0.5, 0),
                result("t.py::b", Outcome::Failed, "failed", 2.0, 0),
                result("t.py::c", Outcome::Passed, "passed", 1.0, 1),
            ],
            shared: Some(SharedOutcome {
                build: "b".into(),
                node: 2,
                nodes: 4,
                ran_twice: vec![TestId::from("t.py::d")],
                reclaimed: 1,
                ..SharedOutcome::default()
            }),
            ..RunSummary::default()
        };
        let report = node_report(&summary, 1, 1000, 3000);
        assert_eq!((report.node, report.nodes, report.exit_code), (2, 4, 1));
        assert_eq!((report.passed, report.failed), (2, 1));
        assert_eq!(report.failures.len(), 1);
        assert_eq!(report.failures[0].message, "AssertionError: 1 != 2");
        assert_eq!(report.flaky, vec!["t.py::c".to_owned()]);
        let slowest: Vec<&str> = report.slowest.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(slowest, ["t.py::b", "t.py::c", "t.py::a"]);
        assert_eq!(report.ran_twice, vec!["t.py::d".to_owned()]);
        assert_eq!(report.reclaimed, 1);
    }
}
