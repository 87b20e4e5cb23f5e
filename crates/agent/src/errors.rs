//! AgentError: what stops a run before or outside test results. A test's failure is data
//! (`Outcome`), never an error here.

use std::path::PathBuf;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum AgentError {
    #[error("cannot start {python}: {source}")]
    Spawn {
        python: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// pytest ended before it collected: a usage error (`code` 4), a missing path, a broken
    /// conftest... `stderr_tail` is what it printed.
    #[error("pytest {status} before collecting tests{}", if stderr_tail.is_empty() { String::new() } else { format!(":\n{stderr_tail}") })]
    EarlyExit {
        code: Option<i32>,
        status: String,
        stderr_tail: String,
    },
    #[error("protocol error with {peer}: {reason}")]
    Protocol { peer: String, reason: String },
    #[error("the collections of the workers differ:\n{diff}")]
    CollectionMismatch { diff: String },
    /// The job's shared queue cannot be used by this node (its collection differs from the
    /// seeded one; no node seeded the queue in time).
    #[error("{0}")]
    SharedQueue(String),
    #[error("timing data: {0}")]
    Timing(#[from] shardex_core::TimingError),
    #[error("cannot write the JUnit report {path}: {source}")]
    Report {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// An operating-system call failed; `doing` names what was being done and on what
    /// ("binding the socket /tmp/…/agent.sock").
    #[error("{doing}: {source}")]
    Io {
        doing: String,
        #[source]
        source: std::io::Error,
    },
}
