//! Early stop: `-x` / `--maxfail N` count hard failures only, stop dispatch at once, let running
//! tests finish within `--stop-grace`, then exit 1 (as plain `pytest -x`) and say how many tests
//! were not run.
//!
//! `fixtures/stop` has 200 tests of 10 ms; `test_a.py::test_short[5]` (6th in collection order)
//! always fails. Each attempt appends `start <nodeid> <unix time> <pid>` to `$STOP_LOG`, each
//! failure `fail ...`: "how many tests started after the failure that stopped the run" is read
//! from there (target: at most one per worker, i.e. 4 with `-n 4`).

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use shardex_e2e::{
    assert_no_survivors, copy_fixture, default_timeout, pytest_cmd, serial, shardex_cmd, Kind,
    RunOutput, Suite,
};

use crate::shardex_bin;

const TOTAL: usize = 200;
const WORKERS: usize = 4;
const FAILING: &str = "test_a.py::test_short[5]";

#[derive(Clone, Debug)]
struct Entry {
    kind: String,
    nodeid: String,
    at: f64,
}

fn read_log(path: &Path) -> Vec<Entry> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            Some(Entry {
                kind: it.next()?.to_string(),
                nodeid: it.next()?.to_string(),
                at: it.next()?.parse().ok()?,
            })
        })
        .collect()
}

fn now_unix() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

struct StopRun {
    out: RunOutput,
    log: Vec<Entry>,
    /// Unix time at which the process had exited.
    exited_at: f64,
}

impl StopRun {
    fn started(&self) -> BTreeSet<&str> {
        self.log
            .iter()
            .filter(|e| e.kind == "start")
            .map(|e| e.nodeid.as_str())
            .collect()
    }

    /// When the failure that stopped the run happened: a test's failure is hard at its
    /// (reruns+1)-th failed attempt, and the run stops at the `maxfail`-th hard failure.
    fn stop_time(&self, reruns: usize, maxfail: usize) -> f64 {
        let mut per_test: std::collections::BTreeMap<&str, Vec<f64>> = Default::default();
        for e in self.log.iter().filter(|e| e.kind == "fail") {
            per_test.entry(&e.nodeid).or_default().push(e.at);
        }
        let mut hard: Vec<f64> = per_test
            .values()
            .filter_map(|fails| fails.get(reruns).copied())
            .collect();
        hard.sort_by(f64::total_cmp);
        *hard.get(maxfail - 1).unwrap_or_else(|| {
            panic!(
                "fewer than {maxfail} hard failures in the log: {per_test:?}\n{}",
                self.out.describe()
            )
        })
    }

    /// Attempts that started after `t`.
    fn started_after(&self, t: f64) -> Vec<&Entry> {
        self.log
            .iter()
            .filter(|e| e.kind == "start" && e.at > t)
            .collect()
    }
}

fn run_stop(suite: &Suite, shardex: bool, args: &[&str], env: &[(&str, &str)]) -> StopRun {
    let log = suite
        .scratch
        .join(if shardex { "shardex.log" } else { "pytest.log" });
    let junit = suite
        .scratch
        .join(if shardex { "shardex.xml" } else { "pytest.xml" });
    let mut inv = if shardex {
        let workers = WORKERS.to_string();
        let mut all = vec!["-n", workers.as_str()];
        all.extend_from_slice(args);
        shardex_cmd(shardex_bin(), &suite.dir, &all, Some(&junit))
    } else {
        pytest_cmd(&suite.dir, args, Some(&junit))
    };
    inv = inv.env("STOP_LOG", &log);
    for (k, v) in env {
        inv = inv.env(k, v);
    }
    let started_at = now_unix();
    let out = inv
        .start()
        .wait(default_timeout().min(Duration::from_secs(90)));
    let exited_at = started_at + out.elapsed.as_secs_f64();
    eprintln!(
        "{} {args:?} {env:?}: {:.2?}",
        if shardex { "shardex" } else { "pytest" },
        out.elapsed
    );
    if shardex {
        assert_no_survivors(&suite.dir, &out);
    }
    StopRun {
        log: read_log(&log),
        out,
        exited_at,
    }
}

