//! RunConfig: the resolved settings of one run. No clap types: the CLI builds this.

use std::path::PathBuf;
use std::time::Duration;

pub use shardex_core::protocol::RetryFlags;
use shardex_core::schedule::DistMode;

/// Defaults for callers that build a `RunConfig` themselves; `shardex run` always sets both
/// from its option table (a test there checks that the defaults agree).
pub const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(3);
pub const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(10);

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
    /// `-n` was given to shardex (command line, environment or pyproject.toml): it wins
    /// over pytest's own `-n` in `addopts`, as the command line does in pytest.
    pub workers_given: bool,
    pub mode: WorkerMode,
    pub dist: DistMode,
    /// `--dist` was given to shardex: it wins over `--dist` in `addopts`.
    pub dist_given: bool,
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
    /// `-x`/`--maxfail` on shardex's command line: stop after this many hard failures
    /// (`Some(0)`: never). `None`: not given, so pytest's own `--maxfail` (`addopts`)
    /// decides, as the command line comes after `addopts` in pytest.
    pub maxfail: Option<u32>,
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
    /// This machine's share of a run split over several (`--node-index`/`--node-total`, or
    /// a CI's parallelism); `None` when nothing asked for a split.
    pub node: Option<NodeShare>,
    /// One queue shared by every node of a CI job (`--queue redis://…`); `None`: the local
    /// queue (this machine's share of a static split when `node` says so).
    pub shared_queue: Option<SharedQueueConfig>,
}

/// Where the shared queue is and which job's queue this node joins.
#[derive(Clone, PartialEq, Eq)]
pub struct SharedQueueConfig {
    /// As given, with the password: only for connecting.
    pub url: String,
    /// The URL with the password hidden, for every message.
    pub shown: String,
    pub build: String,
    /// Where the build id came from: a CI's name, `--build-id`, `SHARDEX_BUILD_ID`.
    pub build_source: String,
    /// The shortest lease of a taken test (`--queue-lease`).
    pub lease_floor: std::time::Duration,
    /// The key of the project's timings on Redis (`None`: the rootdir's name).
    pub project: Option<String>,
    /// A PEM file of the CA that signed the server's certificate (`SHARDEX_REDIS_CA`).
    pub ca_file: Option<PathBuf>,
}

impl std::fmt::Debug for SharedQueueConfig {
    // Never the password, even in debug output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedQueueConfig")
            .field("url", &self.shown)
            .field("build", &self.build)
            .field("build_source", &self.build_source)
            .field("lease_floor", &self.lease_floor)
            .field("project", &self.project)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

/// One machine's share of a run split over `total` machines.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeShare {
    /// From 0.
    pub index: usize,
    /// At least 1; `index < total`.
    pub total: usize,
    /// Where the share came from, for messages: a CI's name (`CircleCI`, `GitLab`,
    /// `Buildkite`, `Bazel`) or where the total (else the index) was given: `--node-total`,
    /// `SHARDEX_NODE_TOTAL`, `/src/pyproject.toml: [tool.shardex] node-total`.
    pub source: String,
}

impl RunConfig {
    pub fn new(python: PathBuf, pytest_args: Vec<String>, cwd: PathBuf, workers: usize) -> Self {
        Self {
            python,
            pytest_args,
            cwd,
            workers: workers.max(1),
            workers_given: false,
            mode: WorkerMode::Fork,
            dist: DistMode::Load,
            dist_given: false,
            timings: Vec::new(),
            timing_store: None,
            junitxml: None,
            junit_prefix: None,
            timeout: None,
            kill_grace: DEFAULT_KILL_GRACE,
            no_timing_store: false,
            maxfail: None,
            stop_grace: DEFAULT_STOP_GRACE,
            retry: RetryFlags::default(),
            color: false,
            width: 80,
            env: Vec::new(),
            node: None,
            shared_queue: None,
        }
    }
}
