//! Settings of `shardex run`: the value types of shardex's options and their resolution
//! from the command line, the environment and `[tool.shardex]` in `pyproject.toml`.
//!
//! # Precedence
//!
//! For each setting the first layer that gives it wins:
//!
//! 1. the command line (`--timeout 30`; the last occurrence when repeated, as in pytest);
//! 2. the environment (`SHARDEX_TIMEOUT=30`; an empty variable counts as unset);
//! 3. `[tool.shardex]` in the `pyproject.toml` of the current directory or of its nearest
//!    ancestor that has one (`timeout = 30`; keys are the long flag names without `--`,
//!    relative paths are relative to that file's folder);
//! 4. for `--node-index`/`--node-total`/`--build-id` only: CircleCI's `CIRCLE_NODE_INDEX`,
//!    `CIRCLE_NODE_TOTAL`, `CIRCLE_WORKFLOW_JOB_ID`, then Bazel's `TEST_SHARD_INDEX`,
//!    `TEST_TOTAL_SHARDS`;
//! 5. the defaults below.
//!
//! Only the winning layer's value is parsed: a bad `SHARDEX_TIMEOUT` does not matter when
//! `--timeout` is given. pytest's own options consumed by shardex (`--junitxml`, `-x`,
//! `--maxfail`, `--reruns`...) come from the command line only, like in pytest.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use shardex_core::schedule::DistMode;

use crate::compat::ConsumedFlags;
use crate::errors::UsageError;

/// The environment variables shardex reads. Each shardex option `--foo-bar` has
/// `SHARDEX_FOO_BAR`.
pub mod env {
    pub const NUMPROCESSES: &str = "SHARDEX_NUMPROCESSES";
    pub const MAXPROCESSES: &str = "SHARDEX_MAXPROCESSES";
    pub const DIST: &str = "SHARDEX_DIST";
    /// Several paths separated by `:`.
    pub const TIMINGS: &str = "SHARDEX_TIMINGS";
    pub const TIMING_STORE: &str = "SHARDEX_TIMING_STORE";
    pub const NO_TIMING_STORE: &str = "SHARDEX_NO_TIMING_STORE";
    pub const QUEUE: &str = "SHARDEX_QUEUE";
    pub const BUILD_ID: &str = "SHARDEX_BUILD_ID";
    pub const NODE_INDEX: &str = "SHARDEX_NODE_INDEX";
    pub const NODE_TOTAL: &str = "SHARDEX_NODE_TOTAL";
    pub const TIMEOUT: &str = "SHARDEX_TIMEOUT";
    pub const TIMELINE: &str = "SHARDEX_TIMELINE";
    pub const PYTHON: &str = "SHARDEX_PYTHON";
    pub const SPAWN: &str = "SHARDEX_SPAWN";
    pub const KILL_GRACE: &str = "SHARDEX_KILL_GRACE";
    pub const STOP_GRACE: &str = "SHARDEX_STOP_GRACE";
    pub const COLOR: &str = "SHARDEX_COLOR";
    /// tracing filter for shardex's own diagnostics on stderr (default `warn`).
    pub const LOG: &str = "SHARDEX_LOG";

    /// CircleCI's parallelism (the defaults of `--node-index`, `--node-total`, `--build-id`).
    pub const CIRCLE_NODE_INDEX: &str = "CIRCLE_NODE_INDEX";
    pub const CIRCLE_NODE_TOTAL: &str = "CIRCLE_NODE_TOTAL";
    pub const CIRCLE_WORKFLOW_JOB_ID: &str = "CIRCLE_WORKFLOW_JOB_ID";
    /// Bazel's test sharding (defaults after CircleCI's).
    pub const TEST_SHARD_INDEX: &str = "TEST_SHARD_INDEX";
    pub const TEST_TOTAL_SHARDS: &str = "TEST_TOTAL_SHARDS";
    /// pytest-xdist's override of the `-n auto`/`-n logical` count.
    pub const PYTEST_XDIST_AUTO_NUM_WORKERS: &str = "PYTEST_XDIST_AUTO_NUM_WORKERS";
    /// For `~` in `--junitxml` (pytest expands it).
    pub const HOME: &str = "HOME";
}

/// The config file looked for in the current directory and its ancestors.
pub const PYPROJECT: &str = "pyproject.toml";

/// `[tool.shardex]` keys, the long flag names without `--`.
pub const FILE_KEYS: [&str; 17] = [
    "numprocesses",
    "maxprocesses",
    "dist",
    "timings",
    "timing-store",
    "no-timing-store",
    "queue",
    "build-id",
    "node-index",
    "node-total",
    "timeout",
    "timeline",
    "python",
    "spawn",
    "kill-grace",
    "stop-grace",
    "color",
];

/// Default grace between SIGTERM and SIGKILL for a worker group.
pub const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(3);

/// Default time running tests get to finish after `-x`/`--maxfail` stopped the run.
pub const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(10);

/// `-n`: a count, or `auto`/`logical`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum NumProcesses {
    /// CPUs available to this process (affinity mask and cgroup quota).
    #[default]
    Auto,
    /// Logical CPUs in the affinity mask.
    Logical,
    /// `0` means one worker (xdist runs in-process with 0; shardex always uses workers).
    Count(u32),
}

