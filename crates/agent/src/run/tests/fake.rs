//! A scripted fake of the Python side: a zygote that "collects" the scripted tests and
//! "forks" workers that run them by sleeping in tokio's (paused) time, speaking the
//! protocol through the pool's event channel. Signals sent by the pool reach the fake
//! processes, which die (or ignore SIGTERM) as scripted.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::Signal;
use shardex_core::protocol::{
    Collection, FromPython, ItemInfo, PhaseReport, RetryVerdict, Role, SessionInfo, TestDone,
    ToPython,
};
use shardex_core::TestId;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio::time::Instant;

use crate::pool::conn::ConnEvent;
use crate::pool::{LaunchSpec, Launcher, ProcOwner, RawEvent};

const ZYGOTE_PID: u32 = 1000;
const ZYGOTE_CONN: u64 = 1;

/// What a scripted test does when it runs.
#[derive(Clone, Copy, Debug)]
pub enum Script {
    Pass(Duration),
    /// Fails; the worker's verdict allows `reruns` retries.
    Fail {
        after: Duration,
        reruns: u32,
    },
    /// Fails on its first run, passes on the next ones.
    FlakyOnce {
        after: Duration,
        reruns: u32,
    },
    /// Never ends by itself; dies on SIGTERM.
    Hang,
    /// Never ends by itself and ignores SIGTERM: only SIGKILL ends it.
    HangIgnoringTerm,
    /// The worker dies of SIGSEGV after this long.
    Crash(Duration),
}

#[derive(Default)]
pub struct World {
    /// Tests in collection order with their scripts.
    pub tests: Vec<(TestId, Script)>,
    /// Every signal sent, with when it was sent.
    pub signals: Vec<(u32, Signal, Instant)>,
    /// (test, slot, start) for every test a fake worker started.
    pub started: Vec<(TestId, String, Instant)>,
    /// How fake workers answer `retract`.
    pub retract: RetractAnswer,
    runs: HashMap<TestId, u32>,
    signal_tx: HashMap<u32, UnboundedSender<Signal>>,
}

/// How a fake worker answers `retract`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum RetractAnswer {
    /// At once, even while a test runs (the plugin's reader thread): the tests it had not
    /// started.
    #[default]
    AtOnce,
    /// Only between tests, after starting the next one (a worker that reads its socket
    /// late): that one is not given back.
    BetweenTests,
    /// A faulty worker: says it gave back every test asked but runs them anyway.
    Lying,
}

pub type Shared = Arc<Mutex<World>>;

impl World {
    pub fn new(tests: Vec<(TestId, Script)>) -> Shared {
        Arc::new(Mutex::new(World {
            tests,
            ..World::default()
        }))
    }
}

pub struct FakeLauncher {
    pub world: Shared,
}

impl Launcher for FakeLauncher {
    fn launch_zygote(
        &mut self,
        _spec: &LaunchSpec,
        events: &UnboundedSender<RawEvent>,
    ) -> std::io::Result<u32> {
        let (sig_tx, sig_rx) = unbounded_channel();
        self.world
            .lock()
            .unwrap()
            .signal_tx
            .insert(ZYGOTE_PID, sig_tx);
        tokio::spawn(zygote(Arc::clone(&self.world), events.clone(), sig_rx));
        Ok(ZYGOTE_PID)
    }

    fn launch_worker(
        &mut self,
        _spec: &LaunchSpec,
        _owner: ProcOwner,
        _stderr: std::path::PathBuf,
        _events: &UnboundedSender<RawEvent>,
    ) -> std::io::Result<u32> {
        Err(std::io::Error::other(
            "the fake Python side plays fork mode only",
        ))
    }

    fn signal(&mut self, pgid: u32, signal: Signal) {
        let mut world = self.world.lock().unwrap();
        world.signals.push((pgid, signal, Instant::now()));
        if let Some(tx) = world.signal_tx.get(&pgid) {
            let _ = tx.send(signal);
        }
    }

    fn zygote_stderr_tail(&self) -> String {
        String::new()
    }
}

fn send(events: &UnboundedSender<RawEvent>, conn: u64, msg: FromPython) {
    let _ = events.send(RawEvent::Conn(ConnEvent::Message {
        conn,
        msg: Box::new(msg),
    }));
}

