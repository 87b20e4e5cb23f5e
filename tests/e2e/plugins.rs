//! Plugins that work under pytest-xdist work under shardex: the zygote plays xdist's
//! controller (reports replayed into its hooks, workers' `workeroutput` handed over at
//! `pytest_testnodedown`). Each test runs `pytest -n 2` (real xdist) and `shardex run -n 2`
//! on its own copy of one `fixtures/plugins_*` suite and compares what the plugin wrote.
//! The plugins are pinned in requirements-dev.txt.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::Value;
use shardex_e2e::{copy_fixture, pytest_cmd, serial, shardex_cmd, RunOutput, Suite};

use crate::shardex_bin;

/// `pytest -n 2 ARGS` and `shardex run -n 2 ARGS`, each in its own copy of `fixture`.
fn both(fixture: &str, args: &[&str]) -> ((Suite, RunOutput), (Suite, RunOutput)) {
    let _guard = serial();
    let xdist_suite = copy_fixture(fixture);
    let mut xdist_args = vec!["-n", "2"];
    xdist_args.extend_from_slice(args);
    let xdist = pytest_cmd(&xdist_suite.dir, &xdist_args, None).run();
    let shardex_suite = copy_fixture(fixture);
    let shardex = shardex_cmd(shardex_bin(), &shardex_suite.dir, &xdist_args, None).run();
    ((xdist_suite, xdist), (shardex_suite, shardex))
}

fn read_json(path: &Path, run: &RunOutput) -> Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|err| panic!("{}: {err}\n{}", path.display(), run.describe()));
    serde_json::from_str(&text).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

fn same_code(xdist: &RunOutput, shardex: &RunOutput) {
    assert_eq!(
        xdist.code(),
        shardex.code(),
        "exit codes differ\n{}\n{}",
        xdist.describe(),
        shardex.describe()
    );
}

/// pytest-html's data: test id -> the sorted results of its rows.
fn html_rows(path: &Path, run: &RunOutput) -> BTreeMap<String, Vec<String>> {
    let html = std::fs::read_to_string(path)
        .unwrap_or_else(|err| panic!("{}: {err}\n{}", path.display(), run.describe()));
    let start = html
        .find("data-jsonblob=\"")
        .expect("pytest-html's data blob")
        + 15;
    let end = start + html[start..].find('"').expect("end of the blob");
    let blob = html[start..end]
        .replace("&#34;", "\"")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&");
    let data: Value = serde_json::from_str(&blob).expect("pytest-html's blob is JSON");
    let tests = data["tests"].as_object().expect("tests in the blob");
    tests
        .iter()
        .map(|(id, rows)| {
            let mut results: Vec<String> = rows
                .as_array()
                .unwrap()
                .iter()
                .map(|row| row["result"].as_str().unwrap_or("").to_owned())
                .collect();
            results.sort();
            (id.clone(), results)
        })
        .collect()
}

#[test]
fn pytest_html_lists_every_test_as_under_xdist() {
    let ((xs, xdist), (ss, shardex)) = both("plugins_reports", &["--html=report.html"]);
    same_code(&xdist, &shardex);
    let want = html_rows(&xs.path("report.html"), &xdist);
    let got = html_rows(&ss.path("report.html"), &shardex);
    assert_eq!(want.len(), 13, "the fixture's tests\n{}", xdist.describe());
    assert_eq!(got, want, "rows differ\n{}", shardex.describe());
    assert!(
        shardex.stdout.contains("Generated html report: file://"),
        "pytest-html's line reaches the terminal\n{}",
        shardex.describe()
    );
}

/// pytest-json-report: summary counts, exit code, and each test's outcome and stages.
fn json_digest(report: &Value) -> (Value, Value, BTreeMap<String, String>) {
    let mut summary = report["summary"].clone();
    summary.as_object_mut().unwrap().remove("duration");
    let tests = report["tests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let stages: Vec<&str> = ["setup", "call", "teardown", "???"]
                .into_iter()
                .filter(|stage| t.get(*stage).is_some())
                .collect();
            let outcome = t["outcome"].as_str().unwrap().to_owned();
            let key = t["nodeid"].as_str().unwrap().to_owned();
            (key, format!("{outcome} {}", stages.join(",")))
        })
        .collect();
    (summary, report["exitcode"].clone(), tests)
}

#[test]
fn pytest_json_report_counts_every_test_and_the_exit_code_as_under_xdist() {
    let args = ["--json-report", "--json-report-file=report.json"];
    let ((xs, xdist), (ss, shardex)) = both("plugins_reports", &args);
    same_code(&xdist, &shardex);
    let want = json_digest(&read_json(&xs.path("report.json"), &xdist));
    let got = json_digest(&read_json(&ss.path("report.json"), &shardex));
    assert_eq!(want.1, Value::from(1), "the fixture fails");
    assert_eq!(want.2.len(), 13);
    assert_eq!(got, want, "{}", shardex.describe());
}

