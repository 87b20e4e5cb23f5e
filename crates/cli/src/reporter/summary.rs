//! The end of a run as pytest prints it: ERRORS, FAILURES, warnings summary, PASSES,
//! reruns, the short test summary, the `!!!` stop lines and the final summary line.

use shardex_agent::{RunSummary, TestResult};
use shardex_core::protocol::{PhaseReport, SessionExit, SessionInfo};
use shardex_core::Category;

use super::closing::{short_test_summary, stats_line};
use super::text::{head_line_from_nodeid, plural, python_g};
use super::writer::{Color, Style, Writer};

/// The pytest options the summary depends on.
pub(crate) struct Settings {
    pub verbosity: i32,
    pub tbstyle: String,
    /// pytest's `getreportopt` result (`w` present unless warnings are disabled).
    pub reportchars: String,
    pub maxfail: u32,
    pub continue_on_collection_errors: bool,
    pub collectonly: bool,
    pub on_ci: bool,
    /// `--durations` and `--durations-min` (see `durations`).
    pub durations: Option<u32>,
    pub durations_min: Option<f64>,
}

impl Settings {
    pub fn new(session: Option<&SessionInfo>, on_ci: bool) -> Self {
        match session {
            Some(s) => Self {
                verbosity: s.verbosity,
                tbstyle: s.tbstyle.clone(),
                reportchars: report_aliases(&s.reportchars),
                maxfail: s.maxfail,
                continue_on_collection_errors: s.continue_on_collection_errors,
                collectonly: s.collectonly,
                on_ci,
                durations: s.durations,
                durations_min: s.durations_min,
            },
            // pytest's defaults, for a run that never got as far as starting pytest.
            None => Self {
                verbosity: 0,
                tbstyle: "auto".into(),
                reportchars: "wfE".into(),
                maxfail: 0,
                continue_on_collection_errors: false,
                collectonly: false,
                on_ci,
                durations: None,
                durations_min: None,
            },
        }
    }

    fn has(&self, c: char) -> bool {
        self.reportchars.contains(c)
    }

    fn tb_shown(&self) -> bool {
        self.tbstyle != "no"
    }
}

/// The alias part of pytest's `getreportopt` (`a`, `A`, `N`, old `F`/`S`), in case the
/// chars arrive unexpanded; expanded chars pass through unchanged. (`w` is left as sent:
/// only pytest knows whether warnings are disabled.)
fn report_aliases(chars: &str) -> String {
    let mut out = String::new();
    for c in chars.chars() {
        let c = match c {
            'F' => 'f',
            'S' => 's',
            c => c,
        };
        match c {
            'a' => out = "sxXEf".into(),
            'A' => out = "PpsxXEf".into(),
            'N' => out.clear(),
            c if !out.contains(c) => out.push(c),
            _ => {}
        }
    }
    out
}

/// One test report with the test it belongs to.
pub(super) struct Entry<'a> {
    pub result: &'a TestResult,
    pub report: &'a PhaseReport,
}

impl Entry<'_> {
    fn head_line(&self) -> String {
        self.report
            .head_line
            .clone()
            .unwrap_or_else(|| head_line_from_nodeid(self.result.id.as_str()))
    }

    pub fn nodeid(&self) -> &str {
        self.result.id.as_str()
    }

    /// Captured output of a passed teardown of the same test (pytest's
    /// `_handle_teardown_sections`), when the worker sent it.
    fn teardown_sections(&self) -> impl Iterator<Item = &str> {
        self.result
            .reports
            .iter()
            .filter(|r| r.when == "teardown" && r.category.is_empty())
            .filter_map(|r| r.longrepr.as_deref())
            .filter(|text| !text.is_empty())
    }
}

pub(super) fn entries<'a>(summary: &'a RunSummary, category: Category) -> Vec<Entry<'a>> {
    summary
        .results
        .iter()
        .flat_map(|result| {
            result
                .reports
                .iter()
                .filter(move |r| Category::parse(&r.category) == Some(category))
                .map(move |report| Entry { result, report })
        })
        .collect()
}

