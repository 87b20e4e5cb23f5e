//! The end of a run as pytest prints it: ERRORS, FAILURES, warnings summary, PASSES,
//! reruns, the short test summary, the `!!!` stop lines and the final summary line.

use shardex_agent::{RunSummary, TestResult};
use shardex_core::protocol::{PhaseReport, SessionInfo};
use shardex_core::Category;

use super::stats::{category_color, Seen};
use super::text::{
    format_trimmed, head_line_from_nodeid, plural, python_g, session_duration, split_skip_location,
    wcswidth,
};
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
struct Entry<'a> {
    result: &'a TestResult,
    report: &'a PhaseReport,
}

impl Entry<'_> {
    fn head_line(&self) -> String {
        self.report
            .head_line
            .clone()
            .unwrap_or_else(|| head_line_from_nodeid(self.result.id.as_str()))
    }

    fn nodeid(&self) -> &str {
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

fn entries<'a>(summary: &'a RunSummary, category: Category) -> Vec<Entry<'a>> {
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

    if let Some(reason) = should_fail(s, summary) {
        w.write_sep('!', Some(&reason), Style::fg(Color::Red));
    }
    if let Some(reason) = &summary.interrupted {
        w.write_sep('!', Some(reason), Style::PLAIN);
    } else if let Some(reason) = collection_interrupt(s, summary) {
        w.write_sep('!', Some(&reason), Style::PLAIN);
    }
    if !summary.not_run.is_empty() {
        let why = if summary.stopped.is_some() {
            " (stopped by -x/--maxfail)"
        } else if summary.interrupted.is_some() {
            " (interrupted)"
        } else {
            ""
        };
        let line = format!("{} not run{why}", plural(summary.not_run.len(), "test"));
        w.write_line(&line, Style::fg(Color::Yellow));
    }
    stats_line(w, s, summary, all_reported);
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

/// `path::` then the rest of the nodeid in bold (pytest's `_get_node_id_with_markup`).
fn nodeid_markup(w: &Writer, nodeid: &str) -> String {
    match nodeid.split_once("::") {
        Some((path, rest)) => format!("{path}::{}", w.markup(rest, Style::BOLD)),
        None => nodeid.to_owned(),
    }
}

/// pytest's `_get_line_with_reprcrash_message`: `FAILED nodeid - message`, the message cut
/// to the width unless on CI or at `-vv`.
fn line_with_message(
    w: &Writer,
    s: &Settings,
    word: &str,
    color: Color,
    nodeid: &str,
    msg: Option<&str>,
) -> String {
    let mut line = format!(
        "{} {}",
        w.markup(word, Style::fg(color)),
        nodeid_markup(w, nodeid)
    );
    // With markup on, pytest measures the escapes too: `wcswidth` returns -1 and the
    // message gets one column more than the terminal has. Kept for identical output.
    let line_width = wcswidth(&line);
    if let Some(msg) = msg {
        if s.on_ci || s.verbosity >= 2 {
            line += &format!(" - {msg}");
        } else if let Some(trimmed) = format_trimmed(" - {}", msg, w.width as isize - line_width) {
            line += &trimmed;
        }
    }
    line
}

fn short_test_summary(w: &mut Writer, s: &Settings, summary: &RunSummary) {
    let mut lines = Vec::new();
    for c in s.reportchars.chars() {
        match c {
            'x' => {
                for e in entries(summary, Category::XFailed) {
                    let word = word_or(e.report, "XFAIL");
                    let word = w.markup(word, Style::fg(Color::Yellow));
                    let nodeid = nodeid_markup(w, e.nodeid());
                    let mut line = if e.report.when == "call" {
                        format!("{word} {nodeid}")
                    } else {
                        format!("{word} at {} of {nodeid}", e.report.when)
                    };
                    if let Some(reason) = e.report.wasxfail.as_deref().filter(|r| !r.is_empty()) {
                        line += &format!(" - {reason}");
                    }
                    lines.push(line);
                }
            }
            'X' => {
                for e in entries(summary, Category::XPassed) {
                    let word = w.markup(word_or(e.report, "XPASS"), Style::fg(Color::Yellow));
                    let mut line = format!("{word} {}", nodeid_markup(w, e.nodeid()));
                    if let Some(reason) = e.report.wasxfail.as_deref().filter(|r| !r.is_empty()) {
                        line += &format!(" - {reason}");
                    }
                    lines.push(line);
                }
            }
            'f' => {
                for e in entries(summary, Category::Failed) {
                    let word = word_or(e.report, "FAILED");
                    let msg = e.report.crash_message.as_deref();
                    lines.push(line_with_message(w, s, word, Color::Red, e.nodeid(), msg));
                }
            }
            'E' => {
                for p in summary
                    .collect_problems
                    .iter()
                    .filter(|p| p.outcome != "skipped")
                {
                    let msg = Some(p.message.as_str()).filter(|m| !m.is_empty());
                    lines.push(line_with_message(w, s, "ERROR", Color::Red, &p.nodeid, msg));
                }
                for e in entries(summary, Category::Error) {
                    let word = word_or(e.report, "ERROR");
                    let msg = e.report.crash_message.as_deref();
                    lines.push(line_with_message(w, s, word, Color::Red, e.nodeid(), msg));
                }
            }
            'p' => {
                for e in entries(summary, Category::Passed) {
                    let word = word_or(e.report, "PASSED");
                    let msg = e.report.crash_message.as_deref();
                    lines.push(line_with_message(w, s, word, Color::Green, e.nodeid(), msg));
                }
            }
            's' => skipped_folded(w, summary, &mut lines),
            _ => {}
        }
    }
    if lines.is_empty() {
        return;
    }
    w.write_sep(
        '=',
        Some("short test summary info"),
        Style::fg(Color::Cyan).bold(),
    );
    for line in lines {
        w.write_line(&line, Style::PLAIN);
    }
}

