//! What a run tells its caller as it goes (`RunEvent`) and at the end (`RunSummary`).
//!
//! Serde types, so that a client in another process (the daemon's `shardex run`) can receive
//! them over a socket exactly as the in-process reporter does.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::protocol::{CollectProblem, PhaseReport, SessionExit, SessionInfo, WarningReport};
use crate::{Category, Outcome, TestId, WorkerId};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "event", content = "data", rename_all = "snake_case")]
pub enum RunEvent {
    /// pytest's effective configuration, known once the first Python process started.
    SessionStarted(Box<SessionInfo>),
    /// A collect report that did not pass.
    CollectProblem(CollectProblem),
    /// Collection finished: `total` tests will run on `workers` workers.
    Collected {
        total: usize,
        deselected: u32,
        /// Plugins' lines for under the "collected" line (`Collection::report_lines`).
        report_lines: Vec<String>,
        workers: usize,
        /// Sum of the tests' estimated durations, seconds (for an ETA).
        estimated_total: f64,
    },
    TestStarted {
        id: TestId,
        worker: WorkerId,
    },
    /// Shared with the run's own record of results: no copy per test.
    TestFinished(Arc<TestResult>),
    Warning(WarningReport),
    /// Something the user should know that is not a test result (a worker respawned...).
    Note(String),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TestResult {
    pub id: TestId,
    pub worker: WorkerId,
    pub outcome: Outcome,
    /// Setup + call + teardown, seconds.
    pub duration: f64,
    /// pytest's reports, in order. For a crash or timeout, one synthetic failed "call" report.
    /// For an attempt that is retried, its failed reports carry category "rerun" (letter
    /// "R", word "RERUN"), as pytest-rerunfailures reports them.
    pub reports: Vec<PhaseReport>,
    /// 0 for the first run of a test, N for its Nth retry.
    pub attempt: u32,
    /// This attempt failed and the test will run again: not the test's final result.
    pub will_retry: bool,
}

impl TestResult {
    /// The categories this test adds to the summary line (one per counted report).
    pub fn categories(&self) -> impl Iterator<Item = Category> + '_ {
        self.reports
            .iter()
            .filter_map(|r| Category::parse(&r.category))
    }

    /// The test's final result, and it passed only after failing before (a flaky test).
    pub fn is_flaky(&self) -> bool {
        self.attempt > 0 && !self.will_retry && !self.outcome.is_failure()
    }

