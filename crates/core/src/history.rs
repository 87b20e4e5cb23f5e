//! Each test's recent outcomes, with the code each run ran on: what `shardex flaky` (passed
//! and failed on the same code) and `shardex slowest` (median durations) read.
//!
//! Kept in the timing store's file (`runs` and `history`, see `timing.rs`) for the last
//! [`HISTORY_RUNS`] runs, and on the shared queue's Redis per project (`queue/redis/`).
//! Both are read back as [`Evidence`]: per test, its outcome and duration in each run,
//! deduplicated by the run's id (a CI node writes the same run to both).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{Outcome, RunSummary, TestId, TestResult};

/// Runs whose outcomes are kept.
pub const HISTORY_RUNS: usize = 50;
/// Durations kept per test (its last runs): a median of ten is steady, and fifty numbers per
/// test would make the store of a 10,000-test suite several MB, read at every run.
pub const DURATIONS_KEPT: usize = 10;
/// A failure message is its first line, at most this many characters.
pub const MESSAGE_CHARS: usize = 300;

/// A test's outcome in one run. `PassedOnRetry` counts as both a pass and a failure on the
/// same code: the clearest flaky signal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RunOutcome {
    Passed,
    /// Failed, then passed on a retry within the run.
    PassedOnRetry,
    Failed,
    /// Setup or teardown failed.
    Error,
    Crashed,
    TimedOut,
    /// Skipped, xfailed, or xpassed (not strict): neither a pass nor a failure here.
    Skipped,
}

impl RunOutcome {
    /// The test's outcome in a run from its final result; `None` when it did not run.
    pub fn from_final(result: &TestResult) -> Option<Self> {
        Some(match result.outcome {
            Outcome::Passed if result.attempt > 0 => Self::PassedOnRetry,
            Outcome::Passed => Self::Passed,
            Outcome::Failed => Self::Failed,
            Outcome::Error => Self::Error,
            Outcome::Crashed => Self::Crashed,
            Outcome::TimedOut => Self::TimedOut,
            Outcome::Skipped | Outcome::XFailed | Outcome::XPassed if result.attempt > 0 => {
                // Failed before, then not a failure: a retry changed the outcome.
                Self::PassedOnRetry
            }
            Outcome::Skipped | Outcome::XFailed | Outcome::XPassed => Self::Skipped,
            Outcome::NotRun => return None,
        })
    }

    pub fn letter(self) -> char {
        match self {
            Self::Passed => 'P',
            Self::PassedOnRetry => 'R',
            Self::Failed => 'F',
            Self::Error => 'E',
            Self::Crashed => 'C',
            Self::TimedOut => 'T',
            Self::Skipped => 'S',
        }
    }

    pub fn from_letter(c: char) -> Option<Self> {
        Some(match c {
            'P' => Self::Passed,
            'R' => Self::PassedOnRetry,
            'F' => Self::Failed,
            'E' => Self::Error,
            'C' => Self::Crashed,
            'T' => Self::TimedOut,
            'S' => Self::Skipped,
            _ => return None,
        })
    }

    /// It passed in this run (at last).
    pub fn passed(self) -> bool {
        match self {
            Self::Passed | Self::PassedOnRetry => true,
            Self::Failed | Self::Error | Self::Crashed | Self::TimedOut | Self::Skipped => false,
        }
    }

    /// It failed in this run (at least once).
    pub fn failed(self) -> bool {
        match self {
            Self::PassedOnRetry | Self::Failed | Self::Error | Self::Crashed | Self::TimedOut => {
                true
            }
            Self::Passed | Self::Skipped => false,
        }
    }
}

/// Which run, on which code, when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunIdentity {
    /// Unique per run: `<unix secs>.<8 hex>`.
    pub id: String,
    /// What ran: `git:<commit, 12 hex>`, with `+<8 hex>` for uncommitted changes (a digest
    /// of their content), or `files:<12 hex>` (a digest of the test files) outside git.
    /// Empty: unknown, never the same as another run's.
    pub code: String,
    /// Unix seconds.
    pub at: u64,
}

impl RunIdentity {
    /// A new run's identity; `salt` (the process id, the clock's nanoseconds) makes the id
    /// unique among runs that start in the same second.
    pub fn new(code: String, at: u64, salt: &[u8]) -> Self {
        let mut h = Sha256::new();
        h.update(at.to_le_bytes());
        h.update(code.as_bytes());
        h.update(salt);
        let id = format!("{at}.{}", &hex(&h.finalize())[..8]);
        Self { id, code, at }
    }
}

