//! `Reporter`: turns `RunEvent`s into pytest's (and xdist's) terminal output as they come,
//! then the end-of-run sections from the `RunSummary`.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
use shardex_agent::{RunEvent, RunSummary, TestResult};
use shardex_core::protocol::{CollectProblem, SessionInfo};
use shardex_core::{Category, TestId};

use super::options::{running_on_ci, ReporterOptions};
use super::stats::{report_style, Seen};
use super::summary::{self, Settings};
use super::text::{clock, plural};
use super::writer::{Color, Live, Style, Writer};

/// pytest's `len(" [100%]")`: room kept at the right of a line of progress letters.
const PROGRESS_WIDTH: isize = 7;
/// How often the live status line redraws on its own (for the elapsed clock).
const LIVE_TICK: Duration = Duration::from_millis(250);

/// Where the live status line is drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LiveTarget {
    Off,
    Stdout,
    /// Tests: the bar exists but draws nowhere.
    #[cfg(test)]
    Hidden,
}

pub struct Reporter {
    w: Writer,
    live_target: LiveTarget,
    on_ci: bool,
    session: Option<SessionInfo>,
    header_shown: bool,
    collected_shown: bool,
    /// xdist writes an empty line after its "N workers [M items]" line, before progress.
    blank_before_progress: bool,
    total: Option<usize>,
    collect_errors: usize,
    collect_skipped: usize,
    /// pytest's `_progress_nodeids_reported`.
    reported: HashSet<TestId>,
    seen: Seen,
    failures: Arc<AtomicUsize>,
}