impl FromStr for NumProcesses {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "logical" => Ok(Self::Logical),
            _ => s
                .parse()
                .map(Self::Count)
                .map_err(|_| "expected auto, logical or a number of workers".to_owned()),
        }
    }
}

/// `--dist`, with xdist's other modes mapped to what shardex does.
pub fn parse_dist(s: &str) -> Result<(DistMode, Option<String>), String> {
    match s {
        "load" | "no" => Ok((DistMode::Load, None)),
        "loadscope" => Ok((DistMode::LoadScope, None)),
        "loadfile" => Ok((DistMode::LoadFile, None)),
        "worksteal" => Ok((
            DistMode::Load,
            Some("--dist worksteal: shardex's load mode already steals work; using load".into()),
        )),
        "loadgroup" => Ok((DistMode::LoadGroup, None)),
        "each" => Err("each runs every test on every worker; not supported".into()),
        _ => Err("expected load, loadscope, loadfile or loadgroup".into()),
    }
}

/// `--color`. `Auto` is decided by the reporter, as pytest does (terminal, `PY_COLORS`,
/// `NO_COLOR`, `FORCE_COLOR`, `TERM=dumb`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ColorChoice {
    #[default]
    Auto,
    Yes,
    No,
}

impl FromStr for ColorChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "yes" => Ok(Self::Yes),
            "no" => Ok(Self::No),
            _ => Err("expected auto, yes or no".into()),
        }
    }
}

/// `--queue`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum QueueSpec {
    /// In-process work-stealing queue (one machine).
    #[default]
    Local,
    Redis(RedisUrl),
}

impl FromStr for QueueSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "local" {
            return Ok(Self::Local);
        }
        RedisUrl::parse(s).map(Self::Redis)
    }
}

/// A checked `redis://` or `rediss://` URL. Debug and Display hide the password.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl {
    /// As given (with the password: only for connecting).
    pub url: String,
    pub tls: bool,
    pub host: String,
    pub port: u16,
    pub db: u32,
}

const REDIS_URL_SHAPE: &str =
    "expected local, redis://[USER:PASSWORD@]HOST[:PORT][/DB] or rediss://…";

impl RedisUrl {
    pub fn parse(s: &str) -> Result<Self, String> {
        let (tls, rest) = if let Some(rest) = s.strip_prefix("rediss://") {
            (true, rest)
        } else if let Some(rest) = s.strip_prefix("redis://") {
            (false, rest)
        } else {
            return Err(REDIS_URL_SHAPE.into());
        };
        let rest = rest.split_once('?').map_or(rest, |(before, _)| before);
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or("unclosed '[' in the host of the URL")?;
            (host, after.strip_prefix(':'))
        } else {
            match hostport.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (hostport, None),
            }
        };
        if host.is_empty() {
            return Err(format!("no host in the URL; {REDIS_URL_SHAPE}"));
        }
        let port = match port {
            None | Some("") => 6379,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|&p| p != 0)
                .ok_or_else(|| format!("port '{p}' is not a number from 1 to 65535"))?,
        };
        let db = match path {
            "" => 0,
            p => p
                .parse()
                .map_err(|_| format!("database '{p}' is not a number"))?,
        };
        Ok(Self {
            url: s.to_owned(),
            tls,
            host: host.to_owned(),
            port,
            db,
        })
    }
}

impl std::fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&redact_url(&self.url))
    }
}

impl std::fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RedisUrl({})", redact_url(&self.url))
    }
}

/// `redis://user:secret@host` -> `redis://user:***@host`, for messages and logs.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            let hidden = if userinfo.contains(':') {
                format!("{user}:***")
            } else {
                "***".to_owned()
            };
            format!("{scheme}://{hidden}@{host}{tail}")
        }
        None => url.to_owned(),
    }
}

/// Seconds as given to `--timeout`, `--kill-grace`, `--reruns-delay`: finite and ≥ 0.
pub fn parse_secs(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err("expected a number of seconds, e.g. 30 or 2.5".into()),
    }
}

pub fn parse_count(s: &str) -> Result<u32, String> {
    s.parse()
        .map_err(|_| "expected a whole number ≥ 0".to_owned())
}

/// `1/true/yes/on` or `0/false/no/off`, for env and file switches.
pub fn parse_bool(s: &str) -> Result<bool, String> {
    match s.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err("expected true or false".into()),
    }
}

/// pytest-rerunfailures' options, validated and stored. Retries themselves are not yet
/// implemented.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RetrySettings {
    /// `--reruns`: extra attempts for a failing test (0 = no retries).
    pub reruns: u32,
    /// `--reruns-delay`: pause before a rerun.
    pub reruns_delay: Duration,
    /// `--only-rerun`: Python regexes (`re.search`); the error must match one.
    pub only_rerun: Vec<String>,
    /// `--rerun-except`: Python regexes; an error matching one is not retried.
    pub rerun_except: Vec<String>,
    /// `--fail-on-flaky`: exit 7 when a test passed only on a retry.
    pub fail_on_flaky: bool,
    /// `--max-suite-reruns`: cap on reruns over the whole run.
    pub max_suite_reruns: Option<u32>,
}