/// A digest of `parts` (each length-prefixed, so no two lists collide), `chars` hex long.
pub fn digest<'a>(parts: impl IntoIterator<Item = &'a [u8]>, chars: usize) -> String {
    let mut h = Sha256::new();
    for part in parts {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part);
    }
    let mut out = hex(&h.finalize());
    out.truncate(chars);
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One test in one run.
#[derive(Clone, Debug, PartialEq)]
pub struct TestRun {
    pub id: TestId,
    pub outcome: RunOutcome,
    /// The final attempt's seconds.
    pub secs: f64,
    /// The first line of the (last) failure's message, when it failed at least once.
    pub failure: Option<String>,
}

/// What a run adds to the history: every test with a final result.
pub fn test_runs(summary: &RunSummary) -> Vec<TestRun> {
    summary
        .results
        .iter()
        .filter(|r| r.is_final())
        .filter_map(|r| {
            let outcome = RunOutcome::from_final(r)?;
            let failure = if r.outcome.is_failure() {
                Some(failure_line(r))
            } else if outcome.failed() {
                // Passed on a retry: the message of its last failed attempt.
                summary
                    .results
                    .iter()
                    .filter(|a| a.id == r.id && a.will_retry)
                    .max_by_key(|a| a.attempt)
                    .map(failure_line)
            } else {
                None
            };
            Some(TestRun {
                id: r.id.clone(),
                outcome,
                secs: r.duration,
                failure,
            })
        })
        .collect()
}

/// The first line of a failed attempt's message, as pytest's short summary shows it.
fn failure_line(result: &TestResult) -> String {
    let line = result
        .reports
        .iter()
        .filter(|r| r.outcome == "failed")
        .find_map(|r| r.crash_message.as_deref())
        .and_then(|m| m.lines().find(|l| !l.trim().is_empty()))
        .unwrap_or("failed");
    clip(line)
}

/// A message as kept: one line, at most `MESSAGE_CHARS` characters.
pub fn clip(message: &str) -> String {
    let line = message.lines().next().unwrap_or("").trim_end();
    match line.char_indices().nth(MESSAGE_CHARS) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line.to_owned(),
    }
}

/// A test's last failure: its message and when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastFailure {
    pub message: String,
    pub at: u64,
}

/// The history kept in the local store.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct History {
    /// Oldest first, at most `HISTORY_RUNS`.
    runs: Vec<RunIdentity>,
    tests: HashMap<TestId, TestHistory>,
}

/// One test in the local store.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TestHistory {
    /// One letter per run, the last for the latest run ('-': it did not run), aligned to the
    /// end of `History::runs` (a test first seen later has a shorter string).
    pub outcomes: String,
    /// The last `DURATIONS_KEPT` durations, one per letter other than '-', oldest first.
    pub durations: VecDeque<f64>,
    pub last_failure: Option<LastFailure>,
}

impl History {
    pub fn runs(&self) -> &[RunIdentity] {
        &self.runs
    }

    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    pub fn test(&self, id: &TestId) -> Option<&TestHistory> {
        self.tests.get(id)
    }

    pub fn tests(&self) -> impl Iterator<Item = (&TestId, &TestHistory)> {
        self.tests.iter()
    }

    /// Rebuilds a history from its stored parts; letters that are not outcomes become '-',
    /// strings longer than the runs are cut to them.
    pub fn from_parts(
        runs: Vec<RunIdentity>,
        tests: impl IntoIterator<Item = (TestId, TestHistory)>,
    ) -> Self {
        let mut history = Self {
            runs,
            tests: tests.into_iter().collect(),
        };
        for t in history.tests.values_mut() {
            t.outcomes = t
                .outcomes
                .chars()
                .map(|c| {
                    if RunOutcome::from_letter(c).is_some() {
                        c
                    } else {
                        '-'
                    }
                })
                .collect();
        }
        history.trim();
        history
    }

