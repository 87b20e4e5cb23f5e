//! Messages from the Python side before and around collection: the session, collect
//! reports, warnings, the collection itself, which builds the work queue and starts the
//! workers.

use std::collections::HashSet;

use shardex_core::attempts::AttemptLedger;
use shardex_core::protocol::{CollectProblem, Collection, FromPython, ToPython};
use shardex_core::schedule::{split_for_nodes, SchedTest};
use shardex_core::{SharedOutcome, TestId, WorkerId};

use super::state::{LaneState, Phase, WorkerQueue};
use super::Run;
use crate::pool::Peer;
use crate::queue::shared::{project_name, NodeIdentity};
use crate::queue::{LocalQueue, SharedQueue, WorkQueue};
use crate::{AgentError, RunEvent, WorkerMode};

impl Run<'_> {
    pub(super) fn on_message(&mut self, peer: Peer, msg: FromPython) -> Result<(), AgentError> {
        match msg {
            FromPython::Hello { .. } | FromPython::Forked { .. } | FromPython::Exited { .. } => {}
            FromPython::Session(info) => self.on_session(info),
            FromPython::CollectReport(problem) => {
                if self.is_collecting(peer) {
                    self.collecting
                        .entry(peer)
                        .or_default()
                        .problems
                        .push(problem);
                }
            }
            FromPython::Collected(collection) => {
                // The first collection to arrive is the reference; what its process
                // reported while collecting counts once. Others (--spawn) only compare.
                let pending = self.collecting.remove(&peer).unwrap_or_default();
                if self.collection.is_none() {
                    for problem in pending.problems {
                        self.on_collect_problem(problem);
                    }
                    for warning in pending.warnings {
                        self.emit(RunEvent::Warning(warning.clone()));
                        self.summary.warnings.push(warning);
                    }
                }
                self.on_collected(peer, collection)?
            }
            FromPython::Done(done) => {
                if let Peer::Worker(slot) = peer {
                    self.lanes[slot].received += 1;
                    if self.is_retracted_result(slot, &done.id) {
                        tracing::debug!(slot, test = %done.id, "dropped: a result of a test this worker gave back");
                    } else {
                        self.on_done(slot, done);
                    }
                }
            }
            FromPython::Retracted { ids } => {
                if let Peer::Worker(slot) = peer {
                    self.on_retracted(slot, ids);
                }
            }
            FromPython::Warning(warning) => {
                if self.is_collecting(peer) {
                    self.collecting
                        .entry(peer)
                        .or_default()
                        .warnings
                        .push(warning);
                } else {
                    self.emit(RunEvent::Warning(warning.clone()));
                    self.summary.warnings.push(warning);
                }
            }
            FromPython::PluginSummary { text, failure } => {
                self.summary.plugin_summary.push_str(&text);
                if failure.is_some() {
                    self.summary.plugin_failure = failure;
                }
            }
            FromPython::SessionEnd { exitstatus } => {
                self.summary.plugin_exitstatus = Some(exitstatus);
            }
            FromPython::Note { text } => self.emit(RunEvent::Note(text)),
            FromPython::Fatal { message } => {
                self.summary.internal_error.get_or_insert(message);
                self.abort("internal error");
            }
            FromPython::SessionExit(exit) => {
                if let Peer::Worker(slot) = peer {
                    self.on_session_exit(slot, exit);
                }
            }
            FromPython::HardFailure { id } => {
                if let Peer::Worker(slot) = peer {
                    self.on_hard_failure_announced(slot, &id);
                }
            }
        }
        Ok(())
    }

    fn on_session(&mut self, info: Box<shardex_core::protocol::SessionInfo>) {
        if self.session.is_some() {
            return;
        }
        self.apply_pytest_options(&info);
        self.emit(RunEvent::SessionStarted(info.clone()));
        if info.rerunfailures_installed && info.verbosity > 0 {
            self.emit(RunEvent::Note(
                "pytest-rerunfailures is installed: shardex runs the retries itself \
                 (the plugin is disabled with -p no:rerunfailures; its flags, ini keys \
                 and flaky marker are honoured)"
                    .into(),
            ));
        }
        self.session = Some(*info);
    }

    /// Whether `peer` has not sent its collection yet.
    fn is_collecting(&self, peer: Peer) -> bool {
        match peer {
            Peer::Zygote => self.collection.is_none(),
            Peer::Worker(slot) => matches!(self.lanes[slot].state, LaneState::Collecting),
        }
    }

    fn on_collect_problem(&mut self, problem: CollectProblem) {
        self.junit_collect.push(problem.junit.clone());
        self.emit(RunEvent::CollectProblem(problem.clone()));
        self.summary.collect_problems.push(problem);
    }

    fn on_collected(&mut self, peer: Peer, collection: Collection) -> Result<(), AgentError> {
        if self.phase != Phase::Collecting && self.collection.is_none() {
            // Interrupted while collecting: nothing starts.
            self.collection = Some(collection);
            return Ok(());
        }
        if let Some(reference) = &self.collection {
            // A spawn-mode worker collected for itself: it must see the same tests.
            if let Peer::Worker(slot) = peer {
                let ours: HashSet<&TestId> = reference.items.iter().map(|i| &i.id).collect();
                let theirs: HashSet<&TestId> = collection.items.iter().map(|i| &i.id).collect();
                if ours != theirs {
                    return Err(AgentError::CollectionMismatch {
                        diff: collection_diff(&ours, &theirs, slot),
                    });
                }
                self.start_serving(slot);
            }
            return Ok(());
        }
        let interrupted = collection.errors > 0
            && !self
                .session
                .as_ref()
                .is_some_and(|s| s.continue_on_collection_errors);
        self.load_timing_store();
        let suite_cap = self
            .config
            .retry
            .max_suite_reruns
            .or_else(|| self.session.as_ref().and_then(|s| s.max_suite_reruns));
        self.ledger = AttemptLedger::new(suite_cap, Some(self.effective_maxfail()));
        let workers = self.build_queue(&collection, interrupted);
        // Fewer tests than workers: the extra slots are never started (or are sent away).
        for slot in workers..self.lanes.len() {
            self.lanes[slot].state = LaneState::Unused;
            self.pool.send(slot, ToPython::Exit);
        }
        let nothing_to_run = interrupted
            || self.summary.collected == 0
            || self.session.as_ref().is_some_and(|s| s.collectonly);
        self.collection = Some(collection);
        if nothing_to_run {
            self.close();
            return Ok(());
        }
        self.phase = Phase::Dispatching;
        match self.pool.mode() {
            WorkerMode::Fork => {
                for slot in 0..workers {
                    self.start_worker(slot);
                }
            }
            WorkerMode::Spawn => {
                if let Peer::Worker(slot) = peer {
                    self.start_serving(slot);
                }
            }
        }
        Ok(())
    }

    /// Records the collection and builds the work queue from it and the timings. Returns
    /// how many workers the run uses.
    fn build_queue(&mut self, collection: &Collection, interrupted: bool) -> usize {
        self.summary.deselected = collection.deselected;
        let ids: Vec<TestId> = collection.items.iter().map(|i| i.id.clone()).collect();
        let estimates = self.timings.estimates(&ids);
        let tests: Vec<SchedTest> = collection
            .items
            .iter()
            .zip(estimates)
            .map(|(item, estimate)| SchedTest {
                id: item.id.clone(),
                estimate,
                group: item.group.clone(),
            })
            .collect();
        // A run that runs nothing (--collect-only, stopped by collection errors, nothing
        // collected) leaves the job's queue alone: it would seed it for nothing. Its node
        // has no share of its own then (the queue decides who runs what): it lists all.
        let runs_tests = !interrupted
            && !tests.is_empty()
            && !self.session.as_ref().is_some_and(|s| s.collectonly);
        let shared = self.config.shared_queue.is_some() && runs_tests;
        let tests = if self.config.shared_queue.is_some() {
            tests
        } else {
            self.node_share(tests)
        };
        self.summary.collected = tests.len();
        let unknown: Vec<bool> = tests
            .iter()
            .map(|t| self.timings.get(&t.id).is_none())
            .collect();
        let workers = self.workers.min(tests.len()).max(1);
        self.emit(RunEvent::Collected {
            total: tests.len(),
            deselected: collection.deselected,
            report_lines: collection.report_lines.clone(),
            workers,
            estimated_total: tests.iter().map(|t| t.estimate).sum(),
        });
        self.summary.workers = workers;
        for (index, item) in collection.items.iter().enumerate() {
            self.order.insert(item.id.clone(), index);
            self.items.insert(item.id.clone(), item.clone());
        }
        // Under -x/--maxfail, last run's failures go first: the stop comes as early as it can.
        let first: HashSet<TestId> = if self.effective_maxfail() > 0 {
            collection.failed_before.iter().cloned().collect()
        } else {
            HashSet::new()
        };
        self.queue = Some(if shared {
            self.shared_queue(tests, &unknown, workers)
        } else {
            let queue = LocalQueue::new(tests, &unknown, workers, self.config.dist, &first);
            Box::new(queue)
        });
        workers
    }

    /// Joins the queue shared by the job's nodes (a task connects and takes batches; the
    /// queue starts empty). Says which job and node this is.
    fn shared_queue(
        &mut self,
        tests: Vec<SchedTest>,
        unknown: &[bool],
        workers: usize,
    ) -> Box<dyn WorkQueue> {
        let mut config = self.config.shared_queue.clone().expect("a shared queue");
        let (index, total, source) = match &self.config.node {
            Some(node) => (node.index, node.total, node.source.clone()),
            None => (0, 1, "a single node".to_owned()),
        };
        if let Some(session) = self.session.as_ref().filter(|_| config.project.is_none()) {
            config.project = Some(project_name(&config, &session.rootdir));
        }
        self.emit(RunEvent::Note(format!(
            "shared queue: {} (build {}, node {} of {total}, {source})",
            config.shown,
            config.build,
            index + 1,
        )));
        self.summary.shared = Some(SharedOutcome {
            build: config.build.clone(),
            node: index as u32,
            nodes: total as u32,
            ..SharedOutcome::default()
        });
        let node = NodeIdentity {
            index: index as u32,
            total: total as u32,
            source,
            shown: config.shown.clone(),
        };
        let maxfail = self.effective_maxfail();
        Box::new(SharedQueue::start(
            &config,
            node,
            tests,
            unknown,
            workers,
            self.config.dist,
            maxfail,
        ))
    }

    /// With `--node-total N` (or a CI's parallelism), only this node's share of one
    /// deterministic, timing-balanced split of the collection (every node computes the same
    /// split from the same collection and timings). Says which share it runs.
    fn node_share(&mut self, tests: Vec<SchedTest>) -> Vec<SchedTest> {
        let Some(node) = self.config.node.clone().filter(|n| n.total > 1) else {
            return tests;
        };
        let total_secs: f64 = tests.iter().map(|t| t.estimate).sum();
        let all = tests.len();
        // Split in test-id order, not collection order: a plugin that shuffles the
        // collection (pytest-randomly) shuffles it differently on every node.
        let mut by_id = tests.clone();
        by_id.sort_by(|a, b| a.id.cmp(&b.id));
        let mut shares = split_for_nodes(&by_id, node.total, self.config.dist);
        let Some(share) = shares.get_mut(node.index) else {
            return tests;
        };
        let mine: HashSet<TestId> = share.ids.drain(..).collect();
        let tests: Vec<SchedTest> = tests.into_iter().filter(|t| mine.contains(&t.id)).collect();
        self.emit(RunEvent::Note(format!(
            "node {} of {} ({}): running {} of {all} tests, estimated {:.2} s of {:.2} s",
            node.index + 1,
            node.total,
            node.source,
            tests.len(),
            share.estimate,
            total_secs,
        )));
        tests
    }

    /// A `--spawn` worker whose collection matched starts taking tests.
    fn start_serving(&mut self, slot: usize) {
        if matches!(self.lanes[slot].state, LaneState::Collecting) {
            self.lanes[slot].state = LaneState::Serving(WorkerQueue::default());
            self.fill(slot);
        }
    }

    /// Asks the pool for a worker on `slot` (a fork, or a process in spawn mode).
    pub(super) fn start_worker(&mut self, slot: usize) {
        if let Err(err) = self.pool.start_worker(slot) {
            let name = WorkerId(slot);
            self.emit(RunEvent::Note(format!("cannot start worker {name}: {err}")));
            self.lanes[slot].state = LaneState::GivenUp;
        }
    }
}

fn collection_diff(reference: &HashSet<&TestId>, theirs: &HashSet<&TestId>, slot: usize) -> String {
    let mut only_ref: Vec<_> = reference
        .difference(theirs)
        .map(|id| format!("- {id}"))
        .collect();
    let mut only_theirs: Vec<_> = theirs
        .difference(reference)
        .map(|id| format!("+ {id}"))
        .collect();
    only_ref.sort();
    only_theirs.sort();
    let mut lines = vec![format!("--- first worker\n+++ gw{slot}")];
    lines.extend(only_ref.into_iter().take(20));
    lines.extend(only_theirs.into_iter().take(20));
    lines.join("\n")
}
