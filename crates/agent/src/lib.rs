//! shardex-agent: the worker pool, the queue and the orchestration of one run.

pub mod config;
pub mod errors;
pub mod plugin;
pub mod pool;
pub mod python;
pub mod queue;
pub mod run;
pub mod signal;
pub mod sizing;
pub mod stats;

pub use config::{RetryFlags, RunConfig, WorkerMode};
pub use errors::AgentError;
pub use run::execute;
pub use shardex_core::{RunEvent, RunSummary, TestResult};