/// Where the timings of previous runs are kept.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum TimingStoreChoice {
    /// `<rootdir>/.shardex/timings.json`, once pytest told us its rootdir.
    #[default]
    Default,
    Path(PathBuf),
    /// `--no-timing-store`: neither read nor write it.
    Disabled,
}

/// The explicit interpreter and where it came from (named in error messages).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PythonChoice {
    pub path: PathBuf,
    /// `--python`, `SHARDEX_PYTHON`, or `python in /src/pyproject.toml`.
    pub origin: String,
}

/// Everything `shardex run` needs, resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    pub numprocesses: NumProcesses,
    /// `--maxprocesses`: caps the worker count (as xdist does, for explicit counts too).
    pub maxprocesses: Option<u32>,
    /// `PYTEST_XDIST_AUTO_NUM_WORKERS`: replaces the detected CPU count for auto/logical.
    pub auto_override: Option<usize>,
    pub dist: DistMode,
    pub junitxml: Option<PathBuf>,
    /// `-x` is 1, `--maxfail N` is N; 0 = off.
    pub maxfail: u32,
    pub retry: RetrySettings,
    pub timings: Vec<PathBuf>,
    pub timing_store: TimingStoreChoice,
    pub queue: QueueSpec,
    pub build_id: Option<String>,
    pub node_index: u32,
    pub node_total: u32,
    /// Per-test timeout; `None` when not set or set to 0 (pytest-timeout's "off").
    pub timeout: Option<Duration>,
    pub timeline: Option<PathBuf>,
    pub python: Option<PythonChoice>,
    pub spawn: bool,
    pub kill_grace: Duration,
    pub stop_grace: Duration,
    pub color: ColorChoice,
    /// `--junit-prefix`, seen on its way to pytest.
    pub junit_prefix: Option<String>,
    /// Things to tell the user before the run (a `--dist` mode mapped to another...).
    pub notes: Vec<String>,
    /// pytest's arguments for the workers, in order.
    pub pytest_args: Vec<String>,
}

impl Settings {
    /// Merges the layers (see the module docs). `env` looks up a variable; `file` is the
    /// discovered `[tool.shardex]` table, if any.
    pub fn resolve(
        cli: ConsumedFlags,
        pytest_args: Vec<String>,
        env: &dyn Fn(&str) -> Option<String>,
        file: Option<&FileSettings>,
    ) -> Result<Self, UsageError> {
        let layers = Layers { env, file };
        let mut notes = cli.notes;

        let numprocesses = match cli.numprocesses {
            Some(n) => n,
            None => layers
                .get(env::NUMPROCESSES, "numprocesses", NumProcesses::from_str)?
                .unwrap_or_default(),
        };
        let maxprocesses = match cli.maxprocesses {
            Some(n) => Some(n),
            None => layers.get(env::MAXPROCESSES, "maxprocesses", parse_count)?,
        };
        let auto_override = match lookup(env, env::PYTEST_XDIST_AUTO_NUM_WORKERS) {
            Some(raw) => match raw.parse::<usize>() {
                Ok(n) => Some(n),
                Err(_) => {
                    notes.push(format!(
                        "{}: '{raw}' is not a number; ignored",
                        env::PYTEST_XDIST_AUTO_NUM_WORKERS
                    ));
                    None
                }
            },
            None => None,
        };
        let dist = match cli.dist {
            Some(d) => d,
            None => match layers.get(env::DIST, "dist", parse_dist)? {
                Some((mode, note)) => {
                    notes.extend(note);
                    mode
                }
                None => DistMode::Load,
            },
        };

        let timings = if !cli.timings.is_empty() {
            cli.timings
        } else if let Some(raw) = lookup(env, env::TIMINGS) {
            std::env::split_paths(&raw)
                .filter(|p| !p.as_os_str().is_empty())
                .collect()
        } else {
            layers.file_paths("timings")?.unwrap_or_default()
        };
        let timing_store = match cli.timing_store {
            Some(choice) => choice,
            None => layers.timing_store()?,
        };
        let queue = match cli.queue {
            Some(q) => q,
            None => layers
                .get(env::QUEUE, "queue", QueueSpec::from_str)?
                .unwrap_or_default(),
        };
        let build_id = match cli.build_id {
            Some(id) => Some(id),
            None => layers
                .get(env::BUILD_ID, "build-id", |s| Ok::<_, String>(s.to_owned()))?
                .or_else(|| lookup(env, env::CIRCLE_WORKFLOW_JOB_ID)),
        };
        let node_index = match cli.node_index {
            Some(i) => i,
            None => match layers.get(env::NODE_INDEX, "node-index", parse_count)? {
                Some(i) => i,
                None => {
                    ci_default(env, &[env::CIRCLE_NODE_INDEX, env::TEST_SHARD_INDEX])?.unwrap_or(0)
                }
            },
        };
        let node_total = match cli.node_total {
            Some(t) => t,
            None => match layers.get(env::NODE_TOTAL, "node-total", parse_count)? {
                Some(t) => t,
                None => {
                    ci_default(env, &[env::CIRCLE_NODE_TOTAL, env::TEST_TOTAL_SHARDS])?.unwrap_or(1)
                }
            },
        };
        if node_total == 0 {
            return Err(UsageError::new("--node-total must be at least 1"));
        }
        if node_index >= node_total {
            return Err(UsageError::new(format!(
                "--node-index {node_index} must be below --node-total {node_total} (indexes start at 0)"
            )));
        }
        let timeout = match cli.timeout {
            Some(t) => Some(t),
            None => layers.get(env::TIMEOUT, "timeout", parse_secs)?,
        }
        .filter(|&t| t > 0.0)
        .map(Duration::from_secs_f64);
        let timeline = match cli.timeline {
            Some(p) => Some(p),
            None => layers.path(env::TIMELINE, "timeline")?.map(|(p, _)| p),
        };
        let python = match cli.python {
            Some(path) => Some(PythonChoice {
                path,
                origin: "--python".into(),
            }),
            None => layers
                .path(env::PYTHON, "python")?
                .map(|(path, origin)| PythonChoice { path, origin }),
        };
        let spawn = cli.spawn
            || layers
                .get(env::SPAWN, "spawn", parse_bool)?
                .unwrap_or(false);
        let kill_grace = match cli.kill_grace {
            Some(g) => Some(g),
            None => layers.get(env::KILL_GRACE, "kill-grace", parse_secs)?,
        }
        .map_or(DEFAULT_KILL_GRACE, Duration::from_secs_f64);
        let stop_grace = match cli.stop_grace {
            Some(g) => Some(g),
            None => layers.get(env::STOP_GRACE, "stop-grace", parse_secs)?,
        }
        .map_or(DEFAULT_STOP_GRACE, Duration::from_secs_f64);
        let color = match cli.color {
            Some(c) => c,
            None => layers
                .get(env::COLOR, "color", ColorChoice::from_str)?
                .unwrap_or_default(),
        };
        let junitxml = cli.junitxml.map(|p| expand_tilde(p, env));

        Ok(Self {
            numprocesses,
            maxprocesses,
            auto_override,
            dist,
            junitxml,
            maxfail: cli.maxfail.unwrap_or(0),
            retry: cli.retry,
            timings,
            timing_store,
            queue,
            build_id,
            node_index,
            node_total,
            timeout,
            timeline,
            python,
            spawn,
            kill_grace,
            stop_grace,
            color,
            junit_prefix: cli.junit_prefix,
            notes,
            pytest_args,
        })
    }