async fn zygote(
    world: Shared,
    events: UnboundedSender<RawEvent>,
    mut signals: UnboundedReceiver<Signal>,
) {
    let (tx, mut rx) = unbounded_channel();
    let _ = events.send(RawEvent::Conn(ConnEvent::Opened {
        conn: ZYGOTE_CONN,
        role: Role::Zygote,
        slot: None,
        pid: ZYGOTE_PID,
        tx,
    }));
    let session = SessionInfo {
        rootdir: std::env::temp_dir().display().to_string(),
        ..SessionInfo::default()
    };
    send(&events, ZYGOTE_CONN, FromPython::Session(Box::new(session)));
    let items = world
        .lock()
        .unwrap()
        .tests
        .iter()
        .map(|(id, _)| ItemInfo {
            id: id.clone(),
            file: id.file().to_owned(),
            line: Some(0),
            retry: None,
            group: None,
            timeout: None,
            timeout_in_worker: false,
        })
        .collect();
    let collection = Collection {
        items,
        ..Collection::default()
    };
    send(&events, ZYGOTE_CONN, FromPython::Collected(collection));
    let next_pid = AtomicU64::new(2000);
    loop {
        tokio::select! {
            msg = rx.recv() => match msg {
                Some(ToPython::Fork { slot }) => {
                    let pid = next_pid.fetch_add(1, Ordering::Relaxed) as u32;
                    fork(&world, &events, slot, pid);
                }
                Some(ToPython::Exit) | None => break,
                Some(_) => {}
            },
            Some(_) = signals.recv() => break,
        }
    }
    let _ = events.send(RawEvent::Conn(ConnEvent::Closed { conn: ZYGOTE_CONN }));
    let _ = events.send(RawEvent::ProcessExited {
        owner: ProcOwner::Zygote,
        code: Some(0),
        signal: None,
    });
}

fn fork(world: &Shared, events: &UnboundedSender<RawEvent>, slot: String, pid: u32) {
    let (sig_tx, sig_rx) = unbounded_channel();
    world.lock().unwrap().signal_tx.insert(pid, sig_tx);
    send(
        events,
        ZYGOTE_CONN,
        FromPython::Forked {
            slot: slot.clone(),
            pid,
        },
    );
    let conn = u64::from(pid);
    let (tx, rx) = unbounded_channel();
    let _ = events.send(RawEvent::Conn(ConnEvent::Opened {
        conn,
        role: Role::Worker,
        slot: Some(slot.clone()),
        pid,
        tx,
    }));
    let worker = FakeWorker {
        world: Arc::clone(world),
        events: events.clone(),
        slot,
        pid,
        conn,
        queue: VecDeque::new(),
        exiting: false,
        deferred: Vec::new(),
    };
    tokio::spawn(worker.serve(rx, sig_rx));
}

struct FakeWorker {
    world: Shared,
    events: UnboundedSender<RawEvent>,
    slot: String,
    pid: u32,
    conn: u64,
    queue: VecDeque<TestId>,
    exiting: bool,
    /// `retract` messages read while a test ran (`RetractAnswer::BetweenTests`).
    deferred: Vec<Vec<TestId>>,
}

/// How a fake worker's life ended.
struct Death {
    code: Option<i32>,
    signal: Option<i32>,
}

