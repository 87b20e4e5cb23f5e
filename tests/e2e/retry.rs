//! Retries: `shardex run --reruns ...` must behave like pytest-rerunfailures (`python -m pytest
//! --reruns ...`, plain pytest with the plugin) on `fixtures/flaky`: same final outcome per test,
//! same exit code, same number of attempts per test (the fixture counts them in files under
//! `$FLAKY_STATE_DIR`, one dir per run), same reruns in the summary line and the `-rR` section.
//!
//! JUnit differs on purpose: rerunfailures writes one extra (empty) testcase per rerun, so its
//! final result is the LAST testcase per classname+name; shardex writes exactly one testcase per
//! test with `<flakyFailure>`/`<flakyError>` (passed on a retry) or `<rerunFailure>`/`<rerunError>`
//! (failed every attempt) children, one per failed attempt; those are checked separately.
//!
//! `fixtures/flaky/crash/` kills or hangs its worker on the first attempt: shardex only.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use shardex_e2e::{
    assert_no_survivors, copy_fixture, default_timeout, format_summary, pytest_cmd, serial,
    shardex_cmd, Invocation, JunitReport, Kind, RunOutput, Suite, Summary, TestCase,
};

use crate::shardex_bin;

const WORKERS: &str = "2";
/// The always-run main suite (crash/ is never passed to plain pytest).
const MAIN: &str = "test_flaky.py";
const MARKER: &str = "test_marker.py";

// ------------------------------------------------------------------------------------------ helpers

/// A run may not take long: these suites finish in a second or two.
fn timeout() -> Duration {
    default_timeout().min(Duration::from_secs(60))
}

fn run(inv: Invocation) -> RunOutput {
    inv.start().wait(timeout())
}

/// One attempt as `conftest.attempt` logged it.
#[derive(Clone, Copy, Debug)]
struct Attempt {
    pid: u32,
    at: f64,
}

/// Counter name -> attempts, from one run's state dir.
type Attempts = BTreeMap<String, Vec<Attempt>>;

fn read_attempts(dir: &Path) -> Attempts {
    let mut out = Attempts::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(e.path()).unwrap_or_default();
        let attempts = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let mut it = l.split_whitespace();
                Attempt {
                    pid: it.next().and_then(|s| s.parse().ok()).unwrap_or(0),
                    at: it.next().and_then(|s| s.parse().ok()).unwrap_or(0.0),
                }
            })
            .collect();
        out.insert(name, attempts);
    }
    out
}

fn counts(a: &Attempts) -> BTreeMap<String, usize> {
    a.iter().map(|(k, v)| (k.clone(), v.len())).collect()
}

/// The attempt counter a test uses: its name without `test_`.
fn counter_of(name: &str) -> &str {
    name.strip_prefix("test_").unwrap_or(name)
}

/// `test_flaky` + `test_x` -> `test_flaky.py::test_x` (the fixture has no classes).
fn nodeid(tc: &TestCase) -> String {
    format!("{}.py::{}", tc.classname.replace('.', "/"), tc.name)
}

/// The exception type each flaky test raises on its failed attempts (for the children's text).
fn raised_type(counter: &str) -> Option<&'static str> {
    Some(match counter {
        "assert_flaky"
        | "always_fails"
        | "condition_true"
        | "condition_false"
        | "condition_string"
        | "marker_reruns_beat_cli"
        | "marker_only_rerun_no_match"
        | "marker_delay" => "AssertionError",
        "connection_flaky" | "setup_flaky" | "marker_only_rerun_match" => "ConnectionError",
        "timeout_flaky" | "teardown_flaky" => "TimeoutError",
        "cause_chain_flaky" => "RuntimeError",
        "context_chain_flaky" => "ValueError",
        _ => return None,
    })
}

/// Failures outside the test function are pytest "errors": their attempts are `*Error` children.
fn fails_outside_call(counter: &str) -> bool {
    matches!(counter, "setup_flaky" | "teardown_flaky")
}

/// Both runs of one scenario on one copy of the suite (separate attempt-state dirs).
struct Pair {
    suite: Suite,
    plain: RunOutput,
    shardex: RunOutput,
    plain_attempts: Attempts,
    shardex_attempts: Attempts,
}

