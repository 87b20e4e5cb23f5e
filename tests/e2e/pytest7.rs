//! The oldest supported pytest (7.4.4, `.venv-pytest7` from scripts/setup.sh): shardex with
//! `--python` of that venv gives the same outcome per test and exit code as that
//! interpreter's plain `python -m pytest`.

use std::path::PathBuf;
use std::process::Command;

use shardex_e2e::{assert_same_results, copy_fixture, repo_root, serial, Invocation};

use crate::shardex_bin;

fn pytest7_python() -> PathBuf {
    let python = repo_root().join(".venv-pytest7/bin/python");
    assert!(
        python.exists(),
        "{} does not exist: run scripts/setup.sh (it creates .venv-pytest7 with requirements-pytest7.txt)",
        python.display()
    );
    python
}

fn check(shardex_args: &[&str]) {
    let _guard = serial();
    let python = pytest7_python();
    let suite = copy_fixture("basic");
    let (pytest_xml, shardex_xml) = (
        suite.scratch.join("pytest.xml"),
        suite.scratch.join("shardex.xml"),
    );
    let mut cmd = Command::new(&python);
    cmd.current_dir(&suite.dir)
        .args(["-m", "pytest", "-o", "junit_family=xunit1"])
        .arg(format!("--junitxml={}", pytest_xml.display()));
    let expected = Invocation {
        label: "pytest 7.4".into(),
        cmd,
        junit_path: Some(pytest_xml),
    }
    .run();
    let mut cmd = Command::new(shardex_bin());
    cmd.current_dir(&suite.dir)
        .arg("run")
        .arg("--python")
        .arg(&python)
        .args(shardex_args)
        .arg(format!("--junitxml={}", shardex_xml.display()));
    let actual = Invocation {
        label: "shardex".into(),
        cmd,
        junit_path: Some(shardex_xml),
    }
    .run();
    assert!(
        expected.stdout.contains("pytest-7.4.4") && actual.stdout.contains("pytest-7.4.4"),
        "both runs must use pytest 7.4.4\n{}\n{}",
        expected.describe(),
        actual.describe()
    );
    assert_same_results(
        &format!("fixtures/basic under pytest 7.4 with {shardex_args:?}"),
        &expected,
        &actual,
        &suite.dir,
    );
}

#[test]
fn basic_fork() {
    check(&[]);
}

#[test]
fn basic_spawn() {
    check(&["--spawn", "-n", "2"]);
}