impl FakeWorker {
    async fn serve(
        mut self,
        mut rx: UnboundedReceiver<ToPython>,
        mut sig: UnboundedReceiver<Signal>,
    ) {
        let death = loop {
            if let Some(id) = self.queue.pop_front() {
                for ids in std::mem::take(&mut self.deferred) {
                    self.answer_retract(ids);
                }
                if let Err(death) = self.run_test(id, &mut rx, &mut sig).await {
                    break death;
                }
                continue;
            }
            if self.exiting {
                break Death {
                    code: Some(0),
                    signal: None,
                };
            }
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(msg) => self.apply(msg, false),
                    None => break Death { code: Some(0), signal: None },
                },
                Some(signal) = sig.recv() => {
                    break Death { code: None, signal: Some(signal as i32) };
                }
            }
        };
        let _ = self
            .events
            .send(RawEvent::Conn(ConnEvent::Closed { conn: self.conn }));
        send(
            &self.events,
            ZYGOTE_CONN,
            FromPython::Exited {
                slot: self.slot.clone(),
                pid: self.pid,
                code: death.code,
                signal: death.signal,
            },
        );
    }

    fn answer_retract(&mut self, ids: Vec<TestId>) {
        let lying = self.world.lock().unwrap().retract == RetractAnswer::Lying;
        let removed: Vec<TestId> = if lying {
            ids.into_iter()
                .filter(|id| self.queue.contains(id))
                .collect()
        } else {
            let (removed, kept) = self.queue.drain(..).partition(|id| ids.contains(id));
            self.queue = kept;
            removed.into()
        };
        send(
            &self.events,
            self.conn,
            FromPython::Retracted { ids: removed },
        );
    }

    fn apply(&mut self, msg: ToPython, running: bool) {
        match msg {
            ToPython::Retract { ids } => {
                let between = self.world.lock().unwrap().retract == RetractAnswer::BetweenTests;
                if between && running {
                    self.deferred.push(ids);
                } else {
                    self.answer_retract(ids);
                }
            }
            ToPython::Run { ids, .. } => self.queue.extend(ids),
            ToPython::Exit => self.exiting = true,
            ToPython::Configure(_)
            | ToPython::Flush
            | ToPython::Results { .. }
            | ToPython::Fork { .. }
            | ToPython::Proceed => {}
        }
    }

    async fn run_test(
        &mut self,
        id: TestId,
        rx: &mut UnboundedReceiver<ToPython>,
        sig: &mut UnboundedReceiver<Signal>,
    ) -> Result<(), Death> {
        let (script, run) = {
            let mut world = self.world.lock().unwrap();
            let script = world
                .tests
                .iter()
                .find(|(t, _)| *t == id)
                .map(|(_, s)| *s)
                .expect("a scripted test");
            world
                .started
                .push((id.clone(), self.slot.clone(), Instant::now()));
            let run = world.runs.entry(id.clone()).or_insert(0);
            *run += 1;
            (script, *run)
        };
        let far = Duration::from_secs(10_000);
        let length = match script {
            Script::Pass(d)
            | Script::Fail { after: d, .. }
            | Script::FlakyOnce { after: d, .. } => d,
            Script::Crash(d) => d,
            Script::Hang | Script::HangIgnoringTerm => far,
        };
        let end = Instant::now() + length;
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(end) => break,
                Some(msg) = rx.recv() => self.apply(msg, true),
                Some(signal) = sig.recv() => {
                    let ignores = matches!(script, Script::HangIgnoringTerm) && signal == Signal::SIGTERM;
                    if !ignores {
                        return Err(Death { code: None, signal: Some(signal as i32) });
                    }
                }
            }
        }
        if let Script::Crash(_) = script {
            return Err(Death {
                code: None,
                signal: Some(Signal::SIGSEGV as i32),
            });
        }
        let failed = match script {
            Script::Fail { .. } => true,
            Script::FlakyOnce { .. } => run == 1,
            _ => false,
        };
        let reruns = match script {
            Script::Fail { reruns, .. } | Script::FlakyOnce { reruns, .. } => reruns,
            _ => 0,
        };
        send(
            &self.events,
            self.conn,
            FromPython::Done(done(id, length, failed, reruns)),
        );
        Ok(())
    }
}

fn done(id: TestId, length: Duration, failed: bool, reruns: u32) -> TestDone {
    let phase = |when: &'static str, outcome: &'static str| PhaseReport {
        when: when.into(),
        outcome: outcome.into(),
        ..PhaseReport::default()
    };
    let call = if failed {
        PhaseReport {
            category: "failed".into(),
            letter: "F".into(),
            word: "FAILED".into(),
            duration: length.as_secs_f64(),
            ..phase("call", "failed")
        }
    } else {
        PhaseReport {
            category: "passed".into(),
            letter: ".".into(),
            word: "PASSED".into(),
            duration: length.as_secs_f64(),
            ..phase("call", "passed")
        }
    };
    TestDone {
        id,
        duration: length.as_secs_f64(),
        reports: vec![phase("setup", "passed"), call, phase("teardown", "passed")],
        retry: failed.then_some(RetryVerdict {
            eligible: true,
            reruns,
            delay: 0.0,
        }),
        ..TestDone::default()
    }
}
