//! RunConfig: the resolved settings of one run. No clap types: the CLI builds this.

use std::path::PathBuf;
use std::time::Duration;

use shardex_core::schedule::DistMode;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WorkerMode {
    /// One zygote collects, workers are forked from it (copy-on-write).
    #[default]
    Fork,
    /// Each worker is its own `python -m pytest` process that collects for itself.
    Spawn,
}

#[derive(Clone, Debug)]
pub struct RunConfig {
    /// The Python interpreter (already checked to run and import pytest).
    pub python: PathBuf,
    /// Arguments for pytest in the workers (shardex's own and consumed flags removed).
    pub pytest_args: Vec<String>,
    /// Working directory pytest is started in.
    pub cwd: PathBuf,
    pub workers: usize,
    pub mode: WorkerMode,
    pub dist: DistMode,
    /// `--timings` sources, in order.
    pub timings: Vec<PathBuf>,
    /// Where the timings of previous runs are kept (default `<rootdir>/.shardex/timings.json`;
    /// `None` resolves to that once pytest told us its rootdir).
    pub timing_store: Option<PathBuf>,
    pub junitxml: Option<PathBuf>,
    /// `--junit-prefix`.
    pub junit_prefix: Option<String>,
    /// Per-test timeout.
    pub timeout: Option<Duration>,
    /// Grace between SIGTERM and SIGKILL when a worker group is stopped.
    pub kill_grace: Duration,
    /// Do not read or update the store of previous runs' timings.
    pub no_timing_store: bool,
    /// `-x`/`--maxfail`: stop after this many hard failures (0 = never; pytest's own
    /// `--maxfail` in `addopts` also counts).
    pub maxfail: u32,
    /// After an early stop: how long running tests may take before their workers are
    /// stopped.
    pub stop_grace: Duration,
    /// pytest-rerunfailures' flags as given on the command line (`None`/empty: not given,
    /// so `addopts` and the ini file decide, as with pytest).
    pub retry: RetryFlags,
    /// Render tracebacks with colour (the terminal shows them).
    pub color: bool,
    /// Terminal width for rendered tracebacks.
    pub width: usize,
    /// Extra environment for the Python processes.
    pub env: Vec<(String, String)>,
}

impl RunConfig {
    pub fn new(python: PathBuf, pytest_args: Vec<String>, cwd: PathBuf, workers: usize) -> Self {
        Self {
            python,
            pytest_args,
            cwd,
            workers: workers.max(1),
            mode: WorkerMode::Fork,
            dist: DistMode::Load,
            timings: Vec::new(),
            timing_store: None,
            junitxml: None,
            junit_prefix: None,
            timeout: None,
            kill_grace: Duration::from_secs(3),
            no_timing_store: false,
            maxfail: 0,
            stop_grace: Duration::from_secs(10),
            retry: RetryFlags::default(),
            color: false,
            width: 80,
            env: Vec::new(),
        }
    }
}

/// `--reruns`, `--reruns-delay`, `--only-rerun`, `--rerun-except`, `--fail-on-flaky`,
/// `--max-suite-reruns`, handed to the Python side, which also sees `addopts`, the ini
/// keys and `flaky` markers.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct RetryFlags {
    pub reruns: Option<u32>,
    pub reruns_delay: Option<f64>,
    pub only_rerun: Vec<String>,
    pub rerun_except: Vec<String>,
    pub fail_on_flaky: bool,
    pub max_suite_reruns: Option<u32>,
}
