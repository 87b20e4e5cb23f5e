//! Settings of `shardex run`: every option of `options::OPTIONS` resolved from its layers.
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
//! 4. for `--node-index`/`--node-total` only: the CI's parallelism (CircleCI, GitLab,
//!    Buildkite, Bazel; see `node`);
//! 5. the option's default.
//!
//! Only the winning layer's value is parsed: a bad `SHARDEX_TIMEOUT` does not matter when
//! `--timeout` is given. pytest's own options consumed by shardex (`--junitxml`, `-x`,
//! `--maxfail`, `--reruns`...) come from the command line only, like in pytest, and stay
//! `Option`s to the end: given explicitly (`--reruns 0`) they win over pytest's `addopts`.

mod file;
mod layers;
mod node;
mod values;

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use shardex_agent::{NodeShare, RetryFlags, SharedQueueConfig};
use shardex_core::schedule::DistMode;

use crate::compat::ConsumedFlags;
use crate::errors::UsageError;
use crate::options::{Opt, Sources, OPTIONS};
use layers::{expand_tilde, lookup, Layer, Layers};

pub use file::{FileSettings, PYPROJECT};
pub use node::{detect_ci_build, detect_ci_node, detect_ci_project};
pub use values::{
    parse_bool, parse_count, parse_dist, parse_secs, redact_url, ColorChoice, NumProcesses,
    PythonChoice, QueueSpec, RedisUrl, TimingStoreChoice,
};

/// Environment variables shardex reads besides its options' `SHARDEX_*`.
pub mod env {
    /// tracing filter for shardex's own diagnostics on stderr (default `warn`).
    pub const LOG: &str = "SHARDEX_LOG";
    /// pytest-xdist's override of the `-n auto`/`-n logical` count.
    pub const PYTEST_XDIST_AUTO_NUM_WORKERS: &str = "PYTEST_XDIST_AUTO_NUM_WORKERS";
    /// A PEM file of the CA that signed the shared queue's TLS certificate.
    pub const REDIS_CA: &str = "SHARDEX_REDIS_CA";
    /// The name the project's timings are kept under on the shared queue's Redis.
    pub const PROJECT: &str = "SHARDEX_PROJECT";
}

