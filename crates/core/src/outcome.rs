//! Outcomes: the per-report category pytest's terminal counts, and the per-test outcome.

use serde::{Deserialize, Serialize};

use crate::protocol::PhaseReport;

/// What pytest's `pytest_report_teststatus` says of one report. The summary line counts these.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Category {
    Failed,
    Passed,
    Skipped,
    Deselected,
    XFailed,
    XPassed,
    Warnings,
    Error,
    Rerun,
}

impl Category {
    /// pytest's order in the summary line (`KNOWN_TYPES`, then `rerun`).
    pub const SUMMARY_ORDER: [Category; 9] = [
        Category::Failed,
        Category::Passed,
        Category::Skipped,
        Category::Deselected,
        Category::XFailed,
        Category::XPassed,
        Category::Warnings,
        Category::Error,
        Category::Rerun,
    ];

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "failed" => Self::Failed,
            "passed" => Self::Passed,
            "skipped" => Self::Skipped,
            "deselected" => Self::Deselected,
            "xfailed" => Self::XFailed,
            "xpassed" => Self::XPassed,
            "warnings" => Self::Warnings,
            "error" => Self::Error,
            "rerun" => Self::Rerun,
            _ => return None,
        })
    }

    /// The word pytest prints in the summary line for `count` of these.
    pub fn summary_word(self, count: usize) -> &'static str {
        let plural = count != 1;
        match self {
            Self::Failed => "failed",
            Self::Passed => "passed",
            Self::Skipped => "skipped",
            Self::Deselected => "deselected",
            Self::XFailed => "xfailed",
            Self::XPassed => "xpassed",
            Self::Warnings if plural => "warnings",
            Self::Warnings => "warning",
            Self::Error if plural => "errors",
            Self::Error => "error",
            Self::Rerun => "rerun",
        }
    }
}

/// The outcome of one test after all its phases.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Passed,
    /// The call phase failed (or a strict xpass).
    Failed,
    /// Setup or teardown failed.
    Error,
    Skipped,
    XFailed,
    XPassed,
    /// The worker process died while running the test.
    Crashed,
    /// The test ran past `--timeout`.
    TimedOut,
    /// Never ran: the run stopped or was interrupted first.
    NotRun,
}

impl Outcome {
    /// Failed, errored, crashed or timed out: what makes the exit code 1.
    pub fn is_failure(self) -> bool {
        match self {
            Self::Failed | Self::Error | Self::Crashed | Self::TimedOut => true,
            Self::Passed | Self::Skipped | Self::XFailed | Self::XPassed | Self::NotRun => false,
        }
    }

    /// The outcome of a test from its phase reports, in order (setup, call, teardown).
    pub fn from_reports(reports: &[PhaseReport]) -> Self {
        let mut outcome = Self::Passed;
        for report in reports {
            let category = Category::parse(&report.category);
            let this = match (category, &*report.outcome, &*report.when) {
                (Some(Category::XFailed), _, _) => Self::XFailed,
                (Some(Category::XPassed), _, _) => Self::XPassed,
                (Some(Category::Error), _, _) => Self::Error,
                (Some(Category::Failed), _, _) => Self::Failed,
                (Some(Category::Skipped), _, _) => Self::Skipped,
                (_, "failed", "call") => Self::Failed,
                (_, "failed", _) => Self::Error,
                (_, "skipped", _) => Self::Skipped,
                _ => Self::Passed,
            };
            // A failure anywhere dominates; the call phase decides among the rest.
            outcome = match (outcome, this) {
                (Self::Failed, Self::Error) | (Self::Error, Self::Failed) => Self::Failed,
                (prev, _) if prev.is_failure() => prev,
                (_, this) if this.is_failure() => this,
                (prev, Self::Passed) => prev,
                (_, this) => this,
            };
        }
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(when: &'static str, outcome: &'static str, category: &'static str) -> PhaseReport {
        PhaseReport {
            when: when.into(),
            outcome: outcome.into(),
            category: category.into(),
            ..PhaseReport::default()
        }
    }

    #[test]
    fn outcome_from_reports() {
        let pass = [
            report("setup", "passed", ""),
            report("call", "passed", "passed"),
            report("teardown", "passed", ""),
        ];
        assert_eq!(Outcome::from_reports(&pass), Outcome::Passed);
        let setup_error = [
            report("setup", "failed", "error"),
            report("teardown", "passed", ""),
        ];
        assert_eq!(Outcome::from_reports(&setup_error), Outcome::Error);
        let teardown_error = [
            report("setup", "passed", ""),
            report("call", "passed", "passed"),
            report("teardown", "failed", "error"),
        ];
        assert_eq!(Outcome::from_reports(&teardown_error), Outcome::Error);
        let fail_and_teardown = [
            report("call", "failed", "failed"),
            report("teardown", "failed", "error"),
        ];
        assert_eq!(Outcome::from_reports(&fail_and_teardown), Outcome::Failed);
        let skipped = [
            report("setup", "skipped", "skipped"),
            report("teardown", "passed", ""),
        ];
        assert_eq!(Outcome::from_reports(&skipped), Outcome::Skipped);
        let xfail = [
            report("setup", "passed", ""),
            report("call", "skipped", "xfailed"),
            report("teardown", "passed", ""),
        ];
        assert_eq!(Outcome::from_reports(&xfail), Outcome::XFailed);
        let xpass = [report("call", "passed", "xpassed")];
        assert_eq!(Outcome::from_reports(&xpass), Outcome::XPassed);
    }

    #[test]
    fn summary_words() {
        assert_eq!(Category::Error.summary_word(1), "error");
        assert_eq!(Category::Error.summary_word(2), "errors");
        assert_eq!(Category::Warnings.summary_word(1), "warning");
        assert_eq!(Category::Passed.summary_word(2), "passed");
    }
}
