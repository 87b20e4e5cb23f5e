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

use std::path::PathBuf;
use std::str::FromStr;

use shardex_core::schedule::DistMode;

use crate::errors::UsageError;
use crate::settings::{
    parse_count, parse_dist, parse_secs, redact_url, ColorChoice, NumProcesses, QueueSpec,
    RetrySettings, TimingStoreChoice,
};

/// The command-line layer of the settings: what `split_args` consumed. `None`/empty means
/// "not on the command line".
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ConsumedFlags {
    /// `-h/--help`: print shardex's help.
    pub help: bool,
    pub numprocesses: Option<NumProcesses>,
    pub maxprocesses: Option<u32>,
    pub dist: Option<DistMode>,
    pub junitxml: Option<PathBuf>,
    /// `-x` is `Some(1)`; the last of `-x`/`--maxfail` wins, as in pytest.
    pub maxfail: Option<u32>,
    pub retry: RetrySettings,
    pub timings: Vec<PathBuf>,
    /// `--timing-store PATH` or `--no-timing-store`, the last one wins.
    pub timing_store: Option<TimingStoreChoice>,
    pub queue: Option<QueueSpec>,
    pub build_id: Option<String>,
    pub node_index: Option<u32>,
    pub node_total: Option<u32>,
    /// Seconds; 0 turns the timeout off.
    pub timeout: Option<f64>,
    pub timeline: Option<PathBuf>,
    pub python: Option<PathBuf>,
    pub spawn: bool,
    /// Seconds.
    pub kill_grace: Option<f64>,
    /// Seconds.
    pub stop_grace: Option<f64>,
    pub color: Option<ColorChoice>,
    /// `--junit-prefix`: passed to pytest and also noted here (the report is shardex's).
    pub junit_prefix: Option<String>,
    /// Messages for the user (an xdist mode mapped to another, an ignored flag).
    pub notes: Vec<String>,
}

/// What shardex does with a consumed option.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    Help,
    NumProcesses,
    MaxProcesses,
    Dist,
    /// xdist's `-d`, a shortcut for `--dist load`.
    DistLoad,
    /// xdist's `--max-worker-restart`: shardex always replaces a dead worker.
    MaxWorkerRestart,
    ExitFirst,
    MaxFail,
    JunitXml,
    Reruns,
    RerunsDelay,
    OnlyRerun,
    RerunExcept,
    FailOnFlaky,
    MaxSuiteReruns,
    Timings,
    TimingStore,
    NoTimingStore,
    Queue,
    BuildId,
    NodeIndex,
    NodeTotal,
    Timeout,
    Timeline,
    Python,
    Spawn,
    KillGrace,
    StopGrace,
    Color,
    /// Refused with a usage error (the text says why).
    Unsupported(&'static str),
}

struct OptSpec {
    /// Short name, if any.
    short: Option<char>,
    /// Long names, the first is the main one.
    long: &'static [&'static str],
    takes_value: bool,
    action: Action,
}

impl OptSpec {
    /// `-n/--numprocesses`, as argparse names an option in errors.
    fn display(&self) -> String {
        let mut names: Vec<String> = self.short.map(|c| format!("-{c}")).into_iter().collect();
        names.extend(self.long.iter().map(|l| (*l).to_owned()));
        names.join("/")
    }
}

const fn opt(
    short: Option<char>,
    long: &'static [&'static str],
    takes_value: bool,
    action: Action,
) -> OptSpec {
    OptSpec {
        short,
        long,
        takes_value,
        action,
    }
}

