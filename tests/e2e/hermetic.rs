//! Nothing shardex adds is visible to the tests (fixtures/hermetic): the test's process and
//! a Python subprocess it starts see the same `sys.path` and the same environment as under
//! plain pytest, but for pytest-xdist's own variables; no SHARDEX_* variable, no PYTHONPATH
//! entry, no path into the run folder. In fork and `--spawn` modes.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;
use shardex_e2e::{copy_fixture, pytest_cmd, serial, shardex_cmd, Invocation};

use crate::shardex_bin;

const XDIST: [&str; 3] = [
    "PYTEST_XDIST_WORKER",
    "PYTEST_XDIST_WORKER_COUNT",
    "PYTEST_XDIST_TESTRUNUID",
];

/// Runs `inv` with the fixture's dump folder set and nothing SHARDEX_* inherited from the
/// harness (test.sh exports SHARDEX_PG_*): whatever SHARDEX_* the test sees came from
/// shardex. Returns what the test saw.
fn observe(mut inv: Invocation, out: &Path) -> Value {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("SHARDEX_") {
            inv.cmd.env_remove(key);
        }
    }
    std::fs::create_dir_all(out).unwrap();
    let run = inv.env("HERMETIC_OUT", out).run();
    run.assert_code(0);
    assert_eq!(run.summary().get("passed"), Some(&1), "{}", run.describe());
    let dumps: Vec<_> = std::fs::read_dir(out).unwrap().flatten().collect();
    assert_eq!(dumps.len(), 1, "one test, one dump\n{}", run.describe());
    let seen = serde_json::from_str(&std::fs::read_to_string(dumps[0].path()).unwrap()).unwrap();
    // The next run dumps into the same folder (HERMETIC_OUT is part of what is compared).
    std::fs::remove_file(dumps[0].path()).unwrap();
    seen
}

/// The variables whose presence or value differ, xdist's own aside.
fn environ_diff(ours: &Value, plain: &Value) -> Vec<String> {
    let (ours, plain) = (ours["environ"].as_object(), plain["environ"].as_object());
    let (ours, plain) = (
        ours.cloned().unwrap_or_default(),
        plain.cloned().unwrap_or_default(),
    );
    let keys: BTreeSet<&String> = ours.keys().chain(plain.keys()).collect();
    keys.into_iter()
        .filter(|key| !XDIST.contains(&key.as_str()) && ours.get(*key) != plain.get(*key))
        .map(|key| {
            format!(
                "{key}: shardex {:?}, pytest {:?}",
                ours.get(key),
                plain.get(key)
            )
        })
        .collect()
}

fn check(shardex_args: &[&str]) {
    let _guard = serial();
    let suite = copy_fixture("hermetic");
    let out = suite.scratch.join("seen");
    let plain = observe(pytest_cmd(&suite.dir, &[], None), &out);
    let ours = observe(
        shardex_cmd(shardex_bin(), &suite.dir, shardex_args, None),
        &out,
    );
    for side in ["test", "child"] {
        assert_eq!(
            ours[side]["path"], plain[side]["path"],
            "{side}: sys.path differs from plain pytest's"
        );
        let diff = environ_diff(&ours[side], &plain[side]);
        assert!(
            diff.is_empty(),
            "{side}: the environment differs from plain pytest's (xdist's variables aside):\n{}",
            diff.join("\n")
        );
    }
    // The worker identity is there, as under pytest-xdist.
    let xdist: BTreeSet<&str> = ours["xdist"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(xdist, BTreeSet::from(XDIST));
}

#[test]
fn fork() {
    check(&["-n", "2"]);
}

#[test]
fn spawn() {
    check(&["--spawn", "-n", "2"]);
}
