//! One file per subcommand.

pub mod completions;
pub mod flaky;
pub mod report;
pub mod run;
pub mod serve;
pub mod slowest;
pub mod watch;