/// Everything `finish` prints after the progress: pytest's `pytest_sessionfinish` and
/// `pytest_terminal_summary`.
pub(crate) fn render(w: &mut Writer, s: &Settings, summary: &RunSummary, all_reported: bool) {
    if let Some(error) = &summary.internal_error {
        w.close_line();
        for line in error.trim_end_matches('\n').split('\n') {
            w.write_line(&format!("INTERNALERROR> {line}"), Style::PLAIN);
        }
    }
    if let Some(failure) = &summary.plugin_failure {
        // pytest-cov writes it when its measurement ends, before the summary sections.
        w.close_line();
        w.write_line(&format!("ERROR: {failure}"), Style::fg(Color::Red).bold());
    }
    // pytest's `self._tw.line("")` at session finish: ends the progress line, or leaves a
    // blank line.
    w.line("", Style::PLAIN);

    // pytest writes its terminal summary only for its usual exit statuses (a test's
    // `pytest.exit(returncode=3)` skips it).
    let exit = summary.session_exit.as_ref();
    if exit.is_none_or(|e| SUMMARY_EXIT_CODES.contains(&e.returncode)) {
        sections(w, s, summary);
    }

    if let Some(reason) = should_fail(s, summary) {
        w.write_sep('!', Some(&reason), Style::fg(Color::Red));
    }
    if let Some(exit) = exit.filter(|e| e.returncode == INTERRUPTED) {
        session_exit(w, exit);
    } else if let Some(reason) = &summary.interrupted {
        w.write_sep('!', Some(reason), Style::PLAIN);
    } else if let Some(reason) = collection_interrupt(s, summary) {
        w.write_sep('!', Some(&reason), Style::PLAIN);
    }
    if !summary.not_run.is_empty() {
        let why = if summary.stopped.is_some() {
            " (stopped by -x/--maxfail)"
        } else if summary.interrupted.is_some() {
            " (interrupted)"
        } else if exit.is_some() {
            " (a test ended the session)"
        } else {
            ""
        };
        let line = format!("{} not run{why}", plural(summary.not_run.len(), "test"));
        w.write_line(&line, Style::fg(Color::Yellow));
    }
    if let Some(shared) = &summary.shared {
        for line in shared_lines(shared) {
            w.write_line(&line, Style::fg(Color::Yellow));
        }
    }
    stats_line(w, s, summary, all_reported);
    // Any other status: pytest reports the exit at its unconfigure, after the stats.
    if let Some(exit) = exit.filter(|e| e.returncode != INTERRUPTED) {
        session_exit(w, exit);
    }
}

