//! The picture's content, format-free: lanes, bars laid out in time, idle gaps, the stop,
//! and the numbers of the title. `html` and `svg` only draw it.

use std::collections::HashMap;

use shardex_agent::RunSummary;
use shardex_core::Outcome;

use super::record::{Attempt, Recorded};

/// A bar's colour and legend entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum Kind {
    Passed,
    Failed,
    Error,
    Skipped,
    XFailed,
    XPassed,
    Crashed,
    TimedOut,
    /// A failed attempt that ran again (pytest-rerunfailures' "rerun").
    Rerun,
    /// A result that says the test did not run.
    NotRun,
}

impl Kind {
    pub const ALL: [Kind; 10] = [
        Kind::Passed,
        Kind::Failed,
        Kind::Error,
        Kind::Skipped,
        Kind::XFailed,
        Kind::XPassed,
        Kind::Crashed,
        Kind::TimedOut,
        Kind::Rerun,
        Kind::NotRun,
    ];

    fn of(outcome: Outcome, will_retry: bool) -> Self {
        match outcome {
            // A crash or timeout keeps its colour when it runs again (the next attempt is
            // outlined as a retry); a plain failure that reruns is pytest-rerunfailures' "rerun".
            Outcome::Failed | Outcome::Error if will_retry => Kind::Rerun,
            Outcome::Passed => Kind::Passed,
            Outcome::Failed => Kind::Failed,
            Outcome::Error => Kind::Error,
            Outcome::Skipped => Kind::Skipped,
            Outcome::XFailed => Kind::XFailed,
            Outcome::XPassed => Kind::XPassed,
            Outcome::Crashed => Kind::Crashed,
            Outcome::TimedOut => Kind::TimedOut,
            Outcome::NotRun => Kind::NotRun,
        }
    }

    /// The kind at `index` of `ALL`.
    pub fn from_index(index: usize) -> Option<Self> {
        Self::ALL.get(index).copied()
    }

    /// Its index in `ALL` (the HTML's data refers to kinds by it).
    pub fn index(self) -> usize {
        Kind::ALL.iter().position(|&k| k == self).unwrap_or(0)
    }

    /// The CSS class (`k-<code>`).
    pub fn code(self) -> &'static str {
        match self {
            Kind::Passed => "p",
            Kind::Failed => "f",
            Kind::Error => "e",
            Kind::Skipped => "s",
            Kind::XFailed => "xf",
            Kind::XPassed => "xp",
            Kind::Crashed => "c",
            Kind::TimedOut => "t",
            Kind::Rerun => "r",
            Kind::NotRun => "n",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Kind::Passed => "passed",
            Kind::Failed => "failed",
            Kind::Error => "error",
            Kind::Skipped => "skipped",
            Kind::XFailed => "xfailed",
            Kind::XPassed => "xpassed",
            Kind::Crashed => "crashed",
            Kind::TimedOut => "timed out",
            Kind::Rerun => "failed, rerun",
            Kind::NotRun => "not run",
        }
    }

    pub fn color(self) -> &'static str {
        match self {
            Kind::Passed => "#3a9d5d",
            Kind::Failed => "#d62728",
            Kind::Error => "#8c1c13",
            Kind::Skipped => "#b0b0b0",
            Kind::XFailed => "#9fb8d8",
            Kind::XPassed => "#e377c2",
            Kind::Crashed => "#4b0082",
            Kind::TimedOut => "#ff7f0e",
            Kind::Rerun => "#f2c12e",
            Kind::NotRun => "#7f7f7f",
        }
    }

    /// A glyph drawn after the bar, for what must not be missed among thousands of bars.
    pub fn marker(self) -> Option<&'static str> {
        match self {
            Kind::Crashed => Some("\u{2715}"),
            Kind::TimedOut => Some("\u{25d4}"),
            Kind::Passed
            | Kind::Failed
            | Kind::Error
            | Kind::Skipped
            | Kind::XFailed
            | Kind::XPassed
            | Kind::Rerun
            | Kind::NotRun => None,
        }
    }
}

/// One attempt on its lane, seconds since the recorder started.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Bar {
    pub lane: usize,
    pub start: f64,
    pub end: f64,
    pub kind: Kind,
    /// 0 for a test's first run.
    pub attempt: u32,
    /// Index into `Chart::tests`.
    pub test: usize,
    /// pytest's duration (setup + call + teardown); for an open one, how long it was open.
    pub duration: f64,
}

/// A worker's idle time between (or before/after) its attempts, long enough to show.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Gap {
    pub lane: usize,
    pub start: f64,
    pub end: f64,
}

