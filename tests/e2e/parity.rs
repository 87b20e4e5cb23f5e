//! Parity: `shardex run ARGS` must give the same exit code, summary counts and JUnit testcases
//! as plain `pytest ARGS` on the same suite.

use std::path::Path;
use std::process::Command;

use shardex_e2e::{
    assert_same_results, copy_fixture, pytest_cmd, serial, shardex_cmd, venv_python, Invocation,
    RunOutput,
};

use crate::shardex_bin;

/// Run plain pytest with `pytest_args` and shardex with `shardex_args` on a fresh copy of
/// `fixture`, and assert they agree.
fn check(fixture: &str, pytest_args: &[&str], shardex_args: &[&str]) {
    let _guard = serial();
    let suite = copy_fixture(fixture);
    let expected = pytest_cmd(
        &suite.dir,
        pytest_args,
        Some(&suite.scratch.join("pytest.xml")),
    )
    .run();
    let actual = shardex_cmd(
        shardex_bin(),
        &suite.dir,
        shardex_args,
        Some(&suite.scratch.join("shardex.xml")),
    )
    .run();
    eprintln!(
        "{fixture} {shardex_args:?}: pytest {:.2?}, shardex {:.2?}",
        expected.elapsed, actual.elapsed
    );
    assert_same_results(
        &format!("fixtures/{fixture} with {shardex_args:?}"),
        &expected,
        &actual,
        &suite.dir,
    );
}

fn same(fixture: &str, args: &[&str]) {
    check(fixture, args, args);
}

#[test]
fn basic_no_args() {
    same("basic", &[]);
}

#[test]
fn basic_keyword() {
    same("basic", &["-k", "odd or TestInner or alpha"]);
}

#[test]
fn basic_marker() {
    same("basic", &["-m", "smoke"]);
}

#[test]
fn basic_not_marker() {
    same("basic", &["-m", "not network and not slowish"]);
}

#[test]
fn basic_quiet() {
    same("basic", &["-q"]);
}

#[test]
fn basic_verbose() {
    same("basic", &["-v"]);
}

#[test]
fn basic_one_file() {
    same("basic", &["test_outcomes.py"]);
}

#[test]
fn basic_subdir_and_node_id() {
    same(
        "basic",
        &[
            "sub/deeper",
            "test_params.py::test_odd_ids",
            "test_classes.py::TestOuter",
        ],
    );
}

#[test]
fn basic_n1() {
    check("basic", &[], &["-n", "1"]);
}

#[test]
fn basic_n2() {
    check("basic", &[], &["-n", "2"]);
}

#[test]
fn basic_n3() {
    check("basic", &[], &["-n", "3"]);
}

#[test]
fn basic_spawn_n2() {
    check("basic", &[], &["--spawn", "-n", "2"]);
}

#[test]
fn collect_error_interrupts() {
    same("collect_error", &[]);
}

#[test]
fn collect_error_interrupts_n2() {
    check("collect_error", &[], &["-n", "2"]);
}

#[test]
fn collect_error_continue() {
    same("collect_error", &["--continue-on-collection-errors"]);
}

#[test]
fn collect_error_continue_n2() {
    check(
        "collect_error",
        &["--continue-on-collection-errors"],
        &["--continue-on-collection-errors", "-n", "2"],
    );
}

/// The harness itself: plain pytest against plain pytest must agree (guards the parsers and
/// the comparison against false alarms).
#[test]
fn harness_pytest_agrees_with_itself() {
    let _guard = serial();
    let suite = copy_fixture("basic");
    let a = pytest_cmd(&suite.dir, &[], Some(&suite.scratch.join("a.xml"))).run();
    let mut b = pytest_cmd(&suite.dir, &["-q"], Some(&suite.scratch.join("b.xml"))).run();
    b.label = "pytest -q".into();
    a.assert_code(1);
    let summary = a.summary();
    assert!(summary["passed"] > 50, "{summary:?}");
    assert!(summary["failed"] > 5, "{summary:?}");
    for key in ["skipped", "xfailed", "xpassed", "errors", "warnings"] {
        assert!(summary.contains_key(key), "{key} missing from {summary:?}");
    }
    let junit = a.junit();
    assert_eq!(
        junit.suites[0].name, "basic_suite",
        "junit_suite_name from pytest.ini"
    );
    // fail + teardown error gives two testcases
    assert_eq!(
        junit
            .find("test_outcomes", "test_fail_and_teardown_error")
            .len(),
        2
    );
    assert_same_results("pytest vs pytest -q", &a, &b, &suite.dir);
}

/// Reference point for the comparison: pytest-xdist `-n 2` agrees with plain pytest on
/// fixtures/basic (exit code, counts, JUnit testcases). If this fails, the fixture or the
/// harness changed, not shardex.
#[test]
fn harness_xdist_agrees_with_pytest() {
    let _guard = serial();
    let suite = copy_fixture("basic");
    let a = pytest_cmd(&suite.dir, &[], Some(&suite.scratch.join("a.xml"))).run();
    let mut b = pytest_cmd(
        &suite.dir,
        &["-p", "xdist", "-n", "2"],
        Some(&suite.scratch.join("b.xml")),
    )
    .run();
    b.label = "pytest -n 2".into();
    assert_same_results("pytest vs pytest-xdist -n 2", &a, &b, &suite.dir);
}

