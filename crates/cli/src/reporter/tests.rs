//! Reporter output from synthetic runs, snapshotted, and checked against real pytest 9.2.
//!
//! `pytest_output/*.txt` are real outputs of pytest 9.2.0 with xdist 3.8.0 at 80 columns
//! (`-p no:cacheprovider`, escapes written as `\x1b`), from these suites:
//! - suite: /tmp/rp/suite/test_a.py (pass, fail, fail with print, setup error, teardown
//!   error, skip x3, xfail, xpass, two warnings, a class) with `-n 1` so the order is fixed:
//!   `-ra` (suite_ra), `-v` (suite_v), `-q` (suite_q), `--tb=line` (suite_tbline),
//!   `-q --tb=no` (suite_tbno_q), `PY_COLORS=1 -ra` (suite_color), `-vv -rfE` (suite_vv);
//! - colerr: an import error, a module-level skip and a passing module, plain pytest;
//! - empty: no tests (`empty`, `-q`: `empty_q`); maxfail: `-x --tb=short`;
//! - reruns: pytest-rerunfailures `--reruns 2 -rR --tb=no`; passes: 11 identical warnings
//!   and tests with output, `-rA`; many: 150 passing tests `-n 2` (and `-k` deselecting one,
//!   plain pytest); interrupted: SIGINT during a `-n 2` run.
//!
//! The checks compare everything after the progress section line for line (xdist's
//! `[gw0] linux -- Python ...` lines inside tracebacks dropped: shardex's plugin renders
//! tracebacks without them). The progress itself is compared where the order is fixed.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shardex_agent::{RunEvent, RunSummary, TestResult};
use shardex_core::protocol::{CollectProblem, PhaseReport, SessionInfo, WarningReport};
use shardex_core::{Outcome, TestId, WorkerId};

use super::terminal::{eta, status_line};
use super::{Reporter, ReporterOptions};

/// A `Write` the test keeps a handle on.
#[derive(Clone, Default)]
struct Buf(Arc<Mutex<Vec<u8>>>);

impl Write for Buf {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Buf {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

// ---------------------------------------------------------------------------------------
// Building blocks: reports and results as the worker plugin sends them.

fn report(when: &str, outcome: &str, category: &str, letter: &str, word: &str) -> PhaseReport {
    PhaseReport {
        when: when.to_owned().into(),
        outcome: outcome.to_owned().into(),
        category: category.to_owned().into(),
        letter: letter.to_owned().into(),
        word: word.to_owned().into(),
        duration: 0.001,
        ..PhaseReport::default()
    }
}

fn quiet(when: &str) -> PhaseReport {
    report(when, "passed", "", "", "")
}

fn call_passed() -> PhaseReport {
    report("call", "passed", "passed", ".", "PASSED")
}

fn with_failure(mut r: PhaseReport, longrepr: &str, crash: &str) -> PhaseReport {
    r.longrepr = Some(longrepr.into());
    r.crash_message = Some(crash.into());
    r
}

fn result(id: &str, reports: Vec<PhaseReport>) -> TestResult {
    TestResult {
        id: TestId::new(id),
        worker: WorkerId(0),
        outcome: Outcome::from_reports(&reports),
        duration: 0.003,
        reports,
        attempt: 0,
        will_retry: false,
    }
}

fn passed(id: &str) -> TestResult {
    result(id, vec![quiet("setup"), call_passed(), quiet("teardown")])
}

fn failed(id: &str, longrepr: &str, crash: &str) -> TestResult {
    let call = report("call", "failed", "failed", "F", "FAILED");
    result(
        id,
        vec![
            quiet("setup"),
            with_failure(call, longrepr, crash),
            quiet("teardown"),
        ],
    )
}

fn setup_error(id: &str, longrepr: &str, crash: &str) -> TestResult {
    let setup = report("setup", "failed", "error", "E", "ERROR");
    result(
        id,
        vec![with_failure(setup, longrepr, crash), quiet("teardown")],
    )
}

fn teardown_error(id: &str, longrepr: &str, crash: &str) -> TestResult {
    let teardown = report("teardown", "failed", "error", "E", "ERROR");
    result(
        id,
        vec![
            quiet("setup"),
            call_passed(),
            with_failure(teardown, longrepr, crash),
        ],
    )
}

fn skipped(id: &str, path: &str, line: u32, reason: &str) -> TestResult {
    let mut setup = report("setup", "skipped", "skipped", "s", "SKIPPED");
    setup.skip = Some((path.into(), line, reason.into()));
    result(id, vec![setup, quiet("teardown")])
}

fn xfailed(id: &str, reason: &str) -> TestResult {
    let mut call = report("call", "skipped", "xfailed", "x", "XFAIL");
    call.wasxfail = Some(reason.into());
    result(id, vec![quiet("setup"), call, quiet("teardown")])
}

fn xpassed(id: &str, reason: &str) -> TestResult {
    let mut call = report("call", "passed", "xpassed", "X", "XPASS");
    call.wasxfail = Some(reason.into());
    result(id, vec![quiet("setup"), call, quiet("teardown")])
}

fn session(verbosity: i32, tbstyle: &str, reportchars: &str, rootdir: &str) -> SessionInfo {
    SessionInfo {
        rootdir: rootdir.into(),
        header: vec![
            "platform linux -- Python 3.11.7, pytest-9.2.0, pluggy-1.7.0".into(),
            format!("rootdir: {rootdir}"),
            "plugins: rerunfailures-16.7, xdist-3.8.0, timeout-2.4.0, django-4.14.0".into(),
        ],
        tbstyle: tbstyle.into(),
        reportchars: reportchars.into(),
        verbosity,
        ..SessionInfo::default()
    }
}

/// One run: the events in order, then a summary made from them.
struct Run {
    session: SessionInfo,
    events: Vec<RunEvent>,
    wall: Duration,
    interrupted: Option<String>,
    internal_error: Option<String>,
    not_run: Vec<TestId>,
    color: bool,
    live: bool,
    width: usize,
}

impl Run {
    fn new(session: SessionInfo, wall_secs: f64) -> Self {
        Self {
            events: vec![RunEvent::SessionStarted(Box::new(session.clone()))],
            session,
            wall: Duration::from_secs_f64(wall_secs),
            interrupted: None,
            internal_error: None,
            not_run: Vec::new(),
            color: false,
            live: false,
            width: 80,
        }
    }

