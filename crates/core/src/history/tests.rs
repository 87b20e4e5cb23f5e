use super::*;
use crate::protocol::PhaseReport;
use crate::timing::TimingStore;
use crate::WorkerId;

fn id(s: &str) -> TestId {
    TestId::new(s)
}

fn run(n: u64, code: &str) -> RunIdentity {
    RunIdentity {
        id: format!("{n}.run"),
        code: code.to_owned(),
        at: n,
    }
}

fn t(name: &str, letter: char, secs: f64) -> TestRun {
    let outcome = RunOutcome::from_letter(letter).unwrap();
    TestRun {
        id: id(name),
        outcome,
        secs,
        failure: outcome.failed().then(|| format!("boom in {name}")),
    }
}

/// A history from `(code, [(test, letter, secs)])` runs, numbered from 1.
fn history(runs: &[(&str, Vec<TestRun>)]) -> History {
    let mut h = History::default();
    for (n, (code, tests)) in runs.iter().enumerate() {
        h.record_run(run(n as u64 + 1, code), tests);
    }
    h
}

fn flaky_ids(h: &History) -> Vec<String> {
    h.evidence()
        .flaky()
        .into_iter()
        .map(|f| f.id.to_string())
        .collect()
}

#[test]
fn history_is_bounded_to_the_last_runs() {
    let mut h = History::default();
    h.record_run(run(0, "A"), &[t("a.py::gone", 'F', 1.0)]);
    for n in 1..=HISTORY_RUNS as u64 + 10 {
        let letter = if n % 2 == 0 { 'P' } else { 'F' };
        h.record_run(run(n, "A"), &[t("a.py::x", letter, n as f64)]);
    }
    assert_eq!(h.runs().len(), HISTORY_RUNS);
    assert_eq!(h.runs()[0].at, 11, "the oldest runs are dropped");
    let x = h.test(&id("a.py::x")).unwrap();
    assert_eq!(x.outcomes.len(), HISTORY_RUNS);
    assert_eq!(
        x.durations.iter().copied().collect::<Vec<_>>(),
        (51..=60).map(f64::from).collect::<Vec<_>>(),
        "the last DURATIONS_KEPT durations"
    );
    assert!(
        h.test(&id("a.py::gone")).is_none(),
        "a test with no run left in the window is forgotten"
    );
    // A run without tests (collect-only, nothing selected) is no run.
    h.record_run(run(99, "A"), &[]);
    assert_eq!(h.runs().last().unwrap().at, 60);
}

#[test]
fn a_failure_message_leaves_with_its_last_failure() {
    let mut h = History::default();
    h.record_run(run(1, "A"), &[t("a.py::x", 'F', 0.1)]);
    assert_eq!(
        h.test(&id("a.py::x")).unwrap().last_failure,
        Some(LastFailure {
            message: "boom in a.py::x".into(),
            at: 1
        })
    );
    for n in 2..=HISTORY_RUNS as u64 {
        h.record_run(run(n, "A"), &[t("a.py::x", 'P', 0.1)]);
    }
    assert!(h.test(&id("a.py::x")).unwrap().last_failure.is_some());
    h.record_run(run(100, "A"), &[t("a.py::x", 'P', 0.1)]);
    assert_eq!(h.test(&id("a.py::x")).unwrap().last_failure, None);
}

#[test]
fn flaky_means_passed_and_failed_on_the_same_code() {
    let h = history(&[
        (
            "A",
            vec![t("t.py::same", 'P', 0.1), t("t.py::fixed", 'F', 0.1)],
        ),
        (
            "A",
            vec![t("t.py::same", 'F', 0.1), t("t.py::pass_only", 'P', 0.1)],
        ),
        (
            "B",
            vec![t("t.py::fixed", 'P', 0.1), t("t.py::fail_only", 'F', 0.1)],
        ),
        (
            "B",
            vec![t("t.py::retried", 'R', 0.1), t("t.py::fail_only", 'E', 0.1)],
        ),
        (
            "B",
            vec![t("t.py::skips", 'S', 0.1), t("t.py::pass_only", 'P', 0.1)],
        ),
        ("C", vec![t("t.py::skips", 'F', 0.1)]),
        // Unknown code: never the same as another run's.
        ("", vec![t("t.py::unknown", 'P', 0.1)]),
        ("", vec![t("t.py::unknown", 'F', 0.1)]),
    ]);
    assert_eq!(flaky_ids(&h), vec!["t.py::retried", "t.py::same"]);
}