/// What a node of a job with a shared queue did besides its own share: tests it took over
/// from a node that died, results that came second, tests run after the queue was lost.
fn shared_lines(shared: &shardex_core::SharedOutcome) -> Vec<String> {
    let mut lines = Vec::new();
    if shared.reclaimed > 0 {
        lines.push(format!(
            "{} taken over from a node whose lease expired",
            plural(shared.reclaimed, "test")
        ));
    }
    if !shared.ran_twice.is_empty() {
        lines.push(format!(
            "{} ran twice (another node's result came first and counts): {}",
            plural(shared.ran_twice.len(), "test"),
            shared
                .ran_twice
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if !shared.without_queue.is_empty() {
        lines.push(format!(
            "{} ran without the queue (it was lost; some may also have run on another node)",
            plural(shared.without_queue.len(), "test")
        ));
    }
    lines
}

/// pytest's statuses that get the terminal summary (its `summary_exit_codes`).
const SUMMARY_EXIT_CODES: [i32; 5] = [0, 1, INTERRUPTED, 4, 5];
const INTERRUPTED: i32 = 2;

/// The sections of pytest's terminal summary, FAILURES to the short test summary.
fn sections(w: &mut Writer, s: &Settings, summary: &RunSummary) {
    errors(w, s, summary);
    failures(w, s, summary);
    if s.has('w') {
        warnings(w, summary);
    }
    if s.has('P') {
        passes(w, s, summary, Category::Passed, "PASSES");
    }
    if s.has('X') {
        passes(w, s, summary, Category::XPassed, "XPASSES");
    }
    if s.has('r') || s.has('R') {
        reruns(w, summary);
    }
    flaky(w, summary);
    if !summary.plugin_summary.is_empty() {
        // Written by the zygote's pytest with the run's colour and width: as is.
        w.close_line();
        w.write(&summary.plugin_summary, Style::PLAIN);
    }
    durations(w, s, summary);
    short_test_summary(w, s, summary);
}

/// pytest's `_report_keyboardinterrupt`: the reason between `!` rules, then its details.
fn session_exit(w: &mut Writer, exit: &SessionExit) {
    w.write_sep('!', Some(&exit.reason), Style::PLAIN);
    if !exit.details.is_empty() {
        w.write(&exit.details, Style::PLAIN);
    }
}

/// pytest's `session.shouldfail` for `--maxfail`: `stopping after 2 failures`.
pub(crate) fn should_fail(s: &Settings, summary: &RunSummary) -> Option<String> {
    if let Some(stopped) = &summary.stopped {
        return Some(stopped.clone());
    }
    if s.maxfail == 0 {
        return None;
    }
    // pytest's `testsfailed`: failed reports that are not xfails (errors and strict xpasses
    // included), collection errors too. A rerun attempt is not a failure.
    let failed_reports = summary
        .results
        .iter()
        .flat_map(|r| &r.reports)
        .filter(|r| {
            r.outcome == "failed"
                && r.wasxfail.is_none()
                && Category::parse(&r.category) != Some(Category::Rerun)
        })
        .count();
    let failed = failed_reports + summary.collection_errors();
    (failed >= s.maxfail as usize).then(|| format!("stopping after {failed} failures"))
}

/// pytest stops before running anything after a collection error, unless told to continue.
fn collection_interrupt(s: &Settings, summary: &RunSummary) -> Option<String> {
    let errors = summary.collection_errors();
    (errors > 0 && !s.continue_on_collection_errors)
        .then(|| format!("Interrupted: {} during collection", plural(errors, "error")))
}

fn errors(w: &mut Writer, s: &Settings, summary: &RunSummary) {
    if !s.tb_shown() {
        return;
    }
    let collect: Vec<_> = summary
        .collect_problems
        .iter()
        .filter(|p| p.outcome != "skipped")
        .collect();
    let tests = entries(summary, Category::Error);
    if collect.is_empty() && tests.is_empty() {
        return;
    }
    w.write_sep('=', Some("ERRORS"), Style::PLAIN);
    for problem in collect {
        let head = if problem.nodeid.is_empty() {
            "test session"
        } else {
            &problem.nodeid
        };
        let title = format!("ERROR collecting {head}");
        w.write_sep('_', Some(&title), Style::fg(Color::Red).bold());
        w.block(&problem.longrepr);
    }
    for entry in tests {
        let title = format!("ERROR at {} of {}", entry.report.when, entry.head_line());
        w.write_sep('_', Some(&title), Style::fg(Color::Red).bold());
        if let Some(text) = &entry.report.longrepr {
            w.block(text);
        }
    }
}

fn failures(w: &mut Writer, s: &Settings, summary: &RunSummary) {
    if !s.tb_shown() {
        return;
    }
    let failed = entries(summary, Category::Failed);
    if failed.is_empty() {
        return;
    }
    w.write_sep('=', Some("FAILURES"), Style::PLAIN);
    for entry in failed {
        let report = entry.report;
        if s.tbstyle == "line" {
            // pytest prints the (line-style) longrepr with its captured output, then
            // `path:line: message`.
            if let Some(text) = report.longrepr.as_deref().filter(|t| !t.is_empty()) {
                w.block(text);
            }
            let line = report
                .crash_line
                .clone()
                .or_else(|| report.crash_message.clone())
                .unwrap_or_else(|| {
                    let text = report.longrepr.as_deref().unwrap_or("");
                    text.chars().take(50).collect()
                });
            w.write_line(&line, Style::PLAIN);
            continue;
        }
        w.write_sep('_', Some(&entry.head_line()), Style::fg(Color::Red).bold());
        if let Some(text) = &report.longrepr {
            w.block(text);
        }
        for text in entry.teardown_sections() {
            w.block(text);
        }
    }
}

/// pytest's `summary_warnings`: one group per distinct message, with where it came from.
fn warnings(w: &mut Writer, summary: &RunSummary) {
    if summary.warnings.is_empty() {
        return;
    }
    let mut groups: Vec<(&str, Vec<&str>)> = Vec::new();
    for warning in &summary.warnings {
        match groups.iter_mut().find(|(m, _)| *m == warning.message) {
            Some((_, nodeids)) => nodeids.push(&warning.nodeid),
            None => groups.push((&warning.message, vec![&warning.nodeid])),
        }
    }
    w.write_sep('=', Some("warnings summary"), Style::fg(Color::Yellow));
    for (message, nodeids) in groups {
        let locations: Vec<&str> = nodeids.into_iter().filter(|n| !n.is_empty()).collect();
        let location = if locations.len() < 10 {
            locations.join("\n")
        } else {
            let mut counts: Vec<(&str, usize)> = Vec::new();
            for loc in locations {
                let file = loc.split("::").next().unwrap_or(loc);
                match counts.iter_mut().find(|(f, _)| *f == file) {
                    Some((_, n)) => *n += 1,
                    None => counts.push((file, 1)),
                }
            }
            counts
                .iter()
                .map(|(file, n)| format!("{file}: {}", plural(*n, "warning")))
                .collect::<Vec<_>>()
                .join("\n")
        };
        if location.is_empty() {
            w.line(message.trim_end(), Style::PLAIN);
        } else {
            w.line(&location, Style::PLAIN);
            let indented: Vec<String> = message.lines().map(|l| format!("  {l}")).collect();
            w.line(indented.join("\n").trim_end(), Style::PLAIN);
        }
        w.line("", Style::PLAIN);
    }
    w.line(
        "-- Docs: https://docs.pytest.org/en/stable/how-to/capture-warnings.html",
        Style::PLAIN,
    );
}

/// pytest's `--durations` section (`_pytest/runner.py: pytest_terminal_summary`): every
/// phase report of every attempt, longest first; those under `--durations-min` (default
/// 5 ms, 0 with `-vv`) are counted, not listed.
fn durations(w: &mut Writer, s: &Settings, summary: &RunSummary) {
    let Some(count) = s.durations else {
        return;
    };
    let min = s
        .durations_min
        .unwrap_or(if s.verbosity < 2 { 0.005 } else { 0.0 });
    let mut reports: Vec<(f64, &str, &str)> = summary
        .results
        .iter()
        .flat_map(|r| {
            r.reports
                .iter()
                .map(move |p| (p.duration, &*p.when, r.id.as_str()))
        })
        .collect();
    if reports.is_empty() {
        return;
    }
    reports.sort_by(|a, b| b.0.total_cmp(&a.0));
    if count == 0 {
        w.write_sep('=', Some("slowest durations"), Style::PLAIN);
    } else {
        w.write_sep(
            '=',
            Some(&format!("slowest {count} durations")),
            Style::PLAIN,
        );
        reports.truncate(count as usize);
    }
    for (i, (duration, when, nodeid)) in reports.iter().enumerate() {
        if *duration < min {
            w.write_line("", Style::PLAIN);
            let mut message = format!(
                "({} durations < {}s hidden.",
                reports.len() - i,
                python_g(min)
            );
            if s.durations_min.is_none() {
                message += "  Use -vv to show these durations.";
            }
            message += ")";
            w.write_line(&message, Style::PLAIN);
            break;
        }
        w.write_line(
            &format!("{duration:02.2}s {when:<8} {nodeid}"),
            Style::PLAIN,
        );
    }
}

/// pytest's `summary_passes_combined` (`-rP`, `-rX`): the captured output of passing tests.
fn passes(w: &mut Writer, s: &Settings, summary: &RunSummary, category: Category, title: &str) {
    if !s.tb_shown() {
        return;
    }
    let passed = entries(summary, category);
    if passed.is_empty() {
        return;
    }
    w.write_sep('=', Some(title), Style::PLAIN);
    for entry in passed {
        if let Some(text) = entry.report.longrepr.as_deref().filter(|t| !t.is_empty()) {
            w.write_sep(
                '_',
                Some(&entry.head_line()),
                Style::fg(Color::Green).bold(),
            );
            w.block(text);
        }
        for text in entry.teardown_sections() {
            w.block(text);
        }
    }
}

/// shardex's own section: tests that passed only on a retry, with what each failed attempt
/// hit (pytest-rerunfailures shows none of this, and its JUnit hides it).
fn flaky(w: &mut Writer, summary: &RunSummary) {
    let flaky = summary.flaky();
    if flaky.is_empty() {
        return;
    }
    w.write_sep('=', Some("flaky tests"), Style::fg(Color::Yellow).bold());
    for (result, attempts) in flaky {
        let tries = result.attempt + 1;
        w.write_line(
            &format!("FLAKY {} - passed on attempt {tries}", result.id),
            Style::PLAIN,
        );
        for (n, attempt) in attempts.iter().enumerate() {
            let hit = attempt
                .reports
                .iter()
                .find_map(|r| r.crash_message.as_deref())
                .and_then(|m| m.lines().next())
                .unwrap_or("failed");
            w.write_line(&format!("  attempt {}: {hit}", n + 1), Style::PLAIN);
        }
    }
}

/// pytest-rerunfailures' `rerun test summary info` (`-rR`): every attempt of each test that
/// was rerun.
fn reruns(w: &mut Writer, summary: &RunSummary) {
    let is_rerun = |r: &PhaseReport| Category::parse(&r.category) == Some(Category::Rerun);
    let mut ids = Vec::new();
    for result in &summary.results {
        if result.reports.iter().any(is_rerun) && !ids.contains(&&result.id) {
            ids.push(&result.id);
        }
    }
    let mut lines = Vec::new();
    for id in ids {
        for result in summary.results.iter().filter(|r| &r.id == id) {
            for report in &result.reports {
                // A passed setup or teardown says nothing.
                if report.outcome == "passed" && report.when != "call" {
                    continue;
                }
                let word = if report.word.is_empty() {
                    report.outcome.to_uppercase()
                } else {
                    report.word.to_string()
                };
                let style = super::stats::report_style(report);
                lines.push(w.markup(&format!("{word} {id}"), style));
            }
        }
    }
    if lines.is_empty() {
        return;
    }
    w.write_sep(
        '=',
        Some("rerun test summary info"),
        Style::fg(Color::Cyan).bold(),
    );
    for line in lines {
        w.write_line(&line, Style::PLAIN);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_chars_like_getreportopt() {
        // getreportopt without its `w` handling.
        let cases = [
            ("wfE", "wfE"),
            ("fE", "fE"),
            ("a", "sxXEf"),
            ("wa", "sxXEf"),
            ("A", "PpsxXEf"),
            ("fEN", ""),
            ("FS", "fs"),
            ("ffs", "fs"),
            ("wsxXEf", "wsxXEf"),
            ("R", "R"),
        ];
        for (given, want) in cases {
            assert_eq!(report_aliases(given), want, "{given}");
        }
    }
}
