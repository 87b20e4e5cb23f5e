//! The one definition of every option `shardex run` consumes: its names, value kind and
//! range, environment variable, `[tool.shardex]` key, default and help. The help (a clap
//! `Command` built from this table), the argv splitter (`compat`) and the settings' layers
//! (`settings`) all read it; nothing else lists options.

use clap::{Arg, ArgAction};

/// What a consumed option sets. Several spellings can set one slot: `-x` and `--maxfail`
/// both set `MaxFail` (the last one wins, as in pytest), `-d` and `--dist` set `Dist`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Opt {
    Help,
    NumProcesses,
    MaxProcesses,
    Dist,
    MaxWorkerRestart,
    MaxFail,
    JunitXml,
    Color,
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
    QueueLease,
    NodeIndex,
    NodeTotal,
    Timeout,
    Timeline,
    Python,
    Spawn,
    Daemon,
    NoDaemon,
    KillGrace,
    StopGrace,
    Watch,
    WatchAll,
    /// A pytest or xdist option shardex cannot honour: refused with `OptDef::refused`.
    Refused,
}

/// The value an option takes, with its range: out of range is a usage error.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Kind {
    /// No value (`-x`, `--spawn`); `1/true/yes/on` or `0/false/no/off` in env and file.
    Flag,
    /// A whole number in `min..=max`.
    Count { min: u32, max: u32 },
    /// Seconds, finite, in `0..=max`.
    Secs { max: f64 },
    /// One of a few words (and, for `-n`, a count): parsed by the setting's own parser.
    Word,
    /// Free text (a regex, an id, a URL).
    Text,
    /// A non-empty path.
    Path,
}

/// Where an option may come from besides the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sources {
    /// pytest's own options: the command line only, as in pytest.
    CliOnly,
    /// shardex's settings: also `SHARDEX_*` and `[tool.shardex]` (key = long name).
    Everywhere,
}

pub const XDIST: &str = "Parallelism (pytest-xdist)";
pub const PYTEST: &str = "Stopping and reporting (pytest)";
pub const RERUNS: &str = "Retries (pytest-rerunfailures)";
pub const SHARDEX: &str = "shardex";

/// Upper limit of `-n`/`--maxprocesses`: beyond it, a typo rather than a machine.
pub const MAX_WORKERS: u32 = 1024;

/// One consumed option.
#[derive(Debug, PartialEq)]
pub struct OptDef {
    pub opt: Opt,
    pub short: Option<char>,
    /// Long name without `--`; also the `[tool.shardex]` key.
    pub long: Option<&'static str>,
    pub aliases: &'static [&'static str],
    pub kind: Kind,
    /// `N`, `SECS`, `PATH`... (None for flags).
    pub value_name: Option<&'static str>,
    /// Repeatable: every occurrence counts (`--timings a --timings b`).
    pub repeat: bool,
    pub sources: Sources,
    /// The value used when no layer gives one (parsed like any other).
    pub default: Option<&'static str>,
    /// What a flag stores when given (`-x` stores `1` into `MaxFail`).
    pub implied: Option<&'static str>,
    pub help: &'static str,
    /// Help section; `None` hides the option from the help.
    pub heading: Option<&'static str>,
    /// Why the option is refused (a usage error), when it is.
    pub refused: Option<&'static str>,
}

const BASE: OptDef = OptDef {
    opt: Opt::Refused,
    short: None,
    long: None,
    aliases: &[],
    kind: Kind::Flag,
    value_name: None,
    repeat: false,
    sources: Sources::CliOnly,
    default: None,
    implied: None,
    help: "",
    heading: None,
    refused: None,
};

const fn refused(long: &'static str, takes_value: bool, why: &'static str) -> OptDef {
    OptDef {
        long: Some(long),
        kind: if takes_value { Kind::Text } else { Kind::Flag },
        refused: Some(why),
        ..BASE
    }
}

const SECS: Option<&str> = Some("SECS");
const N: Option<&str> = Some("N");
const PATH: Option<&str> = Some("PATH");
const REMOTE: &str = "remote and custom execution environments are not supported";