#[test]
fn failure_rate_counts_runs_on_the_flaky_code_only() {
    let mut runs = vec![
        ("old", vec![t("t.py::x", 'F', 0.1)]),
        ("old", vec![t("t.py::x", 'F', 0.1)]),
    ];
    for letter in ['P', 'F', 'P', 'S', 'F', 'P'] {
        runs.push(("new", vec![t("t.py::x", letter, 0.1)]));
    }
    runs.push(("new", vec![t("t.py::x", 'R', 0.1)]));
    let flaky = history(&runs).evidence().flaky();
    assert_eq!(flaky.len(), 1);
    let x = &flaky[0];
    // P F P F P R on "new": 3 of 6 failed at least once; the skip and "old" left out.
    assert_eq!((x.runs, x.failed, x.passed_on_retry), (6, 3, 1));
    assert_eq!(x.rate(), 0.5);
    assert_eq!(x.last_failure.as_ref().unwrap().at, 9);
}

#[test]
fn the_same_run_from_two_stores_counts_once() {
    let h = history(&[
        ("A", vec![t("t.py::x", 'P', 1.0)]),
        ("A", vec![t("t.py::x", 'F', 3.0)]),
    ]);
    let mut evidence = h.evidence();
    // The same two runs as the shared queue has them, and one more from another node.
    let remote = evidence_from_remote(
        &[
            ("1.run A".into(), 1),
            ("2.run A".into(), 2),
            ("7.node B".into(), 7),
        ],
        &[(
            "t.py::x".into(),
            "1.run P 1\n2.run F 3\n7.node P 2\ngarbage\n9.x Q 1".into(),
        )],
        &[("t.py::x".into(), "7 late failure\nsecond line".into())],
    );
    evidence.merge(remote);
    assert_eq!(evidence.run_count(), 3);
    let flaky = evidence.flaky();
    assert_eq!((flaky[0].runs, flaky[0].failed), (2, 1));
    assert_eq!(
        flaky[0].last_failure.as_ref().unwrap().message,
        "late failure"
    );
    let (slow, total) = evidence.slowest();
    assert_eq!(slow[0].median, 2.0);
    assert_eq!(slow[0].runs, 3);
    assert_eq!(total, 2.0);
}

#[test]
fn remote_runs_of_unknown_identity_are_not_grouped() {
    let evidence = evidence_from_remote(&[], &[("t.py::x".into(), "5.a P 1\n6.b F 1".into())], &[]);
    assert!(evidence.flaky().is_empty());
    assert_eq!(evidence.run_count(), 2);
}

#[test]
fn slowest_by_median_with_shares() {
    let h = history(&[
        (
            "A",
            vec![t("t.py::slow", 'P', 3.0), t("t.py::fast", 'P', 0.5)],
        ),
        (
            "A",
            vec![t("t.py::slow", 'P', 100.0), t("t.py::fast", 'P', 0.5)],
        ),
        (
            "A",
            vec![t("t.py::slow", 'F', 5.0), t("t.py::fast", 'P', 1.5)],
        ),
    ]);
    let (slow, total) = h.evidence().slowest();
    let got: Vec<(&str, f64, usize)> = slow
        .iter()
        .map(|s| (s.id.as_str(), s.median, s.runs))
        .collect();
    // One outlier (100 s) does not move a median.
    assert_eq!(got, vec![("t.py::slow", 5.0, 3), ("t.py::fast", 0.5, 3)]);
    assert_eq!(total, 5.5);
    assert!((slow[0].share - 5.0 / 5.5).abs() < 1e-12);
}

#[test]
fn history_survives_the_store_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(".shardex/timings.json");
    let mut store = TimingStore::new();
    store.record(id("t.py::x"), 0.25);
    *store.history_mut() = history(&[
        (
            "git:abc",
            vec![t("t.py::x", 'P', 0.25), t("t.py::y", 'F', 1.0)],
        ),
        ("git:abc", vec![t("t.py::x", 'R', 0.125)]),
    ]);
    store.save_store(&path).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("\"outcomes\": \"P R\""), "{text}");
    assert!(text.contains("\"ms\": \"250 125\""), "{text}");
    let loaded = TimingStore::load_store(&path).unwrap();
    assert_eq!(loaded.get(&id("t.py::x")), Some(0.25));
    let h = loaded.history();
    assert_eq!(h, store.history());
    assert_eq!(h.runs().len(), 2);
    assert_eq!(h.test(&id("t.py::y")).unwrap().outcomes, "F-");
    assert_eq!(flaky_ids(h), vec!["t.py::x"]);

    // A store written before the history existed loads with an empty one.
    std::fs::write(&path, r#"{"version": 1, "tests": {"t.py::x": 2}}"#).unwrap();
    let old = TimingStore::load_store(&path).unwrap();
    assert!(old.history().is_empty());
    assert_eq!(old.get(&id("t.py::x")), Some(2.0));
    // A history this build cannot read costs the history, not the durations.
    std::fs::write(
        &path,
        r#"{"version": 1, "tests": {"t.py::x": 2}, "runs": "?", "history": {}}"#,
    )
    .unwrap();
    let odd = TimingStore::load_store(&path).unwrap();
    assert!(odd.history().is_empty());
    assert_eq!(odd.get(&id("t.py::x")), Some(2.0));
    // Letters that are not outcomes are read as "did not run".
    std::fs::write(
        &path,
        r#"{"version": 1, "tests": {}, "runs": [{"id": "1.a", "code": "A", "at": 1}, {"id": "2.b", "code": "A", "at": 2}], "history": {"t.py::x": {"outcomes": "?? P"}}}"#,
    )
    .unwrap();
    let odd = TimingStore::load_store(&path).unwrap();
    assert_eq!(odd.history().test(&id("t.py::x")).unwrap().outcomes, "-P");
    // The durations alone, for estimates before a run.
    assert_eq!(TimingStore::load_durations(&path).unwrap().len(), 0);
    assert!(TimingStore::load_durations(&path)
        .unwrap()
        .history()
        .is_empty());
}