fn state_dir(suite: &Suite, who: &str) -> PathBuf {
    let d = suite.scratch.join(format!("state-{who}"));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Plain pytest + rerunfailures and `shardex run -n 2`, both with `-rR ARGS`, on a fresh copy of
/// fixtures/flaky (with `ini` as its pytest.ini when given).
fn run_pair(args: &[&str], ini: Option<&str>) -> Pair {
    run_pair_on(WORKERS, args, ini)
}

/// `run_pair` with shardex on `workers` workers.
fn run_pair_on(workers: &str, args: &[&str], ini: Option<&str>) -> Pair {
    let suite = copy_fixture("flaky");
    if let Some(ini) = ini {
        std::fs::write(suite.path("pytest.ini"), ini).unwrap();
    }
    let plain_state = state_dir(&suite, "pytest");
    let shardex_state = state_dir(&suite, "shardex");
    let mut plain_args = vec!["-rR"];
    plain_args.extend_from_slice(args);
    let plain = run(pytest_cmd(
        &suite.dir,
        &plain_args,
        Some(&suite.scratch.join("pytest.xml")),
    )
    .env("FLAKY_STATE_DIR", &plain_state));
    let mut shardex_args = vec!["-n", workers, "-rR"];
    shardex_args.extend_from_slice(args);
    let shardex = run(shardex_cmd(
        shardex_bin(),
        &suite.dir,
        &shardex_args,
        Some(&suite.scratch.join("shardex.xml")),
    )
    .env("FLAKY_STATE_DIR", &shardex_state));
    eprintln!(
        "{args:?}: pytest {:.2?}, shardex {:.2?}",
        plain.elapsed, shardex.elapsed
    );
    assert_no_survivors(&suite.dir, &shardex);
    Pair {
        plain_attempts: read_attempts(&plain_state),
        shardex_attempts: read_attempts(&shardex_state),
        suite,
        plain,
        shardex,
    }
}

impl Pair {
    fn both(&self) -> String {
        format!("{}\n{}", self.plain.describe(), self.shardex.describe())
    }

    fn junit(&self, run: &RunOutput) -> JunitReport {
        let mut r = run.junit();
        r.normalize_paths(&self.suite.dir);
        r
    }

    /// rerunfailures: the last testcase per classname+name is the final result.
    fn plain_finals(&self) -> BTreeMap<String, TestCase> {
        let mut out = BTreeMap::new();
        for tc in self.junit(&self.plain).cases {
            out.insert(nodeid(&tc), tc);
        }
        out
    }

    /// shardex: exactly one testcase per test.
    fn shardex_finals(&self) -> BTreeMap<String, TestCase> {
        let mut out = BTreeMap::new();
        let mut dups = BTreeSet::new();
        for tc in self.junit(&self.shardex).cases {
            let id = nodeid(&tc);
            if out.insert(id.clone(), tc).is_some() {
                dups.insert(id);
            }
        }
        assert!(
            dups.is_empty(),
            "shardex must write ONE <testcase> per test; several for {dups:?}\n{}",
            self.shardex.describe()
        );
        out
    }

    fn assert_same_exit_code(&self) {
        assert_eq!(
            self.plain.code(),
            self.shardex.code(),
            "exit codes differ: pytest+rerunfailures {:?}, shardex {:?}\n{}",
            self.plain.code(),
            self.shardex.code(),
            self.both()
        );
    }

    /// Same final kind and message per test (digits aside: which attempt a failed test's main
    /// `<failure>` describes is up to the report: rerunfailures' last testcase is the last
    /// attempt, Surefire/nextest put the first attempt there and the later ones in
    /// `<rerunFailure>`). With `subset`, shardex may leave tests out (not run after an early
    /// stop): only the tests it reports (and did run) are compared.
    fn assert_same_finals(&self, subset: bool) {
        let plain = self.plain_finals();
        let ours = self.shardex_finals();
        let mut problems = Vec::new();
        for (id, p) in &plain {
            match ours.get(id) {
                None if subset => {}
                None => problems.push(format!("  {id}: missing in shardex's JUnit")),
                Some(s) if subset && is_not_run(s) => {}
                Some(s) => {
                    if (p.kind(), p.message.as_deref().map(no_digits))
                        != (s.kind(), s.message.as_deref().map(no_digits))
                    {
                        problems.push(format!(
                            "  {id}: rerunfailures [{}] {:?}, shardex [{}] {:?}",
                            p.kind(),
                            p.message,
                            s.kind(),
                            s.message
                        ));
                    }
                }
            }
        }
        for id in ours.keys().filter(|id| !plain.contains_key(*id)) {
            problems.push(format!("  {id}: only in shardex's JUnit"));
        }
        assert!(
            problems.is_empty(),
            "final outcomes differ (last rerunfailures testcase vs shardex's one):\n{}{}\n{}",
            problems.join("\n"),
            if subset {
                "\n(after an early stop, a test whose retry was cancelled did not use up its \
                 retries: it is not run, not a <failure>)"
            } else {
                ""
            },
            self.both()
        );
    }

    /// Same number of attempts per test (only tests shardex attempted, with `subset`).
    fn assert_same_attempts(&self, subset: bool) {
        let plain = counts(&self.plain_attempts);
        let ours = counts(&self.shardex_attempts);
        let plain: BTreeMap<_, _> = if subset {
            plain
                .into_iter()
                .filter(|(k, _)| ours.contains_key(k))
                .collect()
        } else {
            plain
        };
        assert_eq!(
            plain,
            ours,
            "attempts per test differ (left: pytest+rerunfailures, right: shardex)\n{}",
            self.both()
        );
    }

    /// Summary-line counts that must agree. `passed` may differ: rerunfailures also counts the
    /// passing call of an attempt whose teardown failed and was retried.
    fn assert_same_summary(&self) {
        let p = self.plain.summary();
        let s = self.shardex.summary();
        let pick = |m: &Summary| -> Summary {
            m.iter()
                .filter(|(k, _)| k.as_str() != "passed" && k.as_str() != "warnings")
                .map(|(k, v)| (k.clone(), *v))
                .collect()
        };
        assert_eq!(
            pick(&p),
            pick(&s),
            "summary counts differ: pytest+rerunfailures `{}`, shardex `{}`\n{}",
            format_summary(&p),
            format_summary(&s),
            self.both()
        );
        if p.get("passed") != s.get("passed") {
            eprintln!(
                "note: `passed` differs: pytest+rerunfailures `{}`, shardex `{}`",
                format_summary(&p),
                format_summary(&s)
            );
        }
    }

    /// `R` progress marks and the `-rR` section's RERUN lines (as multisets).
    fn assert_same_rerun_reporting(&self) {
        let pr = progress_marks(&self.plain.stdout).matches('R').count();
        let sr = progress_marks(&self.shardex.stdout).matches('R').count();
        assert_eq!(
            pr,
            sr,
            "number of `R` progress marks differs: pytest+rerunfailures {pr}, shardex {sr}\n{}",
            self.both()
        );
        let pl = rerun_lines(&self.plain.stdout);
        let sl = rerun_lines(&self.shardex.stdout);
        assert_eq!(
            pl,
            sl,
            "`-rR` RERUN lines differ (left: pytest+rerunfailures, right: shardex)\n{}",
            self.both()
        );
    }

    /// shardex's JUnit children agree with the attempts the fixture counted, and every test that
    /// passed on a retry is listed as flaky on the terminal.
    fn assert_shardex_children(&self) {
        let finals = self.shardex_finals();
        let mut problems = Vec::new();
        let mut flaky = Vec::new();
        for (id, tc) in &finals {
            if is_not_run(tc) {
                continue;
            }
            let counter = counter_of(&tc.name);
            let attempts = self.shardex_attempts.get(counter).map_or(0, Vec::len);
            let children = &tc.rerun_children;
            let want_prefix = match tc.kind() {
                Kind::Pass => "flaky",
                Kind::Failure | Kind::Error => "rerun",
                Kind::Skipped => {
                    if !children.is_empty() {
                        problems.push(format!(
                            "  {id}: skipped, yet {} rerun children",
                            children.len()
                        ));
                    }
                    continue;
                }
            };
            if tc.kind() == Kind::Pass && attempts > 1 {
                flaky.push(id.clone());
            }
            if children.len() + 1 != attempts {
                problems.push(format!(
                    "  {id} [{}]: {attempts} attempts, so {} <{want_prefix}*> children expected, found {}: {:?}",
                    tc.kind(),
                    attempts.saturating_sub(1),
                    children.len(),
                    children.iter().map(|c| c.tag.as_str()).collect::<Vec<_>>()
                ));
                continue;
            }
            let want_suffix = if fails_outside_call(counter) {
                "Error"
            } else {
                "Failure"
            };
            let want_tag = format!("{want_prefix}{want_suffix}");
            for (i, c) in children.iter().enumerate() {
                if c.tag != want_tag {
                    problems.push(format!(
                        "  {id}: child {i} is <{}>, expected <{want_tag}>",
                        c.tag
                    ));
                }
                if let Some(ty) = raised_type(counter) {
                    let text = c.all_text();
                    if !text.contains(ty) {
                        problems.push(format!(
                            "  {id}: <{}> #{i} does not mention {ty}: {text:?}",
                            c.tag
                        ));
                    }
                }
            }
            // Every failed attempt is reported once: in a child, or (failed every attempt) in
            // the main <failure>/<error>; the fixture's messages say "attempt N".
            let mut texts: Vec<String> = children.iter().map(|c| c.all_text()).collect();
            if tc.kind() != Kind::Pass {
                texts.push(format!(
                    "{}\n{}",
                    tc.message.as_deref().unwrap_or(""),
                    tc.text
                ));
            }
            let failed_attempts = if tc.kind() == Kind::Pass {
                attempts - 1
            } else {
                attempts
            };
            for k in 1..=failed_attempts {
                let nth = format!("attempt {k}");
                let n = texts.iter().filter(|t| t.contains(&nth)).count();
                if n != 1 {
                    problems.push(format!(
                        "  {id}: attempt {k}'s failure (\"{nth}\") should be reported once, found in {n} of the main result + <{want_tag}> children"
                    ));
                }
            }
        }
        assert!(
            problems.is_empty(),
            "shardex's flaky/rerun JUnit children do not match the attempts:\n{}\n{}",
            problems.join("\n"),
            self.shardex.describe()
        );
        assert_flaky_section(&self.shardex, &flaky);
    }

    /// Everything: exit code, final outcomes, attempts, summary, reruns on the terminal, children.
    fn assert_parity(&self) {
        self.assert_same_exit_code();
        self.assert_same_finals(false);
        self.assert_same_attempts(false);
        self.assert_same_summary();
        self.assert_same_rerun_reporting();
        self.assert_shardex_children();
    }
}

/// Messages mention attempt numbers (`(attempt 3)`, `assert 3 < 0`): compare them without.
fn no_digits(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_digit() { '#' } else { c })
        .collect()
}

