//! One file per subcommand.

pub mod run;