/// Every option shardex consumes, in help order.
pub static OPTIONS: &[OptDef] = &[
    // pytest-xdist
    OptDef {
        opt: Opt::NumProcesses,
        short: Some('n'),
        long: Some("numprocesses"),
        kind: Kind::Word,
        value_name: N,
        sources: Sources::Everywhere,
        default: Some("auto"),
        help: "Number of workers: a number up to 1024, `auto` (CPUs available, cgroup quota \
               included) or `logical`; 0 runs one worker",
        heading: Some(XDIST),
        ..BASE
    },
    OptDef {
        opt: Opt::MaxProcesses,
        long: Some("maxprocesses"),
        kind: Kind::Count {
            min: 0,
            max: MAX_WORKERS,
        },
        value_name: N,
        sources: Sources::Everywhere,
        help: "Upper limit on the number of workers (0: no limit)",
        heading: Some(XDIST),
        ..BASE
    },
    OptDef {
        opt: Opt::Dist,
        long: Some("dist"),
        kind: Kind::Word,
        value_name: Some("MODE"),
        sources: Sources::Everywhere,
        default: Some("load"),
        help: "How tests are grouped on workers: load, loadscope, loadfile or loadgroup \
               (worksteal runs as load)",
        heading: Some(XDIST),
        ..BASE
    },
    OptDef {
        opt: Opt::Dist,
        short: Some('d'),
        implied: Some("load"),
        ..BASE
    },
    OptDef {
        opt: Opt::MaxWorkerRestart,
        long: Some("max-worker-restart"),
        kind: Kind::Count {
            min: 0,
            max: u32::MAX,
        },
        value_name: N,
        ..BASE
    },
    refused("tx", true, REMOTE),
    refused("px", true, REMOTE),
    refused("rsyncdir", true, "remote execution is not supported"),
    refused("rsyncignore", true, "remote execution is not supported"),
    refused(
        "looponfail",
        false,
        "looponfail is not supported; use pytest-watch or --lf",
    ),
    // pytest
    OptDef {
        opt: Opt::MaxFail,
        short: Some('x'),
        long: Some("exitfirst"),
        implied: Some("1"),
        help: "Stop after the first failure (a failure that exhausted its retries)",
        heading: Some(PYTEST),
        ..BASE
    },
    OptDef {
        opt: Opt::MaxFail,
        long: Some("maxfail"),
        kind: Kind::Count {
            min: 0,
            max: u32::MAX,
        },
        value_name: N,
        help: "Stop after N failures (0: never, also over addopts)",
        heading: Some(PYTEST),
        ..BASE
    },
    OptDef {
        opt: Opt::JunitXml,
        long: Some("junitxml"),
        aliases: &["junit-xml"],
        kind: Kind::Path,
        value_name: PATH,
        help: "Write a JUnit XML report (xunit1, with retries as flakyFailure/rerunFailure)",
        heading: Some(PYTEST),
        ..BASE
    },
    OptDef {
        opt: Opt::Color,
        long: Some("color"),
        kind: Kind::Word,
        value_name: Some("WHEN"),
        sources: Sources::Everywhere,
        default: Some("auto"),
        help: "Color the output: auto, yes or no",
        heading: Some(PYTEST),
        ..BASE
    },
    refused(
        "pdb",
        false,
        "is incompatible with distributing tests (as with pytest-xdist); run pytest directly \
         to debug",
    ),
    // pytest-rerunfailures
    OptDef {
        opt: Opt::Reruns,
        long: Some("reruns"),
        kind: Kind::Count { min: 0, max: 1000 },
        value_name: N,
        help: "Rerun a failing test up to N times (0: never, also over addopts)",
        heading: Some(RERUNS),
        ..BASE
    },
    OptDef {
        opt: Opt::RerunsDelay,
        long: Some("reruns-delay"),
        kind: Kind::Secs { max: 3600.0 },
        value_name: SECS,
        help: "Seconds to wait before a rerun",
        heading: Some(RERUNS),
        ..BASE
    },
    OptDef {
        opt: Opt::OnlyRerun,
        long: Some("only-rerun"),
        kind: Kind::Text,
        value_name: Some("REGEX"),
        repeat: true,
        help: "Rerun only errors matching this Python regex (repeatable)",
        heading: Some(RERUNS),
        ..BASE
    },
    OptDef {
        opt: Opt::RerunExcept,
        long: Some("rerun-except"),
        kind: Kind::Text,
        value_name: Some("REGEX"),
        repeat: true,
        help: "Do not rerun errors matching this Python regex (repeatable)",
        heading: Some(RERUNS),
        ..BASE
    },
    OptDef {
        opt: Opt::FailOnFlaky,
        long: Some("fail-on-flaky"),
        help: "Exit with 7 when a test passed only on a rerun",
        heading: Some(RERUNS),
        ..BASE
    },
    OptDef {
        opt: Opt::MaxSuiteReruns,
        long: Some("max-suite-reruns"),
        kind: Kind::Count {
            min: 0,
            max: u32::MAX,
        },
        value_name: N,
        help: "Stop rerunning after N reruns in the whole run",
        heading: Some(RERUNS),
        ..BASE
    },
    // shardex (--color and --timeout have pytest's and pytest-timeout's meaning too)
    OptDef {
        opt: Opt::Timings,
        long: Some("timings"),
        kind: Kind::Path,
        value_name: PATH,
        repeat: true,
        sources: Sources::Everywhere,
        help: "Durations to schedule by: JUnit XML files or folders, pytest-split \
               .test_durations, shardex timings (repeatable; SHARDEX_TIMINGS separates paths \
               with ':')",
        heading: Some(SHARDEX),
        ..BASE
    },
    OptDef {
        opt: Opt::TimingStore,
        long: Some("timing-store"),
        kind: Kind::Path,
        value_name: PATH,
        sources: Sources::Everywhere,
        help: "Where durations of past runs are kept [default: <rootdir>/.shardex/timings.json]",
        heading: Some(SHARDEX),
        ..BASE
    },
    OptDef {
        opt: Opt::NoTimingStore,
        long: Some("no-timing-store"),
        sources: Sources::Everywhere,
        help: "Neither read nor update the timing store",
        heading: Some(SHARDEX),
        ..BASE
    },
    OptDef {
        opt: Opt::Queue,
        long: Some("queue"),
        kind: Kind::Word,
        value_name: Some("QUEUE"),
        sources: Sources::Everywhere,
        default: Some("local"),
        help: "Work queue: local, or redis://[USER:PASSWORD@]HOST[:PORT][/DB] (rediss:// for \
               TLS) for one queue shared by every CI node of a job",
        heading: Some(SHARDEX),
        ..BASE
    },
    OptDef {
        opt: Opt::BuildId,
        long: Some("build-id"),
        kind: Kind::Text,
        value_name: Some("ID"),
        sources: Sources::Everywhere,
        help: "The job the shared queue belongs to: the same on every node of one job, new \
               on a rerun [default: from CircleCI, GitLab or Buildkite]",
        heading: Some(SHARDEX),
        ..BASE
    },
    OptDef {
        opt: Opt::QueueLease,
        long: Some("queue-lease"),
        kind: Kind::Secs { max: 86_400.0 },
        value_name: SECS,
        sources: Sources::Everywhere,
        default: Some("10"),
        help: "Shortest lease of a test taken from the shared queue: a node that stops \
               renewing its leases (it died) loses its tests to the others after this long",
        heading: Some(SHARDEX),
        ..BASE
    },
    OptDef {
        opt: Opt::NodeIndex,
        long: Some("node-index"),
        kind: Kind::Count {
            min: 0,
            max: MAX_NODES - 1,
        },
        value_name: N,
        sources: Sources::Everywhere,
        help: "This machine's index, from 0 [default: from CircleCI, GitLab, Buildkite or \
               Bazel sharding, else 0]",
        heading: Some(SHARDEX),
        ..BASE
    },
    OptDef {
        opt: Opt::NodeTotal,
        long: Some("node-total"),
        kind: Kind::Count {
            min: 1,
            max: MAX_NODES,
        },
        value_name: N,
        sources: Sources::Everywhere,
        help: "Number of machines [default: from CircleCI, GitLab, Buildkite or Bazel \
               sharding, else 1]",
        heading: Some(SHARDEX),
        ..BASE
    },
    OptDef {
        opt: Opt::Timeout,
        long: Some("timeout"),
        kind: Kind::Secs { max: 604_800.0 },
        value_name: SECS,
        sources: Sources::Everywhere,
        help: "Fail a test that runs longer than SECS (its worker is killed and replaced); \
               0 is off",
        heading: Some(SHARDEX),
        ..BASE
    },
    OptDef {
        opt: Opt::Timeline,
        long: Some("timeline"),
        kind: Kind::Path,
        value_name: PATH,
        sources: Sources::Everywhere,
        help: "Write a picture of the run to PATH (.html or .svg): one lane per worker, a bar \
               per attempt",
        heading: Some(SHARDEX),
        ..BASE
    },
    OptDef {
        opt: Opt::Python,
        long: Some("python"),
        kind: Kind::Path,
        value_name: PATH,
        sources: Sources::Everywhere,
        help: "Python interpreter with pytest [default: $VIRTUAL_ENV/bin/python, then python3 \
               on PATH]",
        heading: Some(SHARDEX),
        ..BASE
    },
    OptDef {
        opt: Opt::Spawn,
        long: Some("spawn"),
        sources: Sources::Everywhere,
        help: "Start each worker as its own pytest process instead of forking it from one \
               that collected (slower start; for code that cannot be forked)",
        heading: Some(SHARDEX),
        ..BASE
    },
    OptDef {
        opt: Opt::Daemon,
        long: Some("daemon"),
        sources: Sources::Everywhere,
        help: "Run through this project's daemon (`shardex serve`), starting it when none \
               runs (a running daemon is used without this flag)",
        heading: Some(SHARDEX),
        ..BASE
    },
    OptDef {
        opt: Opt::NoDaemon,
        long: Some("no-daemon"),
        sources: Sources::Everywhere,
        help: "Do not use the project's daemon even when one runs",
        heading: Some(SHARDEX),
        ..BASE
    },
    OptDef {
        opt: Opt::KillGrace,
        long: Some("kill-grace"),
        kind: Kind::Secs { max: 600.0 },
        value_name: SECS,
        sources: Sources::Everywhere,
        default: Some("3"),
        help: "Seconds between SIGTERM and SIGKILL when stopping a worker",
        heading: Some(SHARDEX),
        ..BASE
    },
    OptDef {
        opt: Opt::StopGrace,
        long: Some("stop-grace"),
        kind: Kind::Secs { max: 3600.0 },
        value_name: SECS,
        sources: Sources::Everywhere,
        default: Some("10"),
        help: "After -x/--maxfail stops the run: seconds running tests may take to finish \
               before their workers are stopped (they are then reported as not run)",
        heading: Some(SHARDEX),
        ..BASE
    },
    // Command line only: a `[tool.shardex]` key or a variable would turn every run, CI's
    // too, into a loop that never ends.
    OptDef {
        opt: Opt::Watch,
        long: Some("watch"),
        help: "After the run, wait for changes to the project's .py and ini files and run \
               again: first the tests in changed test files, then the last failures, then \
               the tests that import a changed module (else everything); Ctrl-C ends it \
               (exit 130)",
        heading: Some(SHARDEX),
        ..BASE
    },
    OptDef {
        opt: Opt::WatchAll,
        long: Some("watch-all"),
        help: "--watch, and each run goes on with the rest of the selection after those",
        heading: Some(SHARDEX),
        ..BASE
    },
    OptDef {
        opt: Opt::Help,
        short: Some('h'),
        long: Some("help"),
        help: "Print this help",
        heading: Some(SHARDEX),
        ..BASE
    },
];