/// A testcase shardex wrote for a test that never ran (early stop), if it writes them at all.
fn is_not_run(tc: &TestCase) -> bool {
    tc.kind() == Kind::Skipped && tc.all_text().to_lowercase().contains("not run")
}

/// The status characters of the progress lines (`test_x.py RR.F  [ 50%]` or xdist's `RR.F`).
fn progress_marks(stdout: &str) -> String {
    let mut marks = String::new();
    for line in stdout.lines() {
        let mut l = line.trim_end();
        if let Some(pos) = l.rfind('[') {
            if l.ends_with("%]") {
                l = l[..pos].trim_end();
            }
        }
        let body = match l.split_once(' ') {
            Some((first, rest)) if first.ends_with(".py") => rest.trim(),
            _ => l.trim(),
        };
        if !body.is_empty() && body.chars().all(|c| ".FEsxXR".contains(c)) {
            marks.push_str(body);
        }
    }
    marks
}

/// Sorted `RERUN <nodeid>` lines of the `rerun test summary info` section.
fn rerun_lines(stdout: &str) -> Vec<String> {
    let mut lines: Vec<String> = stdout
        .lines()
        .skip_while(|l| !l.contains("rerun test summary info"))
        .skip(1)
        .take_while(|l| !l.starts_with('='))
        .filter(|l| l.starts_with("RERUN "))
        .map(|l| l.trim_end().to_string())
        .collect();
    lines.sort();
    lines
}