fn word_or<'a>(report: &'a PhaseReport, default: &'a str) -> &'a str {
    if report.word.is_empty() {
        default
    } else {
        &report.word
    }
}

/// pytest's `_folded_skips`: `SKIPPED [2] path:line: reason`, one line per distinct place
/// and reason. Line 0 stands for pytest's "no line" (a skip marker folded per file).
fn skipped_folded(w: &Writer, summary: &RunSummary, lines: &mut Vec<String>) {
    type Key = (String, Option<u32>, String);
    let mut keys: Vec<Key> = Vec::new();
    for p in summary
        .collect_problems
        .iter()
        .filter(|p| p.outcome == "skipped")
    {
        keys.push(match split_skip_location(&p.message) {
            Some((path, line, reason)) => (path.to_owned(), Some(line), reason.to_owned()),
            None => (p.nodeid.clone(), None, p.message.clone()),
        });
    }
    let skipped = entries(summary, Category::Skipped);
    // pytest takes the word of the first skip it recorded; collection comes first.
    let word = match skipped.first() {
        Some(e) if keys.is_empty() => word_or(e.report, "SKIPPED"),
        _ => "SKIPPED",
    };
    for e in &skipped {
        keys.push(match &e.report.skip {
            Some((path, line, reason)) => {
                (path.clone(), Some(*line).filter(|l| *l > 0), reason.clone())
            }
            None => (
                e.result.id.file().to_owned(),
                None,
                e.report.crash_message.clone().unwrap_or_default(),
            ),
        });
    }
    let mut groups: Vec<(Key, usize)> = Vec::new();
    for key in keys {
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, n)) => *n += 1,
            None => groups.push((key, 1)),
        }
    }
    let word = w.markup(word, Style::fg(Color::Yellow));
    for ((path, line, reason), n) in groups {
        let reason = reason.strip_prefix("Skipped: ").unwrap_or(&reason);
        lines.push(match line {
            Some(line) => format!("{word} [{n}] {path}:{line}: {reason}"),
            None => format!("{word} [{n}] {path}: {reason}"),
        });
    }
}

/// The last line: `==== 1 failed, 3 passed in 0.52s ====` (pytest's `summary_stats`).
fn stats_line(w: &mut Writer, s: &Settings, summary: &RunSummary, all_reported: bool) {
    if s.verbosity < -1 {
        return;
    }
    let counts = summary.counts();
    let mut seen = Seen::default();
    for category in counts.keys() {
        seen.add(*category);
    }
    let (parts, main) = if s.collectonly {
        collect_only_parts(summary)
    } else {
        let main = seen.main_color(all_reported);
        let mut parts = Vec::new();
        for category in Category::SUMMARY_ORDER {
            let Some(&count) = counts.get(&category).filter(|n| **n > 0) else {
                continue;
            };
            let color = category_color(category);
            let text = format!("{count} {}", category.summary_word(count));
            parts.push((text, Style::fg(color).bold_if(color == main)));
        }
        if parts.is_empty() {
            parts.push(("no tests ran".to_owned(), Style::fg(Color::Yellow)));
        }
        (parts, main)
    };
    let main_style = Style::fg(main);
    let mut msg = parts
        .iter()
        .map(|(text, style)| w.markup(text, *style))
        .collect::<Vec<_>>()
        .join(", ");
    let plain_len = parts.iter().map(|(t, _)| t.chars().count()).sum::<usize>()
        + 2 * parts.len().saturating_sub(1);
    let duration = format!(" in {}", session_duration(summary.wall));
    msg += &w.markup(&duration, main_style);
    let plain_len = plain_len + duration.chars().count();
    if s.verbosity >= 0 {
        // pytest leaves the main colour switched on at the end of the title so the closing
        // `=`s are coloured, and widens the line by the escapes' length.
        let reset = "\x1b[0m";
        let end = w.markup("", main_style);
        msg += end.strip_suffix(reset).unwrap_or(&end);
        let fullwidth = w.width + msg.chars().count() - plain_len;
        w.write_sep_width('=', Some(&msg), fullwidth, main_style);
    } else {
        w.write_line(&msg, main_style);
    }
}

/// pytest's `_build_collect_only_summary_stats_line`.
fn collect_only_parts(summary: &RunSummary) -> (Vec<(String, Style)>, Color) {
    let deselected = summary.deselected as usize;
    let collected = summary.collected + deselected;
    let errors = summary.collection_errors();
    let (text, mut main) = if collected == 0 {
        ("no tests collected".to_owned(), Color::Yellow)
    } else if deselected == 0 {
        (
            format!("{} collected", plural(collected, "test")),
            Color::Green,
        )
    } else if collected == deselected {
        (
            format!("no tests collected ({deselected} deselected)"),
            Color::Yellow,
        )
    } else {
        (
            format!(
                "{}/{collected} tests collected ({deselected} deselected)",
                summary.collected
            ),
            Color::Green,
        )
    };
    let mut parts = vec![(text, Style::fg(main))];
    if errors > 0 {
        main = Color::Red;
        parts.push((plural(errors, "error"), Style::fg(main)));
    }
    (parts, main)
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