    fn collected(mut self, total: usize, deselected: u32, workers: usize) -> Self {
        self.events.push(RunEvent::Collected {
            total,
            deselected,
            report_lines: Vec::new(),
            workers,
            estimated_total: 1.0,
        });
        self
    }

    fn problem(mut self, nodeid: &str, outcome: &str, longrepr: &str, message: &str) -> Self {
        self.events.push(RunEvent::CollectProblem(CollectProblem {
            nodeid: nodeid.into(),
            outcome: outcome.into(),
            longrepr: longrepr.into(),
            message: message.into(),
            ..CollectProblem::default()
        }));
        self
    }

    fn test(mut self, result: TestResult) -> Self {
        self.events.push(RunEvent::TestStarted {
            id: result.id.clone(),
            worker: result.worker,
        });
        self.events
            .push(RunEvent::TestFinished(std::sync::Arc::new(result)));
        self
    }

    fn warning(mut self, nodeid: &str, message: &str) -> Self {
        self.events.push(RunEvent::Warning(WarningReport {
            nodeid: nodeid.into(),
            message: message.into(),
        }));
        self
    }

    fn summary(&self) -> RunSummary {
        let mut summary = RunSummary {
            session: Some(self.session.clone()),
            wall: self.wall,
            interrupted: self.interrupted.clone(),
            internal_error: self.internal_error.clone(),
            not_run: self.not_run.clone(),
            ..RunSummary::default()
        };
        for event in &self.events {
            match event {
                RunEvent::CollectProblem(p) => summary.collect_problems.push(p.clone()),
                RunEvent::Collected {
                    total,
                    deselected,
                    workers,
                    ..
                } => {
                    summary.collected = *total;
                    summary.deselected = *deselected;
                    summary.workers = *workers;
                }
                RunEvent::TestFinished(r) => summary.results.push((**r).clone()),
                RunEvent::Warning(w) => summary.warnings.push(w.clone()),
                RunEvent::SessionStarted(_) | RunEvent::TestStarted { .. } | RunEvent::Note(_) => {}
            }
        }
        summary
    }

