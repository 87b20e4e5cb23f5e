//! shardex-agent: the worker pool, the queue and the orchestration of one run.

pub mod config;
pub mod daemon;
pub mod errors;
pub mod history;
pub mod plugin;
pub mod pool;
pub mod python;
pub mod queue;
pub mod run;
pub mod signal;
pub mod sizing;
pub mod stats;

pub use config::{
    NodeShare, RetryFlags, RunConfig, SharedQueueConfig, WorkerMode, DEFAULT_KILL_GRACE,
    DEFAULT_STOP_GRACE,
};
pub use errors::AgentError;
pub use run::execute;
pub use shardex_core::{RunEvent, RunSummary, TestResult};