/// Everything `shardex run` needs, resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    pub numprocesses: NumProcesses,
    /// `-n` came from one of shardex's layers (else pytest's own `-n` in addopts decides).
    pub numprocesses_given: bool,
    /// `--dist` came from one of shardex's layers.
    pub dist_given: bool,
    /// `--maxprocesses`: caps the worker count (as xdist does, for explicit counts too).
    pub maxprocesses: Option<u32>,
    /// `PYTEST_XDIST_AUTO_NUM_WORKERS`: replaces the detected CPU count for auto/logical.
    pub auto_override: Option<usize>,
    pub dist: DistMode,
    pub junitxml: Option<PathBuf>,
    /// `--timeline PATH`: where the run's picture goes (.html or .svg).
    pub timeline: Option<PathBuf>,
    /// `-x` is `Some(1)`, `--maxfail N` is `Some(N)` (0: never); `None`: not given.
    pub maxfail: Option<u32>,
    pub retry: RetryFlags,
    pub timings: Vec<PathBuf>,
    pub timing_store: TimingStoreChoice,
    /// This machine's share of a split run, when one is asked for.
    pub node: Option<NodeShare>,
    /// `--queue redis://…`: the queue shared by the nodes of a CI job.
    pub shared_queue: Option<SharedQueueConfig>,
    /// Per-test timeout; `None` when not set or set to 0 (pytest-timeout's "off").
    pub timeout: Option<Duration>,
    pub python: Option<PythonChoice>,
    pub spawn: bool,
    /// `--daemon`: use the project's daemon, starting one if needed.
    pub daemon: bool,
    /// `--no-daemon`: never use it.
    pub no_daemon: bool,
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
        let layers = Layers {
            cli: &cli,
            env,
            file,
        };
        refuse_unbuilt(&layers)?;
        let mut notes = Vec::new();
        let (numprocesses, maxprocesses, auto_override) = workers(&layers, &mut notes)?;
        let numprocesses_given = layers
            .parse(Opt::NumProcesses, NumProcesses::from_str)?
            .is_some();
        let dist_choice = layers.parse(Opt::Dist, parse_dist)?;
        let dist_given = dist_choice.is_some();
        let dist = match dist_choice {
            Some((mode, note)) => {
                notes.extend(note);
                mode
            }
            None => DistMode::Load,
        };
        if layers.count(Opt::MaxWorkerRestart)?.is_some() {
            notes.push(
                "--max-worker-restart: ignored; shardex replaces every worker that dies".into(),
            );
        }
        let shared_queue = shared_queue(&layers)?;
        if shared_queue.is_none() {
            notes.extend(unused_queue_settings(&layers)?);
        }
        let python = layers
            .path(Opt::Python)?
            .map(|(path, origin)| PythonChoice { path, origin });
        Ok(Self {
            numprocesses,
            numprocesses_given,
            dist_given,
            maxprocesses,
            auto_override,
            dist,
            junitxml: layers
                .path(Opt::JunitXml)?
                .map(|(path, _)| expand_tilde(path, env)),
            timeline: timeline(&layers, env)?,
            maxfail: layers.count(Opt::MaxFail)?,
            retry: retry_flags(&layers)?,
            timings: layers.paths(Opt::Timings)?,
            timing_store: timing_store(&layers)?,
            node: node_share(&layers)?,
            shared_queue,
            // pytest-timeout's 0 turns a timeout off (also one from env or file).
            timeout: layers.secs(Opt::Timeout)?.filter(|t| !t.is_zero()),
            python,
            spawn: layers.flag(Opt::Spawn)?,
            daemon: layers.flag(Opt::Daemon)?,
            no_daemon: layers.flag(Opt::NoDaemon)?,
            kill_grace: layers.secs(Opt::KillGrace)?.unwrap_or_default(),
            stop_grace: layers.secs(Opt::StopGrace)?.unwrap_or_default(),
            color: layers
                .parse(Opt::Color, ColorChoice::from_str)?
                .unwrap_or_default(),
            junit_prefix: cli.junit_prefix.clone(),
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

/// `--timeline PATH`: its extension picks the picture (.html or .svg); another is refused
/// before the run, naming where it came from.
fn timeline(
    layers: &Layers,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<PathBuf>, UsageError> {
    let (Some((path, _)), Some(raw)) = (layers.path(Opt::Timeline)?, layers.raw(Opt::Timeline)?)
    else {
        return Ok(None);
    };
    let path = expand_tilde(path, env);
    if crate::timeline::TimelineFormat::from_path(&path).is_err() {
        return Err(UsageError::invalid_value(
            &raw.place,
            &raw.text,
            "expected a file name ending in .html or .svg",
        ));
    }
    Ok(Some(path))
}

/// Options that exist in the table but are not built yet: refused from env and file too
/// (the command line refuses them while splitting).
fn refuse_unbuilt(layers: &Layers) -> Result<(), UsageError> {
    for def in OPTIONS.iter().filter(|d| d.sources == Sources::Everywhere) {
        if let Some(why) = def.refused {
            if let Some(raw) = layers.raw_outside_cli(def.opt)? {
                return Err(UsageError::new(format!(
                    "{}: {} {why}",
                    raw.place,
                    def.display()
                )));
            }
        }
    }
    Ok(())
}

/// `-n`, `--maxprocesses` and xdist's `PYTEST_XDIST_AUTO_NUM_WORKERS`.
fn workers(
    layers: &Layers,
    notes: &mut Vec<String>,
) -> Result<(NumProcesses, Option<u32>, Option<usize>), UsageError> {
    let numprocesses = layers
        .parse(Opt::NumProcesses, NumProcesses::from_str)?
        .unwrap_or_default();
    if numprocesses == NumProcesses::Count(0) {
        notes.push("-n 0: shardex always runs tests in worker processes; using 1 worker".into());
    }
    let var = env::PYTEST_XDIST_AUTO_NUM_WORKERS;
    let auto_override = match lookup(layers.env, var) {
        Some(raw) => match parse_count(raw.trim(), 1, crate::options::MAX_WORKERS) {
            Ok(n) => Some(n as usize),
            Err(expected) => {
                notes.push(format!(
                    "{var}: invalid value '{raw}' ({expected}); ignored"
                ));
                None
            }
        },
        None => None,
    };
    Ok((
        numprocesses,
        layers.count(Opt::MaxProcesses)?,
        auto_override,
    ))
}

/// pytest-rerunfailures' options, as given on the command line.
fn retry_flags(layers: &Layers) -> Result<RetryFlags, UsageError> {
    Ok(RetryFlags {
        reruns: layers.count(Opt::Reruns)?,
        reruns_delay: layers.secs(Opt::RerunsDelay)?.map(|d| d.as_secs_f64()),
        only_rerun: layers.texts(Opt::OnlyRerun),
        rerun_except: layers.texts(Opt::RerunExcept),
        fail_on_flaky: layers.flag(Opt::FailOnFlaky)?,
        max_suite_reruns: layers.count(Opt::MaxSuiteReruns)?,
    })
}

/// `--timing-store PATH` or `--no-timing-store`: on the command line the last one wins;
/// in env and file `no-timing-store` wins within its layer.
fn timing_store(layers: &Layers) -> Result<TimingStoreChoice, UsageError> {
    let store = layers.cli.last(Opt::TimingStore).map(|(i, _)| i);
    let off = layers.cli.last(Opt::NoTimingStore).map(|(i, _)| i);
    let disabled = match (store, off) {
        (Some(store), Some(off)) => off > store,
        (None, Some(_)) => true,
        (Some(_), None) => false,
        (None, None) => {
            let off = layers.raw(Opt::NoTimingStore)?;
            let store = layers.raw(Opt::TimingStore)?;
            // The env layer beats the file layer whichever of the two it sets.
            let off_first = match (&off, &store) {
                (Some(off), Some(store)) => off.layer == Layer::Env || store.layer != Layer::Env,
                _ => true,
            };
            off_first && layers.flag(Opt::NoTimingStore)?
        }
    };
    if disabled {
        return Ok(TimingStoreChoice::Disabled);
    }
    Ok(layers
        .path(Opt::TimingStore)?
        .map_or(TimingStoreChoice::Default, |(path, _)| {
            TimingStoreChoice::Path(path)
        }))
}

/// `--queue redis://…` with its build id (`--build-id`, else the CI's), its lease and
/// where its TLS CA is.
fn shared_queue(layers: &Layers) -> Result<Option<SharedQueueConfig>, UsageError> {
    let Some(QueueSpec::Redis(url)) = layers.parse(Opt::Queue, QueueSpec::from_str)? else {
        return Ok(None);
    };
    if let Some(raw) = layers.raw(Opt::Queue)? {
        check_queue_url(&raw.place, &url)?;
    }
    let (build, build_source) = match layers.raw(Opt::BuildId)? {
        Some(raw) if !raw.text.trim().is_empty() => (
            raw.text.trim().to_owned(),
            raw.place.trim_start_matches("argument ").to_owned(),
        ),
        _ => match detect_ci_build(layers.env) {
            Some((build, ci)) => (build, ci.to_owned()),
            None => {
                return Err(UsageError::new(format!(
                    "--queue {url} needs a build id that every node of the job shares and a \
                     rerun does not: give --build-id (or SHARDEX_BUILD_ID); on CircleCI, \
                     GitLab and Buildkite it is found by itself"
                )))
            }
        },
    };
    let ca_file = lookup(layers.env, env::REDIS_CA).map(std::path::PathBuf::from);
    if let Some(ca) = &ca_file {
        if !ca.is_file() {
            return Err(UsageError::new(format!(
                "{}: {} is not a file; give the PEM file of the CA that signed the Redis \
                 server's certificate",
                env::REDIS_CA,
                ca.display()
            )));
        }
    }
    Ok(Some(SharedQueueConfig {
        shown: url.to_string(),
        url: url.url,
        build,
        build_source,
        lease_floor: layers
            .secs(Opt::QueueLease)?
            .filter(|d| !d.is_zero())
            .unwrap_or(std::time::Duration::from_secs(10)),
        project: lookup(layers.env, env::PROJECT).or_else(|| detect_ci_project(layers.env)),
        ca_file,
    }))
}

/// `--build-id` and `--queue-lease` given without a shared queue: said, not silently dropped.
fn unused_queue_settings(layers: &Layers) -> Result<Vec<String>, UsageError> {
    let mut notes = Vec::new();
    for opt in [Opt::BuildId, Opt::QueueLease] {
        if let Some(raw) = layers.raw(opt)?.filter(|r| r.layer != Layer::Default) {
            notes.push(format!(
                "{}: ignored without a shared queue (--queue redis://…)",
                raw.place.trim_start_matches("argument ")
            ));
        }
    }
    Ok(notes)
}

/// What the shared queue's client will connect with must parse there too: a URL it would
/// refuse (a query string, a bad %-escape) is bad input now, not an "unreachable" queue and a
/// static split on every node later.
pub fn check_queue_url(place: &str, url: &RedisUrl) -> Result<(), UsageError> {
    shardex_agent::queue::redis::QueueUrl::parse(&url.url)
        .map(|_| ())
        .map_err(|why| UsageError::invalid_value(place, &url.to_string(), &why))
}

/// `--node-index`/`--node-total`, each from its own layers, else from the CI's variables.
fn node_share(layers: &Layers) -> Result<Option<NodeShare>, UsageError> {
    let index = layers.raw(Opt::NodeIndex)?;
    let total = layers.raw(Opt::NodeTotal)?;
    let ci = if index.is_none() || total.is_none() {
        detect_ci_node(layers.env)?
    } else {
        None
    };
    let source = match (&total, &index, ci) {
        (Some(raw), _, _) | (None, Some(raw), None) => {
            raw.place.trim_start_matches("argument ").to_owned()
        }
        (None, _, Some((_, _, name))) => name.to_owned(),
        (None, None, None) => return Ok(None),
    };
    let index_value = match &index {
        Some(_) => layers.count(Opt::NodeIndex)?.unwrap_or_default(),
        None => ci.map_or(0, |(i, _, _)| i),
    };
    let total_value = match &total {
        Some(_) => layers.count(Opt::NodeTotal)?.unwrap_or(1),
        None => ci.map_or(1, |(_, t, _)| t),
    };
    if index_value >= total_value {
        let name = |raw: &Option<layers::Raw>, fallback: &str| {
            raw.as_ref()
                .map_or_else(|| fallback.to_owned(), |r| r.place.clone())
        };
        let ci_name = ci.map_or("the default", |(_, _, name)| name);
        return Err(UsageError::new(format!(
            "node index {index_value} ({}) must be below the node total {total_value} ({}); \
             indexes start at 0",
            name(&index, ci_name),
            name(&total, ci_name)
        )));
    }
    Ok(Some(NodeShare {
        index: index_value as usize,
        total: total_value as usize,
        source,
    }))
}

#[cfg(test)]
mod tests;
