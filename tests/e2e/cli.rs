//! Bad input: one clear error line, pytest's usage-error exit code 4, before any test runs.
//! No tests: exit 5.

use shardex_e2e::{
    copy_fixture, empty_suite, serial, shardex_cmd, shardex_raw, venv_python, RunOutput,
};

use crate::shardex_bin;

fn stderr_lines(run: &RunOutput) -> Vec<&str> {
    run.stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect()
}

fn assert_stderr_names(run: &RunOutput, what: &str) {
    assert!(
        run.stderr.contains(what),
        "stderr should name {what:?}\n{}",
        run.describe()
    );
}

#[test]
fn unknown_flag_is_a_usage_error() {
    let _guard = serial();
    let suite = copy_fixture("basic");
    let run = shardex_cmd(
        shardex_bin(),
        &suite.dir,
        &["--definitely-not-a-flag"],
        None,
    )
    .run();
    run.assert_code(4);
    assert_stderr_names(&run, "--definitely-not-a-flag");
    assert_eq!(
        stderr_lines(&run).len(),
        1,
        "expected one error line on stderr\n{}",
        run.describe()
    );
}

#[test]
fn missing_path_is_a_usage_error() {
    let _guard = serial();
    let suite = copy_fixture("basic");
    let run = shardex_cmd(
        shardex_bin(),
        &suite.dir,
        &["does_not_exist/test_nothing.py", "-n", "2"],
        None,
    )
    .run();
    run.assert_code(4);
    assert_stderr_names(&run, "does_not_exist/test_nothing.py");
}

#[test]
fn malformed_timings_file_is_a_usage_error() {
    let _guard = serial();
    let suite = copy_fixture("basic");
    let bad = suite.scratch.join("broken-timings.json");
    std::fs::write(&bad, "{ this is not json").unwrap();
    let bad_s = bad.to_string_lossy().into_owned();
    let run = shardex_cmd(
        shardex_bin(),
        &suite.dir,
        &["--timings", &bad_s, "-n", "2"],
        None,
    )
    .run();
    run.assert_code(4);
    assert_stderr_names(&run, "broken-timings.json");
}

#[test]
fn unwritable_junitxml_is_a_usage_error() {
    let _guard = serial();
    let suite = copy_fixture("basic");
    let run = shardex_cmd(
        shardex_bin(),
        &suite.dir,
        &["--junitxml", "/proc/nope/x.xml", "-n", "2"],
        None,
    )
    .run();
    run.assert_code(4);
    assert_stderr_names(&run, "/proc/nope/x.xml");
}

#[test]
fn missing_python_is_a_usage_error() {
    let _guard = serial();
    let suite = copy_fixture("basic");
    let run = shardex_raw(
        shardex_bin(),
        &suite.dir,
        &["run", "--python", "/nonexistent/python", "-n", "2"],
    )
    .run();
    run.assert_code(4);
    assert_stderr_names(&run, "/nonexistent/python");
}

#[test]
fn empty_dir_collects_nothing() {
    let _guard = serial();
    let _ = venv_python();
    let suite = empty_suite("empty");
    let run = shardex_cmd(shardex_bin(), &suite.dir, &["-n", "2"], None).run();
    run.assert_code(5);
}

/// pytest's own usage error (an unknown flag) writes no JUnit file either.
#[test]
fn usage_error_leaves_no_report() {
    let _guard = serial();
    let suite = copy_fixture("basic");
    let junit = suite.scratch.join("reports/junit.xml");
    let run = shardex_cmd(
        shardex_bin(),
        &suite.dir,
        &["--definitely-not-a-flag", "-n", "2"],
        Some(&junit),
    )
    .run();
    run.assert_code(4);
    assert!(
        !junit.exists() && !junit.parent().unwrap().exists(),
        "a usage error left {}\n{}",
        junit.display(),
        run.describe()
    );
}

/// `--maxfail 0` and `--reruns 0` given explicitly win over `addopts`, as in pytest (the
/// command line comes after `addopts`); without them `addopts` decides.
#[test]
fn explicit_zero_beats_addopts() {
    let _guard = serial();
    let _ = venv_python();
    let suite = empty_suite("explicit-zero");
    std::fs::write(
        suite.path("pytest.ini"),
        "[pytest]\naddopts = -p no:cacheprovider --maxfail 1 --reruns 2\n",
    )
    .unwrap();
    std::fs::write(
        suite.path("test_zero.py"),
        "def test_a():\n    assert False\n\n\ndef test_b():\n    assert False\n\n\ndef test_c():\n    pass\n",
    )
    .unwrap();
    let from_addopts = shardex_cmd(shardex_bin(), &suite.dir, &["-n", "1"], None).run();
    from_addopts.assert_code(1);
    // How many tests the stop lets finish is the agent's business; that it stops is ours.
    assert!(
        from_addopts.stdout.contains("stopping after 1 failures"),
        "{}",
        from_addopts.describe()
    );
    let summary = from_addopts.summary();
    assert!(
        summary.get("rerun").is_some_and(|&n| n >= 2),
        "{}",
        from_addopts.describe()
    );

    let explicit = shardex_cmd(
        shardex_bin(),
        &suite.dir,
        &["-n", "1", "--maxfail", "0", "--reruns", "0"],
        None,
    )
    .run();
    explicit.assert_code(1);
    let summary = explicit.summary();
    assert_eq!(summary.get("failed"), Some(&2), "{}", explicit.describe());
    assert_eq!(summary.get("passed"), Some(&1), "{}", explicit.describe());
    assert_eq!(summary.get("rerun"), None, "{}", explicit.describe());
    assert!(
        !explicit.stdout.contains("stopping after"),
        "{}",
        explicit.describe()
    );
}
