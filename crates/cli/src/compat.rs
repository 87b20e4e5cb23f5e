//! The split of `shardex run`'s argv: the pytest, pytest-xdist and pytest-rerunfailures
//! flags shardex consumes (same spelling and meaning), shardex's own flags, and everything
//! else, passed to pytest in the workers unchanged and in order.
//!
//! This follows pytest's argparse rules: `--flag value` and `--flag=value`, `-n4`, `-n 4`
//! and `-n=4`, combined short flags (`-xvs` consumes `x` and passes `-vs`), a short option
//! that takes a value ends its group (`-rfE`: `fE` is `-r`'s value), and a lone `--` ends
//! option parsing. pytest disables abbreviations of long options, so only exact names match.
//!
//! The value of an unknown option cannot be told from a positional argument; a known
//! pytest option's value (`-k`, `--tb`, `--deselect`...) is never looked into.
//!
//! Which options are consumed comes from `options::OPTIONS`; values are kept as given and
//! parsed by `settings` (which names the option in its errors).

use crate::errors::UsageError;
use crate::options::{self, Opt, OptDef};

/// The command-line layer of the settings: what `split_args` consumed, in order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ConsumedFlags {
    /// `-h/--help`: print shardex's help.
    pub help: bool,
    /// Every consumed option with its value as given (a flag's is its `implied` value, or
    /// `true`), in command-line order.
    pub given: Vec<Given>,
    /// `--junit-prefix`: passed to pytest and also noted here (the report is shardex's).
    pub junit_prefix: Option<String>,
}

/// One consumed option on the command line.
#[derive(Clone, Debug, PartialEq)]
pub struct Given {
    pub def: &'static OptDef,
    pub value: String,
}

impl ConsumedFlags {
    /// The last occurrence of `opt` (the one that wins, as in argparse) and its position.
    pub fn last(&self, opt: Opt) -> Option<(usize, &Given)> {
        self.given
            .iter()
            .enumerate()
            .rev()
            .find(|(_, g)| g.def.opt == opt)
    }

    /// Every value of a repeatable option, in order.
    pub fn all(&self, opt: Opt) -> impl Iterator<Item = &Given> {
        self.given.iter().filter(move |g| g.def.opt == opt)
    }

    fn record(&mut self, def: &'static OptDef, value: Option<&str>) -> Result<(), UsageError> {
        if let Some(why) = def.refused {
            return Err(UsageError::new(format!("{} {why}", def.display())));
        }
        if def.opt == Opt::Help {
            self.help = true;
            return Ok(());
        }
        let value = value.or(def.implied).unwrap_or("true").to_owned();
        self.given.push(Given { def, value });
        Ok(())
    }
}

/// pytest's short options that take a value: the rest of their group, or the next argument,
/// is that value.
pub(crate) const PYTEST_SHORT_WITH_VALUE: &[char] = &['k', 'm', 'p', 'o', 'c', 'r', 'W'];

/// pytest's short flags without a value (scanning a group goes on past them).
const PYTEST_SHORT_FLAGS: &[char] = &['v', 'q', 's', 'l', 'V'];

/// Long options of pytest and common plugins that take a value: the next argument is never
/// taken for one of shardex's flags.
pub(crate) const PYTEST_LONG_WITH_VALUE: &[&str] = &[
    // pytest
    "--tb",
    "--show-capture",
    "--durations",
    "--durations-min",
    "--deselect",
    "--ignore",
    "--ignore-glob",
    "--confcutdir",
    "--rootdir",
    "--basetemp",
    "--import-mode",
    "--capture",
    "--override-ini",
    "--config-file",
    "--pythonwarnings",
    "--junit-prefix",
    "--junitprefix",
    "--last-failed-no-failures",
    "--lfnf",
    "--verbosity",
    "--assert",
    "--code-highlight",
    "--pdbcls",
    "--doctest-glob",
    "--doctest-report",
    "--log-level",
    "--log-format",
    "--log-date-format",
    "--log-cli-level",
    "--log-cli-format",
    "--log-cli-date-format",
    "--log-file",
    "--log-file-level",
    "--log-file-format",
    "--log-file-date-format",
    "--log-file-mode",
    "--log-auto-indent",
    "--log-disable",
    // plugins
    "--cov-report",
    "--cov-config",
    "--cov-fail-under",
    "--cov-context",
    "--ds",
    "--dc",
    "--timeout-method",
    "--timeout_method",
    "--html",
    "--css",
    "--hypothesis-seed",
    "--hypothesis-profile",
    "--hypothesis-verbosity",
    "--randomly-seed",
];

/// Whether `--long` or `-c` (a short name) is consumed by `split_args`.
pub fn is_consumed(name: &str) -> bool {
    match name.strip_prefix("--") {
        Some(long) => options::by_long(long).is_some(),
        None => {
            let mut chars = name.chars().skip(1);
            match (chars.next(), chars.next()) {
                (Some(c), None) => options::by_short(c).is_some(),
                _ => false,
            }
        }
    }
}

