//! `shardex completions bash|zsh|fish`: the shell's completion script for `shardex`, generated
//! from the clap definition (so `run`'s consumed options, built from `options::OPTIONS`, are
//! completed as they are documented).

use std::io::Write;

use clap::{Arg, ArgMatches, Command};
use clap_complete::Shell;

use crate::errors::{CliError, UsageError};
use crate::exit_code;

/// The shells whose scripts are tested (see `crates/cli/tests/completions.rs`).
const SHELLS: [&str; 3] = ["bash", "zsh", "fish"];

pub fn command() -> Command {
    Command::new("completions")
        .about("Print a shell completion script for shardex (bash, zsh or fish)")
        .after_help(
            "Install it where your shell looks for completions, e.g.\n  \
             shardex completions bash > ~/.local/share/bash-completion/completions/shardex\n  \
             shardex completions zsh > \"${fpath[1]}/_shardex\"\n  \
             shardex completions fish > ~/.config/fish/completions/shardex.fish",
        )
        .arg(
            Arg::new("shell")
                .value_name("SHELL")
                .required(true)
                .value_parser(SHELLS),
        )
}

pub fn run(matches: &ArgMatches) -> Result<i32, CliError> {
    let name = matches
        .get_one::<String>("shell")
        .map(String::as_str)
        .unwrap_or_default();
    let shell = shell(name).ok_or_else(|| {
        UsageError::invalid_value("argument SHELL", name, "expected bash, zsh or fish")
    })?;
    // A closed stdout (`| head`) is not worth an error or a panic.
    let _ = std::io::stdout().lock().write_all(&script(shell));
    Ok(exit_code::OK)
}

fn shell(name: &str) -> Option<Shell> {
    match name {
        "bash" => Some(Shell::Bash),
        "zsh" => Some(Shell::Zsh),
        "fish" => Some(Shell::Fish),
        _ => None,
    }
}

/// The completion script for `shell`, from the whole `shardex` definition.
pub fn script(shell: Shell) -> Vec<u8> {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut crate::args::cli(), "shardex", &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_shell_has_a_generator() {
        for name in SHELLS {
            assert!(shell(name).is_some(), "{name}");
        }
        assert_eq!(shell("tcsh"), None);
    }

    /// `run`'s options come from the options table, not from clap's own parser: the script
    /// must still offer them, the rerun flags included.
    #[test]
    fn scripts_offer_run_options() {
        for name in SHELLS {
            let text = String::from_utf8(script(shell(name).unwrap())).unwrap();
            for option in ["reruns", "only-rerun", "junitxml", "numprocesses"] {
                // fish names a long option `-l NAME`, the others `--NAME`.
                let spelled = match name {
                    "fish" => format!(" -l {option} "),
                    _ => format!("--{option}"),
                };
                assert!(text.contains(&spelled), "{name} script lacks {spelled}");
            }
            assert!(text.contains("report"), "{name} script lacks `report`");
        }
    }
}
