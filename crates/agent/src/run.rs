//! One run: start the Python side, collect, schedule, gather results. (being written)

use tokio::sync::mpsc::UnboundedSender;

use crate::{AgentError, RunConfig, RunEvent, RunSummary};

/// Runs the tests described by `config`, sending progress to `events`. Returns when every
/// test has a result, the run was interrupted (SIGINT/SIGTERM), or pytest failed to start.
pub async fn execute(
    config: RunConfig,
    events: UnboundedSender<RunEvent>,
) -> Result<RunSummary, AgentError> {
    let _ = (config, events);
    Ok(RunSummary::default())
}
