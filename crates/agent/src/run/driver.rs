//! The run loop: one `select!` over pool events, queue events, signals and the next
//! deadline. Every deadline is computed from state (`next_deadline`), and each one, once
//! handled, changes the state so that it is not returned again.

use std::time::Duration;

use shardex_core::protocol::ToPython;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::Instant;

use super::state::{LaneState, Phase, WorkerQueue};
use super::Run;
use crate::pool::{Peer, PoolEvent, StopReason};
use crate::queue::{QueueEvent, QueueSignal};
use crate::signal::Interrupt;
use crate::{AgentError, RunEvent};

/// How long after SIGKILL a process may take to be reported gone before the run stops
/// waiting for it.
const REAP_WAIT: Duration = Duration::from_secs(1);
/// How long the zygote may take to finish its session after the workers are gone: it
/// combines coverage, writes pytest's cache and plugins' reports. Generous; reported when
/// hit.
pub(super) const ZYGOTE_FINISH: Duration = Duration::from_secs(120);

impl Run<'_> {
    pub(super) async fn drive(
        &mut self,
        mut signals: Option<UnboundedReceiver<Interrupt>>,
    ) -> Result<(), AgentError> {
        self.pool.start()?;
        let mut queue_events: Option<UnboundedReceiver<QueueEvent>> = None;
        let mut subscribed = false;
        loop {
            if self.is_done() {
                return Ok(());
            }
            if !subscribed {
                if let Some(queue) = self.queue.as_mut() {
                    queue_events = queue.subscribe();
                    subscribed = true;
                }
            }
            let deadline = self.next_deadline();
            tokio::select! {
                event = self.pool.recv() => match event? {
                    Some(event) => self.handle(event)?,
                    None => return Ok(()),
                },
                Some(name) = recv_or_pending(&mut signals) => self.on_signal(name),
                Some(event) = recv_or_pending(&mut queue_events) => self.on_queue_event(event),
                () = sleep_until_or_pending(deadline) => self.on_deadline(Instant::now()),
            }
        }
    }

    fn handle(&mut self, event: PoolEvent) -> Result<(), AgentError> {
        match event {
            PoolEvent::Connected(Peer::Zygote) | PoolEvent::ZygoteDisconnected => {}
            PoolEvent::Connected(Peer::Worker(slot)) => self.on_worker_connected(slot),
            PoolEvent::Message(peer, msg) => self.on_message(peer, *msg)?,
            PoolEvent::WorkerExited {
                slot,
                code,
                signal,
                stop,
            } => self.on_worker_exit(slot, code, signal, stop)?,
            PoolEvent::ZygoteExited { code, signal } => self.on_zygote_exit(code, signal)?,
            PoolEvent::Unreadable { peer, reason, kind } => {
                self.on_unreadable(peer, reason, kind)?
            }
        }
        Ok(())
    }

    fn on_worker_connected(&mut self, slot: usize) {
        let lane = &mut self.lanes[slot];
        lane.received = 0;
        if matches!(lane.state, LaneState::Unused | LaneState::GivenUp)
            || self.phase.dispatch_stopped()
        {
            self.pool.send(slot, ToPython::Exit);
            if lane.serving() || matches!(lane.state, LaneState::Idle) {
                lane.state = LaneState::Leaving(WorkerQueue::default());
            }
            return;
        }
        match self.pool.mode() {
            crate::WorkerMode::Fork => {
                lane.state = LaneState::Serving(WorkerQueue::default());
                self.fill(slot);
            }
            crate::WorkerMode::Spawn => lane.state = LaneState::Collecting,
        }
    }

    fn on_queue_event(&mut self, event: QueueEvent) {
        let Some(queue) = self.queue.as_mut() else {
            return;
        };
        for signal in queue.absorb(event) {
            self.on_queue_signal(signal);
        }
    }

    pub(super) fn on_queue_signal(&mut self, signal: QueueSignal) {
        match signal {
            QueueSignal::Refilled => self.fill_all(),
            QueueSignal::Note(text) => self.emit(RunEvent::Note(text)),
            QueueSignal::Stop(reason) => self.stop_for_the_job(reason),
            QueueSignal::RanTwice(id) => self.drop_second_result(&id),
            QueueSignal::Fatal(message) => {
                // Returned as the run's error once its processes have ended.
                self.fatal.get_or_insert(message);
                self.abort("the shared queue cannot be used");
            }
        }
    }

    /// The run is over when its processes are: the workers, then the zygote, which is told
    /// the final outcomes (for pytest's cache) and to exit only once its workers are gone.
    fn is_done(&mut self) -> bool {
        if self.phase.ending_since().is_none() {
            return false;
        }
        if matches!(self.phase, Phase::Aborting { forced: true, .. }) {
            return true;
        }
        let workers_gone = self.pool.workers_down() || self.ending.gave_up_on_workers;
        if workers_gone && self.ending.zygote_told.is_none() {
            self.ending.zygote_told = Some(Instant::now());
            self.pool.send_zygote(self.final_outcomes());
            self.pool.send_zygote(ToPython::Exit);
        }
        workers_gone && (self.pool.zygote_gone() || self.ending.gave_up_on_zygote)
    }

    fn next_deadline(&self) -> Option<Instant> {
        let mut next = self.pool.next_deadline();
        let mut consider = |at: Instant| next = Some(next.map_or(at, |n: Instant| n.min(at)));
        for (slot, lane) in self.lanes.iter().enumerate() {
            let running = lane.queue().and_then(|q| q.running.as_ref());
            if let Some(running) = running.filter(|_| !self.pool.is_stopping(slot)) {
                if let Some(timeout) = running.timeout {
                    consider(running.started + timeout);
                }
            }
        }
        if !self.phase.dispatch_stopped() {
            if let Some(due) = self.delayed.iter().map(|(due, _, _)| *due).min() {
                consider(due);
            }
        }
        if let Some(at) = self.next_retract() {
            consider(at);
        }
        match self.phase {
            Phase::StoppingEarly { since } if self.unstopped_workers().next().is_some() => {
                consider(since + self.config.stop_grace);
            }
            Phase::Closing { since } | Phase::Aborting { since, .. } => {
                let grace = self.config.kill_grace;
                if self.unstopped_workers().next().is_some() {
                    consider(since + grace);
                }
                if !self.pool.workers_down() && !self.ending.gave_up_on_workers {
                    consider(since + grace * 2 + REAP_WAIT);
                }
                match (self.ending.zygote_told, self.ending.zygote_killed) {
                    (Some(told), None) => consider(told + ZYGOTE_FINISH),
                    (_, Some(killed)) if !self.ending.gave_up_on_zygote => {
                        consider(killed + REAP_WAIT)
                    }
                    _ => {}
                }
            }
            _ => {}
        }
        next
    }

    /// Slots whose worker process is alive and not being stopped.
    fn unstopped_workers(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.lanes.len()).filter(|&s| self.pool.is_alive(s) && !self.pool.is_stopping(s))
    }

    fn on_deadline(&mut self, now: Instant) {
        self.pool.on_deadline(now);
        self.check_timeouts(now);
        if !self.phase.dispatch_stopped() {
            self.start_due_retries(now);
        }
        self.retract_stuck(now);
        match self.phase {
            Phase::StoppingEarly { since } if now >= since + self.config.stop_grace => {
                // The grace is over: stop whatever still runs (reported as not run).
                self.stop_all_workers("the stop grace after -x/--maxfail is over");
            }
            Phase::Closing { since } | Phase::Aborting { since, .. } => {
                self.on_ending_deadline(since, now)
            }
            _ => {}
        }
    }

    fn on_ending_deadline(&mut self, since: Instant, now: Instant) {
        let grace = self.config.kill_grace;
        if now >= since + grace {
            self.stop_all_workers("workers did not exit at the end of the run");
        }
        if now >= since + grace * 2 + REAP_WAIT && !self.pool.workers_down() {
            tracing::debug!("giving up waiting for worker processes to be reaped");
            self.ending.gave_up_on_workers = true;
        }
        if let Some(told) = self.ending.zygote_told {
            if self.ending.zygote_killed.is_none() && now >= told + ZYGOTE_FINISH {
                self.emit(RunEvent::Note(format!(
                    "the pytest zygote did not finish its session within {} s after the \
                     workers ended (coverage, pytest's cache, plugin reports); it was killed",
                    ZYGOTE_FINISH.as_secs()
                )));
                self.pool.kill_zygote();
                self.ending.zygote_killed = Some(now);
            }
        }
        if let Some(killed) = self.ending.zygote_killed {
            if now >= killed + REAP_WAIT {
                self.ending.gave_up_on_zygote = true;
            }
        }
    }

    fn stop_all_workers(&mut self, why: &str) {
        let slots: Vec<usize> = self.unstopped_workers().collect();
        if !slots.is_empty() {
            tracing::debug!(?slots, why, "stopping workers");
        }
        for slot in slots {
            self.pool.stop_worker(slot, StopReason::Shutdown);
        }
    }

    fn check_timeouts(&mut self, now: Instant) {
        for slot in 0..self.lanes.len() {
            let running = self.lanes[slot].queue().and_then(|q| q.running.as_ref());
            let overdue = running.is_some_and(|r| r.timeout.is_some_and(|t| now >= r.started + t));
            if overdue && !self.pool.is_stopping(slot) {
                tracing::debug!(slot, test = ?running.map(|r| &r.id), "timeout");
                self.pool.stop_worker(slot, StopReason::Timeout);
            }
        }
    }
}

async fn recv_or_pending<T>(rx: &mut Option<UnboundedReceiver<T>>) -> Option<T> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until_or_pending(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
