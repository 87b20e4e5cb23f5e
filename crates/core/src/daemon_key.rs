//! Whether a run may be forked from the daemon's warm base process: the base imported the
//! project under one interpreter, working directory, environment and set of pytest options;
//! a run that differs in any of them could see modules imported for another setting (a
//! different `--ds`, `PYTHONPATH`, `-p plugin`), so the base is rebuilt for it instead.
//! What only selects or reports (test paths, `-k`, `-x`, `-v`…) never changes what was
//! imported and is left out of the key.

use std::collections::BTreeMap;
use std::path::PathBuf;

/// Environment variables of the terminal session, not of the project: they differ between
/// two shells of one developer and no import reads them.
const VOLATILE_ENV: &[&str] = &[
    "_",
    "PWD",
    "OLDPWD",
    "SHLVL",
    "TERM",
    "COLORTERM",
    "COLUMNS",
    "LINES",
    "DISPLAY",
    "WINDOWID",
    "PS1",
    "PS2",
    "PROMPT_COMMAND",
    "HISTFILE",
    "HISTSIZE",
    "HISTCONTROL",
    "LS_COLORS",
    "LESS",
    "PAGER",
    "EDITOR",
    "VISUAL",
    "MAIL",
    "GPG_TTY",
    "STY",
    "WT_SESSION",
    "DBUS_SESSION_BUS_ADDRESS",
    "TERM_SESSION_ID",
    "OLDPWD",
    "FORCE_COLOR",
    "NO_COLOR",
    "PY_COLORS",
];
const VOLATILE_ENV_PREFIXES: &[&str] = &[
    "SHARDEX_",
    "SSH_",
    "TMUX",
    "TERM_PROGRAM",
    "XDG_SESSION_",
    "XDG_SEAT",
    "XDG_VTNR",
    "KITTY_",
    "VSCODE_",
    "ITERM_",
    "LC_TERMINAL",
];

/// pytest options that only select tests or shape the report, without a value.
const SELECTION_FLAGS: &[&str] = &[
    "-x",
    "--exitfirst",
    "-v",
    "-vv",
    "-vvv",
    "--verbose",
    "-q",
    "-qq",
    "--quiet",
    "-s",
    "-l",
    "--showlocals",
    "--lf",
    "--last-failed",
    "--ff",
    "--failed-first",
    "--nf",
    "--new-first",
    "--sw",
    "--stepwise",
    "--sw-skip",
    "--stepwise-skip",
    "--co",
    "--collect-only",
    "--collectonly",
    "--setup-show",
    "--no-header",
    "--no-summary",
    "--runxfail",
    "--full-trace",
    "--disable-warnings",
    "--disable-pytest-warnings",
    "--reuse-db",
    "--create-db",
    "--strict-markers",
    "--cache-clear",
    "--trace",
    "--pdb",
];

/// pytest options that only select tests or shape the report, with a value (`-k EXPR` or
/// `-k=EXPR`; short ones also `-kEXPR`).
const SELECTION_OPTIONS: &[&str] = &[
    "-k",
    "-m",
    "--maxfail",
    "--tb",
    "--durations",
    "--durations-min",
    "--capture",
    "-r",
    "--deselect",
    "--color",
    "--code-highlight",
    "--show-capture",
    "--basetemp",
    "--junitxml",
    "--junit-xml",
    "--timeout",
    "-W",
    "--pythonwarnings",
    "--last-failed-no-failures",
    "--lfnf",
];

/// What a warm base was built for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BaseKey {
    pub python: PathBuf,
    pub cwd: PathBuf,
    pub env: BTreeMap<String, String>,
    /// The pytest arguments that may change what is imported, in order.
    pub options: Vec<String>,
}

impl BaseKey {
    /// `is_test_path(arg)`: whether a positional argument names a test path (it exists
    /// once `::…` is cut off); the caller decides, core does no I/O.
    pub fn new(
        python: PathBuf,
        cwd: PathBuf,
        env: &[(String, String)],
        pytest_args: &[String],
        is_test_path: impl Fn(&str) -> bool,
    ) -> Self {
        let env = env
            .iter()
            .filter(|(name, _)| !is_volatile(name))
            .cloned()
            .collect();
        Self {
            python,
            cwd,
            env,
            options: import_relevant_args(pytest_args, is_test_path),
        }
    }