    /// Adds a run; a run without tests adds nothing.
    pub fn record_run(&mut self, run: RunIdentity, tests: &[TestRun]) {
        if tests.is_empty() {
            return;
        }
        let at = run.at;
        self.runs.push(run);
        for t in self.tests.values_mut() {
            t.outcomes.push('-');
        }
        for test in tests {
            let entry = self.tests.entry(test.id.clone()).or_default();
            if entry.outcomes.ends_with('-') {
                entry.outcomes.pop();
            }
            entry.outcomes.push(test.outcome.letter());
            if test.secs.is_finite() && test.secs >= 0.0 {
                entry.durations.push_back(test.secs);
            } else {
                entry.durations.push_back(0.0);
            }
            if let Some(message) = &test.failure {
                entry.last_failure = Some(LastFailure {
                    message: clip(message),
                    at,
                });
            }
        }
        self.trim();
    }

    /// Keeps the last `HISTORY_RUNS` runs; a test left with no run in them is forgotten, a
    /// failure message with no failure in them too.
    fn trim(&mut self) {
        if self.runs.len() > HISTORY_RUNS {
            self.runs.drain(..self.runs.len() - HISTORY_RUNS);
        }
        let keep = self.runs.len();
        self.tests.retain(|_, t| {
            let len = t.outcomes.chars().count();
            if len > keep {
                t.outcomes = t.outcomes.chars().skip(len - keep).collect();
            }
            let ran = t.outcomes.chars().filter(|&c| c != '-').count();
            while t.durations.len() > ran.min(DURATIONS_KEPT) {
                t.durations.pop_front();
            }
            let failed = t
                .outcomes
                .chars()
                .any(|c| RunOutcome::from_letter(c).is_some_and(RunOutcome::failed));
            if !failed {
                t.last_failure = None;
            }
            ran > 0
        });
    }

    /// Every test's runs, as evidence.
    pub fn evidence(&self) -> Evidence {
        let mut evidence = Evidence::default();
        let runs: Vec<usize> = self.runs.iter().map(|r| evidence.intern(r)).collect();
        for (id, t) in &self.tests {
            let offset = self.runs.len() - t.outcomes.chars().count();
            let ran: Vec<(usize, RunOutcome)> = t
                .outcomes
                .chars()
                .enumerate()
                .filter_map(|(i, c)| Some((runs[offset + i], RunOutcome::from_letter(c)?)))
                .collect();
            // The durations belong to the last runs it ran in.
            let first_timed = ran.len().saturating_sub(t.durations.len());
            let test = evidence.tests.entry(id.clone()).or_default();
            for (k, (run, outcome)) in ran.into_iter().enumerate() {
                let secs = k
                    .checked_sub(first_timed)
                    .and_then(|i| t.durations.get(i).copied());
                test.runs.entry(run).or_insert((outcome, secs));
            }
            if let Some(failure) = &t.last_failure {
                evidence.add_failure(id.clone(), failure.clone());
            }
        }
        evidence
    }
}

/// A test's outcome letters, run-length encoded for the store's file: a run of N > 1 equal
/// letters is `N` then the letter, runs separated by spaces (`PPPFP` is `3P F P`).
pub fn encode_outcomes(letters: &str) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut chars = letters.chars().peekable();
    while let Some(c) = chars.next() {
        let mut n = 1;
        while chars.peek() == Some(&c) {
            chars.next();
            n += 1;
        }
        parts.push(if n == 1 {
            c.to_string()
        } else {
            format!("{n}{c}")
        });
    }
    parts.join(" ")
}

/// The letters of [`encode_outcomes`]' form; a part that does not parse is one run that is
/// not known ('-'), a count is capped at `HISTORY_RUNS`.
pub fn decode_outcomes(encoded: &str) -> String {
    let mut out = String::new();
    for part in encoded.split_whitespace() {
        let digits = part.len() - part.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        let (count, letter) = part.split_at(digits);
        let mut letters = letter.chars();
        let (Some(c), None) = (letters.next(), letters.next()) else {
            out.push('-');
            continue;
        };
        let n = if count.is_empty() {
            1
        } else {
            count.parse::<usize>().unwrap_or(1).clamp(1, HISTORY_RUNS)
        };
        out.extend(std::iter::repeat_n(c, n));
    }
    out
}

/// Everything known of each test's recent runs, from one store or several.
#[derive(Clone, Debug, Default)]
pub struct Evidence {
    /// Every run seen, once: a test's runs are indices into it (10,000 tests × 50 runs
    /// would otherwise copy a run's id and code half a million times).
    runs: Vec<RunIdentity>,
    index: HashMap<String, usize>,
    tests: BTreeMap<TestId, TestEvidence>,
}

