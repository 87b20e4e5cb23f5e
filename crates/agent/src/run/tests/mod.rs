//! The run loop against a scripted fake of the Python side, in paused tokio time: crashes,
//! timeouts with kill escalation, the stop grace after `-x`, retries, steals, signals.

mod fake;

use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use shardex_core::{Outcome, RunSummary, TestId};
use tokio::sync::mpsc::unbounded_channel;
use tokio::time::Instant;

use super::execute_with;
use crate::signal::Interrupt;
use crate::RunConfig;
use fake::{FakeLauncher, Script, Shared, World};

const MS: Duration = Duration::from_millis(1);

struct Setup {
    tests: Vec<(&'static str, Script)>,
    config: RunConfig,
    /// A signal sent to the run this long after it starts.
    signal_at: Option<(Duration, Interrupt)>,
}

impl Setup {
    fn new(workers: usize, tests: Vec<(&'static str, Script)>) -> Self {
        let mut config =
            RunConfig::new("python3".into(), Vec::new(), std::env::temp_dir(), workers);
        config.no_timing_store = true;
        Self {
            tests,
            config,
            signal_at: None,
        }
    }

    async fn run(self) -> (RunSummary, Shared, Instant) {
        let world = World::new(
            self.tests
                .iter()
                .map(|(id, script)| (TestId::new(*id), *script))
                .collect(),
        );
        let (events, _keep) = unbounded_channel();
        let (signal_tx, signal_rx) = unbounded_channel();
        if let Some((after, name)) = self.signal_at {
            tokio::spawn(async move {
                tokio::time::sleep(after).await;
                let _ = signal_tx.send(name);
            });
        }
        let launcher = Box::new(FakeLauncher {
            world: Arc::clone(&world),
        });
        let start = Instant::now();
        let summary = execute_with(self.config, events, launcher, Some(signal_rx))
            .await
            .expect("the run ends without an agent error");
        (summary, world, start)
    }
}

fn finals(summary: &RunSummary) -> Vec<(&str, Outcome)> {
    summary
        .results
        .iter()
        .filter(|r| !r.will_retry)
        .map(|r| (r.id.as_str(), r.outcome))
        .collect()
}

/// A pytest-split `.test_durations` file giving every test `secs`.
fn durations(dir: &std::path::Path, ids: &[&str], secs: f64) -> std::path::PathBuf {
    let path = dir.join(".test_durations");
    let json: serde_json::Map<String, serde_json::Value> =
        ids.iter().map(|id| (id.to_string(), secs.into())).collect();
    std::fs::write(&path, serde_json::to_string(&json).unwrap()).unwrap();
    path
}

fn slot_of(world: &Shared, id: &str) -> Vec<String> {
    let world = world.lock().unwrap();
    world
        .started
        .iter()
        .filter(|(t, _, _)| t.as_str() == id)
        .map(|(_, slot, _)| slot.clone())
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_crash_fails_its_test_and_the_slot_is_forked_again() {
    let setup = Setup::new(
        1,
        vec![
            ("a.py::t1", Script::Pass(10 * MS)),
            ("a.py::t2", Script::Crash(5 * MS)),
            ("a.py::t3", Script::Pass(10 * MS)),
        ],
    );
    let (summary, world, _) = setup.run().await;
    assert_eq!(
        finals(&summary),
        vec![
            ("a.py::t1", Outcome::Passed),
            ("a.py::t2", Outcome::Crashed),
            ("a.py::t3", Outcome::Passed),
        ]
    );
    let crash = &summary.results[1];
    let message = crash.reports[0]
        .crash_message
        .as_deref()
        .unwrap_or_default();
    assert!(
        message.starts_with(
            "WorkerCrashed: worker gw0 was killed by signal 11 (SIGSEGV) while running a.py::t2"
        ),
        "{message}"
    );
    // t3 ran in the replacement: the same slot, after the crash.
    assert_eq!(slot_of(&world, "a.py::t3"), vec!["gw0"]);
    assert!(summary.not_run.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_timeout_escalates_from_sigterm_to_sigkill_after_the_grace() {
    let mut setup = Setup::new(1, vec![("a.py::hang", Script::HangIgnoringTerm)]);
    setup.config.timeout = Some(Duration::from_secs(1));
    setup.config.kill_grace = Duration::from_secs(2);
    let (summary, world, _) = setup.run().await;
    assert_eq!(finals(&summary), vec![("a.py::hang", Outcome::TimedOut)]);
    let world = world.lock().unwrap();
    let started = world.started[0].2;
    let to_worker: Vec<(Signal, Duration)> = world
        .signals
        .iter()
        .filter(|(pid, _, _)| *pid != 1000)
        .map(|(_, sig, at)| (*sig, *at - started))
        .collect();
    assert_eq!(to_worker[0].0, Signal::SIGTERM);
    assert_eq!(to_worker[0].1, Duration::from_secs(1));
    assert_eq!(to_worker[1].0, Signal::SIGKILL);
    assert_eq!(to_worker[1].1, Duration::from_secs(3));
}

#[tokio::test(start_paused = true)]
async fn after_maxfail_running_tests_get_the_stop_grace_then_are_stopped_and_not_run() {
    // Known, equal timings: each worker gets a contiguous half (a.py to gw0, b.py to gw1).
    let dir = tempfile::tempdir().unwrap();
    let tests = vec![
        (
            "a.py::fails",
            Script::Fail {
                after: 10 * MS,
                reruns: 0,
            },
        ),
        ("a.py::next", Script::Pass(10 * MS)),
        ("b.py::hangs", Script::Hang),
        ("b.py::queued", Script::Pass(10 * MS)),
    ];
    let ids: Vec<&str> = tests.iter().map(|(id, _)| *id).collect();
    let timings = durations(dir.path(), &ids, 0.01);
    let mut setup = Setup::new(2, tests);
    setup.config.timings = vec![timings];
    setup.config.maxfail = Some(1);
    setup.config.stop_grace = Duration::from_secs(5);
    let (summary, world, _) = setup.run().await;
    assert_eq!(
        summary.stopped.as_deref(),
        Some("stopping after 1 failures")
    );
    // The failing worker had already started its next test (it knew it as its nextitem):
    // that one ran after all.
    assert_eq!(
        finals(&summary),
        vec![
            ("a.py::fails", Outcome::Failed),
            ("a.py::next", Outcome::Passed)
        ]
    );
    let mut not_run = summary.not_run.clone();
    not_run.sort();
    assert_eq!(
        not_run,
        vec![TestId::new("b.py::hangs"), TestId::new("b.py::queued")]
    );
    let world = world.lock().unwrap();
    let failed_at = world.started[0].2 + 10 * MS;
    let (_, sig, at) = world
        .signals
        .iter()
        .find(|(pid, _, _)| *pid != 1000)
        .unwrap();
    assert_eq!(*sig, Signal::SIGTERM);
    assert_eq!(
        *at - failed_at,
        Duration::from_secs(5),
        "SIGTERM when the grace is over"
    );
}

#[tokio::test(start_paused = true)]
async fn a_failure_the_rules_allow_is_retried_and_then_counts_as_flaky() {
    let setup = Setup::new(
        2,
        vec![
            (
                "a.py::flaky",
                Script::FlakyOnce {
                    after: 10 * MS,
                    reruns: 2,
                },
            ),
            ("a.py::other", Script::Pass(10 * MS)),
        ],
    );
    let (summary, world, _) = setup.run().await;
    let attempts: Vec<(u32, bool, Outcome)> = summary
        .results
        .iter()
        .filter(|r| r.id.as_str() == "a.py::flaky")
        .map(|r| (r.attempt, r.will_retry, r.outcome))
        .collect();
    assert_eq!(
        attempts,
        vec![(0, true, Outcome::Failed), (1, false, Outcome::Passed)]
    );
    assert_eq!(summary.flaky().len(), 1);
    assert_eq!(slot_of(&world, "a.py::flaky").len(), 2, "ran twice");
}

#[tokio::test(start_paused = true)]
async fn an_idle_worker_steals_from_the_tail_of_a_busy_one() {
    // Stale timings: all tests said to take 1 s, so each worker is seeded with a contiguous
    // half; in truth the first half is slow and the second quick.
    let dir = tempfile::tempdir().unwrap();
    let ids: Vec<String> = (0..8).map(|i| format!("a.py::t{i}")).collect();
    let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let timings = durations(dir.path(), &id_refs, 1.0);
    let tests: Vec<(&'static str, Script)> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let id: &'static str = Box::leak(id.clone().into_boxed_str());
            let length = if i < 4 { 3000 * MS } else { 100 * MS };
            (id, Script::Pass(length))
        })
        .collect();
    let mut setup = Setup::new(2, tests);
    setup.config.timings = vec![timings];
    let (summary, world, start) = setup.run().await;
    assert!(finals(&summary).iter().all(|(_, o)| *o == Outcome::Passed));
    let slow_slot = slot_of(&world, "a.py::t0")[0].clone();
    let stolen: Vec<String> = (1..4)
        .map(|i| format!("a.py::t{i}"))
        .filter(|id| slot_of(&world, id)[0] != slow_slot)
        .collect();
    assert!(
        !stolen.is_empty(),
        "the quick worker took some of the slow worker's tail"
    );
    // 12.4 s of work on 2 workers: without the steal the slow worker alone needs 12 s.
    let makespan = world
        .lock()
        .unwrap()
        .started
        .iter()
        .map(|(_, _, at)| *at)
        .max()
        .unwrap()
        - start;
    assert!(makespan < Duration::from_secs(9), "{makespan:?}");
}

#[tokio::test(start_paused = true)]
async fn a_signal_stops_the_workers_and_the_running_test_fails_as_interrupted() {
    let mut setup = Setup::new(
        1,
        vec![
            ("a.py::quick", Script::Pass(10 * MS)),
            ("a.py::hangs", Script::Hang),
        ],
    );
    setup.signal_at = Some((Duration::from_secs(2), "SIGTERM"));
    let (summary, world, start) = setup.run().await;
    assert_eq!(summary.interrupted.as_deref(), Some("SIGTERM"));
    assert_eq!(
        finals(&summary),
        vec![
            ("a.py::quick", Outcome::Passed),
            ("a.py::hangs", Outcome::Failed)
        ]
    );
    let message = summary.results[1].reports[0]
        .crash_message
        .clone()
        .unwrap_or_default();
    assert!(
        message.starts_with(
            "Interrupted: a.py::hangs was running for 2.0 s when the run was stopped by SIGTERM"
        ),
        "{message}"
    );
    assert!(summary.not_run.is_empty(), "{:?}", summary.not_run);
    let world = world.lock().unwrap();
    let (_, sig, at) = world
        .signals
        .iter()
        .find(|(pid, _, _)| *pid != 1000)
        .unwrap();
    assert_eq!(
        (*sig, *at - start),
        (Signal::SIGTERM, Duration::from_secs(2))
    );
}

#[tokio::test(start_paused = true)]
async fn one_pool_serves_two_runs() {
    let tests = vec![
        (TestId::new("a.py::one"), Script::Pass(10 * MS)),
        (
            TestId::new("a.py::two"),
            Script::FlakyOnce {
                after: 10 * MS,
                reruns: 1,
            },
        ),
    ];
    let world = World::new(tests);
    let mut config = RunConfig::new("python3".into(), Vec::new(), std::env::temp_dir(), 2);
    config.no_timing_store = true;
    let launcher = Box::new(FakeLauncher {
        world: Arc::clone(&world),
    });
    let mut pool = crate::pool::Pool::open(super::pool_spec(&config), launcher).unwrap();
    let socket = pool.rundir().socket();
    for round in 0..2 {
        let (events, _keep) = unbounded_channel();
        let timings = shardex_core::timing::TimingStore::new();
        let summary = super::run_in(&mut pool, config.clone(), events, None, timings)
            .await
            .unwrap();
        assert_eq!(
            finals(&summary),
            vec![
                ("a.py::one", Outcome::Passed),
                ("a.py::two", Outcome::Passed)
            ],
            "round {round}"
        );
        assert!(socket.exists(), "the pool's socket outlives the run");
    }
    pool.close().await;
}
