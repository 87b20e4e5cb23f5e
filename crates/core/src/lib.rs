//! shardex-core: pure, synchronous logic shared by the agent and the CLI.
//!
//! No async, no processes: ids, outcomes, timings, the scheduler state machine,
//! JUnit xunit1 read/write and the wire protocol types.

pub mod attempts;
pub mod daemon_key;
pub mod dispatch;
pub mod errors;
pub mod fileset;
pub mod history;
pub mod job_report;
pub mod junit;
pub mod outcome;
pub mod protocol;
pub mod queue_plan;
pub mod retry;
pub mod run_events;
pub mod schedule;
pub mod test_id;
pub mod timing;
pub mod watch_plan;

pub use errors::{JunitReadError, TimingError};
pub use outcome::{Category, Outcome};
pub use run_events::{RunEvent, RunSummary, SharedOutcome, TestResult};
pub use test_id::{TestId, WorkerId};

/// The files pytest may read its configuration from (the first found, walking up from the
/// arguments, sets the rootdir).
pub const PYTEST_INI_FILES: &[&str] = &[
    "pytest.ini",
    ".pytest.ini",
    "pyproject.toml",
    "tox.ini",
    "setup.cfg",
];