#[derive(Clone, Debug, PartialEq)]
pub(super) struct Lane {
    pub label: String,
    pub attempts: usize,
    pub busy: f64,
    pub idle: f64,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct Chart {
    pub heading: String,
    pub facts: Vec<String>,
    /// The slowest tests with their longest attempt, slowest first.
    pub slowest: Vec<(String, f64)>,
    /// With a shared queue: each node's heading and its first lane (one group per node in
    /// `shardex report --timeline`, this node's alone in a node's own file).
    pub groups: Vec<(usize, String)>,
    pub lanes: Vec<Lane>,
    pub tests: Vec<String>,
    pub bars: Vec<Bar>,
    /// Tests the agent saw start that have no result: the `-x` stop ended their worker
    /// (they count as not run; one may not have begun in pytest). Not attempts.
    pub open: Vec<Bar>,
    pub gaps: Vec<Gap>,
    /// `-x`/`--maxfail`: when and why the run stopped dispatching.
    pub stop: Option<(f64, String)>,
    /// The axis' end: when the run ended.
    pub end: f64,
    /// The first attempt's start (before it: collection and the first fork).
    pub first_start: f64,
    pub makespan: f64,
    pub lower_bound: f64,
}

/// How many slow tests the title names.
const SLOWEST: usize = 5;

impl Chart {
    pub fn build(recorded: Recorded, summary: &RunSummary) -> Self {
        let workers = recorded
            .attempts
            .iter()
            .map(|a| a.worker + 1)
            .chain([recorded.workers, summary.workers, 1])
            .max()
            .unwrap_or(1);
        let mut chart = Chart {
            end: recorded.end,
            ..Chart::default()
        };
        chart.lay_out(&recorded.attempts, workers);
        chart.measure(workers);
        chart.stop = stop_at(&recorded, summary).zip(summary.stopped.clone());
        chart.describe(summary, workers);
        chart
    }

    /// Bars from attempts. Events carry no clock and results can arrive in batches, so each
    /// lane is packed backwards: an attempt ends when its result arrived or when the next
    /// one on its lane started, whichever is first, and lasts its own duration.
    fn lay_out(&mut self, attempts: &[Attempt], workers: usize) {
        let mut index: HashMap<&str, usize> = HashMap::new();
        for attempt in attempts {
            let next = index.len();
            index.entry(attempt.id.as_str()).or_insert_with(|| {
                self.tests.push(attempt.id.as_str().to_owned());
                next
            });
        }
        for lane in 0..workers {
            let mut next_start = f64::INFINITY;
            let on_lane: Vec<&Attempt> = attempts.iter().filter(|a| a.worker == lane).collect();
            let mut bars: Vec<Bar> = Vec::with_capacity(on_lane.len());
            // Open ones are last on their lane and end with the run.
            for a in on_lane.iter().rev() {
                let test = index[a.id.as_str()];
                let (Some(finished), Some(outcome)) = (a.finished, a.outcome) else {
                    let start = a.started.unwrap_or(self.end).min(next_start);
                    self.open.push(Bar {
                        lane,
                        start,
                        end: next_start.min(self.end),
                        kind: Kind::NotRun,
                        attempt: a.attempt,
                        test,
                        duration: next_start.min(self.end) - start,
                    });
                    next_start = start;
                    continue;
                };
                let end = finished.min(next_start);
                let start = (end - a.duration).max(0.0);
                next_start = start;
                bars.push(Bar {
                    lane,
                    start,
                    end,
                    kind: Kind::of(outcome, a.will_retry),
                    attempt: a.attempt,
                    test,
                    duration: a.duration,
                });
            }
            bars.reverse();
            self.bars.extend(bars);
        }
    }
}

impl Chart {
    /// Lanes' busy and idle time, the gaps worth showing, makespan and lower bound.
    fn measure(&mut self, workers: usize) {
        self.lanes = (0..workers)
            .map(|w| Lane {
                label: format!("gw{w}"),
                attempts: 0,
                busy: 0.0,
                idle: 0.0,
            })
            .collect();
        let first = self.bars.iter().map(|b| b.start).reduce(f64::min);
        let last = self.bars.iter().map(|b| b.end).reduce(f64::max);
        let (Some(first), Some(last)) = (first, last) else {
            self.first_start = self.end;
            return;
        };
        self.first_start = first;
        self.makespan = last - first;
        let (total, longest) = self.total_and_longest();
        self.lower_bound = (total / workers as f64).max(longest);
        // Gaps shorter than this are the normal hand-off between two tests.
        let threshold = (self.makespan / 200.0).max(0.02);
        let mut cursor = vec![first; workers];
        for bar in &self.bars {
            let lane = &mut self.lanes[bar.lane];
            let at = &mut cursor[bar.lane];
            if bar.start - *at >= threshold {
                self.gaps.push(Gap {
                    lane: bar.lane,
                    start: *at,
                    end: bar.start,
                });
            }
            lane.idle += (bar.start - *at).max(0.0);
            lane.busy += bar.end - bar.start;
            lane.attempts += 1;
            *at = at.max(bar.end);
        }
        for (lane, at) in cursor.into_iter().enumerate() {
            if last - at >= threshold {
                self.gaps.push(Gap {
                    lane,
                    start: at,
                    end: last,
                });
            }
            self.lanes[lane].idle += (last - at).max(0.0);
        }
    }

