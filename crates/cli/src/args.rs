//! clap definitions: the top level (`shardex run|help`, `--version`) and the documentation of
//! `run`'s options.
//!
//! clap never parses `run`'s arguments: pytest's arguments pass through them, so
//! `compat::split_args` splits them. The `run` subcommand exists so that `shardex run --help`
//! and `shardex help run` list every option shardex consumes; its arguments are built from
//! `options::OPTIONS`, the table the splitter and the settings read too.

use clap::{Arg, Command};

use crate::options::help_args;

const RUN_AFTER_HELP: &str = "The options above are consumed by shardex with pytest's, \
    pytest-xdist's and pytest-rerunfailures' spelling and meaning; every other argument \
    (paths, -k, -m, -p, -o, -q/-v, --tb, -r, plugin options) goes to pytest in the workers \
    unchanged.\n\
    Settings come from the command line, then SHARDEX_* environment variables, then \
    [tool.shardex] in pyproject.toml (keys are the long option names), then defaults.\n\
    Exit codes are pytest's: 0 passed, 1 tests failed, 2 interrupted, 3 internal error, \
    4 usage error, 5 no tests collected, 7 flaky (with --fail-on-flaky).\n\
    For pytest's own options, run `python -m pytest --help`.";

/// `shardex`: its subcommands and `--version`.
pub fn cli() -> Command {
    Command::new("shardex")
        .version(env!("CARGO_PKG_VERSION"))
        .about("Run pytest on a warm pool of forked workers: a drop-in for `pytest -n N`.")
        .arg_required_else_help(true)
        .subcommand_required(true)
        .after_help("Run `shardex help run` for the options of `shardex run`.")
        .subcommand(run_command())
        .subcommand(crate::commands::completions::command())
        .subcommand(crate::commands::report::command())
        .subcommand(crate::commands::serve::command())
        .subcommand(crate::commands::flaky::command())
        .subcommand(crate::commands::slowest::command())
}

/// `shardex run [PYTEST ARGS...]`: documentation of the options shardex consumes.
pub fn run_command() -> Command {
    Command::new("run")
        .about("Run tests: takes pytest's arguments, as `pytest -n N` would")
        .disable_help_flag(true)
        .after_help(RUN_AFTER_HELP)
        .args(help_args())
        .arg(
            Arg::new("pytest_args")
                .value_name("PYTEST ARGS")
                .help("Arguments for pytest: paths, -k, -m, -p, -o, -q/-v, --tb, -r, plugin options...")
                .num_args(0..)
                .trailing_var_arg(true)
                .allow_hyphen_values(true),
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compat;

    #[test]
    fn clap_definition_is_valid() {
        cli().debug_assert();
    }

    /// Every option in the help is one that `split_args` consumes (both come from one
    /// table; this catches a help-only argument added here by hand).
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
        }
    }
}