    /// Why a base built for `self` cannot serve `wanted`, one short reason each; empty
    /// when it can.
    pub fn differences(&self, wanted: &BaseKey) -> Vec<String> {
        let mut reasons = Vec::new();
        if self.python != wanted.python {
            reasons.push(format!("python {}", wanted.python.display()));
        }
        if self.cwd != wanted.cwd {
            reasons.push(format!("working directory {}", wanted.cwd.display()));
        }
        let names: std::collections::BTreeSet<&String> =
            self.env.keys().chain(wanted.env.keys()).collect();
        for name in names {
            if self.env.get(name) != wanted.env.get(name) {
                reasons.push(format!("environment variable {name}"));
            }
        }
        if self.options != wanted.options {
            reasons.push(format!("pytest options {}", wanted.options.join(" ")));
        }
        reasons
    }
}

fn is_volatile(name: &str) -> bool {
    VOLATILE_ENV.contains(&name) || VOLATILE_ENV_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// The arguments that are neither test paths nor selection/report options (with their
/// values).
pub fn import_relevant_args(args: &[String], is_test_path: impl Fn(&str) -> bool) -> Vec<String> {
    let mut kept = Vec::new();
    let mut iter = args.iter().peekable();
    while let Some(arg) = iter.next() {
        if arg == "--" {
            // Everything after is positional.
            kept.extend(iter.by_ref().filter(|a| !is_test_path(a)).cloned());
            break;
        }
        if !arg.starts_with('-') || arg == "-" {
            if !is_test_path(arg) {
                kept.push(arg.clone());
            }
            continue;
        }
        if SELECTION_FLAGS.contains(&arg.as_str()) {
            continue;
        }
        let name = arg.split('=').next().unwrap_or(arg);
        if SELECTION_OPTIONS.contains(&name) {
            if !arg.contains('=') {
                iter.next(); // its value
            }
            continue;
        }
        // `-kEXPR`, `-rA`: a short selection option with its value attached.
        if arg.len() > 2 && !arg.starts_with("--") && SELECTION_OPTIONS.contains(&&arg[..2]) {
            continue;
        }
        kept.push(arg.clone());
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    fn key(env: &[(&str, &str)], pytest_args: &[&str]) -> BaseKey {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        BaseKey::new(
            PathBuf::from("/venv/bin/python"),
            PathBuf::from("/proj"),
            &env,
            &args(pytest_args),
            |a| a.starts_with("tests"),
        )
    }

    #[test]
    fn selection_and_report_options_do_not_matter() {
        let served = key(&[("PATH", "/bin")], &[]);
        let run = key(
            &[
                ("PATH", "/bin"),
                ("COLUMNS", "80"),
                ("SHARDEX_MODE", "zygote"),
            ],
            &[
                "tests/test_a.py::test_x",
                "-x",
                "-k",
                "slow and not db",
                "-vv",
                "--tb=short",
                "-rA",
                "--maxfail",
                "3",
            ],
        );
        assert_eq!(served.differences(&run), Vec::<String>::new());
    }

    #[test]
    fn what_can_change_imports_does() {
        let served = key(&[("PATH", "/bin")], &["--ds", "site.settings"]);
        let other_settings = key(&[("PATH", "/bin")], &["--ds", "site.other"]);
        assert_eq!(
            served.differences(&other_settings),
            ["pytest options --ds site.other"]
        );
        let pythonpath = key(
            &[("PATH", "/bin"), ("PYTHONPATH", "/x")],
            &["--ds", "site.settings"],
        );
        assert_eq!(
            served.differences(&pythonpath),
            ["environment variable PYTHONPATH"]
        );
        let plugin = key(
            &[("PATH", "/bin")],
            &["--ds", "site.settings", "-p", "no:django"],
        );
        assert_eq!(served.differences(&plugin).len(), 1);
    }

    #[test]
    fn unknown_positionals_and_dash_dash_are_kept_conservatively() {
        assert_eq!(
            import_relevant_args(&args(&["nothere", "--", "tests/x.py", "-weird"]), |a| a
                .starts_with("tests")),
            args(&["nothere", "-weird"])
        );
    }
}
