//! Options shardex consumes that pytest itself also read from `addopts` or `PYTEST_ADDOPTS`
//! (the session message says what it made of them): shardex's own command line wins, as the
//! command line does in pytest; otherwise pytest's value applies.

use std::path::PathBuf;
use std::time::Duration;

use shardex_core::protocol::{ItemInfo, SessionInfo};
use shardex_core::schedule::DistMode;

use super::state::LaneState;
use super::Run;
use crate::{sizing, RunEvent, WorkerMode};

/// How long after a timeout that pytest-timeout enforces itself (a marker, its own setting)
/// the agent kills the worker's group anyway.
const BACKSTOP_MARGIN: Duration = Duration::from_secs(1);

impl Run<'_> {
    pub(super) fn apply_pytest_options(&mut self, info: &SessionInfo) {
        if !self.config.workers_given {
            if let Some(n) = info.numprocesses.as_deref().and_then(resolve_numprocesses) {
                self.use_workers(n);
            }
        }
        if !self.config.dist_given {
            if let Some(mode) = info.dist.as_deref().and_then(parse_dist) {
                self.config.dist = mode;
            }
        }
        if self.config.junitxml.is_none() {
            if let Some(path) = &info.xmlpath {
                self.config.junitxml = Some(PathBuf::from(path));
                self.pool.reconfigure(|s| s.junit = true);
            }
        }
    }

    /// pytest's `-n` from `addopts`: the run uses `n` workers.
    fn use_workers(&mut self, n: usize) {
        if n == self.workers {
            return;
        }
        tracing::debug!(workers = n, "worker count from pytest's addopts");
        self.pool.grow(n);
        while self.lanes.len() < n {
            self.lanes.push(super::state::Lane::default());
            if self.pool.mode() == WorkerMode::Spawn {
                // Spawn mode started one process per slot already: start the new ones.
                self.start_worker(self.lanes.len() - 1);
            }
        }
        for slot in n..self.lanes.len() {
            self.lanes[slot].state = LaneState::Unused;
            self.pool.send(slot, shardex_core::protocol::ToPython::Exit);
        }
        self.workers = n;
        self.pool
            .reconfigure(|s| s.worker_count = u32::try_from(n).unwrap_or(u32::MAX));
        self.emit(RunEvent::Note(format!(
            "-n {n} from pytest's addopts: {n} workers"
        )));
    }

    /// The deadline of a test from when it starts: its own timeout by pytest-timeout's
    /// precedence when pytest-timeout is loaded, else `--timeout`; a timeout pytest-timeout
    /// enforces in the worker itself gets the kill grace and a margin more before the agent
    /// kills the worker.
    pub(super) fn test_timeout(&self, item: Option<&ItemInfo>) -> Option<Duration> {
        let per_item = self.session.as_ref().is_some_and(|s| s.item_timeouts);
        if !per_item {
            return self.config.timeout;
        }
        let item = item?;
        let secs = Duration::try_from_secs_f64(item.timeout?).ok()?;
        Some(if item.timeout_in_worker {
            secs + self.config.kill_grace + BACKSTOP_MARGIN
        } else {
            secs
        })
    }
}

/// xdist's `-n` values: a count, `auto` or `logical`.
fn resolve_numprocesses(value: &str) -> Option<usize> {
    match value {
        "auto" => Some(sizing::auto_workers()),
        "logical" => Some(sizing::logical_workers()),
        n => n.parse::<usize>().ok().map(|n| n.max(1)),
    }
}

fn parse_dist(value: &str) -> Option<DistMode> {
    match value {
        "load" | "worksteal" => Some(DistMode::Load),
        "loadscope" => Some(DistMode::LoadScope),
        "loadfile" => Some(DistMode::LoadFile),
        "loadgroup" => Some(DistMode::LoadGroup),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xdist_values() {
        assert_eq!(resolve_numprocesses("3"), Some(3));
        assert_eq!(resolve_numprocesses("0"), Some(1));
        assert!(resolve_numprocesses("auto").is_some_and(|n| n >= 1));
        assert_eq!(resolve_numprocesses("many"), None);
        assert_eq!(parse_dist("loadgroup"), Some(DistMode::LoadGroup));
        assert_eq!(parse_dist("each"), None);
    }
}
