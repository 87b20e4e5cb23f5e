//! Faults: crashing workers, hanging tests with --timeout, SIGINT mid-run. After every run no
//! process whose cwd or command line is in the suite's temp dir may survive.

use std::time::Duration;

use nix::sys::signal::Signal;
use shardex_e2e::{
    assert_no_survivors, copy_fixture, default_timeout, parse_junit, pid_alive, serial,
    shardex_cmd, Kind, RunOutput, TestCase,
};

use crate::shardex_bin;

fn case<'a>(run: &RunOutput, cases: &'a [TestCase], classname: &str, name: &str) -> &'a TestCase {
    let found: Vec<&TestCase> = cases
        .iter()
        .filter(|c| c.classname == classname && c.name == name)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected exactly one JUnit testcase {classname}::{name}, found {}\n{}",
        found.len(),
        run.describe()
    );
    found[0]
}

/// The testcase `classname::name` failed (pytest writes a failing call as `<failure>`,
/// xdist a worker crash as `<error>`: either) and its report mentions one of `any_of`.
fn assert_failed_mentioning<'a>(
    run: &RunOutput,
    cases: &'a [TestCase],
    (classname, name): (&str, &str),
    any_of: &[&str],
) -> &'a TestCase {
    let tc = case(run, cases, classname, name);
    assert!(
        matches!(tc.kind(), Kind::Failure | Kind::Error),
        "{name} should be reported failed, JUnit says {}\n{}",
        tc.kind(),
        run.describe()
    );
    assert_mentions(run, tc, any_of);
    tc
}

fn assert_mentions(run: &RunOutput, tc: &TestCase, any_of: &[&str]) {
    let text = tc.all_text();
    assert!(
        any_of.iter().any(|needle| text.contains(needle)),
        "{}::{} should mention one of {any_of:?}; its report says:\n{text}\n{}",
        tc.classname,
        tc.name,
        run.describe()
    );
}

#[test]
fn crashing_workers_fail_their_test_and_the_rest_runs() {
    let _guard = serial();
    let suite = copy_fixture("crash");
    let run = shardex_cmd(
        shardex_bin(),
        &suite.dir,
        &["-n", "2"],
        Some(&suite.scratch.join("junit.xml")),
    )
    .run();
    eprintln!("crash: {:.2?}", run.elapsed);
    assert_no_survivors(&suite.dir, &run);
    run.assert_code(1);

    let junit = run.junit();
    let crashers = [
        (
            "test_segfault",
            &["SIGSEGV", "signal 11"][..],
            "CRASH-MARKER-segv",
        ),
        ("test_os_exit", &["exit code 3"][..], "CRASH-MARKER-exit3"),
        (
            "test_sigkill",
            &["SIGKILL", "signal 9"][..],
            "CRASH-MARKER-sigkill",
        ),
    ];
    for (name, mentions, marker) in crashers {
        let tc = assert_failed_mentioning(&run, &junit.cases, ("test_crashers", name), mentions);
        // DESIGN §8 wants the worker's stderr tail in the report. The test's own writes to fd 2
        // go to pytest's capture file (not the worker's real stderr), so they are lost unless
        // shardex recovers the capture: report it, don't fail on it.
        let everywhere = format!("{}\n{}\n{}", tc.all_text(), run.stdout, run.stderr);
        if !everywhere.contains(marker) {
            eprintln!(
                "note: {name}: what the test wrote to stderr ({marker}) is not in the report"
            );
        }
    }
    let others: Vec<&TestCase> = junit
        .cases
        .iter()
        .filter(|c| c.classname != "test_crashers")
        .collect();
    assert_eq!(
        others.len(),
        21,
        "all 21 normal tests must run\n{}",
        run.describe()
    );
    for tc in others {
        assert_eq!(
            tc.kind(),
            Kind::Pass,
            "{}::{} should pass\n{}",
            tc.classname,
            tc.name,
            run.describe()
        );
    }
    let summary = run.summary();
    assert_eq!(
        summary.get("failed"),
        Some(&3),
        "{summary:?}\n{}",
        run.describe()
    );
    assert_eq!(
        summary.get("passed"),
        Some(&21),
        "{summary:?}\n{}",
        run.describe()
    );
    assert_eq!(
        summary.get("errors"),
        None,
        "{summary:?}\n{}",
        run.describe()
    );
}

