//! `main_impl`: diagnostics setup, parse, run a command, map the outcome to an exit code.

use std::ffi::OsString;

use tracing_subscriber::EnvFilter;

use crate::args::cli;
use crate::commands;
use crate::errors::{CliError, UsageError};
use crate::exit_code;
use crate::settings::env;

/// Runs shardex with `args` (`args[0]` is the program name) and returns the exit code.
pub fn main_impl(args: Vec<OsString>) -> i32 {
    init_tracing();
    match dispatch(args) {
        Ok(code) => code,
        Err(err) => {
            tracing::debug!(?err, "exiting with an error");
            eprintln!("{}", err.render());
            err.exit_code()
        }
    }
}

/// shardex's own diagnostics on stderr, filtered by `SHARDEX_LOG` (default `warn`).
fn init_tracing() {
    let filter = EnvFilter::try_from_env(env::LOG).unwrap_or_else(|_| EnvFilter::new("warn"));
    // A second call (main_impl run twice in one process, in tests) keeps the first subscriber.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

fn dispatch(args: Vec<OsString>) -> Result<i32, CliError> {
    // `run`'s arguments are pytest's: clap must not see them (see args.rs).
    if args.get(1).is_some_and(|a| a == "run") {
        return commands::run::run(utf8_args(&args[2..])?);
    }
    // `serve` takes `run`'s options and pytest's arguments too.
    if args.get(1).is_some_and(|a| a == "serve") {
        return commands::serve::run(utf8_args(&args[2..])?);
    }
    match cli().try_get_matches_from(&args) {
        Ok(matches) => match matches.subcommand() {
            Some(("completions", shell)) => commands::completions::run(shell),
            Some(("report", report)) => commands::report::run(report),
            Some(("flaky", flaky)) => commands::flaky::run(flaky),
            Some(("slowest", slowest)) => commands::slowest::run(slowest),
            // `run` was handled above; `shardex help run` and the like end in clap's errors.
            _ => commands::run::run(utf8_args(args.get(2..).unwrap_or_default())?),
        },
        Err(err) => Ok(clap_exit(&err)),
    }
}

/// Prints clap's help, version or error; usage errors get shardex's one-line form.
fn clap_exit(err: &clap::Error) -> i32 {
    use clap::error::ErrorKind;
    match err.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            // Best effort: a closed stdout is not worth an error.
            let _ = err.print();
            exit_code::OK
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = err.print();
            exit_code::USAGE_ERROR
        }
        _ => {
            let rendered = err.render().to_string();
            let first = rendered
                .lines()
                .next()
                .unwrap_or_default()
                .trim_start_matches("error: ");
            eprintln!("shardex: error: {first} (see 'shardex --help')");
            exit_code::USAGE_ERROR
        }
    }
}

/// Prints `shardex run`'s help (clap renders it from `options::OPTIONS`).
pub fn print_run_help() -> i32 {
    match cli().try_get_matches_from(["shardex", "run", "--help"]) {
        Err(err) => clap_exit(&err),
        Ok(_) => exit_code::OK,
    }
}

fn utf8_args(args: &[OsString]) -> Result<Vec<String>, UsageError> {
    args.iter()
        .map(|arg| {
            arg.clone().into_string().map_err(|raw| {
                UsageError::new(format!(
                    "argument {} is not valid UTF-8",
                    raw.to_string_lossy()
                ))
            })
        })
        .collect()
}