/// Upper limit of `--node-total`.
pub const MAX_NODES: u32 = 10_000;

impl OptDef {
    pub fn takes_value(&self) -> bool {
        self.kind != Kind::Flag
    }

    /// `-n/--numprocesses`, as argparse names an option in errors.
    pub fn display(&self) -> String {
        let mut names: Vec<String> = self.short.map(|c| format!("-{c}")).into_iter().collect();
        names.extend(self.long.iter().map(|l| format!("--{l}")));
        names.extend(self.aliases.iter().map(|l| format!("--{l}")));
        names.join("/")
    }

    /// `SHARDEX_KILL_GRACE` for `--kill-grace`, when the option has one.
    pub fn env_var(&self) -> Option<String> {
        match (self.sources, self.long) {
            (Sources::Everywhere, Some(long)) => Some(format!(
                "SHARDEX_{}",
                long.replace('-', "_").to_ascii_uppercase()
            )),
            _ => None,
        }
    }

    /// The `[tool.shardex]` key, when the option has one.
    pub fn file_key(&self) -> Option<&'static str> {
        match self.sources {
            Sources::Everywhere => self.long,
            Sources::CliOnly => None,
        }
    }

    /// The clap argument that documents this option in `shardex run --help`.
    fn clap_arg(&self) -> Arg {
        let id = self.long.unwrap_or("short");
        let mut arg = Arg::new(id).help(self.help);
        if let Some(long) = self.long {
            arg = arg.long(long);
        }
        if let Some(short) = self.short {
            arg = arg.short(short);
        }
        arg = arg.visible_aliases(self.aliases.iter().copied());
        if let Some(heading) = self.heading {
            arg = arg.help_heading(heading);
        }
        if self.opt == Opt::Help {
            return arg.action(ArgAction::Help);
        }
        arg = match (self.takes_value(), self.repeat) {
            (false, _) => arg.action(ArgAction::SetTrue),
            (true, true) => arg.action(ArgAction::Append),
            (true, false) => arg.action(ArgAction::Set),
        };
        if let Some(name) = self.value_name {
            arg = arg.value_name(name);
        }
        if let Some(default) = self.default {
            arg = arg.default_value(default);
        }
        if let Some(env) = self.env_var() {
            // clap keeps `&'static str`s; the help is built once per process.
            arg = arg.env(&*Box::leak(env.into_boxed_str()));
            arg = arg.hide_env_values(true);
        }
        arg
    }
}

