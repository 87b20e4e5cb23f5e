//! TimingStore: seconds per test (setup + call + teardown), loaded from timing sources and
//! the store of previous runs; estimates for tests never seen.
//!
//! Times from reports without a `file` attribute (pytest's default xunit2) cannot be turned
//! back into nodeids, so they are kept under pytest's mangled `classname::name` and a lookup
//! by nodeid falls back to that key.
//!
//! The store's file also keeps each test's recent outcomes (`runs` and `history`, see
//! `history.rs`): fields a reader of version 1 that predates them ignores.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

use crate::errors::{JunitReadError, TimingError};
use crate::history::{
    decode_outcomes, encode_outcomes, History, LastFailure, RunIdentity, TestHistory,
};
use crate::junit::read::{mangled_key, read_case_times, CaseKey};
use crate::test_id::TestId;

/// Estimate for a test when nothing at all is known.
pub const DEFAULT_ESTIMATE_SECS: f64 = 0.1;

/// Version of `.shardex/timings.json` this build reads and writes.
pub const STORE_VERSION: u64 = 1;

#[derive(Clone, Debug, Default)]
pub struct TimingStore {
    durations: HashMap<TestId, f64>,
    /// `classname::name` -> seconds, from reports without `file`. Invariant: an entry in
    /// `durations` is never older than the mangled entry of its nodeid, so exact wins.
    mangled: HashMap<String, f64>,
    /// Recent outcomes, kept in the same file (only shardex's own store has them).
    history: History,
}

