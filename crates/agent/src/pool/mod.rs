//! The worker pool: process spawning and killing, connections to Python processes.

pub mod conn;
pub mod process;