/// The terminal has a "flaky tests" section naming every test that passed only on a retry.
fn assert_flaky_section(run: &RunOutput, flaky: &[String]) {
    if flaky.is_empty() {
        return;
    }
    let lines: Vec<&str> = run.stdout.lines().collect();
    let header = lines
        .iter()
        .position(|l| l.to_lowercase().contains("flaky test"));
    let Some(header) = header else {
        panic!(
            "{} tests passed only on a retry ({flaky:?}) but shardex prints no \"flaky tests\" section\n{}",
            flaky.len(),
            run.describe()
        );
    };
    let missing: Vec<&String> = flaky
        .iter()
        .filter(|id| {
            !lines[header..].iter().any(|l| {
                l.contains(id.as_str())
                    && !["RERUN ", "PASSED ", "FAILED ", "ERROR "]
                        .iter()
                        .any(|p| l.starts_with(p))
            })
        })
        .collect();
    assert!(
        missing.is_empty(),
        "the flaky tests section does not name {missing:?}\n{}",
        run.describe()
    );
}

/// The gap between the first two attempts of `counter` is at least `min` seconds.
fn assert_delay(who: &str, attempts: &Attempts, counter: &str, min: f64, run: &RunOutput) {
    let a = attempts.get(counter).map(Vec::as_slice).unwrap_or(&[]);
    assert!(
        a.len() >= 2,
        "{who}: {counter} should have run twice, attempts: {a:?}\n{}",
        run.describe()
    );
    let gap = a[1].at - a[0].at;
    assert!(
        gap >= min - 0.05,
        "{who}: {counter}'s retry came {gap:.3}s after the first attempt, expected ≥ {min}s\n{}",
        run.describe()
    );
}

