//! The timeline's recorder: stamps the run's events as they arrive (events carry no clock)
//! and writes the picture when the run ends.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::Instant;

use shardex_agent::{RunEvent, RunSummary};
use shardex_core::{Outcome, TestId};

use super::chart::Chart;
use super::{html, svg, TimelineFormat};

/// The picture in `format`.
pub(super) fn render(chart: &Chart, format: TimelineFormat) -> String {
    match format {
        TimelineFormat::Html => html::render(chart),
        TimelineFormat::Svg => svg::render(chart),
    }
}

/// Writes `text` to `path`, making its folders.
pub(super) fn write(path: &Path, text: &str) -> Result<(), String> {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| std::fs::write(path, text))
        .map_err(|err| format!("cannot write --timeline {}: {err}", path.display()))
}

/// One attempt as this process saw it: seconds since the recorder started.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Attempt {
    pub worker: usize,
    pub id: TestId,
    /// `None`: started and never finished (the run was interrupted or stopped first).
    pub outcome: Option<Outcome>,
    pub attempt: u32,
    pub will_retry: bool,
    /// pytest's setup + call + teardown (the agent's clock for a crash or timeout).
    pub duration: f64,
    /// When `TestStarted` arrived.
    pub started: Option<f64>,
    /// When `TestFinished` arrived (`None` while unfinished).
    pub finished: Option<f64>,
}

/// What the recorder knows when the run ends, for `Chart::build`.
#[derive(Debug, Default)]
pub(super) struct Recorded {
    pub attempts: Vec<Attempt>,
    pub workers: usize,
    /// When each final failure arrived (`-x`/`--maxfail` stops at the Nth).
    pub failures: Vec<f64>,
    /// `-x`/`--maxfail` from shardex's options (`None` when not given there).
    pub maxfail: Option<u32>,
    /// When the run ended (the recorder's `finish`).
    pub end: f64,
}

#[derive(Debug)]
pub struct Recorder {
    /// Where `finish` writes the picture; `None`: only the chart is wanted (a node of a
    /// shared queue leaves it with its report for `shardex report --timeline`).
    path: Option<PathBuf>,
    format: TimelineFormat,
    origin: Instant,
    /// `origin` as Unix milliseconds: nodes' charts are laid side by side by it.
    origin_ms: u64,
    /// Per worker, tests started and not finished, oldest first.
    running: Vec<VecDeque<(TestId, f64)>>,
    recorded: Recorded,
}

impl Recorder {
    /// `path`'s extension picks the format (the settings refused any other than .html and
    /// .svg); `maxfail`: the run's `-x`/`--maxfail` (to place the stop). The clock starts now.
    pub fn new(path: PathBuf, maxfail: Option<u32>) -> Self {
        let mut recorder = Self::unwritten(maxfail);
        recorder.format = TimelineFormat::from_path(&path).unwrap_or(TimelineFormat::Html);
        recorder.path = Some(path);
        recorder
    }

    /// A recorder that writes no file: `finish` only returns the chart.
    pub fn unwritten(maxfail: Option<u32>) -> Self {
        Self {
            format: TimelineFormat::Html,
            path: None,
            origin: Instant::now(),
            origin_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            running: Vec::new(),
            recorded: Recorded {
                maxfail: maxfail.filter(|&n| n > 0),
                ..Recorded::default()
            },
        }
    }

    pub fn handle(&mut self, event: &RunEvent) {
        let now = self.origin.elapsed().as_secs_f64();
        self.handle_at(event, now);
    }

    pub(super) fn handle_at(&mut self, event: &RunEvent, now: f64) {
        match event {
            RunEvent::Collected { workers, .. } => {
                self.recorded.workers = self.recorded.workers.max(*workers);
            }
            RunEvent::TestStarted { id, worker } => {
                self.lane(worker.0).push_back((id.clone(), now));
            }
            RunEvent::TestFinished(result) => {
                // A worker runs one test at a time: tests started before this one on its
                // lane and not finished were taken back before they ran.
                let lane = self.lane(result.worker.0);
                let started = lane.iter().position(|(id, _)| *id == result.id).map(|at| {
                    let started = lane[at].1;
                    lane.drain(..=at);
                    started
                });
                self.recorded.attempts.push(Attempt {
                    worker: result.worker.0,
                    id: result.id.clone(),
                    outcome: Some(result.outcome),
                    attempt: result.attempt,
                    will_retry: result.will_retry,
                    duration: result.duration,
                    started,
                    finished: Some(now),
                });
                if result.is_final() && result.outcome.is_failure() {
                    self.recorded.failures.push(now);
                }
            }
            RunEvent::SessionStarted(_)
            | RunEvent::CollectProblem(_)
            | RunEvent::Warning(_)
            | RunEvent::Note(_) => {}
        }
    }

    fn lane(&mut self, worker: usize) -> &mut VecDeque<(TestId, f64)> {
        if self.running.len() <= worker {
            self.running.resize_with(worker + 1, VecDeque::new);
        }
        &mut self.running[worker]
    }

    /// Writes the picture, if it has a path (a failure is one warning line: the run's
    /// result stands); returns the chart as a node's report carries it (`job::node_data`).
    pub fn finish(self, summary: &RunSummary) -> String {
        let path = self.path.clone();
        let format = self.format;
        let origin_ms = self.origin_ms;
        let chart = self.chart(summary);
        if let Some(path) = path {
            if let Err(why) = write(&path, &render(&chart, format)) {
                eprintln!("shardex: warning: {why}");
            }
        }
        super::job::node_data(&chart, origin_ms)
    }

    pub(super) fn chart(self, summary: &RunSummary) -> Chart {
        let end = self.origin.elapsed().as_secs_f64();
        Chart::build(self.into_recorded(end), summary)
    }

    /// What was recorded, with the attempts still running at `end` as unfinished ones.
    pub(super) fn into_recorded(mut self, end: f64) -> Recorded {
        for (worker, lane) in self.running.into_iter().enumerate() {
            // Only the newest can be running: older ones were taken back. So was one that
            // finished later elsewhere.
            let Some((id, started)) = lane.into_iter().last() else {
                continue;
            };
            let earlier = self.recorded.attempts.iter().filter(|a| a.id == id);
            if earlier
                .clone()
                .any(|a| a.finished.is_some_and(|f| f > started))
            {
                continue;
            }
            let attempt = u32::try_from(earlier.count()).unwrap_or(u32::MAX);
            self.recorded.attempts.push(Attempt {
                worker,
                id,
                outcome: None,
                attempt,
                will_retry: false,
                duration: (end - started).max(0.0),
                started: Some(started),
                finished: None,
            });
        }
        self.recorded.end = end;
        self.recorded
    }
}