/// Every option shardex consumes.
const CONSUMED: &[OptSpec] = &[
    opt(Some('h'), &["--help"], false, Action::Help),
    // pytest-xdist
    opt(Some('n'), &["--numprocesses"], true, Action::NumProcesses),
    opt(None, &["--maxprocesses"], true, Action::MaxProcesses),
    opt(None, &["--dist"], true, Action::Dist),
    opt(Some('d'), &[], false, Action::DistLoad),
    opt(None, &["--max-worker-restart"], true, Action::MaxWorkerRestart),
    opt(
        None,
        &["--tx"],
        true,
        Action::Unsupported("remote and custom execution environments are not supported"),
    ),
    opt(
        None,
        &["--px"],
        true,
        Action::Unsupported("remote and custom execution environments are not supported"),
    ),
    opt(
        None,
        &["--rsyncdir"],
        true,
        Action::Unsupported("remote execution is not supported"),
    ),
    opt(
        None,
        &["--rsyncignore"],
        true,
        Action::Unsupported("remote execution is not supported"),
    ),
    opt(
        None,
        &["--looponfail"],
        false,
        Action::Unsupported("looponfail is not supported; use pytest-watch or --lf"),
    ),
    // pytest
    opt(Some('x'), &["--exitfirst"], false, Action::ExitFirst),
    opt(None, &["--maxfail"], true, Action::MaxFail),
    opt(None, &["--junitxml", "--junit-xml"], true, Action::JunitXml),
    opt(
        None,
        &["--pdb"],
        false,
        Action::Unsupported(
            "is incompatible with distributing tests (as with pytest-xdist); run pytest directly to debug",
        ),
    ),
    // pytest-rerunfailures
    opt(None, &["--reruns"], true, Action::Reruns),
    opt(None, &["--reruns-delay"], true, Action::RerunsDelay),
    opt(None, &["--only-rerun"], true, Action::OnlyRerun),
    opt(None, &["--rerun-except"], true, Action::RerunExcept),
    opt(None, &["--fail-on-flaky"], false, Action::FailOnFlaky),
    opt(None, &["--max-suite-reruns"], true, Action::MaxSuiteReruns),
    // shardex (--color and --timeout have pytest's and pytest-timeout's meaning too)
    opt(None, &["--timings"], true, Action::Timings),
    opt(None, &["--timing-store"], true, Action::TimingStore),
    opt(None, &["--no-timing-store"], false, Action::NoTimingStore),
    opt(None, &["--queue"], true, Action::Queue),
    opt(None, &["--build-id"], true, Action::BuildId),
    opt(None, &["--node-index"], true, Action::NodeIndex),
    opt(None, &["--node-total"], true, Action::NodeTotal),
    opt(None, &["--timeout"], true, Action::Timeout),
    opt(None, &["--timeline"], true, Action::Timeline),
    opt(None, &["--python"], true, Action::Python),
    opt(None, &["--spawn"], false, Action::Spawn),
    opt(None, &["--kill-grace"], true, Action::KillGrace),
    opt(None, &["--stop-grace"], true, Action::StopGrace),
    opt(None, &["--color"], true, Action::Color),
];

/// pytest's short options that take a value: the rest of their group, or the next argument,
/// is that value.
const PYTEST_SHORT_WITH_VALUE: &[char] = &['k', 'm', 'p', 'o', 'c', 'r', 'W'];

/// pytest's short flags without a value (scanning a group goes on past them).
const PYTEST_SHORT_FLAGS: &[char] = &['v', 'q', 's', 'l', 'V'];

/// Long options of pytest and common plugins that take a value: the next argument is never
/// taken for one of shardex's flags.
const PYTEST_LONG_WITH_VALUE: &[&str] = &[
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

fn consumed_long(name: &str) -> Option<&'static OptSpec> {
    CONSUMED.iter().find(|spec| spec.long.contains(&name))
}

fn consumed_short(c: char) -> Option<&'static OptSpec> {
    CONSUMED.iter().find(|spec| spec.short == Some(c))
}