/// The definitions that set `opt`; the first is the one with its env var and file key.
pub fn defs_of(opt: Opt) -> impl Iterator<Item = &'static OptDef> {
    OPTIONS.iter().filter(move |d| d.opt == opt)
}

/// The main definition of `opt`: the one with its value kind, env var, file key and default
/// (not a flag that only implies a value, like `-x` for `--maxfail`).
pub fn main_def(opt: Opt) -> &'static OptDef {
    defs_of(opt).find(|d| d.implied.is_none()).unwrap_or(&BASE)
}

pub fn by_long(name: &str) -> Option<&'static OptDef> {
    OPTIONS
        .iter()
        .find(|d| d.long == Some(name) || d.aliases.contains(&name))
}

pub fn by_short(c: char) -> Option<&'static OptDef> {
    OPTIONS.iter().find(|d| d.short == Some(c))
}

/// `[tool.shardex]` keys: the long names of the options that may come from a file.
pub fn file_keys() -> impl Iterator<Item = &'static str> {
    OPTIONS.iter().filter_map(OptDef::file_key)
}

/// The options of `shardex run` for clap's help: every option above that has a heading.
pub fn help_args() -> impl Iterator<Item = Arg> {
    OPTIONS
        .iter()
        .filter(|d| d.heading.is_some())
        .map(OptDef::clap_arg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for def in OPTIONS {
            for name in def
                .long
                .iter()
                .chain(def.aliases)
                .map(|l| format!("--{l}"))
                .chain(def.short.map(|c| format!("-{c}")))
            {
                assert!(seen.insert(name.clone()), "{name} is defined twice");
            }
        }
    }

    #[test]
    fn every_slot_has_one_main_definition() {
        for def in OPTIONS {
            if def.opt == Opt::Refused {
                assert!(def.refused.is_some(), "{}", def.display());
                continue;
            }
            let main = main_def(def.opt);
            // Any other spelling is a flag that says what it stores into the main one.
            if !std::ptr::eq(main, def) {
                assert!(
                    def.implied.is_some() && !def.takes_value(),
                    "{}",
                    def.display()
                );
                assert!(main.takes_value(), "{}", def.display());
            }
            // The help shows a value name for every option that takes a value.
            if def.heading.is_some() {
                assert_eq!(
                    def.value_name.is_some(),
                    def.takes_value(),
                    "{}",
                    def.display()
                );
            }
        }
        assert_eq!(main_def(Opt::MaxFail).long, Some("maxfail"));
        assert_eq!(main_def(Opt::Dist).long, Some("dist"));
        assert_eq!(
            main_def(Opt::KillGrace).env_var().as_deref(),
            Some("SHARDEX_KILL_GRACE")
        );
        assert_eq!(main_def(Opt::Reruns).env_var(), None);
    }
}
