//! The flaky history: `fixtures/history` run several times on the same code, then
//! `shardex flaky` and `shardex slowest` read what the runs left in the timing store, and
//! with `--queue` what they left on the shared queue's Redis.
//!
//! The fixture's counters live in a scratch folder outside the suite: `test_every_other_run`
//! fails in runs 2 and 4 ("odd run 1", "odd run 3"), `test_passes_on_retry` fails its first
//! attempt and passes its retry in every run, `test_always_fails` never passes (broken, not
//! flaky), `test_slow` sleeps 0.4 s.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;
use shardex_e2e::redis_server::RedisServer;
use shardex_e2e::{copy_fixture, serial, shardex_cmd, shardex_raw, RunOutput, Suite};

use crate::shardex_bin;

const RUNS: usize = 4;

/// Runs the suite `RUNS` times with `args`; each run has failures (exit 1).
fn run_four_times(suite: &Suite, args: &[&str], env: &[(&str, &str)]) {
    let state = suite.scratch.join("state");
    for _ in 0..RUNS {
        let mut inv =
            shardex_cmd(shardex_bin(), &suite.dir, args, None).env("HISTORY_STATE_DIR", &state);
        for (k, v) in env {
            inv = inv.env(k, v);
        }
        inv.run().assert_code(1);
    }
}

fn json(out: &RunOutput) -> Value {
    out.assert_code(0);
    serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e})\n{}", out.describe()))
}

fn ids(list: &Value) -> Vec<&str> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect()
}

/// What both stores must show after the four runs.
fn check_flaky(report: &Value) {
    let flaky = &report["flaky"];
    assert_eq!(
        ids(flaky),
        vec![
            "test_history.py::test_passes_on_retry",
            "test_history.py::test_every_other_run"
        ],
        "{report:#}"
    );
    let retried = &flaky[0];
    assert_eq!(retried["rate"], 1.0, "{report:#}");
    assert_eq!(retried["passed_on_retry"], RUNS, "{report:#}");
    assert_eq!(
        retried["last_failure"]["message"],
        "AssertionError: first attempt 6"
    );
    let every_other = &flaky[1];
    assert_eq!(every_other["rate"], 0.5, "{report:#}");
    assert_eq!(
        (every_other["runs"].as_u64(), every_other["failed"].as_u64()),
        (Some(4), Some(2))
    );
    assert_eq!(
        every_other["last_failure"]["message"],
        "AssertionError: odd run 3"
    );
    assert_eq!(report["runs"], RUNS);
}

fn check_slowest(report: &Value) {
    let tests = &report["tests"];
    assert_eq!(ids(tests)[0], "test_history.py::test_slow", "{report:#}");
    let slow = &tests[0];
    assert!(
        slow["median_seconds"].as_f64().unwrap() >= 0.4,
        "{report:#}"
    );
    assert!(slow["share"].as_f64().unwrap() > 0.5, "{report:#}");
    assert_eq!(slow["runs"], RUNS);
}

#[test]
fn flaky_and_slowest_read_the_timing_store() {
    let _guard = serial();
    let suite = copy_fixture("history");
    run_four_times(&suite, &["-n", "2"], &[]);
    let flaky = shardex_raw(shardex_bin(), &suite.dir, &["flaky", "--json"]).run();
    check_flaky(&json(&flaky));

    // Text: the rate and the message, the broken test left out.
    let text = shardex_raw(shardex_bin(), &suite.dir, &["flaky"]).run();
    text.assert_code(0);
    assert!(
        text.stdout
            .contains("  50%  test_history.py::test_every_other_run  (failed in 2 of 4 runs)"),
        "{}",
        text.describe()
    );
    assert!(text
        .stdout
        .contains("last failure: AssertionError: odd run 3"));
    assert!(
        !text.stdout.contains("test_always_fails"),
        "{}",
        text.describe()
    );

    let slowest = shardex_raw(
        shardex_bin(),
        &suite.dir,
        &["slowest", "--json", "--limit", "2"],
    )
    .run();
    let slowest = json(&slowest);
    check_slowest(&slowest);
    assert_eq!(slowest["tests"].as_array().unwrap().len(), 2);
    assert_eq!(slowest["count"], 5);

    // Another store, named: the same answers; a store that is not there is bad input.
    let moved = suite.scratch.join("moved.json");
    std::fs::rename(suite.path(".shardex/timings.json"), &moved).unwrap();
    let named = shardex_raw(
        shardex_bin(),
        &suite.scratch,
        &["flaky", "--json", "--timing-store", moved.to_str().unwrap()],
    )
    .run();
    check_flaky(&json(&named));
    for args in [
        &["flaky", "--timing-store", "nowhere.json"][..],
        &["slowest", "--limit", "0"],
        &["flaky", "--queue", "http://example.com"],
    ] {
        let out = shardex_raw(shardex_bin(), &suite.dir, args).run();
        out.assert_code(4);
        assert_eq!(out.stderr.lines().count(), 1, "{}", out.describe());
        assert!(
            out.stderr.starts_with("shardex: error: "),
            "{}",
            out.describe()
        );
    }
}

#[test]
fn flaky_and_slowest_read_the_shared_queue() {
    let _guard = serial();
    let redis = RedisServer::start();
    let url = redis.url();
    let suite = copy_fixture("history");
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let project = format!("history-e2e-{nanos}");
    // A fresh build per run (each run is one job); no local store: Redis alone keeps them.
    let state = suite.scratch.join("state");
    for run in 0..RUNS {
        let build = format!("history-{nanos}-{run}");
        let args = [
            "-n",
            "2",
            "--queue",
            &url,
            "--build-id",
            &build,
            "--node-total",
            "1",
            "--node-index",
            "0",
            "--no-timing-store",
        ];
        shardex_cmd(shardex_bin(), &suite.dir, &args, None)
            .env("HISTORY_STATE_DIR", &state)
            .env("SHARDEX_PROJECT", &project)
            .run()
            .assert_code(1);
    }
    assert!(!suite.path(".shardex/timings.json").exists());
    let read = |command: &str| {
        shardex_raw(
            shardex_bin(),
            &suite.dir,
            &[command, "--json", "--queue", &url, "--project", &project],
        )
        .run()
    };
    let flaky = json(&read("flaky"));
    check_flaky(&flaky);
    assert_eq!(flaky["sources"].as_array().unwrap().len(), 1, "{flaky:#}");
    check_slowest(&json(&read("slowest")));

    // Another project has no history; an unreachable queue is one line, exit 3.
    let other = shardex_raw(
        shardex_bin(),
        &suite.dir,
        &["flaky", "--queue", &url, "--project", "nobody"],
    )
    .run();
    other.assert_code(0);
    assert!(
        other.stdout.starts_with("no runs recorded"),
        "{}",
        other.describe()
    );
    drop(redis);
    let gone = read("flaky");
    gone.assert_code(3);
    assert_eq!(gone.stderr.lines().count(), 1, "{}", gone.describe());
}
