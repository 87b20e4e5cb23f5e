//! clap definitions: the top level (`shardex run|help`, `--version`) and the documentation of
//! `run`'s options.
//!
//! clap never parses `run`'s arguments: pytest's arguments pass through them, so
//! `compat::split_args` splits them. `RunArgs` exists so that `shardex run --help` and
//! `shardex help run` list every option shardex consumes, with its environment variable; a
//! test checks that each one listed here is one `split_args` handles.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::settings::env;

#[derive(Debug, Parser)]
#[command(
    name = "shardex",
    version,
    about = "Run pytest on a warm pool of forked workers: a drop-in for `pytest -n N`.",
    long_about = None,
    arg_required_else_help = true,
    after_help = "Run `shardex help run` for the options of `shardex run`."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run tests: takes pytest's arguments, as `pytest -n N` would
    Run(Box<RunArgs>),
    // Room for `plan`, `junit`, `agent`.
}

const XDIST: &str = "Parallelism (pytest-xdist)";
const PYTEST: &str = "Stopping and reporting (pytest)";
const RERUNS: &str = "Retries (pytest-rerunfailures)";
const SHARDEX: &str = "shardex";

/// `shardex run [PYTEST ARGS...]`: documentation of the options shardex consumes.
#[derive(Debug, Args)]
#[command(
    after_help = "The options above are consumed by shardex with pytest's, pytest-xdist's and \
                  pytest-rerunfailures' spelling and meaning; every other argument (paths, -k, -m, -p, \
                  -o, -q/-v, --tb, -r, plugin options) goes to pytest in the workers unchanged.\n\
                  Settings come from the command line, then SHARDEX_* environment variables, then \
                  [tool.shardex] in pyproject.toml (keys are the long option names), then defaults.\n\
                  Exit codes are pytest's: 0 passed, 1 tests failed, 2 interrupted, 3 internal error, \
                  4 usage error, 5 no tests collected, 7 flaky (with --fail-on-flaky).\n\
                  For pytest's own options, run `python -m pytest --help`.",
    disable_help_flag = true
)]
pub struct RunArgs {
    /// Number of workers: a number, `auto` (CPUs available, cgroup quota included) or
    /// `logical`; 0 means 1
    #[arg(short = 'n', long, value_name = "N", default_value = "auto", env = env::NUMPROCESSES, hide_env_values = true, help_heading = XDIST)]
    pub numprocesses: String,
    /// Upper limit on the number of workers
    #[arg(long, value_name = "N", env = env::MAXPROCESSES, hide_env_values = true, help_heading = XDIST)]
    pub maxprocesses: Option<u32>,
    /// How tests are grouped on workers: load, loadscope or loadfile (worksteal and loadgroup
    /// run as load)
    #[arg(long, value_name = "MODE", default_value = "load", env = env::DIST, hide_env_values = true, help_heading = XDIST)]
    pub dist: String,

    /// Stop after the first failure (a failure that exhausted its retries)
    #[arg(short = 'x', long, help_heading = PYTEST)]
    pub exitfirst: bool,
    /// Stop after N failures
    #[arg(long, value_name = "N", help_heading = PYTEST)]
    pub maxfail: Option<u32>,
    /// Write a JUnit XML report (xunit1, with retries as flakyFailure/rerunFailure)
    #[arg(long, visible_alias = "junit-xml", value_name = "PATH", help_heading = PYTEST)]
    pub junitxml: Option<PathBuf>,
    /// Color the output: auto, yes or no
    #[arg(long, value_name = "WHEN", default_value = "auto", env = env::COLOR, hide_env_values = true, help_heading = PYTEST)]
    pub color: String,

    /// Rerun a failing test up to N times
    #[arg(long, value_name = "N", help_heading = RERUNS)]
    pub reruns: Option<u32>,
    /// Seconds to wait before a rerun
    #[arg(long, value_name = "SECS", help_heading = RERUNS)]
    pub reruns_delay: Option<f64>,
    /// Rerun only errors matching this Python regex (repeatable)
    #[arg(long, value_name = "REGEX", help_heading = RERUNS)]
    pub only_rerun: Vec<String>,
    /// Do not rerun errors matching this Python regex (repeatable)
    #[arg(long, value_name = "REGEX", help_heading = RERUNS)]
    pub rerun_except: Vec<String>,
    /// Exit with 7 when a test passed only on a rerun
    #[arg(long, help_heading = RERUNS)]
    pub fail_on_flaky: bool,
    /// Stop rerunning after N reruns in the whole run
    #[arg(long, value_name = "N", help_heading = RERUNS)]
    pub max_suite_reruns: Option<u32>,