#[test]
fn outcomes_are_run_length_encoded() {
    for (letters, encoded) in [
        ("", ""),
        ("P", "P"),
        ("PPPFP", "3P F P"),
        ("--PPRR", "2- 2P 2R"),
    ] {
        assert_eq!(encode_outcomes(letters), encoded);
        assert_eq!(decode_outcomes(encoded), letters);
    }
    let fifty = "P".repeat(HISTORY_RUNS);
    assert_eq!(encode_outcomes(&fifty), format!("{HISTORY_RUNS}P"));
    assert_eq!(decode_outcomes("99999999999P").len(), HISTORY_RUNS);
    assert_eq!(decode_outcomes("3 PF x"), "--x");
}

fn result(name: &str, outcome: Outcome, attempt: u32, will_retry: bool, msg: &str) -> TestResult {
    TestResult {
        id: id(name),
        worker: WorkerId(0),
        outcome,
        duration: 0.5,
        reports: vec![PhaseReport {
            when: "call".into(),
            outcome: if outcome.is_failure() {
                "failed"
            } else {
                "passed"
            }
            .into(),
            crash_message: Some(msg.to_owned()),
            ..PhaseReport::default()
        }],
        attempt,
        will_retry,
    }
}

#[test]
fn a_runs_tests_with_retries_and_messages() {
    let summary = RunSummary {
        results: vec![
            result("t.py::a", Outcome::Failed, 0, true, "first\nmore"),
            result(
                "t.py::a",
                Outcome::Failed,
                1,
                true,
                "AssertionError: second",
            ),
            result("t.py::a", Outcome::Passed, 2, false, ""),
            result("t.py::b", Outcome::Failed, 0, false, "\nAssertionError: b"),
            result("t.py::c", Outcome::Passed, 0, false, ""),
            result("t.py::d", Outcome::NotRun, 0, false, ""),
            result("t.py::e", Outcome::Crashed, 0, false, "WorkerCrashed: gw0"),
        ],
        ..RunSummary::default()
    };
    let got: Vec<(String, char, Option<String>)> = test_runs(&summary)
        .into_iter()
        .map(|r| (r.id.to_string(), r.outcome.letter(), r.failure))
        .collect();
    assert_eq!(
        got,
        vec![
            ("t.py::a".into(), 'R', Some("AssertionError: second".into())),
            ("t.py::b".into(), 'F', Some("AssertionError: b".into())),
            ("t.py::c".into(), 'P', None),
            ("t.py::e".into(), 'C', Some("WorkerCrashed: gw0".into())),
        ]
    );
}

#[test]
fn identities_and_messages() {
    let a = RunIdentity::new("git:abc".into(), 1_700_000_000, b"1");
    let b = RunIdentity::new("git:abc".into(), 1_700_000_000, b"2");
    assert!(
        a.id.starts_with("1700000000.") && a.id.len() == 19,
        "{}",
        a.id
    );
    assert_ne!(a.id, b.id);
    assert_eq!(digest([b"ab".as_slice(), b"c"], 12).len(), 12);
    assert_ne!(
        digest([b"ab".as_slice(), b"c"], 12),
        digest([b"a".as_slice(), b"bc"], 12)
    );
    let long = "x".repeat(MESSAGE_CHARS + 5);
    assert_eq!(clip(&long).chars().count(), MESSAGE_CHARS + 1);
    assert_eq!(clip("one\ntwo"), "one");
}
