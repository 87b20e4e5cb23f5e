//! The end of a run: the summary, the JUnit report and the timing store.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

use shardex_core::history::RunIdentity;
use shardex_core::junit::{JunitReport, SuiteInfo};
use shardex_core::protocol::ToPython;
use shardex_core::timing::TimingStore;
use shardex_core::Outcome;

use super::state::Phase;
use super::Run;
use crate::{AgentError, RunEvent, RunSummary, TestResult};

impl Run<'_> {
    /// The final outcome of every test that ran (not retried attempts), for the zygote.
    pub(super) fn final_outcomes(&self) -> ToPython {
        let (mut failed, mut passed) = (Vec::new(), Vec::new());
        let ran = |r: &&Arc<TestResult>| !r.will_retry && r.outcome != Outcome::NotRun;
        for result in self.results.iter().filter(ran) {
            if result.outcome.is_failure() {
                failed.push(result.id.clone());
            } else {
                passed.push(result.id.clone());
            }
        }
        ToPython::Results { failed, passed }
    }

    pub(super) fn finish(&mut self) -> Result<RunSummary, AgentError> {
        self.settle_left_running();
        let maxfail = self.effective_maxfail();
        let mut summary = std::mem::take(&mut self.summary);
        summary.fail_on_flaky = self.config.retry.fail_on_flaky
            || self.session.as_ref().is_some_and(|s| s.fail_on_flaky);
        // By now the reporter has nearly always dropped its references: no copy.
        summary.results = self
            .results
            .drain(..)
            .map(|r| Arc::try_unwrap(r).unwrap_or_else(|shared| (*shared).clone()))
            .collect();
        summary.session = self.session.clone();
        if let Some(session) = summary.session.as_mut() {
            session.maxfail = maxfail;
        }
        // A test whose retry never ran (the run stopped first) has no final result: like
        // every test the stop left unrun it is counted as not run, and it gets no testcase
        // (its failed attempts show as reruns in the terminal).
        self.attempt_junit.clear();
        // Deterministic output: results in collection order, not completion order.
        let order = &self.order;
        summary
            .results
            .sort_by_cached_key(|r| order.get(&r.id).copied().unwrap_or(usize::MAX));
        summary.wall = self.started.elapsed();
        if let Some(path) = self.config.junitxml.clone() {
            self.write_junit(&path, &summary)?;
        }
        summary.identity = self.history_identity(&summary);
        self.save_timings(&summary);
        Ok(summary)
    }

    /// Tests still counted as running when the run ends (their workers were killed and
    /// not seen to end): interrupted ones are failures that say so, others not run.
    fn settle_left_running(&mut self) {
        for slot in 0..self.lanes.len() {
            let running = self.lanes[slot].queue_mut().and_then(|q| q.running.take());
            let Some(running) = running else { continue };
            if matches!(self.phase, Phase::Aborting { .. }) {
                self.record_interrupted(slot, running);
            } else {
                self.summary.not_run.push(running.id);
            }
        }
    }

    fn write_junit(&mut self, path: &PathBuf, summary: &RunSummary) -> Result<(), AgentError> {
        let session = self.session.clone().unwrap_or_default();
        self.junit_tests.sort_by_key(|(index, _)| *index);
        let mut cases = std::mem::take(&mut self.junit_collect);
        cases.extend(self.junit_tests.drain(..).map(|(_, part)| part));
        let report = JunitReport {
            suite: SuiteInfo {
                name: if session.suite_name.is_empty() {
                    "pytest".into()
                } else {
                    session.suite_name
                },
                hostname: session.hostname,
                timestamp: session.timestamp,
                time: summary.wall.as_secs_f64(),
            },
            cases,
        };
        let write = || -> std::io::Result<()> {
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent)?;
            }
            let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
            report.write_to(&mut out)?;
            std::io::Write::flush(&mut out)
        };
        write().map_err(|source| AgentError::Report {
            path: path.clone(),
            source,
        })
    }

    fn save_timings(&mut self, summary: &RunSummary) {
        let Some(path) = self.timing_store_path() else {
            return;
        };
        let mut store = TimingStore::load_store(&path).unwrap_or_default();
        for result in &summary.results {
            if let Some(secs) = self.timings.get(&result.id) {
                store.record(result.id.clone(), secs);
            }
        }
        if let Some(run) = &summary.identity {
            let tests = shardex_core::history::test_runs(summary);
            store.history_mut().record_run(run.clone(), &tests);
        }
        if let Err(err) = store.save_store(&path) {
            tracing::warn!("cannot save timings to {}: {err}", path.display());
        }
    }

    /// The run's identity when its outcomes go into a history (the timing store's, the
    /// shared queue's). An interrupted run's outcomes say little of its tests: none.
    fn history_identity(&self, summary: &RunSummary) -> Option<RunIdentity> {
        let kept = self.timing_store_path().is_some() || summary.shared.is_some();
        if !kept || summary.interrupted.is_some() || !summary.results.iter().any(|r| r.is_final()) {
            return None;
        }
        let rootdir = self.session.as_ref().map(|s| PathBuf::from(&s.rootdir))?;
        let files: BTreeSet<&str> = summary.results.iter().map(|r| r.id.file()).collect();
        Some(crate::history::run_identity(&rootdir, files))
    }

    /// Previous runs' timings (known once pytest told us its rootdir) under the `--timings`
    /// sources, which the user named and so win where both know a test.
    pub(super) fn load_timing_store(&mut self) {
        let Some(path) = self.timing_store_path() else {
            return;
        };
        match TimingStore::load_durations(&path) {
            Ok(mut store) => {
                store.merge(std::mem::take(&mut self.timings));
                self.timings = store;
            }
            Err(err) => self.emit(RunEvent::Note(format!(
                "ignoring the timings of previous runs: {err} (delete the file to start afresh)"
            ))),
        }
    }

    fn timing_store_path(&self) -> Option<PathBuf> {
        if self.config.no_timing_store {
            return None;
        }
        if let Some(path) = &self.config.timing_store {
            return Some(path.clone());
        }
        let rootdir = self.session.as_ref().map(|s| PathBuf::from(&s.rootdir))?;
        Some(rootdir.join(".shardex").join("timings.json"))
    }
}