impl Reporter {
    pub fn new(opts: ReporterOptions) -> Self {
        Self {
            w: Writer::new(opts.out, opts.color, opts.width),
            live_target: if opts.live {
                LiveTarget::Stdout
            } else {
                LiveTarget::Off
            },
            on_ci: running_on_ci(),
            session: None,
            header_shown: false,
            collected_shown: false,
            blank_before_progress: false,
            total: None,
            collect_errors: 0,
            collect_skipped: 0,
            reported: HashSet::new(),
            seen: Seen::default(),
            failures: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Overrides pytest's CI detection (`CI`/`BUILD_NUMBER`), which decides whether short
    /// summary messages are cut to the width.
    pub fn with_ci(mut self, on_ci: bool) -> Self {
        self.on_ci = on_ci;
        self
    }

    #[cfg(test)]
    pub(crate) fn with_hidden_live_bar(mut self) -> Self {
        if self.live_target == LiveTarget::Stdout {
            self.live_target = LiveTarget::Hidden;
        }
        self
    }

    fn verbosity(&self) -> i32 {
        self.session.as_ref().map_or(0, |s| s.verbosity)
    }

    pub fn handle(&mut self, event: &RunEvent) {
        match event {
            RunEvent::SessionStarted(info) => self.session_started(info),
            RunEvent::CollectProblem(problem) => self.collect_problem(problem),
            RunEvent::Collected {
                total,
                deselected,
                report_lines,
                workers,
                estimated_total,
            } => self.collected(
                *total,
                *deselected,
                report_lines,
                *workers,
                *estimated_total,
            ),
            RunEvent::TestStarted { .. } => {}
            RunEvent::TestFinished(result) => self.test_finished(result),
            RunEvent::Warning(_) => self.seen.add(Category::Warnings),
            RunEvent::Note(text) => {
                self.w.close_line();
                self.w.write_line(text, Style::PLAIN);
            }
        }
        self.w.flush();
    }

    fn session_started(&mut self, info: &SessionInfo) {
        self.session = Some(info.clone());
        if info.verbosity < 0 || self.header_shown {
            return;
        }
        self.header_shown = true;
        self.w
            .write_sep('=', Some("test session starts"), Style::BOLD);
        for line in &info.header {
            self.w.write_line(line, Style::PLAIN);
        }
    }

    fn collect_problem(&mut self, problem: &CollectProblem) {
        if problem.outcome == "skipped" {
            self.collect_skipped += 1;
            self.seen.add(Category::Skipped);
        } else {
            self.collect_errors += 1;
            self.seen.add(Category::Error);
        }
    }

    fn collected(
        &mut self,
        total: usize,
        deselected: u32,
        report_lines: &[String],
        workers: usize,
        estimated_total: f64,
    ) {
        self.total = Some(total);
        if deselected > 0 {
            self.seen.add(Category::Deselected);
        }
        if self.verbosity() >= 0 {
            self.show_collected(total, deselected);
            for line in report_lines {
                self.w.write_line(line, Style::PLAIN);
            }
            if workers > 0 {
                // xdist's last status line, in bold on a terminal as xdist rewrites it.
                let line = format!("{} [{}]", plural(workers, "worker"), plural(total, "item"));
                self.w.write_line(&line, self.status_style());
            }
            self.blank_before_progress = true;
        }
        if self.live_target != LiveTarget::Off {
            self.start_live(total, workers, estimated_total);
        }
    }

    /// pytest's `report_collect(final=True)`: `collected 10 items / 1 error / 3 deselected /
    /// 7 selected`.
    fn show_collected(&mut self, selected: usize, deselected: u32) {
        if self.collected_shown {
            return;
        }
        self.collected_shown = true;
        let deselected = deselected as usize;
        let collected = selected + deselected;
        let mut line = format!("collected {}", plural(collected, "item"));
        if self.collect_errors > 0 {
            line += &format!(" / {}", plural(self.collect_errors, "error"));
        }
        if deselected > 0 {
            line += &format!(" / {deselected} deselected");
        }
        if self.collect_skipped > 0 {
            line += &format!(" / {} skipped", self.collect_skipped);
        }
        if collected > selected {
            line += &format!(" / {selected} selected");
        }
        self.w.write_line(&line, self.status_style());
    }

    /// pytest rewrites its collecting line in bold on a terminal, and prints it plain in a log.
    fn status_style(&self) -> Style {
        if self.live_target == LiveTarget::Off {
            Style::PLAIN
        } else {
            Style::BOLD
        }
    }

    fn start_live(&mut self, total: usize, workers: usize, estimated_total: f64) {
        let target = match self.live_target {
            LiveTarget::Off => return,
            LiveTarget::Stdout => ProgressDrawTarget::stdout(),
            #[cfg(test)]
            LiveTarget::Hidden => ProgressDrawTarget::hidden(),
        };
        let bar = ProgressBar::with_draw_target(Some(total as u64), target);
        let failures = Arc::clone(&self.failures);
        let est_wall = estimated_total / workers.max(1) as f64;
        let color = self.w.has_markup();
        let status = move |state: &ProgressState, out: &mut dyn std::fmt::Write| {
            let done = state.pos() as usize;
            let total = state.len().unwrap_or(0) as usize;
            let elapsed = state.elapsed().as_secs_f64();
            let failed = failures.load(Ordering::Relaxed);
            let _ = out.write_str(&status_line(done, total, failed, elapsed, est_wall, color));
        };
        let style = |template: &str| {
            ProgressStyle::with_template(template)
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .with_key("status", status.clone())
        };
        let live = Live::new(bar, style("{status}"), style("{prefix}\n{status}"));
        live.bar.enable_steady_tick(LIVE_TICK);
        self.w.start_live(live);
    }

    fn test_finished(&mut self, result: &TestResult) {
        if result.outcome.is_failure() {
            self.failures.fetch_add(1, Ordering::Relaxed);
        }
        let verbosity = self.verbosity();
        for report in &result.reports {
            self.seen.add_str(&report.category);
            if report.letter.is_empty() && report.word.is_empty() {
                // A passed setup or teardown.
                continue;
            }
            self.reported.insert(result.id.clone());
            if self.blank_before_progress {
                self.blank_before_progress = false;
                self.w.write_line("", Style::PLAIN);
            }
            let style = report_style(report);
            if verbosity <= 0 {
                self.w.write(&report.letter, style);
                if !self.is_last_item() {
                    self.progress_if_past_edge();
                }
            } else {
                // xdist's verbose line: `[gw0] [ 50%] PASSED t.py::test_x `.
                self.w.ensure_newline();
                self.w.write(&format!("[{}]", result.worker), Style::PLAIN);
                let progress = format!("{} ", self.progress_message());
                self.w.write(&progress, Style::fg(Color::Cyan));
                self.w.write(&report.word, style);
                self.w.write(&format!(" {} ", result.id), Style::PLAIN);
                self.w.open_line = true;
            }
        }
        if let Some(bar) = self.w.live_bar() {
            bar.set_position(self.reported.len() as u64);
        }
    }

    fn is_last_item(&self) -> bool {
        self.reported.len() == self.total.unwrap_or(0)
    }

    /// pytest's `_get_progress_information_message` (the default "progress" style).
    fn progress_message(&self) -> String {
        match self.total {
            Some(total) if total > 0 => format!(" [{:3}%]", self.reported.len() * 100 / total),
            _ => " [100%]".to_owned(),
        }
    }

    fn progress_if_past_edge(&mut self) {
        let width = self.w.current_width();
        if width + PROGRESS_WIDTH + 1 >= self.w.width as isize {
            let color = self.seen.main_color(self.is_last_item());
            let msg = format!("{}\n", self.progress_message());
            self.w.write(&msg, Style::fg(color));
        }
    }

    /// The final percentage, right-aligned (pytest's `_write_progress_information_filling_space`).
    fn progress_filling_space(&mut self) {
        let color = self.seen.main_color(self.is_last_item());
        let msg = self.progress_message();
        let fill = self.w.width as isize - self.w.current_width() - 1;
        let padded = format!("{msg:>width$}", width = fill.max(0) as usize);
        self.w.write(&padded, Style::fg(color));
    }

    /// The end of the run: FAILURES, ERRORS, warnings, the short summary and the final line.
    pub fn finish(&mut self, summary: &RunSummary) {
        if let Some(session) = &summary.session {
            if self.session.is_none() {
                self.session_started(session);
            }
        }
        let mut settings = Settings::new(self.session.as_ref(), self.on_ci);
        // The run's maxfail is the agent's (shardex's -x/--maxfail beats addopts), not the
        // zygote's as it started.
        if let Some(session) = &summary.session {
            settings.maxfail = session.maxfail;
        }
        if self.header_shown && !self.collected_shown && settings.verbosity >= 0 {
            // Collection never finished (an error stopped it): pytest still says what it found.
            self.collect_errors = summary.collection_errors();
            self.collect_skipped = summary.collect_problems.len() - self.collect_errors;
            self.show_collected(summary.collected, summary.deselected);
        }
        // pytest writes the final percentage only when its test loop ran to the end.
        let stopped = summary.interrupted.is_some()
            || summary.session_exit.is_some()
            || summary.internal_error.is_some()
            || summary::should_fail(&settings, summary).is_some();
        if settings.verbosity <= 0 && !self.reported.is_empty() && !stopped {
            self.progress_filling_space();
        }
        self.w.end_live();
        let all_reported = self.is_last_item();
        summary::render(&mut self.w, &settings, summary, all_reported);
        self.w.flush_now();
    }
}

/// The live status line: `42/120 tests, 3 failed, 0:41 elapsed, about 0:55 left`.
pub(crate) fn status_line(
    done: usize,
    total: usize,
    failed: usize,
    elapsed: f64,
    est_wall: f64,
    color: bool,
) -> String {
    let mut failed_text = format!("{failed} failed");
    if color && failed > 0 {
        failed_text = format!("\x1b[31m\x1b[1m{failed_text}\x1b[0m");
    }
    let mut line = format!(
        "{done}/{total} tests, {failed_text}, {} elapsed",
        clock(elapsed)
    );
    if let Some(eta) = eta(done, total, elapsed, est_wall) {
        line += &format!(", about {} left", clock(eta));
    }
    line
}

/// Seconds left. The timing estimate (`est_wall`: estimated durations over the workers)
/// starts out trusted; as tests finish, the observed pace against it takes over.
pub(crate) fn eta(done: usize, total: usize, elapsed: f64, est_wall: f64) -> Option<f64> {
    if total == 0 {
        return None;
    }
    if done >= total {
        return Some(0.0);
    }
    let progress = done as f64 / total as f64;
    if est_wall > 0.0 {
        if done == 0 {
            return Some((est_wall - elapsed).max(0.0));
        }
        // >1 when running slower than the estimate said.
        let pace = elapsed / (progress * est_wall);
        let scale = progress * pace + (1.0 - progress);
        Some((1.0 - progress) * est_wall * scale)
    } else if done > 0 {
        Some(elapsed * (1.0 - progress) / progress)
    } else {
        None
    }
}