/// After a run, pytest's cache says what `--lf` and `--ff` select, as after a plain pytest
/// run: the zygote's own session records every test's final outcome (tests ran in forked
/// workers whose reports it never saw) and writes `.pytest_cache` at its end.
#[test]
fn last_failed_and_failed_first_after_a_run() {
    check_last_failed(&["-n", "2"]);
}

/// `--spawn` has no zygote: one of the workers writes the cache.
#[test]
fn last_failed_and_failed_first_after_a_spawn_run() {
    check_last_failed(&["-n", "2", "--spawn"]);
}

fn check_last_failed(workers: &[&str]) {
    let _guard = serial();
    let reference = copy_fixture("lastfailed");
    let ours = copy_fixture("lastfailed");
    // pytest_cmd turns the cache off; this test needs it.
    let pytest = |args: &[&str], junit: &str| {
        let mut cmd = Command::new(venv_python());
        cmd.current_dir(&reference.dir)
            .args(["-m", "pytest"])
            .args(args);
        let junit = reference.scratch.join(junit);
        cmd.args(["-o", "junit_family=xunit1"])
            .arg(format!("--junitxml={}", junit.display()));
        Invocation {
            label: "pytest".into(),
            cmd,
            junit_path: Some(junit),
        }
        .run()
    };
    let lastfailed = |dir: &Path| -> serde_json::Value {
        let path = dir.join(".pytest_cache/v/cache/lastfailed");
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        serde_json::from_str(&text).expect("lastfailed is JSON")
    };
    let first = pytest(&[], "first.xml");
    let run = shardex_cmd(shardex_bin(), &ours.dir, workers, None).run();
    assert_eq!(first.code(), run.code(), "{}", run.describe());
    assert_eq!(
        lastfailed(&reference.dir),
        lastfailed(&ours.dir),
        "cache/lastfailed after one run"
    );
    for args in [&["--lf"][..], &["--ff"][..]] {
        let junit = format!("{}.xml", args[0].trim_start_matches('-'));
        let expected = pytest(args, &junit);
        let shardex_args: Vec<&str> = workers.iter().chain(args).copied().collect();
        let actual = shardex_cmd(
            shardex_bin(),
            &ours.dir,
            &shardex_args,
            Some(&ours.scratch.join(&junit)),
        )
        .run();
        assert_same_results(
            &format!("fixtures/lastfailed, second run with {args:?}"),
            &expected,
            &actual,
            &reference.dir,
        );
        // The cache plugin's line under "collected ..." (`run-last-failure: ...`).
        let plugin_line = |out: &str| {
            out.lines()
                .find(|l| l.starts_with("run-last-failure:"))
                .map(str::to_owned)
        };
        let line = plugin_line(&expected.stdout);
        assert!(line.is_some(), "{}", expected.describe());
        assert_eq!(line, plugin_line(&actual.stdout), "{}", actual.describe());
    }
}

/// `--durations N [--durations-min S]`: the same section as pytest's, listing the same
/// phases of the same tests in the same order (the seconds themselves vary run to run).
#[test]
fn durations_section_like_pytest() {
    let _guard = serial();
    let suite = copy_fixture("durations");
    // The section's lines without their leading "0.60s ".
    let section = |out: &str| -> Vec<String> {
        let mut lines = out.lines().skip_while(|l| !l.contains(" durations ="));
        let header = lines.next().map(|l| l.trim_matches('=').trim().to_owned());
        header
            .into_iter()
            .chain(
                lines
                    .take_while(|l| !l.starts_with('='))
                    .map(|l| l.split_once("s ").map_or(l, |(_, rest)| rest).to_owned()),
            )
            .collect()
    };
    for args in [
        &["--durations", "3"][..],
        &["--durations=5", "--durations-min=0.1"][..],
    ] {
        let expected = pytest_cmd(&suite.dir, args, None).run();
        let shardex_args: Vec<&str> = ["-n", "2"].iter().chain(args).copied().collect();
        let actual = shardex_cmd(shardex_bin(), &suite.dir, &shardex_args, None).run();
        assert_same_part(&expected, &actual, section, &format!("{args:?}"));
    }
}

/// The part of the output `extract` picks (a section, a table) is there in pytest's output
/// (at least 4 lines) and the same in shardex's.
fn assert_same_part(
    expected: &RunOutput,
    actual: &RunOutput,
    extract: impl Fn(&str) -> Vec<String>,
    context: &str,
) {
    let want = extract(&expected.stdout);
    assert!(want.len() >= 4, "{context}\n{}", expected.describe());
    assert_eq!(
        want,
        extract(&actual.stdout),
        "{context}\n{}",
        actual.describe()
    );
}