/// Whether an argument would be read as an option by argparse (so it cannot be a value).
/// Negative numbers are values, as in argparse when no option looks like one.
fn looks_like_option(arg: &str) -> bool {
    arg.len() > 1 && arg.starts_with('-') && arg[1..].parse::<f64>().is_err()
}

/// Splits `shardex run`'s arguments into the options shardex consumes and pytest's
/// arguments (unchanged, in order).
pub fn split_args<I, S>(argv: I) -> Result<(ConsumedFlags, Vec<String>), UsageError>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let args: Vec<String> = argv.into_iter().map(Into::into).collect();
    let mut flags = ConsumedFlags::default();
    let mut rest = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        i += 1;
        if arg == "--" {
            rest.extend(args[i - 1..].iter().cloned());
            break;
        }
        if let Some(body) = arg.strip_prefix("--") {
            split_long(body, &args, &mut i, &mut flags, &mut rest)?;
        } else if arg.len() > 1 && arg.starts_with('-') {
            split_short_group(arg, &args, &mut i, &mut flags, &mut rest)?;
        } else {
            rest.push(arg.clone());
        }
    }
    Ok((flags, rest))
}

/// One `--name[=value]` argument (`body` is without the dashes).
fn split_long(
    body: &str,
    args: &[String],
    i: &mut usize,
    flags: &mut ConsumedFlags,
    rest: &mut Vec<String>,
) -> Result<(), UsageError> {
    let (name, inline) = match body.split_once('=') {
        Some((name, value)) => (name, Some(value)),
        None => (body, None),
    };
    if let Some(def) = options::by_long(name) {
        let value = match (def.takes_value(), inline) {
            (true, Some(value)) => Some(value.to_owned()),
            (true, None) => Some(next_value(args, i, def)?),
            (false, None) => None,
            (false, Some(value)) => return Err(ignored_argument(def, value)),
        };
        return flags.record(def, value.as_deref());
    }
    rest.push(format!("--{body}"));
    let long = format!("--{name}");
    if PYTEST_LONG_WITH_VALUE.contains(&long.as_str()) {
        let value = match inline {
            Some(value) => Some(value.to_owned()),
            None if *i < args.len() => {
                *i += 1;
                rest.push(args[*i - 1].clone());
                Some(args[*i - 1].clone())
            }
            None => None,
        };
        if matches!(name, "junit-prefix" | "junitprefix") {
            flags.junit_prefix = value;
        }
    }
    Ok(())
}

fn ignored_argument(def: &OptDef, value: &str) -> UsageError {
    UsageError::new(format!(
        "argument {}: ignored explicit argument '{value}'",
        def.display()
    ))
}

/// One `-abc` argument: consumes shardex's letters, passes the others on as one group.
fn split_short_group(
    arg: &str,
    args: &[String],
    i: &mut usize,
    flags: &mut ConsumedFlags,
    rest: &mut Vec<String>,
) -> Result<(), UsageError> {
    let chars: Vec<char> = arg[1..].chars().collect();
    let mut kept = String::new();
    let mut value_follows = false;
    let mut j = 0;
    while j < chars.len() {
        let c = chars[j];
        if let Some(def) = options::by_short(c) {
            let tail: String = chars[j + 1..].iter().collect();
            if def.takes_value() {
                let inline = tail.strip_prefix('=').unwrap_or(&tail);
                let value = if inline.is_empty() {
                    next_value(args, i, def)?
                } else {
                    inline.to_owned()
                };
                flags.record(def, Some(&value))?;
                break;
            }
            if let Some(value) = tail.strip_prefix('=') {
                return Err(ignored_argument(def, value));
            }
            flags.record(def, None)?;
            j += 1;
        } else if PYTEST_SHORT_WITH_VALUE.contains(&c) {
            kept.extend(&chars[j..]);
            value_follows = j + 1 == chars.len();
            break;
        } else if PYTEST_SHORT_FLAGS.contains(&c) {
            kept.push(c);
            j += 1;
        } else {
            // Unknown to shardex (a plugin's, or a mistake pytest will report): the rest of
            // the group is left as it is.
            kept.extend(&chars[j..]);
            break;
        }
    }
    if !kept.is_empty() {
        rest.push(format!("-{kept}"));
    }
    if value_follows && *i < args.len() {
        rest.push(args[*i].clone());
        *i += 1;
    }
    Ok(())
}

/// The argument after an option that takes a value.
fn next_value(args: &[String], i: &mut usize, def: &OptDef) -> Result<String, UsageError> {
    match args.get(*i) {
        Some(value) if !looks_like_option(value) => {
            *i += 1;
            Ok(value.clone())
        }
        _ => Err(UsageError::new(format!(
            "argument {}: expected one argument",
            def.display()
        ))),
    }
}

#[cfg(test)]
mod tests;