    /// The title's words: what ran, how long, against what bound, and what went wrong.
    fn describe(&mut self, summary: &RunSummary, workers: usize) {
        self.heading = format!(
            "shardex run: {} tests, {} attempts on {workers} worker{}",
            self.tests.len(),
            self.bars.len(),
            if workers == 1 { "" } else { "s" }
        );
        let (total, longest) = self.total_and_longest();
        let ratio = if self.lower_bound > 0.0 {
            format!(" = {:.2}\u{d7}", self.makespan / self.lower_bound)
        } else {
            String::new()
        };
        self.facts.push(format!(
            "wall {}; the first test started at {} (collection and starting the workers)",
            secs(summary.wall.as_secs_f64()),
            secs(self.first_start)
        ));
        self.facts.push(format!(
            "makespan {} / lower bound {}{ratio} (first test start to last test end; lower \
             bound = max(total test time {} / {workers} workers, longest attempt {}))",
            secs(self.makespan),
            secs(self.lower_bound),
            secs(total),
            secs(longest),
        ));
        self.facts.push(self.counts_line());
        let idle: f64 = self.lanes.iter().map(|l| l.idle).sum();
        if self.makespan > 0.0 {
            self.facts.push(format!(
                "outside tests {} in all ({:.1}% of {workers} \u{d7} makespan: waiting for work, \
                 and each test's hand-off); hatched: idle gaps of {} or more",
                secs(idle),
                100.0 * idle / (self.makespan * workers as f64),
                secs((self.makespan / 200.0).max(0.02)),
            ));
        }
        self.facts.extend(ending_lines(summary));
        if let Some(shared) = &summary.shared {
            self.groups = vec![(0, format!("node {} of {}", shared.node + 1, shared.nodes))];
            self.facts.push(format!(
                "shared queue, build {}: node {} of {}, these are this node's workers only \
                 (each node writes its own timeline)",
                shared.build,
                shared.node + 1,
                shared.nodes
            ));
        }
        self.slowest = self.slowest_tests();
    }

    /// The attempts' total time and the longest attempt (the lower bound's two terms).
    pub(super) fn total_and_longest(&self) -> (f64, f64) {
        let lengths = self.bars.iter().map(|b| b.end - b.start);
        (lengths.clone().sum(), lengths.fold(0.0, f64::max))
    }

    pub(super) fn counts_line(&self) -> String {
        let counts: Vec<String> = Kind::ALL
            .iter()
            .filter_map(|&kind| {
                let n = self.bars.iter().filter(|b| b.kind == kind).count();
                (n > 0).then(|| format!("{n} {}", kind.label()))
            })
            .collect();
        if counts.is_empty() {
            "no test ran".to_owned()
        } else {
            format!("attempts: {}", counts.join(", "))
        }
    }

    pub(super) fn slowest_tests(&self) -> Vec<(String, f64)> {
        let mut longest: HashMap<usize, f64> = HashMap::new();
        for bar in &self.bars {
            let d = longest.entry(bar.test).or_insert(0.0);
            *d = d.max(bar.duration);
        }
        let mut all: Vec<(usize, f64)> = longest.into_iter().collect();
        all.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        all.into_iter()
            .take(SLOWEST)
            .map(|(test, d)| (self.tests[test].clone(), d))
            .collect()
    }
}

/// When `-x`/`--maxfail N` stopped the run: the arrival of the Nth failure. N is shardex's
/// option, else the number in pytest's words ("stopping after 2 failures": `-x` may come
/// from `addopts`). A job stopped by another node ("stopping: the job …") has no such moment
/// here.
fn stop_at(recorded: &Recorded, summary: &RunSummary) -> Option<f64> {
    let count = summary.stopped.as_ref()?.strip_prefix("stopping after ")?;
    let n = recorded.maxfail.or_else(|| {
        count
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .and_then(|w| w.parse().ok())
    })?;
    let index = usize::try_from(n).ok()?.checked_sub(1)?;
    recorded.failures.get(index).copied()
}

/// How the run ended, when not on its own: `-x`, an interrupt, tests that never ran.
fn ending_lines(summary: &RunSummary) -> Vec<String> {
    let mut lines = Vec::new();
    if let Some(stopped) = &summary.stopped {
        lines.push(format!(
            "stopped early (-x/--maxfail): {stopped}; the red line"
        ));
    }
    if let Some(job) = summary.shared.as_ref().and_then(|s| s.job_stopped.as_ref()) {
        lines.push(format!("the job stopped: {job}"));
    }
    if let Some(signal) = &summary.interrupted {
        lines.push(format!("interrupted by {signal}"));
    }
    if !summary.not_run.is_empty() {
        lines.push(format!("{} tests not run", summary.not_run.len()));
    }
    lines
}

/// Seconds for people: `2.41 s`, `37 ms`, `0.42 ms`.
pub(super) fn secs(s: f64) -> String {
    if s >= 10.0 {
        format!("{s:.1} s")
    } else if s >= 1.0 {
        format!("{s:.2} s")
    } else if s >= 0.001 {
        format!("{:.0} ms", s * 1000.0)
    } else {
        format!("{:.2} ms", s * 1000.0)
    }
}