/// `N test(s) not run ...` from shardex's terminal summary.
fn not_run_count(out: &RunOutput) -> Option<usize> {
    out.stdout.lines().find_map(|l| {
        let l = l.trim().trim_matches('=').trim();
        let (n, rest) = l.split_once(' ')?;
        let n: usize = n.parse().ok()?;
        // "175 tests not run (stopped by -x/--maxfail)"
        (rest.starts_with("test not run") || rest.starts_with("tests not run")).then_some(n)
    })
}

/// The shardex side of every stop scenario.
fn assert_stopped_quickly(
    run: &StopRun,
    reruns: usize,
    maxfail: usize,
    failed: u64,
    slow_allowed: Option<f64>,
) {
    let out = &run.out;
    out.assert_code(1);
    let stop = run.stop_time(reruns, maxfail);
    let late = run.started_after(stop);
    assert!(
        late.len() <= WORKERS,
        "{} tests started after the failure that stops the run (at most {WORKERS} allowed, one per worker): {:?}\n{}",
        late.len(),
        late.iter().map(|e| format!("{} +{:.3}s", e.nodeid, e.at - stop)).collect::<Vec<_>>(),
        out.describe()
    );
    let to_exit = run.exited_at - stop;
    let limit = slow_allowed.unwrap_or(5.0);
    assert!(
        to_exit < limit,
        "shardex exited {to_exit:.2}s after the stopping failure (limit {limit}s)\n{}",
        out.describe()
    );
    let summary = out.summary();
    assert_eq!(
        summary.get("failed"),
        Some(&failed),
        "{failed} failed expected\n{}",
        out.describe()
    );
    let stopping = format!("stopping after {maxfail} failures");
    assert!(
        out.stdout.contains(&stopping),
        "stdout should say `{stopping}` as pytest does\n{}",
        out.describe()
    );
    // what finished = passed + failed; the rest was not run (never started, or killed)
    let finished = (summary.get("passed").copied().unwrap_or(0)
        + summary.get("failed").copied().unwrap_or(0)) as usize;
    // (when the stopping failure came last, everything ran and there is nothing to say)
    let not_run = not_run_count(out).unwrap_or_else(|| {
        assert!(
            finished == TOTAL,
            "the summary should say how many tests were not run (`N tests not run`)\n{}",
            out.describe()
        );
        0
    });
    assert_eq!(
        not_run,
        TOTAL - finished,
        "{TOTAL} tests, {finished} finished (passed + failed), so {} not run; shardex says {not_run} \
         ({} distinct tests started according to the log)\n{}",
        TOTAL - finished,
        run.started().len(),
        out.describe()
    );
    // ONE testcase per test; what passed in JUnit did start
    let report = out.junit();
    let mut seen = BTreeSet::new();
    let started = run.started();
    for tc in &report.cases {
        let id = format!("{}.py::{}", tc.classname.replace('.', "/"), tc.name);
        assert!(
            seen.insert(id.clone()),
            "several JUnit testcases for {id}\n{}",
            out.describe()
        );
        if tc.kind() == Kind::Pass {
            assert!(
                started.contains(id.as_str()),
                "{id} passed in JUnit but never started\n{}",
                out.describe()
            );
        }
    }
}

#[test]
fn exitfirst_stops_dispatch_at_once() {
    let _guard = serial();
    let suite = copy_fixture("stop");
    let plain = run_stop(&suite, false, &["-x"], &[]);
    plain.out.assert_code(1);
    assert_eq!(
        plain.started().len(),
        6,
        "plain pytest -x runs the 6 first tests\n{}",
        plain.out.describe()
    );
    let run = run_stop(&suite, true, &["-x"], &[]);
    assert_stopped_quickly(&run, 0, 1, 1, None);
    let report = run.out.junit();
    let failing: Vec<_> = report
        .cases
        .iter()
        .filter(|c| matches!(c.kind(), Kind::Failure | Kind::Error))
        .map(|c| format!("{}::{}", c.classname, c.name))
        .collect();
    assert_eq!(
        failing,
        ["test_a::test_short[5]"],
        "{FAILING} is the only failure\n{}",
        run.out.describe()
    );
}