// ------------------------------------------------------------------------------------------ parity

#[test]
fn reruns_2() {
    let _guard = serial();
    let pair = run_pair(&["--reruns", "2", MAIN], None);
    pair.plain.assert_code(1);
    pair.assert_parity();
}

#[test]
fn reruns_2_only_rerun_connection_error() {
    let _guard = serial();
    let pair = run_pair(
        &["--reruns", "2", "--only-rerun", "ConnectionError", MAIN],
        None,
    );
    pair.plain.assert_code(1);
    pair.assert_parity();
}

#[test]
fn reruns_2_rerun_except_assertion_error() {
    let _guard = serial();
    let pair = run_pair(
        &["--reruns", "2", "--rerun-except", "AssertionError", MAIN],
        None,
    );
    pair.plain.assert_code(1);
    pair.assert_parity();
}

/// --rerun-except follows `raise ... from` (__cause__) but not an implicit __context__, while
/// --only-rerun follows both: cause_chain_flaky fails hard here, context_chain_flaky is retried.
#[test]
fn rerun_except_follows_the_cause_not_the_context() {
    let _guard = serial();
    let pair = run_pair(
        &["--reruns", "2", "--rerun-except", "ConnectionError", MAIN],
        None,
    );
    pair.plain.assert_code(1);
    pair.assert_parity();
}

/// Several --only-rerun patterns accumulate.
#[test]
fn only_rerun_repeated() {
    let _guard = serial();
    let pair = run_pair(
        &[
            "--reruns",
            "2",
            "--only-rerun",
            "^TimeoutError",
            "--only-rerun",
            "first attempt",
            MAIN,
        ],
        None,
    );
    pair.plain.assert_code(1);
    pair.assert_parity();
}