#[derive(Clone, Debug, Default)]
struct TestEvidence {
    /// By run: the same run read from two stores counts once.
    runs: BTreeMap<usize, (RunOutcome, Option<f64>)>,
    last_failure: Option<LastFailure>,
}

impl Evidence {
    /// The index of `run`; a run known with an unknown code learns it.
    fn intern(&mut self, run: &RunIdentity) -> usize {
        if let Some(&i) = self.index.get(&run.id) {
            if self.runs[i].code.is_empty() {
                self.runs[i].code.clone_from(&run.code);
            }
            return i;
        }
        self.runs.push(run.clone());
        self.index.insert(run.id.clone(), self.runs.len() - 1);
        self.runs.len() - 1
    }

    /// One test in one run (the first word on a run wins).
    pub fn add(&mut self, id: TestId, run: &RunIdentity, outcome: RunOutcome, secs: Option<f64>) {
        let i = self.intern(run);
        let test = self.tests.entry(id).or_default();
        test.runs.entry(i).or_insert((outcome, secs));
    }

    /// Keeps the latest failure message of each test.
    pub fn add_failure(&mut self, id: TestId, failure: LastFailure) {
        let test = self.tests.entry(id).or_default();
        if test
            .last_failure
            .as_ref()
            .is_none_or(|f| f.at <= failure.at)
        {
            test.last_failure = Some(failure);
        }
    }

    pub fn merge(&mut self, other: Evidence) {
        let ours: Vec<usize> = other.runs.iter().map(|r| self.intern(r)).collect();
        for (id, test) in other.tests {
            let mine = self.tests.entry(id.clone()).or_default();
            for (run, seen) in test.runs {
                mine.runs.entry(ours[run]).or_insert(seen);
            }
            if let Some(failure) = test.last_failure {
                self.add_failure(id, failure);
            }
        }
    }

    /// Distinct runs known.
    pub fn run_count(&self) -> usize {
        let runs: HashSet<usize> = self
            .tests
            .values()
            .flat_map(|t| t.runs.keys().copied())
            .collect();
        runs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tests.values().all(|t| t.runs.is_empty())
    }

    /// Tests that both passed and failed on the same code (a pass on a retry is both), the
    /// highest failure rate first.
    pub fn flaky(&self) -> Vec<FlakyTest> {
        let mut out: Vec<FlakyTest> = self
            .tests
            .iter()
            .filter_map(|(id, t)| flaky_test(&self.runs, id, t))
            .collect();
        out.sort_by(|a, b| {
            b.rate()
                .total_cmp(&a.rate())
                .then(b.runs.cmp(&a.runs))
                .then(a.id.cmp(&b.id))
        });
        out
    }

    /// Tests by their median duration, longest first, with the sum of every test's median.
    pub fn slowest(&self) -> (Vec<SlowTest>, f64) {
        let mut out: Vec<SlowTest> = self
            .tests
            .iter()
            .filter_map(|(id, t)| {
                let mut timed: Vec<(&RunIdentity, f64)> = t
                    .runs
                    .iter()
                    .filter_map(|(&run, &(_, secs))| Some((&self.runs[run], secs?)))
                    .collect();
                timed.sort_by(|a, b| a.0.at.cmp(&b.0.at).then(a.0.id.cmp(&b.0.id)));
                let start = timed.len().saturating_sub(DURATIONS_KEPT);
                let mut secs: Vec<f64> = timed[start..].iter().map(|&(_, secs)| secs).collect();
                let runs = secs.len();
                Some(SlowTest {
                    id: id.clone(),
                    median: median(&mut secs)?,
                    runs,
                    share: 0.0,
                })
            })
            .collect();
        let total: f64 = out.iter().map(|s| s.median).sum();
        for s in &mut out {
            s.share = if total > 0.0 { s.median / total } else { 0.0 };
        }
        out.sort_by(|a, b| b.median.total_cmp(&a.median).then(a.id.cmp(&b.id)));
        (out, total)
    }
}