impl TimingStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Loads shardex's own store (`.shardex/timings.json`) with its history; a missing file
    /// is an empty store. A history this build cannot read is left out (it is advisory; the
    /// durations stay usable).
    pub fn load_store(path: &Path) -> Result<Self, TimingError> {
        let Some(text) = read_store(path)? else {
            return Ok(Self::default());
        };
        match parse_store::<StoreWithHistory>(&text) {
            Ok(file) => {
                let mut store = Self::from_durations(file.tests, file.mangled);
                store.history = file_history(file.runs, file.history);
                Ok(store)
            }
            Err(_) => Self::parse_durations(path, &text),
        }
    }

    /// Loads the store's durations only (the history is skipped, not built): for estimates,
    /// before a run. Not for a store that is saved again: that would drop the history.
    pub fn load_durations(path: &Path) -> Result<Self, TimingError> {
        match read_store(path)? {
            Some(text) => Self::parse_durations(path, &text),
            None => Ok(Self::default()),
        }
    }

    fn parse_durations(path: &Path, text: &str) -> Result<Self, TimingError> {
        let file: StoreIn = parse_store(text).map_err(|reason| malformed(path, reason))?;
        Ok(Self::from_durations(file.tests, file.mangled))
    }

    fn from_durations(tests: Durations, mangled: Durations) -> Self {
        Self {
            durations: tests
                .0
                .into_iter()
                .map(|(k, v)| (TestId::new(k), v))
                .collect(),
            mangled: mangled.0.into_iter().collect(),
            history: History::default(),
        }
    }

    pub fn history(&self) -> &History {
        &self.history
    }

    pub fn history_mut(&mut self) -> &mut History {
        &mut self.history
    }

    /// Writes shardex's own store atomically: a temporary file in the same directory
    /// renamed over `path`. Creates the directory. Tests are sorted, so the file diffs well.
    pub fn save_store(&self, path: &Path) -> Result<(), TimingError> {
        let write_error = |source| TimingError::Write {
            path: path.to_owned(),
            source,
        };
        let file = StoreOut {
            version: STORE_VERSION,
            tests: sorted_rounded(self.durations.iter().map(|(k, &v)| (k.as_str(), v))),
            mangled: sorted_rounded(self.mangled.iter().map(|(k, &v)| (k.as_str(), v))),
            runs: self.history.runs(),
            history: self
                .history
                .tests()
                .map(|(id, t)| (id.as_str(), TestHistoryOut::new(t)))
                .collect(),
        };
        let mut text = serde_json::to_string_pretty(&file)
            .map_err(|e| write_error(io::Error::new(io::ErrorKind::InvalidData, e)))?;
        text.push('\n');
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
            _ => PathBuf::from("."),
        };
        fs::create_dir_all(&dir).map_err(write_error)?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "timings.json".to_owned());
        let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
        let written = (|| {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            fs::rename(&tmp, path)
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(write_error(e));
        }
        Ok(())
    }

    /// Adds a `--timings` source: a JUnit XML file, a folder of them, a pytest-split
    /// `.test_durations` file, or a shardex store. Later sources win.
    ///
    /// A folder is searched recursively for `*.xml`, read in sorted path order; XML files
    /// whose root is not `<testsuites>`/`<testsuite>` (a `coverage.xml`) are skipped there.
    /// A file is recognised by its content, not its name.
    pub fn merge_source(&mut self, path: &Path) -> Result<(), TimingError> {
        let meta = fs::metadata(path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => TimingError::Missing {
                path: path.to_owned(),
            },
            _ => read_error(path, e),
        })?;
        let mut entries = Vec::new();
        if meta.is_dir() {
            let mut files = Vec::new();
            collect_xml(path, &mut files)?;
            files.sort();
            for file in files {
                let text = read_text(&file)?;
                match read_case_times(&text) {
                    Ok(times) => entries.extend(times.into_iter().map(|t| (t.key, t.secs))),
                    Err(JunitReadError::NotJunit { .. }) => {}
                    Err(e) => return Err(malformed(&file, e.to_string())),
                }
            }
        } else {
            let text = read_text(path)?;
            entries = parse_source(&text).map_err(|reason| malformed(path, reason))?;
        }
        self.apply(entries);
        Ok(())
    }

    /// Applies one source's entries, in order, later ones winning.
    fn apply(&mut self, entries: Vec<(CaseKey, f64)>) {
        let mut exact: HashMap<TestId, (f64, usize)> = HashMap::new();
        let mut mangled: HashMap<String, (f64, usize)> = HashMap::new();
        for (seq, (key, secs)) in entries.into_iter().enumerate() {
            match key {
                CaseKey::NodeId(id) => exact.insert(id, (secs, seq)),
                CaseKey::Mangled(key) => mangled.insert(key, (secs, seq)),
            };
        }
        if !mangled.is_empty() {
            // A newer mangled time replaces the exact time of every nodeid it stands for.
            self.durations
                .retain(|id, _| !mangled.contains_key(&mangled_key(id.as_str())));
            exact.retain(|id, (_, seq)| {
                !matches!(mangled.get(&mangled_key(id.as_str())), Some((_, mseq)) if mseq > seq)
            });
        }
        self.durations
            .extend(exact.into_iter().map(|(id, (secs, _))| (id, secs)));
        self.mangled
            .extend(mangled.into_iter().map(|(key, (secs, _))| (key, secs)));
    }

    /// Adds every duration `other` knows, replacing ours where both know a test.
    pub fn merge(&mut self, other: TimingStore) {
        self.durations.extend(other.durations);
        self.mangled.extend(other.mangled);
    }

    /// Records a measured duration; negative or non-finite values are ignored.
    pub fn record(&mut self, id: TestId, secs: f64) {
        if secs.is_finite() && secs >= 0.0 {
            self.durations.insert(id, secs);
        }
    }

    /// The known duration of `id`: its own, else the one under its mangled key.
    pub fn get(&self, id: &TestId) -> Option<f64> {
        self.durations.get(id).copied().or_else(|| {
            if self.mangled.is_empty() {
                None
            } else {
                self.mangled.get(&mangled_key(id.as_str())).copied()
            }
        })
    }

    /// Number of entries: nodeids plus mangled keys.
    pub fn len(&self) -> usize {
        self.durations.len() + self.mangled.len()
    }

    pub fn is_empty(&self) -> bool {
        self.durations.is_empty() && self.mangled.is_empty()
    }

    /// Estimated seconds for each id, in order: known duration, else the median of its
    /// file's known tests, else the global median, else `DEFAULT_ESTIMATE_SECS`.
    ///
    /// "Known tests" are the store's nodeids plus the ids given here that are known by
    /// their mangled key (the global median also counts every mangled entry).
    pub fn estimates(&self, ids: &[TestId]) -> Vec<f64> {
        let known: Vec<Option<f64>> = ids.iter().map(|id| self.get(id)).collect();
        let unknown_files: HashSet<&str> = ids
            .iter()
            .zip(&known)
            .filter(|(_, k)| k.is_none())
            .map(|(id, _)| id.file())
            .collect();
        if unknown_files.is_empty() {
            return known.into_iter().flatten().collect();
        }
        let mut by_file: HashMap<&str, Vec<f64>> =
            unknown_files.iter().map(|&f| (f, Vec::new())).collect();
        for (id, &secs) in &self.durations {
            if let Some(group) = by_file.get_mut(id.file()) {
                group.push(secs);
            }
        }
        let mut seen_mangled: HashSet<&TestId> = HashSet::new();
        for (id, k) in ids.iter().zip(&known) {
            if let (Some(secs), Some(group)) = (k, by_file.get_mut(id.file())) {
                if !self.durations.contains_key(id) && seen_mangled.insert(id) {
                    group.push(*secs);
                }
            }
        }
        let file_median: HashMap<&str, Option<f64>> = by_file
            .into_iter()
            .map(|(file, mut group)| (file, median(&mut group)))
            .collect();
        let mut global: Option<f64> = None;
        let mut global_median = || {
            *global.get_or_insert_with(|| {
                let mut all: Vec<f64> = self
                    .durations
                    .values()
                    .chain(self.mangled.values())
                    .copied()
                    .collect();
                median(&mut all).unwrap_or(DEFAULT_ESTIMATE_SECS)
            })
        };
        ids.iter()
            .zip(known)
            .map(|(id, k)| {
                k.or_else(|| file_median.get(id.file()).copied().flatten())
                    .unwrap_or_else(&mut global_median)
            })
            .collect()
    }
}

fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let len = values.len();
    let (below, &mut upper, _) = values.select_nth_unstable_by(len / 2, f64::total_cmp);
    if len % 2 == 1 {
        return Some(upper);
    }
    let lower = below
        .iter()
        .copied()
        .max_by(f64::total_cmp)
        .unwrap_or(upper);
    Some((lower + upper) / 2.0)
}

fn sorted_rounded<'a>(entries: impl Iterator<Item = (&'a str, f64)>) -> BTreeMap<&'a str, f64> {
    // Microseconds are plenty and keep the file short.
    entries.map(|(k, v)| (k, (v * 1e6).round() / 1e6)).collect()
}

fn read_error(path: &Path, source: io::Error) -> TimingError {
    TimingError::Io {
        path: path.to_owned(),
        source,
    }
}

fn malformed(path: &Path, reason: impl Into<String>) -> TimingError {
    TimingError::Malformed {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

fn read_text(path: &Path) -> Result<String, TimingError> {
    match fs::read(path) {
        Ok(bytes) => String::from_utf8(bytes).map_err(|e| {
            malformed(
                path,
                format!("not UTF-8 text (byte {})", e.utf8_error().valid_up_to()),
            )
        }),
        Err(e) => Err(read_error(path, e)),
    }
}

/// Every `*.xml` file below `dir`. Symlinked files are followed, symlinked folders are not
/// (no loops).
fn collect_xml(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), TimingError> {
    let entries = fs::read_dir(dir).map_err(|e| read_error(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| read_error(dir, e))?;
        let path = entry.path();
        let kind = entry.file_type().map_err(|e| read_error(&path, e))?;
        if kind.is_dir() {
            collect_xml(&path, out)?;
        } else if path.extension().is_some_and(|ext| ext == "xml") && path.is_file() {
            out.push(path);
        }
    }
    Ok(())
}

/// Parses a timing file by content: JUnit XML, a shardex store, or pytest-split's
/// `.test_durations` (an object, or the older list of `[nodeid, secs]` pairs).
fn parse_source(text: &str) -> Result<Vec<(CaseKey, f64)>, String> {
    let body = text.strip_prefix('\u{feff}').unwrap_or(text).trim_start();
    match body.chars().next() {
        None => Err("the file is empty".to_owned()),
        Some('<') => read_case_times(body)
            .map(|times| times.into_iter().map(|t| (t.key, t.secs)).collect())
            .map_err(|e| e.to_string()),
        Some('{') => {
            let value: serde_json::Value = serde_json::from_str(body).map_err(json_reason)?;
            if value.get("version").is_some() {
                let file: StoreIn = parse_store(body)?;
                let exact = file
                    .tests
                    .0
                    .into_iter()
                    .map(|(k, v)| (CaseKey::NodeId(TestId::new(k)), v));
                let mangled = file
                    .mangled
                    .0
                    .into_iter()
                    .map(|(k, v)| (CaseKey::Mangled(k), v));
                Ok(exact.chain(mangled).collect())
            } else {
                let durations: Durations = serde_json::from_str(body).map_err(json_reason)?;
                Ok(node_entries(durations))
            }
        }
        Some('[') => {
            let pairs: DurationPairs = serde_json::from_str(body).map_err(json_reason)?;
            Ok(node_entries(pairs.0))
        }
        Some(c) => Err(format!(
            "expected JUnit XML (<testsuites>) or a JSON object, found {c:?} at the start"
        )),
    }
}

fn node_entries(durations: Durations) -> Vec<(CaseKey, f64)> {
    durations
        .0
        .into_iter()
        .map(|(k, v)| (CaseKey::NodeId(TestId::new(k)), v))
        .collect()
}

fn parse_store<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, String> {
    // The version first (skipping the rest without building it), so a newer layout is
    // reported as such rather than as whatever field it changed.
    #[derive(Deserialize)]
    struct Version {
        version: Option<serde_json::Value>,
    }
    let not_object = || "a shardex timings file is a JSON object".to_owned();
    let version = match serde_json::from_str::<Version>(text) {
        // serde would also take a struct from an array.
        Ok(_) if !text.trim_start().starts_with('{') => return Err(not_object()),
        Ok(v) => v.version,
        Err(e) if e.is_data() => return Err(not_object()),
        Err(e) => return Err(json_reason(e)),
    };
    match version {
        Some(v) if v.as_u64() == Some(STORE_VERSION) => {}
        Some(v) => {
            return Err(format!(
                "unsupported version {v} (this shardex reads version {STORE_VERSION})"
            ))
        }
        None => return Err("missing \"version\"".to_owned()),
    }
    serde_json::from_str(text).map_err(json_reason)
}

/// serde_json's message as `line N: what`, the form used for every timing file error.
fn json_reason(e: serde_json::Error) -> String {
    let msg = e.to_string();
    if e.line() == 0 {
        return msg;
    }
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    let what = msg.strip_suffix(&suffix).unwrap_or(&msg);
    format!("line {}: {what}", e.line())
}

#[derive(Serialize)]
struct StoreOut<'a> {
    version: u64,
    tests: BTreeMap<&'a str, f64>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    mangled: BTreeMap<&'a str, f64>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    runs: &'a [RunIdentity],
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    history: BTreeMap<&'a str, TestHistoryOut<'a>>,
}

/// A test's history in the file, short (a 10,000-test suite's store is read at every run):
/// outcomes run-length encoded (`48P F P`: see `history::encode_outcomes`), durations as one
/// line of milliseconds.
#[derive(Serialize)]
struct TestHistoryOut<'a> {
    outcomes: String,
    ms: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    failure: Option<&'a LastFailure>,
}

