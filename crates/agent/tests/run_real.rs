//! The run loop against real CPython + pytest processes (the repo's .venv, made by
//! scripts/setup.sh).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use shardex_agent::{execute, RunConfig, RunEvent, RunSummary, WorkerMode};
use shardex_core::Outcome;

mod python_suite;
use python_suite::{suite, venv_python};

fn run(
    dir: &Path,
    workers: usize,
    tweak: impl FnOnce(&mut RunConfig),
) -> (RunSummary, Vec<RunEvent>) {
    let mut config = RunConfig::new(
        venv_python(),
        vec!["-p".into(), "no:cacheprovider".into()],
        dir.to_owned(),
        workers,
    );
    config.no_timing_store = true;
    tweak(&mut config);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let summary = rt.block_on(execute(config, tx)).expect("run");
    let mut events = Vec::new();
    while let Ok(event) = rx.try_recv() {
        events.push(event);
    }
    (summary, events)
}

fn outcomes(summary: &RunSummary) -> BTreeMap<String, Outcome> {
    summary
        .results
        .iter()
        .map(|r| (r.id.to_string(), r.outcome))
        .collect()
}

const MIXED: &str = r#"
import os, pytest

def test_pass():
    assert os.environ["PYTEST_XDIST_WORKER"] in ("gw0", "gw1")

def test_fail():
    assert 1 == 2

@pytest.mark.skip(reason="nope")
def test_skip():
    pass

@pytest.mark.xfail
def test_xfail():
    assert 0

@pytest.fixture
def broken():
    raise RuntimeError("setup broke")

def test_setup_error(broken):
    pass

@pytest.mark.parametrize("x", range(6))
def test_many(x, tmp_path):
    assert "popen-gw" in str(tmp_path)
"#;

#[test]
fn forked_workers_run_every_test_once_with_pytest_outcomes() {
    let dir = suite(&[("test_mixed.py", MIXED)]);
    let (summary, events) = run(dir.path(), 2, |_| {});
    let outcomes = outcomes(&summary);
    assert_eq!(summary.results.len(), 11, "{outcomes:?}");
    assert_eq!(outcomes["test_mixed.py::test_pass"], Outcome::Passed);
    assert_eq!(outcomes["test_mixed.py::test_fail"], Outcome::Failed);
    assert_eq!(outcomes["test_mixed.py::test_skip"], Outcome::Skipped);
    assert_eq!(outcomes["test_mixed.py::test_xfail"], Outcome::XFailed);
    assert_eq!(outcomes["test_mixed.py::test_setup_error"], Outcome::Error);
    assert!(outcomes
        .iter()
        .filter(|(k, _)| k.contains("test_many"))
        .all(|(_, o)| *o == Outcome::Passed));
    let workers: std::collections::BTreeSet<_> = summary.results.iter().map(|r| r.worker).collect();
    assert_eq!(workers.len(), 2, "both workers ran tests");
    assert!(events
        .iter()
        .any(|e| matches!(e, RunEvent::Collected { total: 11, .. })));
    assert!(summary.interrupted.is_none() && summary.internal_error.is_none());
}

#[test]
fn spawn_mode_gives_the_same_outcomes() {
    let dir = suite(&[("test_mixed.py", MIXED)]);
    let (forked, _) = run(dir.path(), 2, |_| {});
    let (spawned, _) = run(dir.path(), 2, |c| c.mode = WorkerMode::Spawn);
    assert_eq!(outcomes(&forked), outcomes(&spawned));
}

const CRASHY: &str = r#"
import ctypes, os, sys

def test_segfault():
    sys.stderr.write("about to crash\n")
    ctypes.string_at(0)

def test_exit():
    os._exit(3)
"#;

#[test]
fn a_crash_fails_only_its_test_and_the_slot_is_replaced() {
    let normal: String = (0..10)
        .map(|i| format!("def test_ok_{i}():\n    pass\n"))
        .collect();
    let dir = suite(&[("test_crash.py", CRASHY), ("test_normal.py", &normal)]);
    let (summary, _) = run(dir.path(), 2, |_| {});
    let outcomes = outcomes(&summary);
    assert_eq!(outcomes.len(), 12, "{outcomes:?}");
    assert_eq!(outcomes["test_crash.py::test_segfault"], Outcome::Crashed);
    assert_eq!(outcomes["test_crash.py::test_exit"], Outcome::Crashed);
    assert_eq!(
        outcomes.values().filter(|o| **o == Outcome::Passed).count(),
        10
    );
    let segv = summary
        .results
        .iter()
        .find(|r| r.id.as_str().ends_with("test_segfault"))
        .unwrap();
    let text = segv.reports[0].longrepr.as_deref().unwrap();
    assert!(text.contains("SIGSEGV"), "{text}");
    assert!(
        text.contains("Segmentation fault"),
        "faulthandler's traceback is in the tail: {text}"
    );
    let exit = summary
        .results
        .iter()
        .find(|r| r.id.as_str().ends_with("test_exit"))
        .unwrap();
    assert!(exit.reports[0]
        .crash_message
        .as_deref()
        .unwrap()
        .contains("exit code 3"));
}

#[test]
fn timeout_kills_the_test_and_the_rest_runs() {
    let dir = suite(&[(
        "test_hang.py",
        "import time\n\ndef test_hang():\n    time.sleep(1000)\n\ndef test_a():\n    pass\n\ndef test_b():\n    pass\n",
    )]);
    let started = std::time::Instant::now();
    let (summary, _) = run(dir.path(), 2, |c| {
        c.timeout = Some(Duration::from_millis(700));
        c.kill_grace = Duration::from_millis(300);
    });
    let outcomes = outcomes(&summary);
    assert_eq!(
        outcomes["test_hang.py::test_hang"],
        Outcome::TimedOut,
        "{outcomes:?}"
    );
    assert_eq!(outcomes["test_hang.py::test_a"], Outcome::Passed);
    assert_eq!(outcomes["test_hang.py::test_b"], Outcome::Passed);
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[test]
fn collection_errors_stop_the_run_like_pytest() {
    let dir = suite(&[
        ("test_bad.py", "import not_a_module_anywhere\n"),
        ("test_ok.py", "def test_ok():\n    pass\n"),
    ]);
    let (summary, _) = run(dir.path(), 2, |_| {});
    assert_eq!(summary.collection_errors(), 1);
    assert!(summary.results.is_empty());
    let (summary, _) = run(dir.path(), 2, |c| {
        c.pytest_args.push("--continue-on-collection-errors".into())
    });
    assert_eq!(summary.collection_errors(), 1);
    assert_eq!(summary.results.len(), 1);
}

#[test]
fn usage_errors_end_the_run_before_collection() {
    let dir = suite(&[("test_ok.py", "def test_ok():\n    pass\n")]);
    let mut config = RunConfig::new(
        venv_python(),
        vec!["--no-such-flag".into()],
        dir.path().to_owned(),
        2,
    );
    config.no_timing_store = true;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let err = rt.block_on(execute(config, tx)).unwrap_err();
    match err {
        shardex_agent::AgentError::EarlyExit {
            code, stderr_tail, ..
        } => {
            assert_eq!(code, Some(4));
            assert!(stderr_tail.contains("--no-such-flag"), "{stderr_tail}");
        }
        other => panic!("unexpected {other}"),
    }
}
