//! The worker pool: the run folder, the socket and the Python processes, with a lifetime of
//! its own (a run borrows it).

pub mod conn;
pub mod launch;
pub mod process;
pub mod rundir;
pub mod supervisor;

pub use launch::{LaunchSpec, Launcher, ProcOwner, ProcessLauncher, RawEvent};
pub use rundir::RunDir;
pub use supervisor::{Peer, Pool, PoolEvent, PoolSpec, StopReason};