impl<'a> TestHistoryOut<'a> {
    fn new(t: &'a TestHistory) -> Self {
        let durations: Vec<String> = t
            .durations
            .iter()
            .map(|d| ((d * 1e4).round() / 10.0).to_string())
            .collect();
        Self {
            outcomes: encode_outcomes(&t.outcomes),
            ms: durations.join(" "),
            failure: t.last_failure.as_ref(),
        }
    }
}

#[derive(Deserialize)]
struct TestHistoryIn {
    outcomes: String,
    #[serde(default)]
    ms: String,
    #[serde(default)]
    failure: Option<LastFailure>,
}

/// Version 1 of the store; unknown fields are ignored so a newer writer can add some.
#[derive(Deserialize)]
struct StoreIn {
    tests: Durations,
    #[serde(default)]
    mangled: Durations,
}

/// The store with its history (`history.rs`), read typed: one pass over the file.
#[derive(Deserialize)]
struct StoreWithHistory {
    tests: Durations,
    #[serde(default)]
    mangled: Durations,
    #[serde(default)]
    runs: Vec<RunIdentity>,
    #[serde(default)]
    history: HashMap<String, TestHistoryIn>,
}

fn file_history(runs: Vec<RunIdentity>, tests: HashMap<String, TestHistoryIn>) -> History {
    History::from_parts(
        runs,
        tests.into_iter().map(|(id, t)| {
            let durations =
                t.ms.split_whitespace()
                    .filter_map(|d| d.parse::<f64>().ok())
                    .filter(|d| d.is_finite() && *d >= 0.0)
                    .map(|ms| ms / 1e3)
                    .collect();
            let history = TestHistory {
                outcomes: decode_outcomes(&t.outcomes),
                durations,
                last_failure: t.failure,
            };
            (TestId::new(id), history)
        }),
    )
}