    /// The number of workers, given the machine's counts for `auto` and `logical`.
    pub fn workers(&self, auto: usize, logical: usize) -> usize {
        let n = match self.numprocesses {
            NumProcesses::Auto => self.auto_override.unwrap_or(auto),
            NumProcesses::Logical => self.auto_override.unwrap_or(logical),
            NumProcesses::Count(n) => n as usize,
        };
        let n = match self.maxprocesses {
            // xdist: `--maxprocesses 0` is no cap.
            Some(max) if max > 0 => n.min(max as usize),
            _ => n,
        };
        n.max(1)
    }
}

/// An environment variable, with empty meaning unset.
fn lookup(env: &dyn Fn(&str) -> Option<String>, name: &str) -> Option<String> {
    env(name).filter(|v| !v.is_empty())
}

/// The first CI variable that is set, parsed as a count.
fn ci_default(
    env: &dyn Fn(&str) -> Option<String>,
    names: &[&str],
) -> Result<Option<u32>, UsageError> {
    for name in names {
        if let Some(raw) = lookup(env, name) {
            return parse_count(raw.trim())
                .map(Some)
                .map_err(|expected| UsageError::invalid_value(name, &raw, &expected));
        }
    }
    Ok(None)
}

/// `~/x` -> `$HOME/x`, as pytest does for `--junitxml`.
fn expand_tilde(path: PathBuf, env: &dyn Fn(&str) -> Option<String>) -> PathBuf {
    match (path.strip_prefix("~"), lookup(env, env::HOME)) {
        (Ok(rest), Some(home)) => Path::new(&home).join(rest),
        _ => path,
    }
}

/// The env and file layers of one lookup.
struct Layers<'a> {
    env: &'a dyn Fn(&str) -> Option<String>,
    file: Option<&'a FileSettings>,
}

