//! Options from every source: what shardex consumes (`-n`, `--junitxml`, `--timeout`) is
//! honoured when pytest reads it from `addopts`, with pytest's precedence; pytest-timeout's
//! markers keep their meaning over the command line's `--timeout`.

use shardex_e2e::{copy_fixture, parse_junit, pytest_cmd, serial, shardex_cmd, Kind};

use crate::shardex_bin;

#[test]
fn n_and_junitxml_in_addopts_are_honoured() {
    let _guard = serial();
    let suite = copy_fixture("addopts");
    let out = shardex_cmd(shardex_bin(), &suite.dir, &[], None).run();
    out.assert_code(1);
    assert!(out.stdout.contains("2 workers"), "{}", out.describe());
    let summary = out.summary();
    assert_eq!(summary.get("passed"), Some(&7), "{}", out.describe());
    assert_eq!(summary.get("failed"), Some(&1), "{}", out.describe());
    let xml = std::fs::read_to_string(suite.path("reports/junit.xml")).unwrap_or_else(|e| {
        panic!(
            "no report from addopts' --junitxml: {e}\n{}",
            out.describe()
        )
    });
    let report = parse_junit(&xml).unwrap();
    assert_eq!(report.cases.len(), 8, "every test in the report: {xml}");
    assert_eq!(
        report
            .cases
            .iter()
            .filter(|c| c.kind() == Kind::Failure)
            .count(),
        1
    );
}

#[test]
fn the_command_line_wins_over_addopts() {
    let _guard = serial();
    let suite = copy_fixture("addopts");
    let junit = suite.scratch.join("cli.xml");
    let out = shardex_cmd(shardex_bin(), &suite.dir, &["-n", "1"], Some(&junit)).run();
    out.assert_code(1);
    assert!(out.stdout.contains("1 worker"), "{}", out.describe());
    // test_worker_count expects addopts' 2: with -n 1 on the command line it fails too.
    assert_eq!(out.summary().get("failed"), Some(&2), "{}", out.describe());
    assert_eq!(
        parse_junit(&std::fs::read_to_string(&junit).unwrap())
            .unwrap()
            .cases
            .len(),
        8
    );
    assert!(
        !suite.path("reports/junit.xml").exists(),
        "the command line's --junitxml replaces addopts' (pytest: last one wins)"
    );
}

#[test]
fn timeout_markers_win_over_the_command_line_as_in_pytest_timeout() {
    let _guard = serial();
    let suite = copy_fixture("timeout_markers");
    let pytest = pytest_cmd(&suite.dir, &["--timeout", "1"], None).run();
    let shardex = shardex_cmd(
        shardex_bin(),
        &suite.dir,
        &["-n", "2", "--timeout", "1"],
        None,
    )
    .run();
    for out in [&pytest, &shardex] {
        out.assert_code(1);
        let summary = out.summary();
        assert_eq!(summary.get("failed"), Some(&1), "{}", out.describe());
        assert_eq!(summary.get("passed"), Some(&3), "{}", out.describe());
    }
    assert!(
        shardex.stdout.contains("test_plain_times_out"),
        "{}",
        shardex.describe()
    );
}