fn read_store(path: &Path) -> Result<Option<String>, TimingError> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(read_error(path, e)),
    }
}

/// `{nodeid: secs}` in file order, each value checked with the key named in the error.
#[derive(Default)]
struct Durations(Vec<(String, f64)>);

/// Reads one duration, failing where the value is (so serde_json reports its line) with
/// the test id in the message.
struct Secs<'k>(&'k str);

impl<'de> de::DeserializeSeed<'de> for Secs<'_> {
    type Value = f64;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<f64, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl Visitor<'_> for Secs<'_> {
    type Value = f64;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a number for {:?}", self.0)
    }
    fn visit_f64<E: de::Error>(self, secs: f64) -> Result<f64, E> {
        if secs >= 0.0 && secs.is_finite() {
            Ok(secs)
        } else {
            Err(E::custom(format!(
                "expected a duration >= 0 for {:?}, found {secs}",
                self.0
            )))
        }
    }
    fn visit_i64<E: de::Error>(self, secs: i64) -> Result<f64, E> {
        self.visit_f64(secs as f64)
    }
    fn visit_u64<E: de::Error>(self, secs: u64) -> Result<f64, E> {
        self.visit_f64(secs as f64)
    }
}

impl<'de> Deserialize<'de> for Durations {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Durations;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of test ids to seconds")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Durations, A::Error> {
                let mut out = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    let secs = map.next_value_seed(Secs(&key))?;
                    out.push((key, secs));
                }
                Ok(Durations(out))
            }
        }
        deserializer.deserialize_map(V)
    }
}

/// pytest-split's older format: `[[nodeid, secs], ...]`.
struct DurationPairs(Durations);

impl<'de> Deserialize<'de> for DurationPairs {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = DurationPairs;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of [test id, seconds] pairs")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<DurationPairs, A::Error> {
                let mut out = Vec::new();
                while let Some(pair) = seq.next_element::<PairSeed>()? {
                    out.push(pair.0);
                }
                Ok(DurationPairs(Durations(out)))
            }
        }
        deserializer.deserialize_seq(V)
    }
}

/// One `[nodeid, secs]` pair of the older pytest-split format.
struct PairSeed((String, f64));