/// `-x` counts hard failures only: every flaky test (collected before test_always_fails) passes
/// on a retry without stopping the run; test_always_fails stops it after its last attempt.
/// One worker, so tests run in collection order as under plain pytest: with more, the stop
/// can come while other tests still have retries ahead (they are then not run).
#[test]
fn reruns_2_exitfirst() {
    let _guard = serial();
    let pair = run_pair_on("1", &["--reruns", "2", "-x", MAIN], None);
    pair.plain.assert_code(1);
    pair.assert_same_exit_code();
    pair.assert_same_finals(true);
    pair.assert_same_attempts(true);
    pair.assert_shardex_children();
    let finals = pair.shardex_finals();
    let always = finals
        .get("test_flaky.py::test_always_fails")
        .unwrap_or_else(|| {
            panic!(
                "test_always_fails must run (it is the failure that stops the run)\n{}",
                pair.shardex.describe()
            )
        });
    assert_eq!(always.kind(), Kind::Failure, "{}", pair.shardex.describe());
    let failed: Vec<&String> = finals
        .iter()
        .filter(|(_, tc)| matches!(tc.kind(), Kind::Failure | Kind::Error))
        .map(|(id, _)| id)
        .collect();
    assert_eq!(
        failed,
        ["test_flaky.py::test_always_fails"],
        "only the test that used up its retries may fail\n{}",
        pair.shardex.describe()
    );
    let summary = pair.shardex.summary();
    assert_eq!(
        summary.get("failed"),
        Some(&1),
        "{}",
        pair.shardex.describe()
    );
}

/// `--fail-on-flaky`: exit 7 when the run passed only thanks to retries; a real failure still
/// gives 1.
#[test]
fn reruns_1_fail_on_flaky() {
    let _guard = serial();
    let pair = run_pair(&["--reruns", "1", "--fail-on-flaky", MAIN], None);
    pair.plain.assert_code(1);
    pair.assert_parity();

    let pair = run_pair(
        &[
            "--reruns",
            "1",
            "--fail-on-flaky",
            "-k",
            "passes or assert_flaky or timeout_flaky or setup_flaky or teardown_flaky",
            MAIN,
        ],
        None,
    );
    pair.plain.assert_code(7);
    pair.assert_parity();
}

/// `@pytest.mark.flaky(reruns=, condition=, only_rerun=, reruns_delay=)` with no CLI flag, then
/// with `--reruns 3`: the marker wins (condition=False is never retried, reruns=1 stays 1).
#[test]
fn flaky_marker_with_condition() {
    let _guard = serial();
    let pair = run_pair(&[MARKER], None);
    pair.plain.assert_code(1);
    pair.assert_parity();
    assert_eq!(
        counts(&pair.shardex_attempts).get("condition_false"),
        Some(&1),
        "condition=False: never retried\n{}",
        pair.shardex.describe()
    );
    assert_delay(
        "pytest+rerunfailures",
        &pair.plain_attempts,
        "marker_delay",
        0.2,
        &pair.plain,
    );
    assert_delay(
        "shardex",
        &pair.shardex_attempts,
        "marker_delay",
        0.2,
        &pair.shardex,
    );

    let pair = run_pair(&["--reruns", "3", MARKER], None);
    pair.plain.assert_code(1);
    pair.assert_parity();
    assert_eq!(
        counts(&pair.shardex_attempts).get("marker_reruns_beat_cli"),
        Some(&2),
        "flaky(reruns=1) beats --reruns 3\n{}",
        pair.shardex.describe()
    );
}

/// The ini keys `reruns`, `reruns_delay` and `only_rerun` (a line list).
#[test]
fn ini_keys() {
    let _guard = serial();
    let ini = "[pytest]\naddopts = -p no:cacheprovider\nreruns = 2\nreruns_delay = 0\nonly_rerun =\n    ConnectionError\n    TimeoutError\n";
    let pair = run_pair(&[MAIN], Some(ini));
    pair.plain.assert_code(1);
    pair.assert_parity();

    let ini =
        "[pytest]\naddopts = -p no:cacheprovider\nreruns = 2\nrerun_except =\n    AssertionError\n";
    let pair = run_pair(&[MAIN], Some(ini));
    pair.plain.assert_code(1);
    pair.assert_parity();
}

