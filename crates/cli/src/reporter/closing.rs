//! The closing lines of a run as pytest prints them: the short test summary info and the
//! final `=== 1 failed, 2 passed in 0.12s ===` line.

use shardex_agent::RunSummary;
use shardex_core::protocol::PhaseReport;
use shardex_core::Category;

use super::stats::{category_color, Seen};
use super::summary::{entries, Settings};
use super::text::{format_trimmed, plural, session_duration, split_skip_location, wcswidth};
use super::writer::{Color, Style, Writer};

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

pub(super) fn short_test_summary(w: &mut Writer, s: &Settings, summary: &RunSummary) {
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
pub(super) fn stats_line(w: &mut Writer, s: &Settings, summary: &RunSummary, all_reported: bool) {
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
