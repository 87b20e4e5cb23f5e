//! What goes wrong outside a test's own reports: a worker that dies (crash, timeout, stop),
//! the zygote ending, signals.

use nix::sys::signal::Signal;
use shardex_core::protocol::{SessionExit, TestDone};
use shardex_core::{Outcome, TestId, WorkerId};
use tokio::time::Instant;

use super::attempts::SyntheticFailure;
use super::state::{LaneState, Phase, Running, WorkerQueue};
use super::Run;
use crate::pool::conn::{line_kind, LineKind};
use crate::pool::{Peer, StopReason};
use crate::signal::Interrupt;
use crate::{AgentError, RunEvent};

/// A slot that dies this many times in a row without finishing a test is given up.
const MAX_CONSECUTIVE_CRASHES: u32 = 5;
const STDERR_TAIL_LINES: usize = 40;

impl Run<'_> {
    pub(super) fn on_worker_exit(
        &mut self,
        slot: usize,
        code: Option<i32>,
        signal: Option<i32>,
        stop: Option<StopReason>,
    ) -> Result<(), AgentError> {
        let name = WorkerId(slot).to_string();
        if self.collection.is_none() && self.phase.ending_since().is_none() {
            // A --spawn worker ended before it collected: pytest refused to start.
            return Err(AgentError::EarlyExit {
                code,
                status: describe_exit(code, signal),
                stderr_tail: stderr_tail(&self.pool.rundir().stderr_file(&name)),
            });
        }
        let leaving = matches!(self.lanes[slot].state, LaneState::Leaving(_));
        self.recover_spooled(slot);
        let WorkerQueue {
            queued, running, ..
        } = self.lanes[slot].take_queue();
        // Told to exit, the worker ends the test it runs (its result arrives on its own
        // connection) or exits before starting the one we counted as running.
        let stopped_by_us =
            stop == Some(StopReason::Shutdown) || (leaving && code == Some(0) && signal.is_none());
        tracing::debug!(slot = %name, ?code, ?signal, ?stop, running = ?running.as_ref().map(|r| &r.id), "worker ended");
        let aborting = matches!(self.phase, Phase::Aborting { .. });
        match running {
            // Interrupted (a signal, an internal error) while it ran: a failure that says
            // so, so that a CI cancel shows which test hung.
            Some(running) if aborting => self.record_interrupted(slot, running),
            // Stopped after -x/--maxfail's grace: not a result of the test.
            Some(running) if stopped_by_us => self.summary.not_run.push(running.id),
            Some(running) => {
                let failure = self.death_failure(&name, running, stop, code, signal);
                if failure.outcome == Outcome::Crashed {
                    self.lanes[slot].crashes_in_a_row += 1;
                }
                self.record_synthetic(slot, failure);
            }
            None if !self.phase.dispatch_stopped() => self.lanes[slot].crashes_in_a_row += 1,
            None => {}
        }
        let queued = Vec::from(queued);
        if self.phase.dispatch_stopped() {
            self.summary.not_run.extend(queued);
            self.check_all_done();
        } else {
            self.replace_worker(slot, queued);
        }
        Ok(())
    }

    fn death_failure(
        &self,
        name: &str,
        running: Running,
        stop: Option<StopReason>,
        code: Option<i32>,
        signal: Option<i32>,
    ) -> SyntheticFailure {
        let elapsed = running.started.elapsed().as_secs_f64();
        let id = running.id;
        let (outcome, message) = if stop == Some(StopReason::Timeout) {
            let limit = running.timeout.map(|t| t.as_secs_f64()).unwrap_or_default();
            (
                Outcome::TimedOut,
                format!(
                    "Timeout: {id} ran longer than its timeout of {limit}s; worker {name}'s process group was killed"
                ),
            )
        } else {
            (
                Outcome::Crashed,
                format!(
                    "WorkerCrashed: worker {name} {} while running {id}",
                    describe_exit(code, signal)
                ),
            )
        };
        SyntheticFailure {
            id,
            outcome,
            message,
            output: self.crash_output(name),
            elapsed,
        }
    }

    /// The dead worker's unstarted tests go back to the queue and the slot is forked again,
    /// unless it keeps crashing.
    fn replace_worker(&mut self, slot: usize, queued: Vec<TestId>) {
        let name = WorkerId(slot);
        let given_up = self.lanes[slot].crashes_in_a_row >= MAX_CONSECUTIVE_CRASHES;
        if let Some(queue) = self.queue.as_mut() {
            // A scope this worker had started may now go to another worker.
            queue.release(name);
            queue.give_back(name, queued);
        }
        if given_up {
            self.lanes[slot].state = LaneState::GivenUp;
            self.emit(RunEvent::Note(format!(
                "worker {name} crashed {MAX_CONSECUTIVE_CRASHES} times in a row; not restarting it"
            )));
        }
        let work_left = self.queue.as_ref().is_some_and(|q| !q.is_exhausted());
        if !given_up && work_left && matches!(self.lanes[slot].state, LaneState::Idle) {
            self.emit(RunEvent::Note(format!("replacing worker {name}")));
            tracing::debug!(slot = %name, "respawn");
            self.start_worker(slot);
        }
        let all_given_up = self
            .lanes
            .iter()
            .all(|l| matches!(l.state, LaneState::GivenUp | LaneState::Unused));
        if work_left && all_given_up {
            self.summary
                .internal_error
                .get_or_insert_with(|| "every worker crashed repeatedly; giving up".into());
            self.abort("no workers left");
            return;
        }
        self.fill_all();
        self.check_all_done();
    }

    /// A dead worker's results that did not reach us (held back to be sent together, or
    /// still unread in its socket) are in its spool file: take them as if they had
    /// arrived, so that the test it died in is the one after them.
    fn recover_spooled(&mut self, slot: usize) {
        let name = WorkerId(slot).to_string();
        let received = std::mem::take(&mut self.lanes[slot].received);
        let path = self.pool.rundir().results_file(&name);
        // Bytes, not text: one line that is not UTF-8 must not hide the others.
        let Ok(bytes) = std::fs::read(&path) else {
            return;
        };
        // Removed, so a replacement that dies before it opens its own is not read twice.
        let _ = std::fs::remove_file(&path);
        let unseen: Vec<&[u8]> = bytes
            .split(|&b| b == b'\n')
            .filter(|line| !line.is_empty())
            .skip(received)
            .collect();
        if unseen.is_empty() {
            return;
        }
        tracing::debug!(slot = %name, count = unseen.len(), "results recovered from the spool");
        let who = format!("worker {name}");
        for line in unseen {
            match serde_json::from_slice::<TestDone>(line) {
                Ok(done) => self.on_done(slot, done.expand()),
                Err(err) => match line_kind(line) {
                    LineKind::Result { id } => {
                        let reason = format!("{err} (read from its results file)");
                        self.fail_unreadable(slot, id, &who, &reason);
                    }
                    LineKind::Hello | LineKind::Other => {}
                },
            }
        }
        // A worker runs its tests in order: it was in the one after its last result.
        if self.lanes[slot]
            .queue()
            .is_some_and(|q| q.running.is_none())
        {
            self.start_next(slot);
        }
    }

    /// What a dead worker left: the test's captured output so far (pytest's capture files,
    /// which the plugin puts in the run folder) and the tail of the worker's own stderr
    /// (faulthandler's traceback on a segfault).
    fn crash_output(&self, slot: &str) -> String {
        let rundir = self.pool.rundir();
        let mut sections = Vec::new();
        for (index, stream) in [(0, "stdout"), (1, "stderr")] {
            let text = std::fs::read(rundir.capture_file(slot, index))
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default();
            if !text.trim().is_empty() {
                sections.push(format!(
                    "----- captured {stream} before the worker died -----\n{}",
                    text.trim_end()
                ));
            }
        }
        let tail = stderr_tail(&rundir.stderr_file(slot));
        if !tail.trim().is_empty() {
            sections.push(format!(
                "----- worker {slot} stderr (last lines) -----\n{tail}"
            ));
        }
        sections.join("\n")
    }

    /// A line the agent cannot read (a text JSON cannot carry, a message over the size
    /// cap): a worker's result fails that test, anything else is reported and skipped.
    /// Only a collecting process's is fatal (the run cannot go on without its collection).
    pub(super) fn on_unreadable(
        &mut self,
        peer: Peer,
        reason: String,
        kind: LineKind,
    ) -> Result<(), AgentError> {
        let who = match peer {
            Peer::Zygote => "the zygote".to_owned(),
            Peer::Worker(slot) => format!("worker {}", WorkerId(slot)),
        };
        match (peer, kind) {
            (Peer::Worker(slot), LineKind::Result { id }) => {
                self.lanes[slot].received += 1;
                self.fail_unreadable(slot, id, &who, &reason);
            }
            // Its collection may be what was lost: waiting for it would hang the run.
            (Peer::Zygote, _) if self.collection.is_none() => {
                return Err(AgentError::Protocol { peer: who, reason });
            }
            (Peer::Worker(slot), _) if matches!(self.lanes[slot].state, LaneState::Collecting) => {
                return Err(AgentError::Protocol { peer: who, reason });
            }
            _ => self.emit(RunEvent::Note(format!(
                "{who} sent a message the agent cannot read ({reason}); it was skipped"
            ))),
        }
        Ok(())
    }

    /// The result of `id` (else of the test the worker runs) could not be read: the test
    /// fails, saying why.
    fn fail_unreadable(&mut self, slot: usize, id: Option<TestId>, who: &str, reason: &str) {
        let Some(queue) = self.lanes[slot].queue_mut() else {
            return;
        };
        let running = queue
            .running
            .take_if(|r| id.as_ref().is_none_or(|id| *id == r.id));
        let (id, elapsed) = match (running, id) {
            (Some(running), _) => (running.id, running.started.elapsed().as_secs_f64()),
            (None, Some(id)) if queue.queued.contains(&id) => {
                queue.queued.retain(|q| *q != id);
                (id, 0.0)
            }
            (None, _) => {
                self.emit(RunEvent::Note(format!(
                    "{who} sent a result the agent cannot read ({reason}) for no test it runs"
                )));
                return;
            }
        };
        if let Some(pos) = self.summary.not_run.iter().position(|t| *t == id) {
            self.summary.not_run.swap_remove(pos);
        }
        let message = format!(
            "WorkerCrashed: {who} sent a result for {id} that the agent cannot read: {reason}"
        );
        let failure = SyntheticFailure {
            id,
            outcome: Outcome::Failed,
            message,
            output: String::new(),
            elapsed,
        };
        self.record_synthetic(slot, failure);
        self.promote(slot);
        self.fill(slot);
        self.check_all_done();
    }

    pub(super) fn on_zygote_exit(
        &mut self,
        code: Option<i32>,
        signal: Option<i32>,
    ) -> Result<(), AgentError> {
        if self.collection.is_none() && self.phase.ending_since().is_none() {
            return Err(AgentError::EarlyExit {
                code,
                status: describe_exit(code, signal),
                stderr_tail: self.pool.zygote_stderr_tail(),
            });
        }
        if self.phase.ending_since().is_none() {
            // Without the zygote no worker can be replaced; finish what is running.
            self.summary.internal_error.get_or_insert_with(|| {
                format!("the pytest zygote process {}", describe_exit(code, signal))
            });
            self.abort("zygote died");
        }
        Ok(())
    }

    pub(super) fn on_signal(&mut self, name: Interrupt) {
        if let Phase::Aborting { since, .. } = self.phase {
            // Second signal: no more grace.
            tracing::debug!(signal = name, "second signal: killing everything");
            self.pool.signal_all(Signal::SIGKILL);
            self.phase = Phase::Aborting {
                since,
                forced: true,
            };
            return;
        }
        self.summary.interrupted = Some(name.to_owned());
        self.abort(name);
    }

    /// A test ended the session (`pytest.exit`, `KeyboardInterrupt`): the run ends as
    /// pytest's would. The worker tears down its fixtures and exits by itself; the others
    /// are stopped.
    pub(super) fn on_session_exit(&mut self, slot: usize, exit: SessionExit) {
        if self.summary.session_exit.is_some() || matches!(self.phase, Phase::Aborting { .. }) {
            return;
        }
        tracing::debug!(slot = %WorkerId(slot), ?exit, "a test ended the session");
        self.summary.session_exit = Some(exit);
        // Nothing that was running has a result: the test that ended the session (as in
        // pytest), and the others' tests, cut short by the end (not run, not interrupted
        // failures: the session's end is the one outcome).
        for lane in &mut self.lanes {
            if let Some(running) = lane.queue_mut().and_then(|q| q.running.take()) {
                self.summary.not_run.push(running.id);
            }
        }
        self.abort_but(Some(slot), "a test ended the session");
    }

    /// Stops dispatch at once; what never ran is recorded as not run; running tests'
    /// groups get SIGTERM now and SIGKILL after the grace.
    pub(super) fn abort(&mut self, why: &str) {
        self.abort_but(None, why);
    }

    /// `abort`, leaving `spared`'s process to exit by itself (within the kill grace).
    fn abort_but(&mut self, spared: Option<usize>, why: &str) {
        if matches!(self.phase, Phase::Aborting { .. }) {
            return;
        }
        tracing::debug!(why, "aborting the run");
        if self.phase == Phase::Collecting {
            // No worker runs yet: the zygote is interrupted as pytest would be on Ctrl-C.
            self.pool.interrupt_zygote();
        }
        if let Some(queue) = self.queue.as_mut() {
            self.summary.not_run.extend(queue.stop());
        }
        self.phase = Phase::Aborting {
            since: Instant::now(),
            forced: false,
        };
        // Running tests stay where they are: their result may still arrive; a worker that
        // dies (or is left behind) with one is recorded as interrupted in it.
        for slot in 0..self.lanes.len() {
            if let Some(queue) = self.lanes[slot].queue_mut() {
                self.summary.not_run.extend(queue.queued.drain(..));
            }
            if self.pool.is_alive(slot) && spared != Some(slot) {
                self.pool.stop_worker(slot, StopReason::Shutdown);
            }
        }
    }

    /// A test that was running when the run was interrupted: a failure that says after how
    /// long, in the report like any other.
    pub(super) fn record_interrupted(&mut self, slot: usize, running: Running) {
        let elapsed = running.started.elapsed().as_secs_f64();
        let why = self
            .summary
            .interrupted
            .clone()
            .or_else(|| {
                self.summary
                    .internal_error
                    .as_ref()
                    .map(|_| "an internal error".into())
            })
            .unwrap_or_else(|| "a stop".into());
        let message = format!(
            "Interrupted: {} was running for {elapsed:.1} s when the run was stopped by {why}",
            running.id
        );
        tracing::debug!(slot = %WorkerId(slot), test = %running.id, "interrupted while running");
        let failure = SyntheticFailure {
            output: self.crash_output(&WorkerId(slot).to_string()),
            id: running.id,
            outcome: Outcome::Failed,
            message,
            elapsed,
        };
        let (attempt, _) = self.synthetic_attempt(failure);
        // Final: no retry starts after an interrupt.
        self.finish_attempt(slot, attempt, None);
    }
}

pub(super) fn describe_exit(code: Option<i32>, signal: Option<i32>) -> String {
    match (code, signal) {
        (_, Some(sig)) => format!(
            "was killed by signal {sig} ({})",
            crate::pool::process::signal_name(sig)
        ),
        (Some(code), None) => format!("exited (exit code {code})"),
        (None, None) => "ended".to_owned(),
    }
}

fn stderr_tail(path: &std::path::Path) -> String {
    let Ok(text) = std::fs::read_to_string(path) else {
        return String::new();
    };
    // faulthandler's report starts with this line; keep it whole (up to a cap).
    let fatal = text.rfind("Fatal Python error");
    let lines: Vec<&str> = text[fatal.unwrap_or(0)..].lines().collect();
    let limit = if fatal.is_some() {
        STDERR_TAIL_LINES * 5
    } else {
        STDERR_TAIL_LINES
    };
    lines[lines.len().saturating_sub(limit)..].join("\n")
}
