//! One file per subcommand.

pub mod report;
pub mod run;
pub mod serve;
pub mod watch;
