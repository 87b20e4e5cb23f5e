//! One file per subcommand.

pub mod completions;
pub mod report;
pub mod run;
pub mod serve;
pub mod watch;