/// Whether `long` (`--timings`) or `-c` (a short name) is consumed by `split_args`; for the
/// check that the help lists only options that are handled.
pub fn is_consumed(name: &str) -> bool {
    match name.strip_prefix("--") {
        Some(_) => consumed_long(name).is_some(),
        None => {
            let mut chars = name.chars().skip(1);
            match (chars.next(), chars.next()) {
                (Some(c), None) => consumed_short(c).is_some(),
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
            let (name, inline) = match body.split_once('=') {
                Some((name, value)) => (&arg[..name.len() + 2], Some(value)),
                None => (arg.as_str(), None),
            };
            if let Some(spec) = consumed_long(name) {
                let value = match (spec.takes_value, inline) {
                    (true, Some(value)) => Some(value.to_owned()),
                    (true, None) => Some(next_value(&args, &mut i, spec)?),
                    (false, None) => None,
                    (false, Some(value)) => {
                        return Err(UsageError::new(format!(
                            "argument {}: ignored explicit argument '{value}'",
                            spec.display()
                        )))
                    }
                };
                apply(&mut flags, spec, value.as_deref())?;
                continue;
            }
            rest.push(arg.clone());
            if PYTEST_LONG_WITH_VALUE.contains(&name) {
                let value = match inline {
                    Some(value) => Some(value.to_owned()),
                    None if i < args.len() => {
                        i += 1;
                        rest.push(args[i - 1].clone());
                        Some(args[i - 1].clone())
                    }
                    None => None,
                };
                if matches!(name, "--junit-prefix" | "--junitprefix") {
                    flags.junit_prefix = value;
                }
            }
            continue;
        }
        if arg.len() > 1 && arg.starts_with('-') {
            split_short_group(arg, &args, &mut i, &mut flags, &mut rest)?;
            continue;
        }
        rest.push(arg.clone());
    }
    Ok((flags, rest))
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
        if let Some(spec) = consumed_short(c) {
            let tail: String = chars[j + 1..].iter().collect();
            if spec.takes_value {
                let inline = tail.strip_prefix('=').unwrap_or(&tail);
                let value = if inline.is_empty() {
                    next_value(args, i, spec)?
                } else {
                    inline.to_owned()
                };
                apply(flags, spec, Some(&value))?;
                break;
            }
            if let Some(value) = tail.strip_prefix('=') {
                return Err(UsageError::new(format!(
                    "argument {}: ignored explicit argument '{value}'",
                    spec.display()
                )));
            }
            apply(flags, spec, None)?;
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
fn next_value(args: &[String], i: &mut usize, spec: &OptSpec) -> Result<String, UsageError> {
    match args.get(*i) {
        Some(value) if !looks_like_option(value) => {
            *i += 1;
            Ok(value.clone())
        }
        _ => Err(UsageError::new(format!(
            "argument {}: expected one argument",
            spec.display()
        ))),
    }
}

/// Records one consumed option.
fn apply(flags: &mut ConsumedFlags, spec: &OptSpec, value: Option<&str>) -> Result<(), UsageError> {
    let raw = value.unwrap_or_default();
    let invalid = |expected: String| {
        UsageError::invalid_value(&format!("argument {}", spec.display()), raw, &expected)
    };
    match spec.action {
        Action::Help => flags.help = true,
        Action::NumProcesses => {
            flags.numprocesses = Some(NumProcesses::from_str(raw).map_err(invalid)?)
        }
        Action::MaxProcesses => flags.maxprocesses = Some(parse_count(raw).map_err(invalid)?),
        Action::Dist => {
            let (mode, note) = parse_dist(raw).map_err(invalid)?;
            flags.dist = Some(mode);
            flags.notes.extend(note);
        }
        Action::DistLoad => flags.dist = Some(DistMode::Load),
        Action::MaxWorkerRestart => {
            parse_count(raw).map_err(invalid)?;
            flags.notes.push(
                "--max-worker-restart: ignored; shardex replaces every worker that dies".into(),
            );
        }
        Action::ExitFirst => flags.maxfail = Some(1),
        Action::MaxFail => flags.maxfail = Some(parse_count(raw).map_err(invalid)?),
        Action::JunitXml => flags.junitxml = Some(non_empty_path(raw).map_err(invalid)?),
        Action::Reruns => flags.retry.reruns = parse_count(raw).map_err(invalid)?,
        Action::RerunsDelay => {
            flags.retry.reruns_delay =
                std::time::Duration::from_secs_f64(parse_secs(raw).map_err(invalid)?);
        }
        Action::OnlyRerun => flags.retry.only_rerun.push(raw.to_owned()),
        Action::RerunExcept => flags.retry.rerun_except.push(raw.to_owned()),
        Action::FailOnFlaky => flags.retry.fail_on_flaky = true,
        Action::MaxSuiteReruns => {
            flags.retry.max_suite_reruns = Some(parse_count(raw).map_err(invalid)?);
        }
        Action::Timings => flags.timings.push(non_empty_path(raw).map_err(invalid)?),
        Action::TimingStore => {
            flags.timing_store = Some(TimingStoreChoice::Path(
                non_empty_path(raw).map_err(invalid)?,
            ));
        }
        Action::NoTimingStore => flags.timing_store = Some(TimingStoreChoice::Disabled),
        Action::Queue => {
            flags.queue = Some(QueueSpec::from_str(raw).map_err(|expected| {
                UsageError::invalid_value(
                    &format!("argument {}", spec.display()),
                    &redact_url(raw),
                    &expected,
                )
            })?);
        }
        Action::BuildId => flags.build_id = Some(raw.to_owned()),
        Action::NodeIndex => flags.node_index = Some(parse_count(raw).map_err(invalid)?),
        Action::NodeTotal => flags.node_total = Some(parse_count(raw).map_err(invalid)?),
        Action::Timeout => flags.timeout = Some(parse_secs(raw).map_err(invalid)?),
        Action::Timeline => flags.timeline = Some(non_empty_path(raw).map_err(invalid)?),
        Action::Python => flags.python = Some(non_empty_path(raw).map_err(invalid)?),
        Action::Spawn => flags.spawn = true,
        Action::KillGrace => flags.kill_grace = Some(parse_secs(raw).map_err(invalid)?),
        Action::StopGrace => flags.stop_grace = Some(parse_secs(raw).map_err(invalid)?),
        Action::Color => flags.color = Some(ColorChoice::from_str(raw).map_err(invalid)?),
        Action::Unsupported(why) => {
            return Err(UsageError::new(format!("{} {why}", spec.display())))
        }
    }
    Ok(())
}

fn non_empty_path(raw: &str) -> Result<PathBuf, String> {
    if raw.is_empty() {
        Err("expected a path".into())
    } else {
        Ok(PathBuf::from(raw))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn split(argv: &[&str]) -> (ConsumedFlags, Vec<String>) {
        split_args(argv.iter().copied()).unwrap_or_else(|e| panic!("{argv:?}: {e}"))
    }

    fn rest(argv: &[&str]) -> Vec<String> {
        split(argv).1
    }

    fn error(argv: &[&str]) -> String {
        match split_args(argv.iter().copied()) {
            Ok(got) => panic!("{argv:?}: expected an error, got {got:?}"),
            Err(e) => e.to_string(),
        }
    }

    /// What passes through to pytest.
    #[test]
    fn passthrough_table() {
        let cases: &[(&[&str], &[&str])] = &[
            (&[], &[]),
            (&["tests"], &["tests"]),
            (&["tests/a.py::test_x", "-q"], &["tests/a.py::test_x", "-q"]),
            (&["-n", "4", "tests"], &["tests"]),
            (&["-n4", "tests"], &["tests"]),
            (&["-n=4"], &[]),
            (&["--numprocesses", "4"], &[]),
            (&["--numprocesses=auto", "-v"], &["-v"]),
            (&["-xvs"], &["-vs"]),
            (&["-vxs"], &["-vs"]),
            (&["-x"], &[]),
            (&["-vn4"], &["-v"]),
            (&["-vn", "4", "t"], &["-v", "t"]),
            (&["-xn", "2"], &[]),
            // -r takes the rest of its group: `fE` and `n4` are values, not flags.
            (&["-rfE"], &["-rfE"]),
            (&["-rn4"], &["-rn4"]),
            (&["-vrx"], &["-vrx"]),
            (&["-xrfE"], &["-rfE"]),
            // Value in the next argument: never scanned.
            (&["-k", "-x"], &["-k", "-x"]),
            (&["-k", "not slow", "-x"], &["-k", "not slow"]),
            (&["-xk", "test_a"], &["-k", "test_a"]),
            (&["-m", "-n"], &["-m", "-n"]),
            (&["-p", "no:cacheprovider"], &["-p", "no:cacheprovider"]),
            (&["-pno:randomly", "-x"], &["-pno:randomly"]),
            (&["-o", "xfail_strict=true"], &["-o", "xfail_strict=true"]),
            (&["-c", "ci.ini"], &["-c", "ci.ini"]),
            (&["-W", "error", "-x"], &["-W", "error"]),
            (&["--tb", "short", "-x"], &["--tb", "short"]),
            (&["--tb=short"], &["--tb=short"]),
            (&["--deselect", "-x"], &["--deselect", "-x"]),
            (
                &["--rootdir", "src", "--junit-prefix", "p"],
                &["--rootdir", "src", "--junit-prefix", "p"],
            ),
            // Unknown options and their values pass; shardex flags after them are still read.
            (
                &["--reuse-db", "-x", "--create-db"],
                &["--reuse-db", "--create-db"],
            ),
            (
                &["--cov=src", "--cov-report", "xml"],
                &["--cov=src", "--cov-report", "xml"],
            ),
            (&["-Z"], &["-Z"]),
            (&["-vZx"], &["-vZx"]),
            (&["-"], &["-"]),
            (&["-1"], &["-1"]),
            // A lone `--` ends option parsing: the rest is pytest's, `--` included.
            (&["-x", "--", "-n", "4"], &["--", "-n", "4"]),
            (&["--", "--junitxml=x.xml"], &["--", "--junitxml=x.xml"]),
            // Abbreviations are not options (pytest sets allow_abbrev=False).
            (&["--numproc", "4"], &["--numproc", "4"]),
            // pytest's own, not consumed.
            (
                &["-q", "-v", "-ra", "--lf", "-p", "xdist"],
                &["-q", "-v", "-ra", "--lf", "-p", "xdist"],
            ),
        ];
        for (argv, expected) in cases {
            assert_eq!(rest(argv), *expected, "{argv:?}");
        }
    }

    /// What is consumed, and its value.
    #[test]
    fn consumed_table() {
        let cases: Vec<(&[&str], ConsumedFlags)> = vec![
            (
                &["-n", "auto"],
                ConsumedFlags {
                    numprocesses: Some(NumProcesses::Auto),
                    ..Default::default()
                },
            ),
            (
                &["-nlogical"],
                ConsumedFlags {
                    numprocesses: Some(NumProcesses::Logical),
                    ..Default::default()
                },
            ),
            (
                &["-n", "0"],
                ConsumedFlags {
                    numprocesses: Some(NumProcesses::Count(0)),
                    ..Default::default()
                },
            ),
            (
                &["-n", "2", "-n", "3"],
                ConsumedFlags {
                    numprocesses: Some(NumProcesses::Count(3)),
                    ..Default::default()
                },
            ),
            (
                &["--maxprocesses=3"],
                ConsumedFlags {
                    maxprocesses: Some(3),
                    ..Default::default()
                },
            ),
            (
                &["--dist", "loadscope"],
                ConsumedFlags {
                    dist: Some(DistMode::LoadScope),
                    ..Default::default()
                },
            ),
            (
                &["--dist=loadfile"],
                ConsumedFlags {
                    dist: Some(DistMode::LoadFile),
                    ..Default::default()
                },
            ),
            (
                &["--dist", "no"],
                ConsumedFlags {
                    dist: Some(DistMode::Load),
                    ..Default::default()
                },
            ),
            (
                &["-d"],
                ConsumedFlags {
                    dist: Some(DistMode::Load),
                    ..Default::default()
                },
            ),
            (
                &["-x"],
                ConsumedFlags {
                    maxfail: Some(1),
                    ..Default::default()
                },
            ),
            (
                &["--exitfirst"],
                ConsumedFlags {
                    maxfail: Some(1),
                    ..Default::default()
                },
            ),
            (
                &["--maxfail", "3"],
                ConsumedFlags {
                    maxfail: Some(3),
                    ..Default::default()
                },
            ),
            // The last of -x and --maxfail wins, as in pytest (both set `maxfail`).
            (
                &["--maxfail=3", "-x"],
                ConsumedFlags {
                    maxfail: Some(1),
                    ..Default::default()
                },
            ),
            (
                &["-x", "--maxfail=3"],
                ConsumedFlags {
                    maxfail: Some(3),
                    ..Default::default()
                },
            ),
            (
                &["--junitxml", "r/j.xml"],
                ConsumedFlags {
                    junitxml: Some("r/j.xml".into()),
                    ..Default::default()
                },
            ),
            (
                &["--junit-xml=r/j.xml"],
                ConsumedFlags {
                    junitxml: Some("r/j.xml".into()),
                    ..Default::default()
                },
            ),
            (
                &[
                    "--reruns",
                    "3",
                    "--reruns-delay=0.5",
                    "--only-rerun",
                    "AssertionError",
                    "--only-rerun=Timeout.*",
                    "--rerun-except",
                    "KeyError",
                    "--fail-on-flaky",
                    "--max-suite-reruns",
                    "10",
                ],
                ConsumedFlags {
                    retry: RetrySettings {
                        reruns: 3,
                        reruns_delay: Duration::from_millis(500),
                        only_rerun: vec!["AssertionError".into(), "Timeout.*".into()],
                        rerun_except: vec!["KeyError".into()],
                        fail_on_flaky: true,
                        max_suite_reruns: Some(10),
                    },
                    ..Default::default()
                },
            ),
            // A regex that is not valid Python is stored; the worker reports it.
            (
                &["--only-rerun", "(unclosed"],
                ConsumedFlags {
                    retry: RetrySettings {
                        only_rerun: vec!["(unclosed".into()],
                        ..Default::default()
                    },
                    ..Default::default()
                },
            ),
            (
                &["--timings", "a.xml", "--timings=ci/"],
                ConsumedFlags {
                    timings: vec!["a.xml".into(), "ci/".into()],
                    ..Default::default()
                },
            ),
            (
                &["--timing-store", "t.json"],
                ConsumedFlags {
                    timing_store: Some(TimingStoreChoice::Path("t.json".into())),
                    ..Default::default()
                },
            ),
            (
                &["--timing-store", "t.json", "--no-timing-store"],
                ConsumedFlags {
                    timing_store: Some(TimingStoreChoice::Disabled),
                    ..Default::default()
                },
            ),
            (
                &["--queue", "local"],
                ConsumedFlags {
                    queue: Some(QueueSpec::Local),
                    ..Default::default()
                },
            ),
            (
                &["--build-id", "b-1", "--node-index=1", "--node-total", "4"],
                ConsumedFlags {
                    build_id: Some("b-1".into()),
                    node_index: Some(1),
                    node_total: Some(4),
                    ..Default::default()
                },
            ),
            (
                &["--timeout", "2.5", "--kill-grace=0"],
                ConsumedFlags {
                    timeout: Some(2.5),
                    kill_grace: Some(0.0),
                    ..Default::default()
                },
            ),
            (
                &[
                    "--timeline",
                    "t.html",
                    "--python",
                    ".venv/bin/python",
                    "--spawn",
                ],
                ConsumedFlags {
                    timeline: Some("t.html".into()),
                    python: Some(".venv/bin/python".into()),
                    spawn: true,
                    ..Default::default()
                },
            ),
            (
                &["--color=no"],
                ConsumedFlags {
                    color: Some(ColorChoice::No),
                    ..Default::default()
                },
            ),
            (
                &["--color", "yes"],
                ConsumedFlags {
                    color: Some(ColorChoice::Yes),
                    ..Default::default()
                },
            ),
            (
                &["-h"],
                ConsumedFlags {
                    help: true,
                    ..Default::default()
                },
            ),
            (
                &["-vh"],
                ConsumedFlags {
                    help: true,
                    ..Default::default()
                },
            ),
            (
                &["tests", "--help"],
                ConsumedFlags {
                    help: true,
                    ..Default::default()
                },
            ),
            (
                &["--junit-prefix=ci"],
                ConsumedFlags {
                    junit_prefix: Some("ci".into()),
                    ..Default::default()
                },
            ),
            (
                &["--junit-prefix", "ci"],
                ConsumedFlags {
                    junit_prefix: Some("ci".into()),
                    ..Default::default()
                },
            ),
        ];
        for (argv, expected) in cases {
            assert_eq!(split(argv).0, expected, "{argv:?}");
        }
    }

    #[test]
    fn notes() {
        let (flags, _) = split(&["--dist", "worksteal"]);
        assert_eq!(flags.dist, Some(DistMode::Load));
        assert_eq!(
            flags.notes,
            ["--dist worksteal: shardex's load mode already steals work; using load"]
        );
        let (flags, _) = split(&["--dist=loadgroup"]);
        assert_eq!(flags.dist, Some(DistMode::LoadGroup));
        assert!(flags.notes.is_empty());
        let (flags, rest) = split(&["--max-worker-restart", "3"]);
        assert_eq!(flags.notes.len(), 1);
        assert!(rest.is_empty());
    }

    #[test]
    fn error_table() {
        let cases: &[(&[&str], &str)] = &[
            (&["-n", "many"], "argument -n/--numprocesses: invalid value 'many' (expected auto, logical or a number of workers)"),
            (&["-n-1"], "argument -n/--numprocesses: invalid value '-1' (expected auto, logical or a number of workers)"),
            (&["-n"], "argument -n/--numprocesses: expected one argument"),
            (&["-n", "-x"], "argument -n/--numprocesses: expected one argument"),
            (&["--numprocesses"], "argument -n/--numprocesses: expected one argument"),
            (&["-n4x"], "argument -n/--numprocesses: invalid value '4x' (expected auto, logical or a number of workers)"),
            (&["--dist", "each"], "argument --dist: invalid value 'each' (each runs every test on every worker; not supported)"),
            (&["--dist=random"], "argument --dist: invalid value 'random' (expected load, loadscope, loadfile or loadgroup)"),
            (&["--maxfail", "x"], "argument --maxfail: invalid value 'x' (expected a whole number ≥ 0)"),
            (&["--exitfirst=1"], "argument -x/--exitfirst: ignored explicit argument '1'"),
            (&["-x=1"], "argument -x/--exitfirst: ignored explicit argument '1'"),
            (&["--spawn=yes"], "argument --spawn: ignored explicit argument 'yes'"),
            (&["--junitxml"], "argument --junitxml/--junit-xml: expected one argument"),
            (&["--junitxml="], "argument --junitxml/--junit-xml: invalid value '' (expected a path)"),
            (&["--reruns", "two"], "argument --reruns: invalid value 'two' (expected a whole number ≥ 0)"),
            (&["--reruns-delay", "-1"], "argument --reruns-delay: invalid value '-1' (expected a number of seconds, e.g. 30 or 2.5)"),
            (&["--timeout", "inf"], "argument --timeout: invalid value 'inf' (expected a number of seconds, e.g. 30 or 2.5)"),
            (&["--timeout", "1m"], "argument --timeout: invalid value '1m' (expected a number of seconds, e.g. 30 or 2.5)"),
            (&["--kill-grace", "NaN"], "argument --kill-grace: invalid value 'NaN' (expected a number of seconds, e.g. 30 or 2.5)"),
            (&["--color", "always"], "argument --color: invalid value 'always' (expected auto, yes or no)"),
            (&["--node-index", "-2"], "argument --node-index: invalid value '-2' (expected a whole number ≥ 0)"),
            (&["--queue", "memcached://x"], "argument --queue: invalid value 'memcached://x' (expected local, redis://[USER:PASSWORD@]HOST[:PORT][/DB] or rediss://…)"),
            (&["--queue=redis://u:pw@h:x"], "argument --queue: invalid value 'redis://u:***@h:x' (port 'x' is not a number from 1 to 65535)"),
            (&["--pdb"], "--pdb is incompatible with distributing tests (as with pytest-xdist); run pytest directly to debug"),
            (&["--tx", "ssh=host"], "--tx remote and custom execution environments are not supported"),
        ];
        for (argv, expected) in cases {
            assert_eq!(error(argv), *expected, "{argv:?}");
        }
    }

    #[test]
    fn names() {
        assert!(is_consumed("--timings"));
        assert!(is_consumed("--junit-xml"));
        assert!(is_consumed("-n"));
        assert!(!is_consumed("-k"));
        assert!(!is_consumed("--tb"));
    }
}
