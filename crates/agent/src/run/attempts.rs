//! Results: each finished attempt, the retries the rules allow, hard failures and the early
//! stop of `-x`/`--maxfail`.

use std::sync::Arc;
use std::time::Duration;

use shardex_core::attempts::{retry_worker, Decision, Verdict};
use shardex_core::junit::flaky::merge_attempts;
use shardex_core::junit::write::SyntheticCase;
use shardex_core::protocol::{PhaseReport, TestDone, ToPython};
use shardex_core::{Outcome, TestId, WorkerId};
use tokio::time::Instant;

use super::state::Phase;
use super::{Attempt, Run};
use crate::{RunEvent, TestResult};

impl Run<'_> {
    pub(super) fn on_done(&mut self, slot: usize, done: TestDone) {
        if let Some(queue) = self.lanes[slot].queue_mut() {
            if queue.running.as_ref().is_some_and(|r| r.id == done.id) {
                queue.running = None;
            } else if let Some(pos) = queue.queued.iter().position(|q| q == &done.id) {
                queue.queued.remove(pos);
            }
        }
        self.lanes[slot].crashes_in_a_row = 0;
        if self.phase.dispatch_stopped() {
            // The worker had already started its next test when the stop reached it: that
            // test ran after all.
            if let Some(pos) = self.summary.not_run.iter().position(|t| t == &done.id) {
                self.summary.not_run.swap_remove(pos);
            }
        }
        let outcome = Outcome::from_reports(&done.reports);
        let verdict = done.retry.as_ref().map(|v| Verdict {
            eligible: v.eligible,
            reruns: v.reruns,
            delay: v.delay,
        });
        self.finish_attempt(
            slot,
            Attempt {
                id: done.id,
                outcome,
                duration: done.duration,
                reports: done.reports,
                junit: done.junit,
            },
            verdict,
        );
        self.promote(slot);
        self.fill(slot);
        self.check_all_done();
    }

    /// One attempt of a test ended. A failure the retry rules allow goes back to the queue
    /// (its failed reports become pytest-rerunfailures' "rerun" reports); otherwise this is
    /// the test's final result, and a failure is a hard failure that counts toward
    /// `-x`/`--maxfail`.
    pub(super) fn finish_attempt(
        &mut self,
        slot: usize,
        attempt: Attempt,
        verdict: Option<Verdict>,
    ) {
        let Attempt {
            id,
            outcome,
            duration,
            mut reports,
            junit,
        } = attempt;
        let failed = outcome.is_failure();
        let recorded = self
            .ledger
            .record(&id, failed, verdict, self.phase.dispatch_stopped());
        let will_retry = recorded.decision.will_retry();
        let attempt_index = recorded.attempt;
        let crash = matches!(outcome, Outcome::Crashed | Outcome::TimedOut);
        // A crash's duration says nothing about the test's usual length.
        let known_duration = (!crash).then_some(duration);
        if let Some(queue) = self.queue.as_mut() {
            // Only a final attempt's length settles its file's estimates.
            queue.complete(WorkerId(slot), &id, known_duration.filter(|_| !will_retry));
        }
        if will_retry {
            for report in reports.iter_mut().filter(|r| r.outcome == "failed") {
                report.category = "rerun".into();
                report.letter = "R".into();
                report.word = "RERUN".into();
            }
            self.attempt_junit
                .entry(id.clone())
                .or_default()
                .push(junit);
            match recorded.decision {
                Decision::Retry { delay } => self.schedule_retry(id.clone(), slot, delay),
                Decision::CancelledByStop | Decision::Final { .. } => {
                    self.summary.not_run.push(id.clone())
                }
            }
        } else {
            if let Some(queue) = self.queue.as_mut() {
                queue.settled(&id, failed);
            }
            self.record_final_junit(&id, junit, failed);
            if let Some(secs) = known_duration {
                self.timings.record(id.clone(), secs);
            }
        }
        let result = Arc::new(TestResult {
            id,
            worker: WorkerId(slot),
            outcome,
            duration,
            reports,
            attempt: attempt_index,
            will_retry,
        });
        self.emit(RunEvent::TestFinished(Arc::clone(&result)));
        self.results.push(result);
        if recorded.maxfail_reached {
            self.stop_early();
        }
    }

    fn record_final_junit(
        &mut self,
        id: &TestId,
        junit: shardex_core::protocol::JunitPart,
        failed: bool,
    ) {
        let junit = match self.attempt_junit.remove(id) {
            Some(mut parts) => {
                parts.push(junit);
                merge_attempts(&parts, !failed)
            }
            None => junit,
        };
        let index = self.order.get(id).copied().unwrap_or(usize::MAX);
        self.junit_tests.push((index, junit));
    }

    pub(super) fn effective_maxfail(&self) -> u32 {
        match self.config.maxfail {
            Some(maxfail) => maxfail,
            None => self.session.as_ref().map_or(0, |s| s.maxfail),
        }
    }

    /// A retry goes near the front of the queue of another worker that is free (a fresh
    /// state), else of the one it failed on; after `delay` seconds if asked.
    fn schedule_retry(&mut self, id: TestId, failed_on: usize, delay: f64) {
        if delay > 0.0 {
            let due = Instant::now() + Duration::from_secs_f64(delay);
            self.delayed.push_back((due, id, failed_on));
            return;
        }
        let pool = &*self.pool;
        let slots: Vec<usize> = (0..self.lanes.len()).collect();
        let target = retry_worker(&slots, WorkerId(failed_on), |&s| {
            self.lanes[s].serving()
                && !self.lanes[s].busy()
                && pool.is_connected(s)
                && !pool.is_stopping(s)
        });
        tracing::debug!(test = %id, slot = %target, failed_on = %WorkerId(failed_on), "retry");
        if let Some(queue) = self.queue.as_mut() {
            queue.retry(target, id);
        }
        self.fill(target.0);
        self.fill_all();
    }

    /// Retries whose `--reruns-delay` is over go to a worker.
    pub(super) fn start_due_retries(&mut self, now: Instant) {
        let (due, waiting): (Vec<_>, Vec<_>) =
            self.delayed.drain(..).partition(|(due, _, _)| *due <= now);
        self.delayed = waiting.into();
        for (_, id, failed_on) in due {
            self.schedule_retry(id, failed_on, 0.0);
        }
    }

    /// A worker says `id` failed for good, before it renders the report and tears down:
    /// when that failure reaches `-x`/`--maxfail` the run stops now (its result, when it
    /// arrives, is counted as usual). The worker waits for `Proceed` before it starts another
    /// test: sent after `Exit` when the run stops, so the worker exits instead.
    pub(super) fn on_hard_failure_announced(&mut self, slot: usize, id: &TestId) {
        let failures = self.ledger.hard_failures() + 1;
        if self
            .ledger
            .maxfail()
            .is_some_and(|maxfail| failures >= maxfail)
        {
            tracing::debug!(test = %id, failures, "a final failure announced");
            self.stop_early_after(failures);
        }
        // After `Exit` it is not read (exiting wins); sent always, so no phase leaves a
        // worker waiting.
        self.pool.send(slot, ToPython::Proceed);
    }

    /// `-x`/`--maxfail` reached: nothing new starts anywhere; running tests may finish
    /// within `--stop-grace`, then their workers are stopped and those tests count as not
    /// run (pytest's `-x` exits 1, not 2).
    fn stop_early(&mut self) {
        self.stop_early_after(self.ledger.hard_failures());
    }

    fn stop_early_after(&mut self, hard_failures: u32) {
        if self.phase.dispatch_stopped() {
            return;
        }
        tracing::debug!(hard_failures, "early stop");
        self.summary.stopped = Some(format!("stopping after {hard_failures} failures"));
        if let Some(queue) = self.queue.as_mut() {
            self.summary.not_run.extend(queue.stop());
        }
        self.summary
            .not_run
            .extend(self.delayed.drain(..).map(|(_, id, _)| id));
        for slot in 0..self.lanes.len() {
            let queued = self.lanes[slot].leave();
            self.summary.not_run.extend(queued);
            // The worker ends the test it runs, starts nothing else, and exits.
            self.pool.send(slot, ToPython::Exit);
        }
        self.phase = Phase::StoppingEarly {
            since: Instant::now(),
        };
        self.check_all_done();
    }

    /// The job stopped because `-x`/`--maxfail` was reached (on this node or another):
    /// this node stops as its own `-x` would.
    pub(super) fn stop_for_the_job(&mut self, reason: String) {
        if let Some(shared) = self.summary.shared.as_mut() {
            shared.job_stopped.get_or_insert_with(|| reason.clone());
        }
        if self.phase.dispatch_stopped() {
            self.check_all_done();
            return;
        }
        self.emit(RunEvent::Note(format!("stopping: the job {reason}")));
        self.stop_early_after(self.ledger.hard_failures());
        self.summary.stopped = Some(format!("stopping: the job {reason}"));
    }

    /// Another node's result of `id` was acknowledged first (this node had taken the test
    /// over from a lease that expired while that node still ran it): this node's result
    /// is left out of its counts and its JUnit, and the summary says it ran twice.
    pub(super) fn drop_second_result(&mut self, id: &TestId) {
        self.results.retain(|r| &r.id != id);
        if let Some(&index) = self.order.get(id) {
            self.junit_tests.retain(|(i, _)| *i != index);
        }
        if let Some(shared) = self.summary.shared.as_mut() {
            shared.ran_twice.push(id.clone());
        }
    }

    /// A failed attempt made by the agent (a crash or a timeout): there is no Python
    /// exception to judge, so the retry rules are applied to the message.
    pub(super) fn record_synthetic(&mut self, slot: usize, failure: SyntheticFailure) {
        let (attempt, verdict) = self.synthetic_attempt(failure);
        self.finish_attempt(slot, attempt, Some(verdict));
    }

    /// The attempt a synthetic failure makes, and the retry rules' verdict on it.
    pub(super) fn synthetic_attempt(&self, failure: SyntheticFailure) -> (Attempt, Verdict) {
        let SyntheticFailure {
            id,
            outcome,
            message,
            output,
            elapsed,
        } = failure;
        let item = self.items.get(&id);
        let file = item
            .map(|i| i.file.clone())
            .unwrap_or_else(|| id.file().to_owned());
        let line = item.and_then(|i| i.line);
        let text = if output.is_empty() {
            message.clone()
        } else {
            format!("{message}\n\n{output}")
        };
        let junit = SyntheticCase {
            nodeid: id.as_str(),
            file: &file,
            line,
            time: elapsed,
            element: "failure",
            message: &message,
            text: &text,
        }
        .to_part();
        let report = PhaseReport {
            when: "call".into(),
            outcome: "failed".into(),
            category: "failed".into(),
            letter: "F".into(),
            word: "FAILED".into(),
            duration: elapsed,
            longrepr: Some(format!("{text}\n")),
            // The reporter derives pytest's head line from the nodeid.
            head_line: None,
            crash_message: Some(message.clone()),
            crash_line: Some(format!("{file}: {message}")),
            skip: None,
            wasxfail: None,
        };
        let rules = item
            .and_then(|i| i.retry.clone())
            .or_else(|| self.session.as_ref().map(|s| s.retry.clone()))
            .unwrap_or_default();
        let verdict = Verdict {
            eligible: rules.synthetic_failure_is_retryable(&message),
            reruns: rules.reruns,
            delay: rules.delay,
        };
        let attempt = Attempt {
            id,
            outcome,
            duration: elapsed,
            reports: vec![report],
            junit,
        };
        (attempt, verdict)
    }
}

/// A failure the agent saw instead of a report: the worker died or was killed.
pub(super) struct SyntheticFailure {
    pub(super) id: TestId,
    pub(super) outcome: Outcome,
    /// `WorkerCrashed: …` or `Timeout: …`.
    pub(super) message: String,
    /// What the test had printed and the worker's stderr tail.
    pub(super) output: String,
    pub(super) elapsed: f64,
}
