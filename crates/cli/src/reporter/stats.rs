//! pytest's colour rules: a report's letter/word markup and the run's "main colour".

use std::collections::BTreeSet;

use shardex_core::protocol::PhaseReport;
use shardex_core::Category;

use super::writer::{Color, Style};

/// The markup pytest gives a report's progress letter or verbose word
/// (`TerminalReporter.pytest_runtest_logreport`; reruns get rerunfailures' yellow).
pub(crate) fn report_style(report: &PhaseReport) -> Style {
    if Category::parse(&report.category) == Some(Category::Rerun) {
        return Style::fg(Color::Yellow);
    }
    match &*report.outcome {
        "passed" if report.wasxfail.is_none() => Style::fg(Color::Green),
        "passed" | "skipped" => Style::fg(Color::Yellow),
        "failed" => Style::fg(Color::Red),
        _ => Style::PLAIN,
    }
}

/// pytest's `_color_for_type`, with its yellow default.
pub(crate) fn category_color(category: Category) -> Color {
    match category {
        Category::Failed | Category::Error => Color::Red,
        Category::Passed => Color::Green,
        Category::Warnings
        | Category::Skipped
        | Category::Deselected
        | Category::XFailed
        | Category::XPassed
        | Category::Rerun => Color::Yellow,
    }
}

/// The keys of pytest's `stats` dict seen so far (which categories occurred at all).
#[derive(Clone, Debug, Default)]
pub(crate) struct Seen {
    categories: BTreeSet<Category>,
    /// A category string pytest does not know (from a plugin).
    unknown: bool,
}

impl Seen {
    pub fn add(&mut self, category: Category) {
        self.categories.insert(category);
    }

    pub fn add_str(&mut self, category: &str) {
        match Category::parse(category) {
            Some(c) => self.add(c),
            None if !category.is_empty() => self.unknown = true,
            None => {}
        }
    }

    /// pytest's `_determine_main_color`. `last_item` is whether every collected test has
    /// reported.
    pub fn main_color(&self, last_item: bool) -> Color {
        let has = |c| self.categories.contains(&c);
        if has(Category::Failed) || has(Category::Error) {
            Color::Red
        } else if has(Category::Warnings)
            || has(Category::XPassed)
            // Not one of pytest's KNOWN_TYPES: it counts as an unknown type.
            || has(Category::Rerun)
            || self.unknown
        {
            Color::Yellow
        } else if has(Category::Passed) || !last_item {
            Color::Green
        } else {
            Color::Yellow
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn main_color_rules() {
        let seen = |cats: &[&str]| {
            let mut s = Seen::default();
            for c in cats {
                s.add_str(c);
            }
            s
        };
        assert_eq!(seen(&["passed", "failed"]).main_color(true), Color::Red);
        assert_eq!(seen(&["passed", "error"]).main_color(true), Color::Red);
        assert_eq!(
            seen(&["passed", "warnings"]).main_color(true),
            Color::Yellow
        );
        assert_eq!(seen(&["passed", "xpassed"]).main_color(true), Color::Yellow);
        assert_eq!(seen(&["passed", "rerun"]).main_color(true), Color::Yellow);
        assert_eq!(
            seen(&["passed", "subtests"]).main_color(true),
            Color::Yellow
        );
        assert_eq!(
            seen(&["passed", "skipped", ""]).main_color(true),
            Color::Green
        );
        assert_eq!(seen(&["skipped"]).main_color(true), Color::Yellow);
        assert_eq!(seen(&["skipped"]).main_color(false), Color::Green);
        assert_eq!(seen(&[]).main_color(true), Color::Yellow);
    }
}
