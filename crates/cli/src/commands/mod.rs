//! One file per subcommand.

pub mod flaky;
pub mod report;
pub mod run;
pub mod slowest;