    fn render(&self) -> String {
        let buf = Buf::default();
        let opts = ReporterOptions {
            color: self.color,
            live: self.live,
            width: self.width,
            out: Box::new(buf.clone()),
        };
        let mut reporter = Reporter::new(opts).with_ci(false).with_hidden_live_bar();
        for event in &self.events {
            reporter.handle(event);
        }
        reporter.finish(&self.summary());
        drop(reporter);
        buf.text()
    }
}

// ---------------------------------------------------------------------------------------
// Comparing with real pytest output.

/// The body under each `____ title ____` header of a real output, xdist's platform line
/// removed: what shardex's worker sends as `longrepr`.
fn real_sections(real: &str) -> Vec<(String, String)> {
    let mut sections: Vec<(String, String)> = Vec::new();
    for line in real.lines() {
        let plain = strip_ansi(line);
        let is_header = |c: char| plain.starts_with(&format!("{c}{c}")) && plain.ends_with(c);
        if is_header('_') {
            let title = plain.trim_matches('_').trim().to_owned();
            sections.push((title, String::new()));
        } else if is_header('=') {
            sections.push((String::new(), String::new()));
        } else if let Some((_, body)) = sections.last_mut() {
            if !is_xdist_platform_line(line) {
                body.push_str(line);
                body.push('\n');
            }
        }
    }
    sections.retain(|(title, _)| !title.is_empty());
    sections
}

fn section(real: &str, title: &str) -> String {
    real_sections(real)
        .into_iter()
        .find(|(t, _)| t == title)
        .unwrap_or_else(|| panic!("no section {title:?}"))
        .1
}

fn is_xdist_platform_line(line: &str) -> bool {
    line.starts_with("[gw") && line.contains("] linux -- Python ")
}

fn is_letters(line: &str) -> bool {
    let line = match line.split_once(".py ") {
        Some((_, rest)) => rest,
        None => line,
    };
    let letters = line.trim_end_matches([' ', ']', '%', '[']);
    let letters = letters.trim_end_matches(|c: char| c.is_ascii_digit() || c == ' ' || c == '[');
    !letters.is_empty() && letters.chars().all(|c| ".FEsxXR".contains(c))
}

/// Lines after the header and progress section (collection lines, xdist status lines,
/// letters or verbose lines, and the blank lines between), platform lines dropped.
fn after_progress(text: &str) -> Vec<String> {
    let lines: Vec<&str> = text.lines().collect();
    let is_lead = |l: &str| {
        l.is_empty()
            || l.contains(" test session starts ")
            || l.starts_with("platform ")
            || l.starts_with("rootdir: ")
            || l.starts_with("plugins: ")
            || l.starts_with("collected ")
            || l.starts_with("created: ")
            || l.contains(" worker [")
            || l.contains(" workers [")
            || l.starts_with("scheduling tests via ")
            || l == "bringing up nodes..."
            || (l.starts_with("[gw") && l.contains("%]"))
            || (l.starts_with("test_") && l.ends_with(' ') && l.contains("::"))
            || is_letters(l)
    };
    let start = lines
        .iter()
        .position(|l| !is_lead(l))
        .unwrap_or(lines.len());
    lines[start..]
        .iter()
        .filter(|l| !is_xdist_platform_line(l))
        .map(|l| l.to_string())
        .collect()
}

#[track_caller]
fn assert_same_after_progress(ours: &str, real: &str) {
    let (ours, real) = (after_progress(ours), after_progress(real));
    if ours != real {
        let mut diff = String::new();
        for i in 0..ours.len().max(real.len()) {
            let (o, r) = (ours.get(i), real.get(i));
            let mark = if o == r { ' ' } else { '!' };
            diff += &format!("{mark} ours: {o:?}\n{mark} real: {r:?}\n");
        }
        panic!("differs from pytest after the progress section:\n{diff}");
    }
}

/// The run time on the real output's last line (`... in 0.35s ...`), so our line can match.
fn real_wall(real: &str) -> f64 {
    let last = real.lines().last().unwrap();
    let after = &last[last.rfind(" in ").unwrap() + 4..];
    after[..after.find('s').unwrap()].parse().unwrap()
}

/// A real output stored with escapes written as `\x1b`, back to real escapes.
fn unescape(text: &str) -> String {
    text.replace("\\x1b", "\x1b")
}

/// A line without its ANSI escapes.
fn strip_ansi(line: &str) -> String {
    let mut out = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn real_header(real: &str) -> Vec<&str> {
    real.lines().take(4).collect()
}

// ---------------------------------------------------------------------------------------
// The suite (test_a.py), in collection order (`-n 1`).

const SUITE_RA: &str = include_str!("pytest_output/suite_ra.txt");
const SUITE_V: &str = include_str!("pytest_output/suite_v.txt");
const SUITE_Q: &str = include_str!("pytest_output/suite_q.txt");
const SUITE_TBLINE: &str = include_str!("pytest_output/suite_tbline.txt");
const SUITE_TBNO_Q: &str = include_str!("pytest_output/suite_tbno_q.txt");
const SUITE_COLOR: &str = include_str!("pytest_output/suite_color.txt");
const SUITE_VV: &str = include_str!("pytest_output/suite_vv.txt");

const ROOT: &str = "/tmp/rp/suite";

fn warning_text(line: u32) -> String {
    format!(
        "{ROOT}/test_a.py:{line}: UserWarning: careful\n  warnings.warn(UserWarning(\"careful\"))\n"
    )
}

/// The suite's three failures, bodies taken from `real` (they depend on `--tb` and `-v`).
fn suite_failures(session: &SessionInfo, real: &str) -> [TestResult; 3] {
    let crash_line = |line: u32, msg: &str| format!("{ROOT}/test_a.py:{line}: {msg}");
    let body_or_line = |title: &str, n: usize| {
        if session.tbstyle == "line" {
            // --tb=line: no headers; the n-th block between the crash lines.
            tbline_blocks(real)[n].clone()
        } else {
            section(real, title)
        }
    };
    let bad_value = format!("ValueError: bad value {}", "x".repeat(100));
    let test_m_crash = if session.verbosity >= 1 {
        "AssertionError: assert [1, 2] == [1, 3]"
    } else {
        "assert [1, 2] == [1, 3]"
    };
    let mut fail = failed(
        "test_a.py::test_fail",
        &body_or_line("test_fail", 0),
        "assert 1 == 2",
    );
    fail.reports[1].crash_line = Some(crash_line(9, "assert 1 == 2"));
    let mut fail_print = failed(
        "test_a.py::test_fail_print",
        &body_or_line("test_fail_print", 1),
        &bad_value,
    );
    fail_print.reports[1].crash_line = Some(crash_line(13, &bad_value));
    let mut test_m = failed(
        "test_a.py::TestC::test_m",
        &body_or_line("TestC.test_m", 2),
        test_m_crash,
    );
    test_m.reports[1].crash_line = Some(crash_line(57, "assert [1, 2] == [1, 3]"));
    test_m.reports[1].head_line = Some("TestC.test_m".into());
    [fail, fail_print, test_m]
}

/// The suite's run, failure bodies taken from `real` (they depend on `--tb` and `-v`).
fn suite(session: SessionInfo, real: &str) -> Run {
    let wall = real_wall(real);
    let body = |title: &str| section(real, title);
    let line_style = session.tbstyle == "line";
    let [fail, fail_print, test_m] = suite_failures(&session, real);
    let setup_body = if line_style {
        "E   RuntimeError: setup boom\n".to_owned()
    } else {
        body("ERROR at setup of test_setup_error")
    };
    let teardown_body = if line_style {
        "E   RuntimeError: teardown boom\n".to_owned()
    } else {
        body("ERROR at teardown of test_teardown_error")
    };
    Run::new(session, wall)
        .collected(13, 0, 1)
        .test(passed("test_a.py::test_pass"))
        .test(fail)
        .test(fail_print)
        .test(setup_error(
            "test_a.py::test_setup_error",
            &setup_body,
            "RuntimeError: setup boom",
        ))
        .test(teardown_error(
            "test_a.py::test_teardown_error",
            &teardown_body,
            "RuntimeError: teardown boom",
        ))
        .test(skipped(
            "test_a.py::test_skip",
            "test_a.py",
            31,
            "not today",
        ))
        .test(skipped(
            "test_a.py::test_skip_mark",
            "test_a.py",
            33,
            "marked skip",
        ))
        .test(skipped(
            "test_a.py::test_skip_mark2",
            "test_a.py",
            37,
            "marked skip",
        ))
        .test(xfailed("test_a.py::test_xfail", "known bug"))
        .test(xpassed("test_a.py::test_xpass", "maybe"))
        .warning("test_a.py::test_warn", &warning_text(50))
        .test(passed("test_a.py::test_warn"))
        .warning("test_a.py::test_warn2", &warning_text(53))
        .test(passed("test_a.py::test_warn2"))
        .test(test_m)
}

/// `--tb=line`: the longrepr blocks printed before each crash line under FAILURES.
fn tbline_blocks(real: &str) -> Vec<String> {
    let lines: Vec<&str> = real.lines().collect();
    let start = lines.iter().position(|l| l.contains(" FAILURES ")).unwrap() + 1;
    let mut blocks = Vec::new();
    let mut current = String::new();
    for line in &lines[start..] {
        if line.starts_with("==") {
            break;
        }
        if is_xdist_platform_line(line) {
            continue;
        }
        if line.starts_with(ROOT) {
            blocks.push(std::mem::take(&mut current));
        } else {
            current += line;
            current.push('\n');
        }
    }
    blocks
}

#[test]
fn suite_default_matches_pytest() {
    let run = suite(session(0, "auto", "wsxXEf", ROOT), SUITE_RA);
    let out = run.render();
    assert_same_after_progress(&out, SUITE_RA);
    assert_eq!(real_header(&out), real_header(SUITE_RA));
    insta::assert_snapshot!("suite_ra", out);
}

#[test]
fn suite_verbose_matches_xdist_lines() {
    let run = suite(session(1, "auto", "wfE", ROOT), SUITE_V);
    let out = run.render();
    assert_same_after_progress(&out, SUITE_V);
    // The per-test lines are xdist's, minus its "test started" lines.
    let ours: Vec<&str> = out.lines().filter(|l| l.starts_with("[gw")).collect();
    let real: Vec<&str> = SUITE_V
        .lines()
        .filter(|l| l.starts_with("[gw") && l.contains("%]"))
        .collect();
    assert_eq!(ours, real);
    insta::assert_snapshot!("suite_v", out);
}

#[test]
fn suite_quiet_matches_pytest() {
    let run = suite(session(-1, "auto", "wfE", ROOT), SUITE_Q);
    let out = run.render();
    assert_same_after_progress(&out, SUITE_Q);
    // No header in -q, and the same progress line as `pytest -q` without xdist's
    // "bringing up nodes..." lines.
    assert!(out.starts_with(".FFE.Esss"), "{out}");
    insta::assert_snapshot!("suite_q", out);
}

#[test]
fn suite_tb_line_matches_pytest() {
    let run = suite(session(0, "line", "wfE", ROOT), SUITE_TBLINE);
    let out = run.render();
    assert_same_after_progress(&out, SUITE_TBLINE);
    insta::assert_snapshot!("suite_tbline", out);
}

#[test]
fn suite_tb_no_quiet_matches_pytest() {
    let mut run = suite(session(-1, "no", "wfE", ROOT), SUITE_RA);
    run.wall = Duration::from_secs_f64(real_wall(SUITE_TBNO_Q));
    let out = run.render();
    assert_same_after_progress(&out, SUITE_TBNO_Q);
    insta::assert_snapshot!("suite_tbno_q", out);
}

#[test]
fn suite_very_verbose_keeps_whole_messages() {
    let mut run = suite(session(2, "auto", "fE", ROOT), SUITE_V);
    // -vv changes pytest's assertion messages; only check the untrimmed one.
    run.events.retain(|e| match e {
        RunEvent::TestFinished(r) => r.id.as_str() != "test_a.py::TestC::test_m",
        _ => true,
    });
    let out = run.render();
    let want = SUITE_VV
        .lines()
        .find(|l| l.starts_with("FAILED test_a.py::test_fail_print"))
        .unwrap();
    assert!(out.lines().any(|l| l == want), "{out}");
}

#[test]
fn suite_on_ci_keeps_whole_messages() {
    let run = suite(session(0, "no", "fE", ROOT), SUITE_RA);
    let buf = Buf::default();
    let opts = ReporterOptions {
        color: false,
        live: false,
        width: 80,
        out: Box::new(buf.clone()),
    };
    let mut reporter = Reporter::new(opts).with_ci(true);
    for event in &run.events {
        reporter.handle(event);
    }
    reporter.finish(&run.summary());
    let want = format!(
        "FAILED test_a.py::test_fail_print - ValueError: bad value {}",
        "x".repeat(100)
    );
    assert!(buf.text().lines().any(|l| l == want), "{}", buf.text());
}

/// Our output with escapes written the way the real file stores them.
fn escaped(text: &str) -> String {
    text.replace('\x1b', "\\x1b")
}

#[test]
fn suite_color_matches_pytest() {
    // The bodies are pytest's own coloured tracebacks (pygments, in the worker).
    let mut run = suite(session(0, "auto", "wsxXEf", ROOT), &unescape(SUITE_COLOR));
    run.color = true;
    let out = escaped(&run.render());
    // The progress letters come in the same order here, so they are compared too.
    assert_same_after_progress(&out, SUITE_COLOR);
    let first = out.lines().next().unwrap();
    assert_eq!(first, SUITE_COLOR.lines().next().unwrap());
    insta::assert_snapshot!("suite_color", out);
}

// ---------------------------------------------------------------------------------------
// Other runs.

const COLERR: &str = include_str!("pytest_output/colerr.txt");

#[test]
fn collection_error_interrupts_like_pytest() {
    let body = section(COLERR, "ERROR collecting test_bad.py");
    // Plain pytest's collect report has no crash message, hence the bare `ERROR test_bad.py`.
    let run = Run::new(
        session(0, "auto", "wfE", "/tmp/rp/colerr"),
        real_wall(COLERR),
    )
    .problem("test_bad.py", "failed", &body, "")
    .problem(
        "test_modskip.py",
        "skipped",
        "",
        "test_modskip.py:2: whole module",
    )
    // Collection ended; no worker was started.
    .collected(2, 0, 0);
    let out = run.render();
    assert_eq!(out.lines().nth(4), COLERR.lines().nth(4));
    assert_same_after_progress(&out, COLERR);
    insta::assert_snapshot!("collection_error", out);
}

#[test]
fn collection_error_with_message_and_continue() {
    let mut info = session(0, "auto", "wsfE", "/tmp/rp/colerr");
    info.continue_on_collection_errors = true;
    let run = Run::new(info, 0.03)
        .problem(
            "test_bad.py",
            "failed",
            "E   ModuleNotFoundError: No module named 'nonexistent_mod'\n",
            "ModuleNotFoundError: No module named 'nonexistent_mod'",
        )
        .problem(
            "test_modskip.py",
            "skipped",
            "",
            "test_modskip.py:2: whole module",
        )
        .collected(1, 1, 2)
        .test(passed("test_ok.py::test_ok2"));
    let out = run.render();
    // pytest: `collected 2 items / 1 error / 1 deselected / 1 skipped / 1 selected`.
    assert!(
        out.contains("collected 2 items / 1 error / 1 deselected / 1 skipped / 1 selected\n"),
        "{out}"
    );
    insta::assert_snapshot!("collection_error_continue", out);
}

const EMPTY: &str = include_str!("pytest_output/empty.txt");
const EMPTY_Q: &str = include_str!("pytest_output/empty_q.txt");

#[test]
fn no_tests_like_pytest() {
    let run = Run::new(session(0, "auto", "wfE", "/tmp/rp/empty"), 0.01).collected(0, 0, 0);
    let out = run.render();
    assert_eq!(
        out.replace("/tmp/rp/empty", "X"),
        EMPTY.replace("/tmp/rp/empty", "X")
    );
    let run = Run::new(session(-1, "auto", "wfE", "/tmp/rp/empty"), 0.0).collected(0, 0, 0);
    assert_eq!(run.render(), EMPTY_Q);
}

const MAXFAIL: &str = include_str!("pytest_output/maxfail.txt");

#[test]
fn maxfail_stops_like_pytest() {
    let mut info = session(0, "short", "wfE", "/tmp/rp/maxf");
    info.maxfail = 1;
    let mut run = Run::new(info, real_wall(MAXFAIL))
        .collected(4, 0, 2)
        .test(failed(
            "test_m.py::test_a",
            &section(MAXFAIL, "test_a"),
            "assert 0",
        ));
    run.not_run = vec![TestId::new("test_m.py::test_d")];
    let out = run.render();
    // pytest's own lines match; shardex adds how many tests never ran.
    let mut real = after_progress(MAXFAIL);
    real.insert(real.len() - 1, "1 test not run".into());
    assert_eq!(after_progress(&out), real);
    insta::assert_snapshot!("maxfail", out);
}

/// The run's maxfail is the one the agent ends with (`--maxfail 0` on shardex's command
/// line beats `--maxfail 1` in `addopts`), not the one pytest started with.
#[test]
fn maxfail_is_the_runs_not_the_zygotes() {
    let mut info = session(0, "short", "wfE", "/tmp/rp/maxf");
    info.maxfail = 1;
    let mut run = Run::new(info, 0.1)
        .collected(2, 0, 1)
        .test(failed("test_m.py::test_a", "E   assert 0", "assert 0"))
        .test(failed("test_m.py::test_b", "E   assert 0", "assert 0"));
    run.session.maxfail = 0;
    let out = run.render();
    assert!(!out.contains("stopping after"), "{out}");
    run.session.maxfail = 2;
    assert!(run.render().contains("stopping after 2 failures"));
}

const INTERRUPTED: &str = include_str!("pytest_output/interrupted.txt");

#[test]
fn interrupted_run() {
    let mut run = Run::new(
        session(0, "auto", "wfE", "/tmp/rp/intr"),
        real_wall(INTERRUPTED),
    )
    .collected(3, 0, 2)
    .test(passed("test_i.py::test_a"))
    .test(passed("test_i.py::test_c"));
    run.interrupted = Some("KeyboardInterrupt".into());
    run.not_run = vec![TestId::new("test_i.py::test_b")];
    let out = run.render();
    // pytest also prints where the KeyboardInterrupt was raised and a --full-trace hint,
    // which have no equivalent here; the rest matches.
    let real: Vec<String> = after_progress(INTERRUPTED)
        .into_iter()
        .filter(|l| !l.contains(": KeyboardInterrupt") && !l.contains("--full-trace"))
        .collect();
    let ours: Vec<String> = after_progress(&out)
        .into_iter()
        .filter(|l| l != "1 test not run (interrupted)")
        .collect();
    assert_eq!(ours, real);
    // No [100%] after an interrupted progress line, as in pytest.
    assert!(out.contains("\n..\n!!!"), "{out}");
    insta::assert_snapshot!("interrupted", out);
}

const RERUNS: &str = include_str!("pytest_output/reruns.txt");

fn rerun_attempt(id: &str) -> TestResult {
    let mut call = report("call", "rerun", "rerun", "R", "RERUN");
    call.longrepr = Some("E   assert 0\n".into());
    result(id, vec![quiet("setup"), call, quiet("teardown")])
}

#[test]
fn reruns_like_rerunfailures() {
    let run = Run::new(session(0, "no", "wR", "/tmp/rp/rr"), real_wall(RERUNS))
        .collected(3, 0, 1)
        .test(rerun_attempt("test_r.py::test_flaky"))
        .test(rerun_attempt("test_r.py::test_flaky"))
        .test(passed("test_r.py::test_flaky"))
        .test(rerun_attempt("test_r.py::test_bad"))
        .test(rerun_attempt("test_r.py::test_bad"))
        .test(failed("test_r.py::test_bad", "", "assert 0"))
        .test(passed("test_r.py::test_ok"));
    let out = run.render();
    assert_same_after_progress(&out, RERUNS);
    assert!(out.contains("\nRR.RRF.  "), "{out}");
    insta::assert_snapshot!("reruns", out);
}

const PASSES: &str = include_str!("pytest_output/passes.txt");

#[test]
fn passes_and_many_warnings_like_pytest() {
    let root = "/tmp/rp/misc";
    let message = format!(
        "{root}/test_m.py:5: DeprecationWarning: old api\n  warnings.warn(DeprecationWarning(\"old api\"))\n"
    );
    let mut run =
        Run::new(session(0, "auto", "wPpsxXEf", root), real_wall(PASSES)).collected(13, 0, 1);
    for i in 0..11 {
        let id = format!("test_m.py::test_w[{i}]");
        run = run.warning(&id, &message).test(passed(&id));
    }
    let mut out_test = passed("test_m.py::test_out");
    out_test.reports[1].longrepr = Some(section(PASSES, "test_out"));
    let mut xp = xpassed("test_m.py::test_xp", "xp");
    xp.reports[1].longrepr = Some(section(PASSES, "test_xp"));
    let out = run.test(out_test).test(xp).render();
    assert_same_after_progress(&out, PASSES);
    insta::assert_snapshot!("passes", out);
}

const MANY: &str = include_str!("pytest_output/many.txt");
const MANY_DESELECTED: &str = include_str!("pytest_output/many_deselected.txt");

fn many(deselected: u32, wall: f64) -> String {
    let mut run =
        Run::new(session(0, "auto", "wfE", "/tmp/rp/many"), wall).collected(150, deselected, 2);
    for i in 0..150 {
        run = run.test(passed(&format!("test_many.py::test_p[{i}]")));
    }
    run.render()
}

#[test]
fn progress_wraps_like_xdist() {
    let out = many(0, real_wall(MANY));
    // Identical but for the collection lines.
    let strip = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| !l.starts_with("collected ") && !l.starts_with("created: "))
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(strip(&out), strip(MANY));
    insta::assert_snapshot!("many", out);
}

#[test]
fn deselected_like_pytest() {
    let out = many(1, real_wall(MANY_DESELECTED));
    let collected = MANY_DESELECTED
        .lines()
        .find(|l| l.starts_with("collected "))
        .unwrap();
    assert!(out.lines().any(|l| l == collected), "{out}");
    assert_eq!(out.lines().last(), MANY_DESELECTED.lines().last());
}

// ---------------------------------------------------------------------------------------
// shardex's own cases.

#[test]
fn crash_timeout_notes_and_long_runs() {
    let crash = |id: &str, outcome: Outcome, message: &str| {
        let mut call = report("call", "failed", "failed", "F", "FAILED");
        call.longrepr = Some(format!(
            "worker gw1 died while running {id}\n{message}\nstderr (last lines):\nFatal Python error: Segmentation fault\n"
        ));
        call.crash_message = Some(message.into());
        call.crash_line = Some(format!("{}: {message}", id.split("::").next().unwrap()));
        let mut r = result(id, vec![call]);
        r.outcome = outcome;
        r.worker = WorkerId(1);
        r
    };
    let mut run = Run::new(session(0, "auto", "wfE", "/w"), 3725.5)
        .collected(3, 0, 2)
        .test(passed("t.py::test_ok"))
        .test(crash(
            "t.py::test_segv",
            Outcome::Crashed,
            "WorkerCrashed: signal 11 (SIGSEGV)",
        ));
    run.events
        .push(RunEvent::Note("[gw1] worker replaced (pid 4242)".into()));
    let run = run.test(crash(
        "t.py::TestK::test_hang[slow]",
        Outcome::TimedOut,
        "Timeout: test ran longer than 30s",
    ));
    insta::assert_snapshot!("crash_timeout", run.render());
}

#[test]
fn internal_error_lines() {
    let mut run = Run::new(session(0, "auto", "wfE", "/w"), 0.5)
        .collected(2, 0, 1)
        .test(passed("t.py::test_a"));
    run.internal_error = Some(
        "Traceback (most recent call last):\n  File \"shardex_worker.py\", line 3\nRuntimeError: plugin broke\n".into(),
    );
    run.not_run = vec![TestId::new("t.py::test_b")];
    insta::assert_snapshot!("internal_error", run.render());
}

#[test]
fn collect_only_summary_line() {
    let mut info = session(0, "auto", "wfE", "/w");
    info.collectonly = true;
    let out = Run::new(info.clone(), 0.01).collected(7, 3, 0).render();
    assert!(
        out.ends_with(
            "================ 7/10 tests collected (3 deselected) in 0.01s =================\n"
        ),
        "{out}"
    );
    let out = Run::new(info, 0.01).collected(1, 0, 0).render();
    assert!(
        out.ends_with(" 1 test collected in 0.01s =\n")
            || out.contains("= 1 test collected in 0.01s ="),
        "{out}"
    );
}

#[test]
fn live_mode_prints_the_same_lines() {
    let mut run = suite(session(0, "auto", "wsxXEf", ROOT), SUITE_RA);
    let plain = run.render();
    run.live = true;
    let live = run.render();
    // Same text; collection lines in bold only when colour is on, so identical here.
    assert_eq!(live, plain);
    run.color = true;
    let live_color = escaped(&run.render());
    assert!(
        live_color.contains("\\x1b[1mcollected 13 items\\x1b[0m\n"),
        "{live_color}"
    );
}

#[test]
fn notes_start_their_own_line() {
    let mut run = Run::new(session(0, "auto", "wfE", "/w"), 0.1)
        .collected(2, 0, 1)
        .test(passed("t.py::test_a"));
    run.events.push(RunEvent::Note("something happened".into()));
    let out = run.test(passed("t.py::test_b")).render();
    assert!(out.contains("\n.\nsomething happened\n.   "), "{out}");
}

#[test]
fn live_status_line() {
    assert_eq!(
        status_line(0, 120, 0, 0.4, 60.0, false),
        "0/120 tests, 0 failed, 0:00 elapsed, about 1:00 left"
    );
    assert_eq!(
        status_line(60, 120, 3, 30.0, 60.0, false),
        "60/120 tests, 3 failed, 0:30 elapsed, about 0:30 left"
    );
    assert_eq!(
        status_line(60, 120, 1, 30.0, 60.0, true),
        "60/120 tests, \x1b[31m\x1b[1m1 failed\x1b[0m, 0:30 elapsed, about 0:30 left"
    );
    assert_eq!(
        status_line(5, 10, 0, 10.0, 0.0, false),
        "5/10 tests, 0 failed, 0:10 elapsed, about 0:10 left"
    );
    assert_eq!(
        status_line(0, 10, 0, 1.0, 0.0, false),
        "0/10 tests, 0 failed, 0:01 elapsed"
    );
}

#[test]
fn eta_follows_estimate_then_pace() {
    // On schedule: half done in half the estimate.
    assert_eq!(eta(50, 100, 30.0, 60.0), Some(30.0));
    // Twice as slow as estimated at 50%: scale 1.5 -> 45s left.
    assert_eq!(eta(50, 100, 60.0, 60.0), Some(45.0));
    // Near the end the observed pace dominates.
    let left = eta(90, 100, 180.0, 60.0).unwrap();
    assert!((left - 18.6).abs() < 1e-9, "{left}");
    assert_eq!(eta(100, 100, 5.0, 60.0), Some(0.0));
    assert_eq!(eta(0, 100, 80.0, 60.0), Some(0.0));
    assert_eq!(eta(0, 0, 1.0, 60.0), None);
}

/// Drives the live status line on the real stdout, for a look in a terminal:
/// `script -qc "cargo test -p shardex-cli --lib live_demo -- --ignored --nocapture" /dev/null`
#[test]
#[ignore = "manual: needs a terminal and takes a few seconds"]
fn live_demo() {
    let opts = ReporterOptions {
        color: true,
        live: true,
        width: 80,
        out: Box::new(std::io::stdout()),
    };
    let mut reporter = Reporter::new(opts);
    let mut run = Run::new(session(0, "short", "wfE", "/demo"), 3.0).collected(150, 0, 4);
    for i in 0..150 {
        let id = format!("test_demo.py::test_{i}");
        run = run.test(if i % 37 == 5 {
            failed(&id, "E   assert 0\n", "assert 0")
        } else {
            passed(&id)
        });
    }
    if let Some(RunEvent::Collected {
        estimated_total, ..
    }) = run.events.get_mut(1)
    {
        *estimated_total = 12.0;
    }
    for event in &run.events {
        reporter.handle(event);
        if matches!(event, RunEvent::TestFinished(_)) {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    reporter.finish(&run.summary());
}