impl<'de> Deserialize<'de> for PairSeed {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = PairSeed;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a [test id, seconds] pair")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<PairSeed, A::Error> {
                let key: String = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::invalid_length(0, &self))?;
                let secs = seq
                    .next_element_seed(Secs(&key))?
                    .ok_or_else(|| de::Error::invalid_length(1, &self))?;
                if seq.next_element::<de::IgnoredAny>()?.is_some() {
                    return Err(de::Error::invalid_length(3, &self));
                }
                Ok(PairSeed((key, secs)))
            }
        }
        deserializer.deserialize_seq(V)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn merge_prefers_the_other_store() {
        let mut base = TimingStore::new();
        base.record(TestId::new("a.py::x"), 1.0);
        base.record(TestId::new("a.py::y"), 2.0);
        let mut other = TimingStore::new();
        other.record(TestId::new("a.py::y"), 5.0);
        base.merge(other);
        assert_eq!(base.get(&TestId::new("a.py::x")), Some(1.0));
        assert_eq!(base.get(&TestId::new("a.py::y")), Some(5.0));
    }

    use super::*;

    /// Real pytest 9.2 output with `-o junit_family=xunit1`.
    const PYTEST_XUNIT1: &str = r#"<?xml version="1.0" encoding="utf-8"?><testsuites name="pytest tests"><testsuite name="pytest" errors="0" failures="1" skipped="1" tests="3" time="0.050" timestamp="2026-11-26T06:50:00.123456+00:00" hostname="h"><testcase classname="test_mod" name="test_pass" file="test_mod.py" line="2" time="0.001" /><testcase classname="sub.test_deep.TestCls" name="test_p[x::y]" file="sub/test_deep.py" line="10" time="1.250"><failure message="assert 1 == 2">long text</failure></testcase><testcase classname="test_mod" name="test_skip" file="test_mod.py" line="5" time="0.000"><skipped type="pytest.skip" message="nope">/abs/test_mod.py:6: nope</skipped></testcase></testsuite></testsuites>"#;

    /// The same tests as pytest's default xunit2 writes them: no `file`.
    const PYTEST_XUNIT2: &str = r#"<?xml version="1.0" encoding="utf-8"?><testsuites name="pytest tests"><testsuite name="pytest" errors="0" failures="0" skipped="0" tests="2" time="0.050"><testcase classname="test_mod" name="test_pass" time="0.500" /><testcase classname="sub.test_deep.TestCls" name="test_p[x::y]" time="3.000" /></testsuite></testsuites>"#;

    fn id(s: &str) -> TestId {
        TestId::new(s)
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, text).unwrap();
        path
    }

    fn store_with(entries: &[(&str, f64)]) -> TimingStore {
        let mut store = TimingStore::new();
        for &(k, v) in entries {
            store.record(id(k), v);
        }
        store
    }

    #[test]
    fn merges_each_kind_of_source() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let store_json = r#"{"version": 1, "tests": {"a.py::t": 4.0}, "future_field": [1]}"#;
        let cases: Vec<(PathBuf, Vec<(&str, f64)>)> = vec![
            (
                write(d, "junit.xml", PYTEST_XUNIT1),
                vec![
                    ("test_mod.py::test_pass", 0.001),
                    ("sub/test_deep.py::TestCls::test_p[x::y]", 1.25),
                    ("test_mod.py::test_skip", 0.0),
                ],
            ),
            (
                write(
                    d,
                    ".test_durations",
                    "{\n  \"t.py::a\": 1.5,\n  \"t.py::b\": 0\n}",
                ),
                vec![("t.py::a", 1.5), ("t.py::b", 0.0)],
            ),
            (
                write(d, "old_durations", r#"[["t.py::a", 2.5], ["t.py::c", 1]]"#),
                vec![("t.py::a", 2.5), ("t.py::c", 1.0)],
            ),
            (write(d, "timings.json", store_json), vec![("a.py::t", 4.0)]),
        ];
        for (path, want) in cases {
            let mut store = TimingStore::new();
            store.merge_source(&path).unwrap();
            assert_eq!(store.len(), want.len(), "{}", path.display());
            for (k, v) in want {
                assert_eq!(store.get(&id(k)), Some(v), "{} {k}", path.display());
            }
        }
    }

    #[test]
    fn folder_reads_xml_recursively_in_sorted_order() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let case = |t: &str| {
            format!(
                r#"<testsuite><testcase classname="t" name="a" file="t.py" time="{t}"/></testsuite>"#
            )
        };
        write(d, "b/shard-2.xml", &case("2.0"));
        write(d, "a/shard-1.xml", &case("1.0"));
        write(d, "b/shard-2.xml.bak", "not xml");
        write(d, "coverage.xml", r#"<coverage version="7"/>"#);
        write(d, "c/deeper/extra.xml", PYTEST_XUNIT1);
        let mut store = TimingStore::new();
        store.merge_source(d).unwrap();
        // b/shard-2.xml comes after a/shard-1.xml and wins.
        assert_eq!(store.get(&id("t.py::a")), Some(2.0));
        assert_eq!(store.get(&id("test_mod.py::test_pass")), Some(0.001));
        assert_eq!(store.len(), 4);
    }

    #[test]
    fn later_sources_win() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let first = write(
            d,
            "1.json",
            r#"{"test_mod.py::test_pass": 9, "x.py::y": 1}"#,
        );
        let xunit2 = write(d, "2.xml", PYTEST_XUNIT2);
        let xunit1 = write(d, "3.xml", PYTEST_XUNIT1);
        let mut store = TimingStore::new();
        store.merge_source(&first).unwrap();
        store.merge_source(&xunit2).unwrap();
        // The xunit2 time replaces the older exact one through the mangled key.
        assert_eq!(store.get(&id("test_mod.py::test_pass")), Some(0.5));
        assert_eq!(
            store.get(&id("sub/test_deep.py::TestCls::test_p[x::y]")),
            Some(3.0)
        );
        assert_eq!(store.get(&id("x.py::y")), Some(1.0));
        store.merge_source(&xunit1).unwrap();
        assert_eq!(store.get(&id("test_mod.py::test_pass")), Some(0.001));
        assert_eq!(
            store.get(&id("sub/test_deep.py::TestCls::test_p[x::y]")),
            Some(1.25)
        );
        // An unrelated nodeid with no exact time still finds its mangled one.
        assert_eq!(store.get(&id("other.py::test_pass")), None);
    }

    #[test]
    fn malformed_sources_are_named_precisely() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let cases = [
            ("a.json", "{\n  \"t.py::ok\": 1,\n  \"t.py::a\": \"slow\"\n}", "line 3: invalid type: string \"slow\", expected a number for \"t.py::a\""),
            ("b.json", "{\"t.py::a\": -1}", "line 1: expected a duration >= 0 for \"t.py::a\", found -1"),
            ("c.json", "{\"t.py::a\": 1,", "line 1: EOF while parsing a value"),
            ("d.json", "[[\"t.py::a\"]]", "line 1: invalid length 1, expected a [test id, seconds] pair"),
            ("e.json", "{\"version\": 2, \"tests\": {}}", "unsupported version 2 (this shardex reads version 1)"),
            ("f.json", "{\"version\": 1}", "line 1: missing field `tests`"),
            ("g.json", "{\"version\": 1, \"tests\": {\"a\": null}}", "line 1: invalid type: null, expected a number for \"a\""),
            ("h.txt", "", "the file is empty"),
            ("i.txt", "tests/t.py::a 1.0", "expected JUnit XML (<testsuites>) or a JSON object, found 't' at the start"),
            ("j.xml", "<html><body/></html>", "the root element is <html>, not <testsuites> or <testsuite>"),
            ("k.xml", "<testsuite>\n<testcase classname=\"t\" name=\"a\" time=\"1s\"/></testsuite>", "invalid JUnit XML at testsuite/testcase[1]: line 2: time=\"1s\" is not a number of seconds"),
        ];
        for (name, text, want) in cases {
            let path = write(d, name, text);
            let err = TimingStore::new().merge_source(&path).unwrap_err();
            match &err {
                TimingError::Malformed { reason, .. } => assert_eq!(reason, want, "{name}"),
                other => panic!("{name}: {other:?}"),
            }
            assert!(err.to_string().starts_with("timing source "), "{err}");
        }
        // Malformed JUnit inside a folder names the file.
        let folder = d.join("reports");
        write(
            &folder,
            "bad.xml",
            "<testsuite><testcase classname=\"t\"/></testsuite>",
        );
        match TimingStore::new().merge_source(&folder).unwrap_err() {
            TimingError::Malformed { path, reason } => {
                assert_eq!(path, folder.join("bad.xml"));
                assert!(
                    reason.contains("testcase has no name attribute"),
                    "{reason}"
                );
            }
            other => panic!("{other:?}"),
        }
        let err = TimingStore::new()
            .merge_source(&d.join("nope"))
            .unwrap_err();
        assert!(matches!(err, TimingError::Missing { .. }), "{err:?}");
        let bytes = d.join("latin1.json");
        fs::write(&bytes, b"{\"t\xe9\": 1}").unwrap();
        let err = TimingStore::new().merge_source(&bytes).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "timing source {} is not a JUnit XML, a pytest-split .test_durations or a shardex timings file: not UTF-8 text (byte 3)",
                bytes.display()
            )
        );
    }

    #[test]
    fn store_round_trips_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".shardex/timings.json");
        assert!(TimingStore::load_store(&path).unwrap().is_empty());
        let mut store = store_with(&[("b.py::t", 0.25), ("a.py::t", 1.0 / 3.0)]);
        store
            .merge_source(&write(dir.path(), "x2.xml", PYTEST_XUNIT2))
            .unwrap();
        store.save_store(&path).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("{\n  \"version\": 1,\n  \"tests\": {\n    \"a.py::t\": 0.333333,\n    \"b.py::t\": 0.25\n  },\n  \"mangled\": {"), "{text}");
        let loaded = TimingStore::load_store(&path).unwrap();
        assert_eq!(loaded.len(), 4);
        assert_eq!(loaded.get(&id("a.py::t")), Some(0.333333));
        assert_eq!(loaded.get(&id("test_mod.py::test_pass")), Some(0.5));
        // Only the store is left in the directory: the temporary file was renamed.
        let names: Vec<_> = fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("timings.json")]);
        // A store is also a valid --timings source.
        let mut merged = TimingStore::new();
        merged.merge_source(&path).unwrap();
        assert_eq!(merged.len(), 4);
        for (text, want) in [
            (
                "{\"version\": 3, \"tests\": {}}",
                "unsupported version 3 (this shardex reads version 1)",
            ),
            ("[1]", "a shardex timings file is a JSON object"),
            ("{\"tests\": {}}", "missing \"version\""),
        ] {
            fs::write(&path, text).unwrap();
            match TimingStore::load_store(&path).unwrap_err() {
                TimingError::Malformed { reason, .. } => assert_eq!(reason, want),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn estimate_fallbacks() {
        let store = store_with(&[
            ("a.py::t1", 1.0),
            ("a.py::t2", 2.0),
            ("a.py::t3", 10.0),
            ("b.py::t1", 4.0),
            ("b.py::t2", 6.0),
            ("gone.py::t", 0.5),
        ]);
        let cases = [
            ("a.py::t2", 2.0),
            ("a.py::new", 2.0),
            ("b.py::new[1]", 5.0),
            ("b.py::Cls::new", 5.0),
            ("c.py::new", 3.0),
        ];
        let ids: Vec<TestId> = cases.iter().map(|(k, _)| id(k)).collect();
        let want: Vec<f64> = cases.iter().map(|(_, v)| *v).collect();
        assert_eq!(store.estimates(&ids), want);
        assert_eq!(
            TimingStore::new().estimates(&[id("x.py::t")]),
            vec![DEFAULT_ESTIMATE_SECS]
        );
        assert!(TimingStore::new().estimates(&[]).is_empty());
    }

    #[test]
    fn estimates_use_mangled_times_for_file_medians() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = TimingStore::new();
        store
            .merge_source(&write(dir.path(), "x2.xml", PYTEST_XUNIT2))
            .unwrap();
        let ids = [
            id("test_mod.py::test_pass"),
            id("test_mod.py::test_new"),
            id("other.py::test_new"),
        ];
        assert_eq!(store.estimates(&ids), vec![0.5, 0.5, 1.75]);
    }

    #[test]
    fn estimates_are_fast_for_large_suites() {
        let mut store = TimingStore::new();
        for i in 0..20_000 {
            store.record(
                id(&format!("f{}.py::t{i}", i % 500)),
                f64::from(i % 97) / 10.0,
            );
        }
        let ids: Vec<TestId> = (0..10_000)
            .map(|i| id(&format!("f{}.py::new{i}", i % 700)))
            .collect();
        let start = std::time::Instant::now();
        let est = store.estimates(&ids);
        assert_eq!(est.len(), ids.len());
        // Generous even for an unoptimised build: this is O(n log n), not O(n^2).
        assert!(start.elapsed() < std::time::Duration::from_secs(2));
    }

    #[test]
    fn record_ignores_nonsense() {
        let mut store = TimingStore::new();
        store.record(id("a.py::t"), f64::NAN);
        store.record(id("a.py::t"), -1.0);
        assert!(store.is_empty());
        store.record(id("a.py::t"), 0.5);
        assert_eq!(store.get(&id("a.py::t")), Some(0.5));
    }
}