/// A worker holds back the results of quick passing tests and sends several at once. A
/// crash or a timeout right after such tests must still be blamed on the test that died,
/// and every held-back result must count (the agent reads them from the worker's spool).
#[test]
fn held_back_results_survive_a_crash_and_a_timeout() {
    let _guard = serial();
    let suite = copy_fixture("held");
    let run = shardex_cmd(
        shardex_bin(),
        &suite.dir,
        &["-n", "1", "--timeout", "2"],
        Some(&suite.scratch.join("junit.xml")),
    )
    .run();
    eprintln!("held: {:.2?}", run.elapsed);
    assert_no_survivors(&suite.dir, &run);
    run.assert_code(1);
    let junit = run.junit();
    let dead = [
        (
            "test_quick_then_crash",
            "test_segfault_after_quick_ones",
            &["SIGSEGV", "signal 11"][..],
        ),
        (
            "test_quick_then_hang",
            "test_hang_after_quick_ones",
            &["Timeout"][..],
        ),
    ];
    for (classname, name, mentions) in dead {
        assert_failed_mentioning(&run, &junit.cases, (classname, name), mentions);
    }
    let others: Vec<&TestCase> = junit
        .cases
        .iter()
        .filter(|c| !c.name.ends_with("_after_quick_ones"))
        .collect();
    assert_eq!(others.len(), 130, "{}", run.describe());
    let not_passed: Vec<String> = others
        .iter()
        .filter(|c| c.kind() != Kind::Pass)
        .map(|c| format!("{}::{} {}", c.classname, c.name, c.kind()))
        .collect();
    assert!(not_passed.is_empty(), "{not_passed:?}\n{}", run.describe());
    let summary = run.summary();
    assert_eq!(summary.get("failed"), Some(&2), "{summary:?}");
    assert_eq!(summary.get("passed"), Some(&130), "{summary:?}");
}

#[test]
fn timeout_kills_hanging_tests_and_their_children() {
    let _guard = serial();
    let suite = copy_fixture("hang");
    let pidfile = suite.scratch.join("grandchild.pid");
    let run = shardex_cmd(
        shardex_bin(),
        &suite.dir,
        &["-n", "2", "--timeout", "2"],
        Some(&suite.scratch.join("junit.xml")),
    )
    .env("SHARDEX_TEST_PIDFILE", &pidfile)
    .run();
    eprintln!("hang: {:.2?}", run.elapsed);

    // the grandchild `sleep 1000` must not outlive the run
    let grandchild: Option<i32> = std::fs::read_to_string(&pidfile)
        .ok()
        .and_then(|s| s.trim().parse().ok());
    if let Some(pid) = grandchild {
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while pid_alive(pid) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if pid_alive(pid) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
            panic!(
                "grandchild `sleep 1000` (pid {pid}) survived the run\n{}",
                run.describe()
            );
        }
    }
    assert_no_survivors(&suite.dir, &run);
    run.assert_code(1);
    assert!(
        grandchild.is_some(),
        "test_grandchild_then_hang never wrote {} (did it run with the env?)\n{}",
        pidfile.display(),
        run.describe()
    );

    let junit = run.junit();
    for name in ["test_sleeps_forever", "test_grandchild_then_hang"] {
        let tc = case(&run, &junit.cases, "test_hangers", name);
        assert_eq!(
            tc.kind(),
            Kind::Failure,
            "{name} should fail\n{}",
            run.describe()
        );
        assert_mentions(&run, tc, &["Timeout"]);
    }
    let others: Vec<&TestCase> = junit
        .cases
        .iter()
        .filter(|c| c.classname != "test_hangers")
        .collect();
    assert_eq!(others.len(), 9, "{}", run.describe());
    assert!(
        others.iter().all(|c| c.kind() == Kind::Pass),
        "{}",
        run.describe()
    );
    let summary = run.summary();
    assert_eq!(summary.get("failed"), Some(&2), "{summary:?}");
    assert_eq!(summary.get("passed"), Some(&9), "{summary:?}");
}

#[test]
fn sigint_stops_the_run_writes_the_report_and_leaves_nothing() {
    let _guard = serial();
    let suite = copy_fixture("slow");
    let junit_path = suite.scratch.join("junit.xml");
    let running = shardex_cmd(shardex_bin(), &suite.dir, &["-n", "2"], Some(&junit_path)).start();
    let running = running.assert_still_running_after(Duration::from_millis(1200));
    running.signal(Signal::SIGINT);
    let sent = std::time::Instant::now();
    let run = running.wait(default_timeout());
    let after_signal = sent.elapsed();
    eprintln!("sigint: exited {after_signal:.2?} after SIGINT");
    assert_no_survivors(&suite.dir, &run);
    run.assert_code(2);
    let text = std::fs::read_to_string(&junit_path).unwrap_or_else(|e| {
        panic!(
            "no JUnit report after SIGINT ({}): {e}\n{}",
            junit_path.display(),
            run.describe()
        )
    });
    let report = parse_junit(&text).unwrap_or_else(|e| {
        panic!(
            "JUnit report after SIGINT is malformed: {e}\n{text}\n{}",
            run.describe()
        )
    });
    assert!(
        report.cases.len() < 56,
        "all 56 tests reported after an interrupt: was it interrupted at all?\n{}",
        run.describe()
    );
    assert!(
        after_signal < Duration::from_secs(15),
        "shardex took {after_signal:?} to stop after SIGINT"
    );
}