fn flaky_test(runs: &[RunIdentity], id: &TestId, t: &TestEvidence) -> Option<FlakyTest> {
    let code = |run: usize| runs[run].code.as_str();
    // Runs of unknown code ("") are never grouped with one another.
    let mut by_code: HashMap<&str, (bool, bool)> = HashMap::new();
    for (&run, &(outcome, _)) in t.runs.iter().filter(|(&run, _)| !code(run).is_empty()) {
        let seen = by_code.entry(code(run)).or_default();
        seen.0 |= outcome.passed();
        seen.1 |= outcome.failed();
    }
    let flaky_codes: HashSet<&str> = by_code
        .into_iter()
        .filter(|(_, (passed, failed))| *passed && *failed)
        .map(|(code, _)| code)
        .collect();
    if flaky_codes.is_empty() {
        return None;
    }
    // The rate is over the runs on the code it was flaky on: a test that was broken, then
    // fixed, is not charged for the broken runs.
    let counted: Vec<RunOutcome> = t
        .runs
        .iter()
        .filter(|(&run, _)| flaky_codes.contains(code(run)))
        .map(|(_, &(outcome, _))| outcome)
        .filter(|o| o.passed() || o.failed())
        .collect();
    Some(FlakyTest {
        id: id.clone(),
        runs: counted.len(),
        failed: counted.iter().filter(|o| o.failed()).count(),
        passed_on_retry: counted
            .iter()
            .filter(|&&o| o == RunOutcome::PassedOnRetry)
            .count(),
        last_failure: t.last_failure.clone(),
    })
}

/// A test that both passed and failed on the same code.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FlakyTest {
    pub id: TestId,
    /// Runs on the code it was flaky on (skips left out).
    pub runs: usize,
    /// Of those, runs in which it failed at least once.
    pub failed: usize,
    /// Of those, runs in which it failed and then passed on a retry.
    pub passed_on_retry: usize,
    pub last_failure: Option<LastFailure>,
}

impl FlakyTest {
    /// Failed runs / runs, 0 to 1.
    pub fn rate(&self) -> f64 {
        if self.runs == 0 {
            0.0
        } else {
            self.failed as f64 / self.runs as f64
        }
    }
}

/// A test's median duration over its last runs, and its share of the sum of the medians.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SlowTest {
    pub id: TestId,
    pub median: f64,
    pub runs: usize,
    pub share: f64,
}

fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    })
}

/// The shared queue's form of a test's run: one line, `<run id> <letter> <secs>`.
pub fn remote_entry(run: &RunIdentity, test: &TestRun) -> String {
    format!(
        "{} {} {}",
        run.id,
        test.outcome.letter(),
        (test.secs.max(0.0) * 1e4).round() / 1e4
    )
}

/// Reads the shared queue's history of a project: `runs` (`<run id> <code>` with the run's
/// unix time), per test its lines (see [`remote_entry`]), and per test `<unix secs>
/// <message>` of its last failure. What does not parse is skipped: Redis is shared, its
/// data not trusted.
pub fn evidence_from_remote(
    runs: &[(String, u64)],
    entries: &[(String, String)],
    failures: &[(String, String)],
) -> Evidence {
    let codes: HashMap<&str, (&str, u64)> = runs
        .iter()
        .map(|(member, at)| {
            let (run, code) = member.split_once(' ').unwrap_or((member.as_str(), ""));
            (run, (code, *at))
        })
        .collect();
    let mut evidence = Evidence::default();
    for (id, lines) in entries {
        for line in lines.lines() {
            let mut parts = line.split(' ');
            let (Some(run), Some(letter), Some(secs)) = (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let Some(outcome) = letter.chars().next().and_then(RunOutcome::from_letter) else {
                continue;
            };
            // A run whose identity expired: its code is unknown, its time the id's.
            let (code, at) = codes.get(run).copied().unwrap_or_else(|| {
                let at = run.split('.').next().and_then(|s| s.parse().ok());
                ("", at.unwrap_or(0))
            });
            let secs = secs
                .parse::<f64>()
                .ok()
                .filter(|s| s.is_finite() && *s >= 0.0);
            let run = RunIdentity {
                id: run.to_owned(),
                code: code.to_owned(),
                at,
            };
            evidence.add(TestId::new(id.as_str()), &run, outcome, secs);
        }
    }
    for (id, value) in failures {
        if let Some((at, message)) = value.split_once(' ') {
            if let Ok(at) = at.parse() {
                evidence.add_failure(
                    TestId::new(id.as_str()),
                    LastFailure {
                        message: clip(message),
                        at,
                    },
                );
            }
        }
    }
    evidence
}

#[cfg(test)]
mod tests;