    /// Durations to schedule by: JUnit XML files or folders, pytest-split .test_durations,
    /// shardex timings (repeatable; SHARDEX_TIMINGS separates paths with ':')
    #[arg(long, value_name = "PATH", env = env::TIMINGS, hide_env_values = true, help_heading = SHARDEX)]
    pub timings: Vec<PathBuf>,
    /// Where durations of past runs are kept [default: <rootdir>/.shardex/timings.json]
    #[arg(long, value_name = "PATH", env = env::TIMING_STORE, hide_env_values = true, help_heading = SHARDEX)]
    pub timing_store: Option<PathBuf>,
    /// Neither read nor update the timing store
    #[arg(long, env = env::NO_TIMING_STORE, hide_env_values = true, help_heading = SHARDEX)]
    pub no_timing_store: bool,
    /// Work queue: local, or redis://[USER:PASSWORD@]HOST[:PORT][/DB] (rediss:// for TLS) to
    /// share one queue between machines
    #[arg(long, value_name = "QUEUE", default_value = "local", env = env::QUEUE, hide_env_values = true, help_heading = SHARDEX)]
    pub queue: String,
    /// Identifies one build on a shared queue [default: $CIRCLE_WORKFLOW_JOB_ID]
    #[arg(long, value_name = "ID", env = env::BUILD_ID, hide_env_values = true, help_heading = SHARDEX)]
    pub build_id: Option<String>,
    /// This machine's index, from 0 [default: $CIRCLE_NODE_INDEX, $TEST_SHARD_INDEX, 0]
    #[arg(long, value_name = "N", env = env::NODE_INDEX, hide_env_values = true, help_heading = SHARDEX)]
    pub node_index: Option<u32>,
    /// Number of machines [default: $CIRCLE_NODE_TOTAL, $TEST_TOTAL_SHARDS, 1]
    #[arg(long, value_name = "N", env = env::NODE_TOTAL, hide_env_values = true, help_heading = SHARDEX)]
    pub node_total: Option<u32>,
    /// Fail a test that runs longer than SECS (its worker is killed and replaced); 0 is off
    #[arg(long, value_name = "SECS", env = env::TIMEOUT, hide_env_values = true, help_heading = SHARDEX)]
    pub timeout: Option<f64>,
    /// Write a chart of workers over time (.html or .svg)
    #[arg(long, value_name = "PATH", env = env::TIMELINE, hide_env_values = true, help_heading = SHARDEX)]
    pub timeline: Option<PathBuf>,
    /// Python interpreter with pytest [default: $VIRTUAL_ENV/bin/python, then python3 on PATH]
    #[arg(long, value_name = "PATH", env = env::PYTHON, hide_env_values = true, help_heading = SHARDEX)]
    pub python: Option<PathBuf>,
    /// Start each worker as its own pytest process instead of forking it from one that
    /// collected (slower start; for code that cannot be forked)
    #[arg(long, env = env::SPAWN, hide_env_values = true, help_heading = SHARDEX)]
    pub spawn: bool,
    /// Seconds between SIGTERM and SIGKILL when stopping a worker
    #[arg(long, value_name = "SECS", default_value = "3", env = env::KILL_GRACE, hide_env_values = true, help_heading = SHARDEX)]
    pub kill_grace: f64,
    /// After -x/--maxfail stops the run: seconds running tests may take to finish before
    /// their workers are stopped (they are then reported as not run)
    #[arg(long, value_name = "SECS", default_value = "10", env = env::STOP_GRACE, hide_env_values = true, help_heading = SHARDEX)]
    pub stop_grace: f64,
    /// Print this help
    #[arg(short = 'h', long, action = clap::ArgAction::Help, help_heading = SHARDEX)]
    pub help: Option<bool>,

    /// Arguments for pytest: paths, -k, -m, -p, -o, -q/-v, --tb, -r, plugin options...
    #[arg(
        value_name = "PYTEST ARGS",
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub pytest_args: Vec<String>,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;
    use crate::compat;

    fn run_command() -> clap::Command {
        Cli::command()
            .find_subcommand("run")
            .cloned()
            .expect("run subcommand")
    }

    #[test]
    fn clap_definition_is_valid() {
        Cli::command().debug_assert();
    }

    /// Every option in the help is one that `split_args` consumes, and every value-taking
    /// env var matches the settings' constants.
    #[test]
    fn help_lists_only_consumed_options() {
        for arg in run_command().get_arguments() {
            if arg.is_positional() {
                continue;
            }
            let mut names: Vec<String> = arg
                .get_long_and_visible_aliases()
                .unwrap_or_default()
                .iter()
                .map(|l| format!("--{l}"))
                .collect();
            names.extend(arg.get_short().map(|c| format!("-{c}")));
            for name in names {
                assert!(
                    compat::is_consumed(&name),
                    "{name} is in the help but not consumed"
                );
            }
            if let Some(env) = arg.get_env() {
                let env = env.to_str().expect("utf-8");
                let long = arg
                    .get_long()
                    .expect("long")
                    .replace('-', "_")
                    .to_uppercase();
                assert_eq!(env, format!("SHARDEX_{long}"));
            }
        }
    }
}
