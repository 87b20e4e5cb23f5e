//! TimingStore: seconds per test (setup + call + teardown), loaded from timing sources and
//! the store of previous runs; estimates for tests never seen.
//!
//! PLACEHOLDER implementation: the API is fixed, the internals are being written.

use std::collections::HashMap;
use std::path::Path;

use crate::errors::TimingError;
use crate::test_id::TestId;

/// Estimate for a test when nothing at all is known.
pub const DEFAULT_ESTIMATE_SECS: f64 = 0.1;

#[derive(Clone, Debug, Default)]
pub struct TimingStore {
    durations: HashMap<TestId, f64>,
}

impl TimingStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Loads shardex's own store (`.shardex/timings.json`); a missing file is an empty store.
    pub fn load_store(path: &Path) -> Result<Self, TimingError> {
        let _ = path;
        Ok(Self::default())
    }

    /// Writes shardex's own store atomically.
    pub fn save_store(&self, path: &Path) -> Result<(), TimingError> {
        let _ = path;
        Ok(())
    }

    /// Adds a `--timings` source: a JUnit XML file, a folder of them, a pytest-split
    /// `.test_durations` file, or a shardex store. Later sources win.
    pub fn merge_source(&mut self, path: &Path) -> Result<(), TimingError> {
        if !path.exists() {
            return Err(TimingError::Missing {
                path: path.to_owned(),
            });
        }
        Ok(())
    }

    pub fn record(&mut self, id: TestId, secs: f64) {
        self.durations.insert(id, secs);
    }

    pub fn get(&self, id: &TestId) -> Option<f64> {
        self.durations.get(id).copied()
    }

    pub fn len(&self) -> usize {
        self.durations.len()
    }

    pub fn is_empty(&self) -> bool {
        self.durations.is_empty()
    }

    /// Estimated seconds for each id, in order: known duration, else the median of its
    /// file's known tests, else the global median, else `DEFAULT_ESTIMATE_SECS`.
    pub fn estimates(&self, ids: &[TestId]) -> Vec<f64> {
        ids.iter()
            .map(|id| self.get(id).unwrap_or(DEFAULT_ESTIMATE_SECS))
            .collect()
    }
}
