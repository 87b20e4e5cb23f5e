//! `shardex run --watch` on fixtures/watch: a package `app` that two test files import in
//! different ways (`from app.calc import add`, `import app.text as text`), a third test
//! file that imports nothing of it, and one failing test. The watch runs as a child; the
//! test edits files and reads which tests each run ran, in order (`-n 1 -v`: one worker
//! runs them in collection order, which is the order of the selection).

use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use shardex_e2e::{
    assert_no_survivors, copy_fixture, default_timeout, process_tree, serial, shardex_cmd, Running,
};

use crate::shardex_bin;

/// The line shardex prints after each run while it waits.
const WATCHING: &str = "shardex: watching ";

/// Waits until stdout holds `n` occurrences of `needle`; returns stdout.
fn wait_for(running: &mut Running, needle: &str, n: usize) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = running.stdout_so_far();
        if out.matches(needle).count() >= n {
            return out;
        }
        if let Some(status) = running.exited() {
            panic!("shardex --watch exited ({status:?}) while waiting for {needle:?}:\n{out}");
        }
        assert!(
            Instant::now() < deadline,
            "no {n} x {needle:?} in 60 s:\n{out}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The tests run between the `k`-th announcement (`shardex: changed: …`) and the next
/// status line, in the order `-v` printed them, with their words.
fn run_after_change(out: &str, k: usize) -> (String, Vec<String>) {
    let start = out
        .match_indices("shardex: changed: ")
        .nth(k)
        .unwrap_or_else(|| panic!("no change {k} announced:\n{out}"))
        .0;
    let part = &out[start..];
    let end = part.find(WATCHING).unwrap_or(part.len());
    let part = &part[..end];
    let announce = part.lines().next().unwrap_or_default().to_owned();
    let tests = part
        .lines()
        .filter(|line| line.starts_with("[gw"))
        .filter_map(|line| {
            // `[gw0] [ 33%] PASSED tests/test_a.py::test_x`
            let mut words = line.rsplit_once("] ")?.1.split_whitespace();
            let word = words.next()?;
            let id = words.next()?;
            Some(format!("{word} {id}"))
        })
        .collect();
    (announce, tests)
}

fn edit(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// Only shardex itself between runs: each run's Python processes are gone.
fn assert_alone_between_runs(running: &Running, out: &str) {
    let tree = process_tree(running.pid().as_raw());
    assert_eq!(
        tree,
        [running.pid().as_raw()],
        "processes left between runs: {tree:?}\n{out}"
    );
}

#[test]
fn watch_runs_changed_tests_first_then_failures_then_importers_and_sigint_ends_it() {
    let _guard = serial();
    let suite = copy_fixture("watch");
    let args = ["--watch", "-n", "1", "-v"];
    let mut running = shardex_cmd(shardex_bin(), &suite.dir, &args, None).start();
    let out = wait_for(&mut running, WATCHING, 1);
    assert!(
        out.contains("1 failed, 4 passed") && out.contains("last run: 1 failed, 4 passed in "),
        "{out}"
    );
    assert!(out.contains("Ctrl-C to stop"), "{out}");
    assert_alone_between_runs(&running, &out);

    // A test file edited (a test added): its tests first, then the earlier failure.
    edit(
        &suite.path("tests/test_other.py"),
        "def test_other():\n    assert True\n\n\ndef test_other_added():\n    pass\n",
    );
    let out = wait_for(&mut running, WATCHING, 2);
    let (announce, tests) = run_after_change(&out, 0);
    assert_eq!(
        announce,
        "shardex: changed: tests/test_other.py; running 1 changed test file, then 1 earlier \
         failure",
        "{out}"
    );
    assert_eq!(
        tests,
        [
            "PASSED tests/test_other.py::test_other",
            "PASSED tests/test_other.py::test_other_added",
            "FAILED tests/test_text.py::test_whisper_is_missing",
        ],
        "{out}"
    );
    assert_alone_between_runs(&running, &out);

    // The app module that test_text.py imports, edited so that its failure passes: the
    // failure, then the files that import the module (test_text.py's other test); not the
    // files that do not (test_calc.py, test_other.py).
    edit(
        &suite.path("app/text.py"),
        "def whisper(s):\n    return s.lower()\n",
    );
    let out = wait_for(&mut running, WATCHING, 3);
    let (announce, tests) = run_after_change(&out, 1);
    assert_eq!(
        announce,
        "shardex: changed: app/text.py; running 1 earlier failure, then 1 test file that \
         imports a changed module",
        "{out}"
    );
    assert_eq!(
        tests,
        [
            "PASSED tests/test_text.py::test_whisper_is_missing",
            "FAILED tests/test_text.py::test_shout",
        ],
        "{out}"
    );

    // The other module, imported with `from app.calc import add`: only test_calc.py now
    // (test_shout's failure first).
    edit(
        &suite.path("app/calc.py"),
        "def add(a, b):\n    return b + a  # commuted\n",
    );
    let out = wait_for(&mut running, WATCHING, 4);
    let (_, tests) = run_after_change(&out, 2);
    assert_eq!(
        tests,
        [
            "FAILED tests/test_text.py::test_shout",
            "PASSED tests/test_calc.py::test_add",
            "PASSED tests/test_calc.py::test_add_negative",
        ],
        "{out}"
    );

    // Ctrl-C between runs: exit 130 at once, nothing left behind.
    let signalled = Instant::now();
    running.signal(Signal::SIGINT);
    let run = running.wait(default_timeout());
    assert!(
        signalled.elapsed() < Duration::from_secs(5),
        "{:?} after SIGINT\n{}",
        signalled.elapsed(),
        run.describe()
    );
    assert_no_survivors(&suite.dir, &run);
    run.assert_code(130);
}

#[test]
fn sigint_during_a_run_interrupts_it_and_ends_the_watch() {
    let _guard = serial();
    let suite = copy_fixture("watch");
    let args = ["--watch", "-n", "1", "-v"];
    let mut running = shardex_cmd(shardex_bin(), &suite.dir, &args, None).start();
    wait_for(&mut running, WATCHING, 1);
    edit(
        &suite.path("tests/test_slow.py"),
        "import time\n\n\ndef test_slow():\n    time.sleep(60)\n",
    );
    wait_for(&mut running, "shardex: changed: tests/test_slow.py", 1);
    // The run's zygote and worker are up (the worker is in test_slow) once the tree has
    // them; then Ctrl-C.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut tree = process_tree(running.pid().as_raw());
    while tree.len() < 3 {
        assert!(
            Instant::now() < deadline,
            "the run's processes did not start: {tree:?}\n{}",
            running.stdout_so_far()
        );
        std::thread::sleep(Duration::from_millis(100));
        tree = process_tree(running.pid().as_raw());
    }
    std::thread::sleep(Duration::from_millis(500));
    running.signal(Signal::SIGINT);
    let run = running.wait(default_timeout());
    assert_no_survivors(&suite.dir, &run);
    run.assert_code(130);
    assert!(
        run.stdout
            .contains("Interrupted: tests/test_slow.py::test_slow was running for"),
        "{}",
        run.describe()
    );
    for pid in tree {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "process {pid} of the interrupted run is still there\n{}",
            run.describe()
        );
    }
    // No new run and no status line after the interrupted one.
    let after = run
        .stdout
        .rsplit("shardex: changed: tests/test_slow.py")
        .next()
        .unwrap_or_default();
    assert!(!after.contains(WATCHING), "{}", run.describe());
}