/// `--max-suite-reruns 3`: three reruns in the whole run, whichever tests get them (which ones
/// depends on the order, so final outcomes are not compared).
#[test]
fn max_suite_reruns() {
    let _guard = serial();
    let pair = run_pair(&["--reruns", "2", "--max-suite-reruns", "3", MAIN], None);
    pair.plain.assert_code(1);
    pair.assert_same_exit_code();
    let reruns = |a: &Attempts| -> usize { a.values().map(|v| v.len().saturating_sub(1)).sum() };
    assert_eq!(reruns(&pair.plain_attempts), 3, "{}", pair.plain.describe());
    assert_eq!(
        reruns(&pair.shardex_attempts),
        3,
        "shardex must retry 3 times in all: {:?}\n{}",
        counts(&pair.shardex_attempts),
        pair.shardex.describe()
    );
    assert_eq!(pair.plain.summary().get("rerun"), Some(&3));
    assert_eq!(
        pair.shardex.summary().get("rerun"),
        Some(&3),
        "{}",
        pair.shardex.describe()
    );
    pair.assert_shardex_children();
}

/// `--reruns-delay 1.5`: the retry starts at least 1.5 s after the failed attempt.
#[test]
fn reruns_delay() {
    let _guard = serial();
    let pair = run_pair(
        &[
            "--reruns",
            "1",
            "--reruns-delay",
            "1.5",
            "-k",
            "assert_flaky",
            MAIN,
        ],
        None,
    );
    pair.plain.assert_code(0);
    pair.assert_parity();
    assert_delay(
        "pytest+rerunfailures",
        &pair.plain_attempts,
        "assert_flaky",
        1.5,
        &pair.plain,
    );
    assert_delay(
        "shardex",
        &pair.shardex_attempts,
        "assert_flaky",
        1.5,
        &pair.shardex,
    );
}

// ------------------------------------------------------------------------------------------ bad regex

fn assert_usage_error(run: &RunOutput, names: &[&str]) {
    run.assert_code(4);
    let lines: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(
        lines.len(),
        1,
        "expected one error line on stderr\n{}",
        run.describe()
    );
    assert!(
        names.iter().any(|n| lines[0].contains(n)),
        "the error should name one of {names:?}\n{}",
        run.describe()
    );
}

#[test]
fn bad_regex_is_a_usage_error() {
    let _guard = serial();
    let cases: [(&[&str], Option<&str>, &[&str]); 3] = [
        (
            &["--reruns", "2", "--only-rerun", "(", MAIN],
            None,
            &["only_rerun", "--only-rerun"],
        ),
        (
            &["--reruns", "2", "--rerun-except", "[", MAIN],
            None,
            &["rerun_except", "--rerun-except"],
        ),
        (
            &[MAIN],
            Some("[pytest]\naddopts = -p no:cacheprovider\nreruns = 2\nonly_rerun =\n    ConnectionError\n    (\n"),
            &["only_rerun", "--only-rerun"],
        ),
    ];
    for (args, ini, names) in cases {
        let pair = run_pair(args, ini);
        pair.plain.assert_code(4);
        assert_usage_error(&pair.shardex, names);
        assert!(
            pair.shardex_attempts.is_empty(),
            "no test may run after a usage error: {:?}\n{}",
            counts(&pair.shardex_attempts),
            pair.shardex.describe()
        );
    }
}

// ------------------------------------------------------------------------------------------ crashes

/// shardex alone on `crash/...` (plain pytest would die with its test).
fn run_shardex(args: &[&str]) -> (Suite, RunOutput, Attempts) {
    let suite = copy_fixture("flaky");
    let state = state_dir(&suite, "shardex");
    let mut all = vec!["-n", WORKERS, "-rR"];
    all.extend_from_slice(args);
    let out = run(shardex_cmd(
        shardex_bin(),
        &suite.dir,
        &all,
        Some(&suite.scratch.join("shardex.xml")),
    )
    .env("FLAKY_STATE_DIR", &state));
    eprintln!("{args:?}: shardex {:.2?}", out.elapsed);
    assert_no_survivors(&suite.dir, &out);
    let attempts = read_attempts(&state);
    (suite, out, attempts)
}