#[test]
fn maxfail_2_stops_after_the_second_failure() {
    let _guard = serial();
    let suite = copy_fixture("stop");
    let env = [("STOP_FAIL_TWO", "1")];
    let plain = run_stop(&suite, false, &["--maxfail", "2"], &env);
    plain.out.assert_code(1);
    assert_eq!(plain.started().len(), 12, "{}", plain.out.describe());
    let run = run_stop(&suite, true, &["--maxfail", "2"], &env);
    assert_stopped_quickly(&run, 0, 2, 2, None);
}

/// With retries, only a failure that used up its retries counts: test_a[2] fails once and passes
/// on its retry without stopping anything; test_a[5] stops the run after its second attempt.
#[test]
fn exitfirst_counts_hard_failures_only() {
    let _guard = serial();
    let suite = copy_fixture("stop");
    let env = [("STOP_FLAKY", "1")];
    let plain = run_stop(&suite, false, &["-x", "--reruns", "1"], &env);
    plain.out.assert_code(1);
    assert_eq!(plain.out.summary().get("rerun"), Some(&2));
    let run = run_stop(&suite, true, &["-x", "--reruns", "1"], &env);
    assert_stopped_quickly(&run, 1, 1, 1, None);
    let summary = run.out.summary();
    assert_eq!(
        summary.get("rerun"),
        Some(&2),
        "test_a[2] and test_a[5] are each retried once\n{}",
        run.out.describe()
    );
    let report = run.out.junit();
    let flaky: Vec<_> = report
        .cases
        .iter()
        .filter(|c| c.classname == "test_a" && c.name == "test_short[2]")
        .collect();
    assert!(
        flaky.len() == 1 && flaky[0].kind() == Kind::Pass && flaky[0].rerun_children.len() == 1,
        "test_a[2] passes on its retry (one testcase, one flakyFailure): {flaky:?}\n{}",
        run.out.describe()
    );
}

/// Tests still running when the run stops get `--stop-grace` seconds, then are killed and
/// counted as not run: test_a[1..4] hang once test_a[0] has failed.
#[test]
fn stop_grace_kills_tests_still_running() {
    let _guard = serial();
    let suite = copy_fixture("stop");
    let env = [("STOP_SLOW", "1")];
    let run = run_stop(&suite, true, &["-x", "--stop-grace", "1"], &env);
    let hung: BTreeSet<&str> = run
        .log
        .iter()
        .filter(|e| e.kind == "hang")
        .map(|e| e.nodeid.as_str())
        .collect();
    if hung.is_empty() {
        eprintln!("note: no test was still running when test_a[0] failed; grace not exercised");
    }
    assert_stopped_quickly(&run, 0, 1, 1, Some(1.0 + 5.0));
    let report = run.out.junit();
    for tc in &report.cases {
        let id = format!("{}.py::{}", tc.classname, tc.name);
        if hung.contains(id.as_str()) {
            assert!(
                tc.kind() != Kind::Pass,
                "{id} was killed after the grace period, it cannot have passed\n{}",
                run.out.describe()
            );
        }
    }
}

/// Under `-x`, the tests that failed in the previous run go first, so the stop comes as
/// early as it can; with one worker everything else runs in collection order.
#[test]
fn exitfirst_runs_the_last_failures_first() {
    let _guard = serial();
    let suite = copy_fixture("stop");
    // The fixture turns pytest's cache off in addopts; this test needs it (and keeps
    // pytest-randomly off, as the fixture's addopts did).
    let args = ["-n", "1", "-x", "-o", "addopts=", "-p", "no:randomly"];
    let first = shardex_cmd(shardex_bin(), &suite.dir, &args, None).run();
    first.assert_code(1);
    // Collection order: test_short[0..5] pass, then test_short[5] fails.
    assert!(
        first.summary().get("passed") >= Some(&5),
        "{}",
        first.describe()
    );
    let again = shardex_cmd(shardex_bin(), &suite.dir, &args, None).run();
    again.assert_code(1);
    let summary = again.summary();
    assert_eq!(summary.get("failed"), Some(&1), "{}", again.describe());
    assert_eq!(
        summary.get("passed"),
        None,
        "the failure ran first: {}",
        again.describe()
    );
    assert!(again.stdout.contains(FAILING), "{}", again.describe());
}