impl Layers<'_> {
    /// The env value, else the file value, parsed; errors name the layer.
    fn get<T>(
        &self,
        env_name: &str,
        key: &str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Option<T>, UsageError> {
        if let Some(raw) = lookup(self.env, env_name) {
            let shown = redact_url(&raw);
            return parse(raw.trim())
                .map(Some)
                .map_err(|expected| UsageError::invalid_value(env_name, &shown, &expected));
        }
        let Some(file) = self.file else {
            return Ok(None);
        };
        let Some(raw) = file.scalar(key)? else {
            return Ok(None);
        };
        parse(&raw).map(Some).map_err(|expected| {
            UsageError::invalid_value(&file.place(key), &redact_url(&raw), &expected)
        })
    }

    /// A path from env (as given) or file (relative to the file's folder), with its origin.
    fn path(&self, env_name: &str, key: &str) -> Result<Option<(PathBuf, String)>, UsageError> {
        if let Some(raw) = lookup(self.env, env_name) {
            return Ok(Some((PathBuf::from(raw), env_name.to_owned())));
        }
        let Some(file) = self.file else {
            return Ok(None);
        };
        Ok(file.scalar(key)?.map(|raw| {
            (
                file.relative(&raw),
                format!("{key} in {}", file.path.display()),
            )
        }))
    }

    /// `timings = ["a.xml", "junit/"]` (or one string), relative to the file.
    fn file_paths(&self, key: &str) -> Result<Option<Vec<PathBuf>>, UsageError> {
        let Some(file) = self.file else {
            return Ok(None);
        };
        match file.table.get(key) {
            None => Ok(None),
            Some(toml::Value::String(s)) => Ok(Some(vec![file.relative(s)])),
            Some(toml::Value::Array(items)) => items
                .iter()
                .map(|item| match item {
                    toml::Value::String(s) => Ok(file.relative(s)),
                    _ => Err(UsageError::new(format!(
                        "{}: expected an array of paths",
                        file.place(key)
                    ))),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(_) => Err(UsageError::new(format!(
                "{}: expected a path or an array of paths",
                file.place(key)
            ))),
        }
    }

    /// `--no-timing-store` beats `--timing-store` within one layer.
    fn timing_store(&self) -> Result<TimingStoreChoice, UsageError> {
        if let Some(raw) = lookup(self.env, env::NO_TIMING_STORE) {
            let off = parse_bool(raw.trim())
                .map_err(|e| UsageError::invalid_value(env::NO_TIMING_STORE, &raw, &e))?;
            if off {
                return Ok(TimingStoreChoice::Disabled);
            }
        }
        if let Some(raw) = lookup(self.env, env::TIMING_STORE) {
            return Ok(TimingStoreChoice::Path(raw.into()));
        }
        let Some(file) = self.file else {
            return Ok(TimingStoreChoice::Default);
        };
        if let Some(raw) = file.scalar("no-timing-store")? {
            let off = parse_bool(&raw)
                .map_err(|e| UsageError::invalid_value(&file.place("no-timing-store"), &raw, &e))?;
            if off {
                return Ok(TimingStoreChoice::Disabled);
            }
        }
        Ok(file
            .scalar("timing-store")?
            .map_or(TimingStoreChoice::Default, |raw| {
                TimingStoreChoice::Path(file.relative(&raw))
            }))
    }
}

/// `[tool.shardex]` from a `pyproject.toml`.
#[derive(Clone, Debug, PartialEq)]
pub struct FileSettings {
    /// The `pyproject.toml` it came from.
    pub path: PathBuf,
    pub table: toml::Table,
}

impl FileSettings {
    /// The `pyproject.toml` of `dir` or its nearest ancestor that has one; `None` when there
    /// is none, or it has no `[tool.shardex]`.
    pub fn discover(dir: &Path) -> Result<Option<Self>, UsageError> {
        let Some(path) = dir
            .ancestors()
            .map(|d| d.join(PYPROJECT))
            .find(|p| p.is_file())
        else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(&path)
            .map_err(|err| UsageError::new(format!("cannot read {}: {err}", path.display())))?;
        Self::parse(path, &text)
    }

    /// Parses a `pyproject.toml`'s text; unknown keys in `[tool.shardex]` are errors (a typo
    /// should not be silently ignored).
    pub fn parse(path: PathBuf, text: &str) -> Result<Option<Self>, UsageError> {
        let doc: toml::Table = text.parse().map_err(|err: toml::de::Error| {
            UsageError::new(format!(
                "{} is not valid TOML: {}",
                path.display(),
                err.message()
            ))
        })?;
        let section = doc
            .get("tool")
            .and_then(|tool| tool.as_table())
            .and_then(|tool| tool.get("shardex"));
        let table = match section {
            None => return Ok(None),
            Some(toml::Value::Table(table)) => table.clone(),
            Some(_) => {
                return Err(UsageError::new(format!(
                    "{}: [tool.shardex] must be a table",
                    path.display()
                )))
            }
        };
        for key in table.keys() {
            if !FILE_KEYS.contains(&key.as_str()) {
                let kebab = key.replace('_', "-");
                let hint = if FILE_KEYS.contains(&kebab.as_str()) {
                    format!("; did you mean '{kebab}'?")
                } else {
                    format!("; known keys: {}", FILE_KEYS.join(", "))
                };
                return Err(UsageError::new(format!(
                    "{}: unknown key '{key}' in [tool.shardex]{hint}",
                    path.display()
                )));
            }
        }
        Ok(Some(Self { path, table }))
    }

    fn place(&self, key: &str) -> String {
        format!("{}: [tool.shardex] {key}", self.path.display())
    }

    /// A string, number or boolean value as text.
    fn scalar(&self, key: &str) -> Result<Option<String>, UsageError> {
        match self.table.get(key) {
            None => Ok(None),
            Some(toml::Value::String(s)) => Ok(Some(s.clone())),
            Some(toml::Value::Integer(i)) => Ok(Some(i.to_string())),
            Some(toml::Value::Float(f)) => Ok(Some(f.to_string())),
            Some(toml::Value::Boolean(b)) => Ok(Some(b.to_string())),
            Some(_) => Err(UsageError::new(format!(
                "{}: expected a string, number or boolean",
                self.place(key)
            ))),
        }
    }

    /// A path from the file: relative to its folder. A bare name (`python3.12`) stays bare
    /// so that it is looked up on PATH.
    fn relative(&self, raw: &str) -> PathBuf {
        let path = Path::new(raw);
        if path.is_absolute() || !raw.contains('/') {
            return path.to_owned();
        }
        self.path
            .parent()
            .map_or_else(|| path.to_owned(), |dir| dir.join(path))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::compat::split_args;

    type Argv = &'static [&'static str];
    type EnvPairs = &'static [(&'static str, &'static str)];

    fn resolve(
        argv: &[&str],
        env: &[(&str, &str)],
        pyproject: Option<&str>,
    ) -> Result<Settings, UsageError> {
        let (flags, rest) = split_args(argv.iter().copied())?;
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let file = match pyproject {
            Some(text) => FileSettings::parse("/src/pyproject.toml".into(), text)?,
            None => None,
        };
        Settings::resolve(flags, rest, &|name| env.get(name).cloned(), file.as_ref())
    }

    fn ok(argv: &[&str], env: &[(&str, &str)], pyproject: Option<&str>) -> Settings {
        resolve(argv, env, pyproject).unwrap_or_else(|e| panic!("{argv:?} {env:?}: {e}"))
    }

    fn err(argv: &[&str], env: &[(&str, &str)], pyproject: Option<&str>) -> String {
        match resolve(argv, env, pyproject) {
            Ok(s) => panic!("{argv:?} {env:?}: expected an error, got {s:?}"),
            Err(e) => e.to_string(),
        }
    }

    const FILE: &str = r#"
[project]
name = "x"

[tool.shardex]
timeout = 60
numprocesses = 3
dist = "loadfile"
timings = ["ci/junit", "/abs/durations.json"]
python = ".venv/bin/python"
kill-grace = 1.5
spawn = true
color = "no"
queue = "redis://user:hunter2@cache:6380/2"
"#;

    #[test]
    fn defaults() {
        let s = ok(&["tests"], &[], None);
        assert_eq!(s.numprocesses, NumProcesses::Auto);
        assert_eq!(s.dist, DistMode::Load);
        assert_eq!(s.timeout, None);
        assert_eq!(s.kill_grace, DEFAULT_KILL_GRACE);
        assert_eq!(s.queue, QueueSpec::Local);
        assert_eq!((s.node_index, s.node_total), (0, 1));
        assert_eq!(s.timing_store, TimingStoreChoice::Default);
        assert_eq!(s.color, ColorChoice::Auto);
        assert_eq!(s.maxfail, 0);
        assert_eq!(s.python, None);
        assert!(!s.spawn);
        assert_eq!(s.pytest_args, ["tests"]);
    }

    #[test]
    fn file_layer() {
        let s = ok(&[], &[], Some(FILE));
        assert_eq!(s.timeout, Some(Duration::from_secs(60)));
        assert_eq!(s.numprocesses, NumProcesses::Count(3));
        assert_eq!(s.dist, DistMode::LoadFile);
        assert_eq!(
            s.timings,
            [
                PathBuf::from("/src/ci/junit"),
                PathBuf::from("/abs/durations.json")
            ]
        );
        assert_eq!(
            s.python,
            Some(PythonChoice {
                path: "/src/.venv/bin/python".into(),
                origin: "python in /src/pyproject.toml".into()
            })
        );
        assert_eq!(s.kill_grace, Duration::from_millis(1500));
        assert!(s.spawn);
        assert_eq!(s.color, ColorChoice::No);
        let QueueSpec::Redis(url) = &s.queue else {
            panic!("{:?}", s.queue)
        };
        assert_eq!(
            (url.host.as_str(), url.port, url.db, url.tls),
            ("cache", 6380, 2, false)
        );
        assert_eq!(url.to_string(), "redis://user:***@cache:6380/2");
    }

    #[test]
    fn env_beats_file_and_cli_beats_env() {
        let env = [
            (env::TIMEOUT, "30"),
            (env::NUMPROCESSES, "logical"),
            (env::TIMINGS, "a.xml:b.json"),
            (env::PYTHON, "/usr/bin/python3.12"),
            (env::SPAWN, "0"),
            (env::COLOR, "yes"),
        ];
        let s = ok(&[], &env, Some(FILE));
        assert_eq!(s.timeout, Some(Duration::from_secs(30)));
        assert_eq!(s.numprocesses, NumProcesses::Logical);
        assert_eq!(s.timings, [PathBuf::from("a.xml"), PathBuf::from("b.json")]);
        assert_eq!(
            s.python.as_ref().map(|p| p.origin.as_str()),
            Some(env::PYTHON)
        );
        assert!(!s.spawn, "SHARDEX_SPAWN=0 beats spawn = true in the file");
        assert_eq!(s.color, ColorChoice::Yes);
        // Still from the file.
        assert_eq!(s.dist, DistMode::LoadFile);

        let argv = [
            "--timeout=5",
            "-n",
            "2",
            "--timings",
            "c.xml",
            "--python",
            "py",
            "--color",
            "auto",
            "--dist",
            "loadscope",
        ];
        let s = ok(&argv, &env, Some(FILE));
        assert_eq!(s.timeout, Some(Duration::from_secs(5)));
        assert_eq!(s.numprocesses, NumProcesses::Count(2));
        assert_eq!(s.timings, [PathBuf::from("c.xml")]);
        assert_eq!(
            s.python,
            Some(PythonChoice {
                path: "py".into(),
                origin: "--python".into()
            })
        );
        assert_eq!(s.color, ColorChoice::Auto);
        assert_eq!(s.dist, DistMode::LoadScope);
        // --timeout 0 turns an env/file timeout off, as pytest-timeout's 0 does.
        assert_eq!(ok(&["--timeout", "0"], &env, Some(FILE)).timeout, None);
        // An empty variable is unset.
        assert_eq!(
            ok(&[], &[(env::TIMEOUT, "")], Some(FILE)).timeout,
            Some(Duration::from_secs(60))
        );
    }

    #[test]
    fn only_the_winning_layer_is_parsed() {
        let s = ok(&["--timeout", "5"], &[(env::TIMEOUT, "soon")], None);
        assert_eq!(s.timeout, Some(Duration::from_secs(5)));
        assert_eq!(
            err(&[], &[(env::TIMEOUT, "soon")], None),
            "SHARDEX_TIMEOUT: invalid value 'soon' (expected a number of seconds, e.g. 30 or 2.5)"
        );
    }

    #[test]
    fn ci_defaults_for_nodes() {
        let circle = [
            (env::CIRCLE_NODE_INDEX, "2"),
            (env::CIRCLE_NODE_TOTAL, "4"),
            (env::CIRCLE_WORKFLOW_JOB_ID, "job-1"),
            (env::TEST_SHARD_INDEX, "0"),
            (env::TEST_TOTAL_SHARDS, "8"),
        ];
        let s = ok(&[], &circle, None);
        assert_eq!((s.node_index, s.node_total), (2, 4));
        assert_eq!(s.build_id.as_deref(), Some("job-1"));

        let bazel = [(env::TEST_SHARD_INDEX, "5"), (env::TEST_TOTAL_SHARDS, "8")];
        let s = ok(&[], &bazel, None);
        assert_eq!((s.node_index, s.node_total, s.build_id), (5, 8, None));

        let mut with_shardex = circle.to_vec();
        with_shardex.extend([(env::NODE_INDEX, "1"), (env::BUILD_ID, "b")]);
        let s = ok(&["--node-total", "2"], &with_shardex, None);
        assert_eq!((s.node_index, s.node_total), (1, 2));
        assert_eq!(s.build_id.as_deref(), Some("b"));

        assert_eq!(
            err(&["--node-index", "3", "--node-total", "3"], &[], None),
            "--node-index 3 must be below --node-total 3 (indexes start at 0)"
        );
        assert_eq!(
            err(&["--node-total", "0"], &[], None),
            "--node-total must be at least 1"
        );
        assert_eq!(
            err(&[], &[(env::CIRCLE_NODE_INDEX, "x")], None),
            "CIRCLE_NODE_INDEX: invalid value 'x' (expected a whole number ≥ 0)"
        );
    }

    #[test]
    fn timing_store_choices() {
        let cases: &[(Argv, EnvPairs, Option<&str>, TimingStoreChoice)] = &[
            (&[], &[], None, TimingStoreChoice::Default),
            (
                &["--no-timing-store"],
                &[],
                None,
                TimingStoreChoice::Disabled,
            ),
            (
                &["--no-timing-store", "--timing-store", "t.json"],
                &[],
                None,
                TimingStoreChoice::Path("t.json".into()),
            ),
            (
                &[],
                &[(env::NO_TIMING_STORE, "1"), (env::TIMING_STORE, "t.json")],
                None,
                TimingStoreChoice::Disabled,
            ),
            (
                &[],
                &[(env::TIMING_STORE, "t.json")],
                Some("[tool.shardex]\nno-timing-store = true\n"),
                TimingStoreChoice::Path("t.json".into()),
            ),
            (
                &[],
                &[],
                Some("[tool.shardex]\ntiming-store = \"ci/t.json\"\n"),
                TimingStoreChoice::Path("/src/ci/t.json".into()),
            ),
        ];
        for (argv, env, file, expected) in cases {
            assert_eq!(
                &ok(argv, env, *file).timing_store,
                expected,
                "{argv:?} {env:?}"
            );
        }
    }

    #[test]
    fn workers() {
        let cases: &[(Argv, EnvPairs, usize)] = &[
            (&[], &[], 6),
            (&["-n", "logical"], &[], 8),
            (&["-n", "0"], &[], 1),
            (&["-n", "12"], &[], 12),
            (&["-n", "12", "--maxprocesses", "4"], &[], 4),
            (&["--maxprocesses=2"], &[], 2),
            (&["--maxprocesses=0"], &[], 6),
            (&[], &[(env::PYTEST_XDIST_AUTO_NUM_WORKERS, "3")], 3),
            (
                &["-n", "2"],
                &[(env::PYTEST_XDIST_AUTO_NUM_WORKERS, "3")],
                2,
            ),
            (&[], &[(env::MAXPROCESSES, "5")], 5),
        ];
        for (argv, env, expected) in cases {
            assert_eq!(
                ok(argv, env, None).workers(6, 8),
                *expected,
                "{argv:?} {env:?}"
            );
        }
        let s = ok(&[], &[(env::PYTEST_XDIST_AUTO_NUM_WORKERS, "many")], None);
        assert_eq!(s.workers(6, 8), 6);
        assert_eq!(s.notes.len(), 1);
    }

    #[test]
    fn file_errors() {
        let bad = |text: &str| match FileSettings::parse("/src/pyproject.toml".into(), text) {
            Ok(f) => panic!("{text}: expected an error, got {f:?}"),
            Err(e) => e.to_string(),
        };
        assert_eq!(
            bad("[tool.shardex]\nkill_grace = 2\n"),
            "/src/pyproject.toml: unknown key 'kill_grace' in [tool.shardex]; did you mean 'kill-grace'?"
        );
        assert!(bad("[tool.shardex]\nworkers = 2\n").contains("known keys: numprocesses,"));
        assert!(bad("[tool.shardex\n").starts_with("/src/pyproject.toml is not valid TOML: "));
        assert_eq!(
            bad("[tool]\nshardex = 3\n"),
            "/src/pyproject.toml: [tool.shardex] must be a table"
        );
        assert_eq!(
            FileSettings::parse("/src/pyproject.toml".into(), "[tool.pytest.ini_options]\n"),
            Ok(None)
        );
        assert_eq!(
            err(&[], &[], Some("[tool.shardex]\ntimeout = \"soon\"\n")),
            "/src/pyproject.toml: [tool.shardex] timeout: invalid value 'soon' (expected a number of seconds, e.g. 30 or 2.5)"
        );
        assert_eq!(
            err(&[], &[], Some("[tool.shardex]\ntimings = [1]\n")),
            "/src/pyproject.toml: [tool.shardex] timings: expected an array of paths"
        );
        assert_eq!(
            err(&[], &[], Some("[tool.shardex]\ndist = \"each\"\n")),
            "/src/pyproject.toml: [tool.shardex] dist: invalid value 'each' (each runs every test on every worker; not supported)"
        );
    }

    #[test]
    fn discovery_walks_up() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        let nested = root.join("pkg/tests");
        std::fs::create_dir_all(&nested).expect("mkdir");
        assert_eq!(FileSettings::discover(&nested), Ok(None));
        std::fs::write(root.join(PYPROJECT), "[tool.shardex]\ntimeout = 1\n").expect("write");
        let found = FileSettings::discover(&nested).expect("ok").expect("found");
        assert_eq!(found.path, root.join(PYPROJECT));
        // The nearest pyproject.toml counts even without [tool.shardex].
        std::fs::write(root.join("pkg").join(PYPROJECT), "[project]\nname = 'p'\n").expect("write");
        assert_eq!(FileSettings::discover(&nested), Ok(None));
    }

    #[test]
    fn redis_urls() {
        let cases = [
            ("redis://localhost", Ok(("localhost", 6379, 0, false))),
            (
                "rediss://u:p@cache.example:6380/3",
                Ok(("cache.example", 6380, 3, true)),
            ),
            ("redis://[::1]:7000", Ok(("::1", 7000, 0, false))),
            ("redis://:secret@h/1?timeout=3", Ok(("h", 6379, 1, false))),
            ("redis://", Err("no host")),
            ("redis://h:0", Err("port '0'")),
            ("redis://h:port", Err("port 'port'")),
            ("redis://h/db", Err("database 'db'")),
            ("http://h", Err("expected local")),
            ("redis:/h", Err("expected local")),
        ];
        for (raw, expected) in cases {
            match (RedisUrl::parse(raw), expected) {
                (Ok(url), Ok((host, port, db, tls))) => {
                    assert_eq!(
                        (url.host.as_str(), url.port, url.db, url.tls),
                        (host, port, db, tls),
                        "{raw}"
                    );
                }
                (Err(e), Err(part)) => assert!(e.contains(part), "{raw}: {e}"),
                (got, want) => panic!("{raw}: got {got:?}, want {want:?}"),
            }
        }
        assert_eq!(redact_url("rediss://u:p@h:1/2"), "rediss://u:***@h:1/2");
        assert_eq!(redact_url("redis://token@h"), "redis://***@h");
        assert_eq!(redact_url("redis://h"), "redis://h");
        assert_eq!(
            err(&[], &[(env::QUEUE, "redis://u:hunter2@h:99999")], None),
            "SHARDEX_QUEUE: invalid value 'redis://u:***@h:99999' (port '99999' is not a number from 1 to 65535)"
        );
    }

    #[test]
    fn junitxml_tilde() {
        let s = ok(
            &["--junitxml=~/r/junit.xml"],
            &[(env::HOME, "/home/u")],
            None,
        );
        assert_eq!(s.junitxml, Some(PathBuf::from("/home/u/r/junit.xml")));
    }
}