fn only_case<'a>(run: &RunOutput, report: &'a JunitReport, name: &str) -> &'a TestCase {
    let found: Vec<&TestCase> = report.cases.iter().filter(|c| c.name == name).collect();
    assert_eq!(
        found.len(),
        1,
        "expected exactly one JUnit testcase named {name}, found {}\n{}",
        found.len(),
        run.describe()
    );
    found[0]
}

/// Passed on a retry: exactly one flaky child, mentioning `what`; the retry ran in another process.
fn assert_passed_on_fresh_worker(out: &RunOutput, attempts: &Attempts, name: &str, what: &str) {
    let report = out.junit();
    let tc = only_case(out, &report, name);
    assert_eq!(
        tc.kind(),
        Kind::Pass,
        "{name} should pass on its retry\n{}",
        out.describe()
    );
    assert_eq!(
        tc.rerun_children.len(),
        1,
        "{name}: one <flakyFailure>/<flakyError> expected, found {:?}\n{}",
        tc.rerun_children,
        out.describe()
    );
    let child = &tc.rerun_children[0];
    assert!(
        child.tag.starts_with("flaky"),
        "{name}: <{}> should be <flakyFailure>/<flakyError>\n{}",
        child.tag,
        out.describe()
    );
    assert!(
        child.all_text().contains(what),
        "{name}: the failed attempt should mention {what}: {:?}\n{}",
        child.all_text(),
        out.describe()
    );
    let a = attempts.get(counter_of(name)).cloned().unwrap_or_default();
    assert_eq!(
        a.len(),
        2,
        "{name}: two attempts expected: {a:?}\n{}",
        out.describe()
    );
    assert_ne!(
        a[0].pid,
        a[1].pid,
        "{name}: the retry must run on a fresh worker\n{}",
        out.describe()
    );
    let summary = out.summary();
    assert_eq!(summary.get("rerun"), Some(&1), "{}", out.describe());
    assert_eq!(summary.get("failed"), None, "{}", out.describe());
    assert_flaky_section(out, &[nodeid(tc)]);
}

#[test]
fn crash_then_pass_only_rerun_worker_crashed() {
    let _guard = serial();
    let (_suite, out, attempts) = run_shardex(&[
        "--reruns",
        "1",
        "--only-rerun",
        "WorkerCrashed",
        "crash/test_crash_then_pass.py",
    ]);
    out.assert_code(0);
    assert_passed_on_fresh_worker(&out, &attempts, "test_crash_then_pass", "WorkerCrashed");
    assert_eq!(out.summary().get("passed"), Some(&2), "{}", out.describe());
}

/// The filter applies to the crash's text: `--only-rerun AssertionError` does not retry it.
#[test]
fn crash_not_retried_when_the_filter_excludes_it() {
    let _guard = serial();
    let (_suite, out, attempts) = run_shardex(&[
        "--reruns",
        "1",
        "--only-rerun",
        "AssertionError",
        "crash/test_crash_then_pass.py",
    ]);
    out.assert_code(1);
    let report = out.junit();
    let tc = only_case(&out, &report, "test_crash_then_pass");
    assert!(
        matches!(tc.kind(), Kind::Failure | Kind::Error),
        "the crash is a hard failure\n{}",
        out.describe()
    );
    assert!(
        tc.all_text().contains("WorkerCrashed"),
        "the failure text should start with WorkerCrashed: {:?}\n{}",
        tc.all_text(),
        out.describe()
    );
    assert!(tc.rerun_children.is_empty(), "{}", out.describe());
    assert_eq!(
        attempts.get("crash_then_pass").map(Vec::len),
        Some(1),
        "{}",
        out.describe()
    );
    assert_eq!(out.summary().get("rerun"), None, "{}", out.describe());
}

#[test]
fn timeout_then_pass_only_rerun_timeout() {
    let _guard = serial();
    let (_suite, out, attempts) = run_shardex(&[
        "--timeout",
        "2",
        "--reruns",
        "1",
        "--only-rerun",
        "^Timeout",
        "crash/test_hang_then_pass.py",
    ]);
    out.assert_code(0);
    assert_passed_on_fresh_worker(&out, &attempts, "test_hang_then_pass", "Timeout");
}