/// pytest-cov: tests that ran in forked workers count. The coverage table (term-missing),
/// the exit code and the recorded test contexts are plain pytest's, also when
/// `--cov-fail-under` fails the run; `no_cover` tests do not count.
#[test]
fn coverage_counts_the_workers_tests() {
    let _guard = serial();
    let suite = copy_fixture("coverage");
    // From the table's header to its TOTAL line.
    let table = |out: &str| -> Vec<String> {
        out.lines()
            .skip_while(|l| !l.starts_with("Name "))
            .take_while(|l| !l.starts_with("TOTAL"))
            .map(str::to_owned)
            .chain(
                out.lines()
                    .find(|l| l.starts_with("TOTAL"))
                    .map(str::to_owned),
            )
            .collect()
    };
    // The test contexts recorded in .coverage (`--cov-context=test`).
    let contexts = || -> String {
        let out = Command::new(venv_python())
            .current_dir(&suite.dir)
            .args([
                "-c",
                "import coverage; c = coverage.Coverage(); c.load(); \
                 print(sorted(c.get_data().measured_contexts()))",
            ])
            .output()
            .expect("python runs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let term = ["--cov=pkg", "--cov-report=term-missing"];
    for (extra, code) in [
        (None, 0),
        (Some("--cov-fail-under=99"), 1),
        (Some("--cov-context=test"), 0),
    ] {
        let args: Vec<&str> = term.iter().copied().chain(extra).collect();
        let expected = pytest_cmd(&suite.dir, &args, None).run();
        let expected_contexts = contexts();
        let shardex_args: Vec<&str> = ["-n", "2"].iter().chain(&args).copied().collect();
        let actual = shardex_cmd(shardex_bin(), &suite.dir, &shardex_args, None).run();
        expected.assert_code(code);
        actual.assert_code(code);
        // The fixture's `no_cover` test must not count, in the workers as in pytest.
        assert_same_part(&expected, &actual, table, &format!("{args:?}"));
        if extra == Some("--cov-context=test") {
            assert!(
                expected_contexts.contains("test_add[0]|run"),
                "{expected_contexts}"
            );
        }
        assert_eq!(expected_contexts, contexts(), "measured contexts, {args:?}");
        if code == 1 {
            for needle in [
                "ERROR: Coverage failure",
                "FAIL Required test coverage of 99%",
            ] {
                assert!(
                    actual.stdout.contains(needle),
                    "{needle}\n{}",
                    actual.describe()
                );
            }
        }
    }
}

/// `--dist loadgroup`: the tests of one `xdist_group` run on one worker, in collection
/// order, while the other tests spread over the workers; outcomes as plain pytest's.
#[test]
fn loadgroup_keeps_each_group_on_one_worker() {
    check("groups", &[], &["-n", "3", "--dist", "loadgroup"]);
    let _guard = serial();
    let suite = copy_fixture("groups");
    let run = shardex_cmd(
        shardex_bin(),
        &suite.dir,
        &["-n", "3", "--dist", "loadgroup"],
        None,
    )
    .run();
    run.assert_code(1);
    // "<nodeid> <worker>" per test, in the order each worker ran them.
    let ran: Vec<(String, String)> = std::fs::read_to_string(suite.dir.join("ran.txt"))
        .expect("the fixture records where each test ran")
        .lines()
        .filter_map(|l| l.rsplit_once(' '))
        .map(|(id, worker)| (id.to_owned(), worker.to_owned()))
        .collect();
    assert_eq!(ran.len(), 32, "{ran:?}");
    let db: Vec<String> = (0..6)
        .map(|n| format!("test_groups.py::test_db[{n}]"))
        .chain(["test_more.py::test_db_elsewhere".to_owned()])
        .collect();
    let cache: Vec<String> = (0..4)
        .map(|n| format!("test_groups.py::TestCache::test_cache[{n}]"))
        .chain(["test_groups.py::TestCache::test_cache_fails".to_owned()])
        .collect();
    for members in [&db, &cache] {
        let worker = &ran
            .iter()
            .find(|(id, _)| id == &members[0])
            .expect("group ran")
            .1;
        // On that worker, the group's tests one after the other, in collection order.
        let on_worker: Vec<&String> = ran
            .iter()
            .filter(|(_, w)| w == worker)
            .map(|(id, _)| id)
            .collect();
        let start = on_worker.iter().position(|id| *id == &members[0]).unwrap();
        let run_of: Vec<&String> = on_worker[start..]
            .iter()
            .take(members.len())
            .copied()
            .collect();
        assert_eq!(run_of, members.iter().collect::<Vec<_>>(), "{ran:?}");
    }
    let free_workers: std::collections::BTreeSet<&String> = ran
        .iter()
        .filter(|(id, _)| !db.contains(id) && !cache.contains(id))
        .map(|(_, w)| w)
        .collect();
    assert!(
        free_workers.len() > 1,
        "ungrouped tests all on one worker: {ran:?}"
    );
}