fn snapshots(suite: &Suite) -> BTreeMap<String, String> {
    let dir = suite.path("__snapshots__");
    std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    (name, std::fs::read_to_string(e.path()).unwrap())
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn syrupy_keeps_used_snapshots_and_fails_on_unused_ones_as_under_xdist() {
    // The fixture has one snapshot no test uses any more (test_gone).
    let ((xs, xdist), (ss, shardex)) = both("plugins_syrupy", &[]);
    same_code(&xdist, &shardex);
    assert_eq!(xdist.code(), Some(1), "syrupy fails on an unused snapshot");
    assert_eq!(snapshots(&ss), snapshots(&xs), "a plain run writes nothing");
    assert!(
        shardex.stdout.contains("1 snapshot unused"),
        "{}",
        shardex.describe()
    );
}

#[test]
fn syrupy_snapshot_update_deletes_only_unused_snapshots_as_under_xdist() {
    let before = snapshots(&copy_fixture("plugins_syrupy"));
    let ((xs, xdist), (ss, shardex)) = both("plugins_syrupy", &["--snapshot-update"]);
    same_code(&xdist, &shardex);
    let (want, got) = (snapshots(&xs), snapshots(&ss));
    assert_eq!(got, want, "{}", shardex.describe());
    assert!(want["test_snap.ambr"].contains("test_dict"));
    assert!(!want["test_snap.ambr"].contains("test_gone"));
    assert_eq!(want["test_other.ambr"], before["test_other.ambr"]);
    // What is left passes a plain run.
    let _guard = serial();
    pytest_cmd(&ss.dir, &[], None).run().assert_code(0);
}

#[test]
fn pytest_split_stores_every_tests_duration_as_under_xdist() {
    let args = ["--store-durations", "--clean-durations"];
    let ((xs, xdist), (ss, shardex)) = both("plugins_split", &args);
    same_code(&xdist, &shardex);
    let keys = |suite: &Suite, run: &RunOutput| -> BTreeSet<String> {
        let stored = read_json(&suite.path(".test_durations"), run);
        stored.as_object().unwrap().keys().cloned().collect()
    };
    let want = keys(&xs, &xdist);
    assert_eq!(want.len(), 12, "every test, the removed one cleaned");
    assert_eq!(keys(&ss, &shardex), want, "{}", shardex.describe());
}

#[test]
fn pytest_benchmark_switches_itself_off_with_its_warning_as_under_xdist() {
    let ((xs, xdist), (ss, shardex)) = both("plugins_benchmark", &["--benchmark-json=b.json"]);
    same_code(&xdist, &shardex);
    let warning = "Benchmarks are automatically disabled because xdist plugin is active";
    for run in [&xdist, &shardex] {
        assert!(
            run.stdout.contains(warning) || run.stderr.contains(warning),
            "{}",
            run.describe()
        );
        assert!(
            !run.stdout.contains("benchmark: 1 tests"),
            "no benchmark table"
        );
    }
    assert_eq!(
        ss.path("b.json").exists(),
        xs.path("b.json").exists(),
        "--benchmark-json as under xdist"
    );
}

#[test]
fn hypothesis_statistics_show_every_test_as_under_xdist() {
    let args = ["--hypothesis-show-statistics"];
    let ((_xs, xdist), (_ss, shardex)) = both("plugins_hypothesis", &args);
    same_code(&xdist, &shardex);
    for run in [&xdist, &shardex] {
        for line in [
            "Hypothesis Statistics",
            "test_props.py::test_ints:",
            "test_props.py::test_text:",
            "20 passing, 0 failing, and 0 invalid test cases",
            "15 passing, 0 failing, and 0 invalid test cases",
        ] {
            assert!(run.stdout.contains(line), "{line:?}\n{}", run.describe());
        }
    }
}

#[test]
fn under_spawn_a_report_plugin_says_so_and_writes_nothing() {
    let _guard = serial();
    let suite = copy_fixture("plugins_reports");
    let run = shardex_cmd(
        shardex_bin(),
        &suite.dir,
        &["-n", "2", "--spawn", "--html=report.html"],
        None,
    )
    .run();
    run.assert_code(1);
    let notes: Vec<&str> = run
        .stdout
        .lines()
        .chain(run.stderr.lines())
        .filter(|l| l.contains("--spawn has no zygote") && l.contains("pytest-html"))
        .collect();
    assert_eq!(notes.len(), 1, "one line\n{}", run.describe());
    assert!(!suite.path("report.html").exists(), "no partial report");
}