    /// The test's final result (not an attempt that is retried).
    pub fn is_final(&self) -> bool {
        !self.will_retry
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RunSummary {
    pub session: Option<SessionInfo>,
    /// Tests collected and selected.
    pub collected: usize,
    pub deselected: u32,
    pub collect_problems: Vec<CollectProblem>,
    /// Finished tests, in the order they finished.
    pub results: Vec<TestResult>,
    pub warnings: Vec<WarningReport>,
    /// Tests that never ran (interrupt, early stop).
    pub not_run: Vec<TestId>,
    pub wall: Duration,
    /// Set when a signal stopped the run.
    pub interrupted: Option<String>,
    /// Set when pytest itself failed (the plugin's traceback or an INTERNALERROR).
    pub internal_error: Option<String>,
    /// Set when `-x`/`--maxfail` stopped the run: pytest's words, "stopping after N failures".
    pub stopped: Option<String>,
    /// `--fail-on-flaky`: a test that passed only on a retry makes the exit code 7.
    pub fail_on_flaky: bool,
    pub workers: usize,
    /// Plugins' terminal summary sections from the zygote (`FromPython::PluginSummary`).
    pub plugin_summary: String,
    /// A plugin failed the run (pytest-cov's `--cov-fail-under`): its message.
    pub plugin_failure: Option<String>,
    /// A test ended the session (`pytest.exit`, `KeyboardInterrupt`): the exit code and
    /// the closing lines are pytest's for it.
    #[serde(default)]
    pub session_exit: Option<SessionExit>,
    /// The zygote's own session exit status when it played xdist's controller
    /// (`FromPython::SessionEnd`): its plugins may change it (syrupy, `--max-warnings`).
    #[serde(default)]
    pub plugin_exitstatus: Option<i32>,
    /// This node's part in a job that shares one queue (`--queue redis://…`).
    #[serde(default)]
    pub shared: Option<SharedOutcome>,
    /// Which run this was and what code it ran on, when its outcomes went into a history
    /// (the timing store, the shared queue's): the same run id in both.
    #[serde(default)]
    pub identity: Option<crate::history::RunIdentity>,
}

/// What a node of a job with a shared queue adds to its summary.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SharedOutcome {
    pub build: String,
    /// From 0.
    pub node: u32,
    pub nodes: u32,
    /// Tests this node ran whose acknowledgement came second (another node's result
    /// counts): left out of this node's results and JUnit.
    pub ran_twice: Vec<TestId>,
    /// Tests run after the queue was lost (they may also have run elsewhere).
    pub without_queue: Vec<TestId>,
    /// Tests taken over from a node whose lease expired.
    pub reclaimed: usize,
    /// The job stopped (`-x`/`--maxfail` reached on the job): why.
    pub job_stopped: Option<String>,
}

impl RunSummary {
    /// Counts per category, as pytest's summary line shows them.
    pub fn counts(&self) -> BTreeMap<Category, usize> {
        let mut counts = BTreeMap::new();
        for category in self.results.iter().flat_map(TestResult::categories) {
            *counts.entry(category).or_insert(0) += 1;
        }
        for problem in &self.collect_problems {
            let category = if problem.outcome == "skipped" {
                Category::Skipped
            } else {
                Category::Error
            };
            *counts.entry(category).or_insert(0) += 1;
        }
        if self.deselected > 0 {
            counts.insert(Category::Deselected, self.deselected as usize);
        }
        if !self.warnings.is_empty() {
            counts.insert(Category::Warnings, self.warnings.len());
        }
        counts
    }

    pub fn collection_errors(&self) -> usize {
        self.collect_problems
            .iter()
            .filter(|p| p.outcome != "skipped")
            .count()
    }

    /// A test's final result failed (attempts that were retried do not count).
    pub fn any_test_failed(&self) -> bool {
        self.results
            .iter()
            .any(|r| r.is_final() && r.outcome.is_failure())
    }

    /// Tests that passed only on a retry, each with the failed attempts before it.
    pub fn flaky(&self) -> Vec<(&TestResult, Vec<&TestResult>)> {
        self.results
            .iter()
            .filter(|r| r.is_flaky())
            .map(|r| {
                let attempts = self
                    .results
                    .iter()
                    .filter(|a| a.id == r.id && a.will_retry)
                    .collect();
                (r, attempts)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_and_summary_survive_a_json_round_trip() {
        let result = Arc::new(TestResult {
            id: TestId::new("t.py::a"),
            worker: WorkerId(1),
            outcome: Outcome::Failed,
            duration: 0.25,
            reports: vec![PhaseReport {
                when: "call".into(),
                outcome: "failed".into(),
                ..PhaseReport::default()
            }],
            attempt: 1,
            will_retry: false,
        });
        let events = vec![
            RunEvent::Note("replacing worker gw1".into()),
            RunEvent::TestStarted {
                id: TestId::new("t.py::a"),
                worker: WorkerId(1),
            },
            RunEvent::TestFinished(Arc::clone(&result)),
        ];
        let text = serde_json::to_string(&events).unwrap();
        let back: Vec<RunEvent> = serde_json::from_str(&text).unwrap();
        assert_eq!(serde_json::to_string(&back).unwrap(), text);
        let summary = RunSummary {
            results: vec![(*result).clone()],
            wall: Duration::from_millis(1500),
            interrupted: Some("SIGTERM".into()),
            ..RunSummary::default()
        };
        let back: RunSummary =
            serde_json::from_str(&serde_json::to_string(&summary).unwrap()).unwrap();
        assert_eq!(back.results, summary.results);
        assert_eq!(back.wall, summary.wall);
        assert_eq!(back.interrupted.as_deref(), Some("SIGTERM"));
    }
}
