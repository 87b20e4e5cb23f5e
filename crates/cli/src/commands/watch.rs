//! `shardex run --watch [--watch-all]`: a run, then wait for changes to the project's files
//! and run again, until Ctrl-C. Each run goes through `run::execute_in`, as `shardex run`'s
//! does; what it selects is `shardex_core::watch_plan`'s choice, given to pytest as
//! positional arguments in place of the user's own.
//!
//! Changes are found by polling each file's and folder's stats (no inotify: it misses
//! edits in containers and on mounted folders).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{IsTerminal, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

use shardex_agent::{RunConfig, RunSummary};
use shardex_core::watch_plan::{
    dependent_test_files, plan, Plan, PlanCounts, PlanInput, ScopeEntry, WatchState,
};
use shardex_core::Category;
use tokio::signal::unix::{signal, Signal, SignalKind};

use super::run::{execute_in, reporter_options, runtime, DaemonChoice};
use crate::compat::{ConsumedFlags, PYTEST_LONG_WITH_VALUE, PYTEST_SHORT_WITH_VALUE};
use crate::errors::{CliError, UsageError};
use crate::exit_code;
use crate::options::Opt;
use crate::reporter::ReporterOptions;
use crate::settings::Settings;
use crate::timeline::Recorder;

/// How often files are polled, and how long they must stay unchanged before a run starts.
const POLL: Duration = Duration::from_millis(200);
/// Exit codes of a watch ended by a signal (128 + its number, as a shell reports it).
pub const EXIT_SIGINT: i32 = 130;
pub const EXIT_SIGTERM: i32 = 143;

/// `--watch` (and `--watch-all`, which implies it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WatchMode {
    pub all: bool,
}

/// Whether the command line asks for watch mode (the options are command-line only).
pub fn requested(flags: &ConsumedFlags) -> Option<WatchMode> {
    let all = flags.last(Opt::WatchAll).is_some();
    (all || flags.last(Opt::Watch).is_some()).then_some(WatchMode { all })
}

/// Combinations that make no sense in a loop on one machine.
fn refuse_combinations(settings: &Settings) -> Result<(), UsageError> {
    let why = if settings.shared_queue.is_some() {
        Some("a shared queue (--queue): it is for the nodes of a CI job")
    } else if settings.node.as_ref().is_some_and(|n| n.total > 1) {
        Some("a split over CI nodes (--node-total, or the CI's parallelism)")
    } else if options_part(&settings.pytest_args)
        .iter()
        .any(|a| a == "--collect-only" || a == "--co")
    {
        Some("--collect-only: nothing would run")
    } else {
        None
    };
    match why {
        Some(why) => Err(UsageError::new(format!(
            "--watch cannot be used with {why}"
        ))),
        None => Ok(()),
    }
}

/// The arguments before a lone `--` (after it, everything is a positional argument).
fn options_part(args: &[String]) -> &[String] {
    let end = args.iter().position(|a| a == "--").unwrap_or(args.len());
    &args[..end]
}

/// Splits pytest's arguments into options (with their values) and the positional ones
/// (paths and node ids), which a watch run replaces with its selection. An argument is
/// positional when it is not a known option's value and it names something that exists
/// (its part before `::`), or it comes after `--`.
fn split_positionals(args: &[String], cwd: &Path) -> (Vec<String>, Vec<String>) {
    let (mut options, mut positionals) = (Vec::new(), Vec::new());
    let mut value_next = false;
    let mut rest = args.iter();
    for arg in rest.by_ref() {
        if arg == "--" {
            break;
        }
        let is_value = std::mem::take(&mut value_next);
        if arg.starts_with('-') && arg.len() > 1 {
            value_next = takes_separate_value(arg);
            options.push(arg.clone());
        } else if !is_value && cwd.join(arg.split("::").next().unwrap_or(arg)).exists() {
            positionals.push(arg.clone());
        } else {
            options.push(arg.clone());
        }
    }
    positionals.extend(rest.cloned());
    (options, positionals)
}

/// `--tb` (not `--tb=short`), `-k`, `-rfE` ending in a value-taking letter's group...:
/// the next argument is that option's value.
fn takes_separate_value(arg: &str) -> bool {
    if arg.starts_with("--") {
        return !arg.contains('=') && PYTEST_LONG_WITH_VALUE.contains(&arg);
    }
    // A short group: the first value-taking letter takes the rest of the group, or the
    // next argument when it is last.
    let letters: Vec<char> = arg[1..].chars().collect();
    letters
        .iter()
        .position(|c| PYTEST_SHORT_WITH_VALUE.contains(c))
        .is_some_and(|i| i + 1 == letters.len())
}

/// `a/./b/../c` -> `a/c`, without touching the file system.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// `path` relative to `rootdir`, `/`-separated, when it is under it.
fn rel_to_root(path: &Path, rootdir: &Path) -> Option<String> {
    let rel = normalize(path).strip_prefix(rootdir).ok()?.to_path_buf();
    let parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    Some(parts.join("/"))
}

/// The user's selection relative to the rootdir; none given: the current folder.
fn scope(positionals: &[String], cwd: &Path, rootdir: &Path) -> Vec<ScopeEntry> {
    if positionals.is_empty() {
        return rel_to_root(cwd, rootdir)
            .map(ScopeEntry::Path)
            .into_iter()
            .collect();
    }
    positionals
        .iter()
        .filter_map(|arg| {
            let (path, node) = match arg.split_once("::") {
                Some((path, node)) => (path, Some(node)),
                None => (arg.as_str(), None),
            };
            let rel = rel_to_root(&cwd.join(path), rootdir)?;
            Some(match node {
                Some(node) => ScopeEntry::Node(format!("{rel}::{node}")),
                None => ScopeEntry::Path(rel),
            })
        })
        .collect()
}

/// A plan argument (relative to the rootdir) as pytest is given it from `cwd`.
fn arg_from_cwd(arg: &str, cwd: &Path, rootdir: &Path) -> String {
    let (path, node) = match arg.split_once("::") {
        Some((path, node)) => (path, Some(node)),
        None => (arg, None),
    };
    let full = rootdir.join(path);
    let shown = match full.strip_prefix(cwd) {
        Ok(rel) if !rel.as_os_str().is_empty() => rel.to_path_buf(),
        _ => full,
    };
    match node {
        Some(node) => format!("{}::{node}", shown.display()),
        None => shown.display().to_string(),
    }
}

// ------------------------------------------------------------------------------- watching

/// What tells a file's new content from its old one (size and whole seconds alone would not).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    mtime_ns: i128,
    ctime_ns: i128,
    size: u64,
    inode: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    let meta = std::fs::metadata(path).ok()?;
    Some(Stamp {
        mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
        ctime_ns: i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec()),
        size: meta.len(),
        inode: meta.ino(),
    })
}

/// Folders never looked into: hidden ones (`.git`, `.venv*`, `.shardex`, caches),
/// bytecode, other ecosystems' and installed packages, and any virtualenv.
fn skipped_dir(dir: &Path) -> bool {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    name.starts_with('.')
        || matches!(&*name, "__pycache__" | "node_modules" | "site-packages")
        || name.ends_with(".egg-info")
        || dir.join("pyvenv.cfg").exists()
}

fn watched_file(path: &Path) -> bool {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    name.ends_with(".py") || shardex_core::watch_plan::is_config_file(&name)
}

/// The watched files under a folder and the folders themselves, with their stamps. A
/// folder's stamp changes when an entry is created, removed or renamed in it: only those
/// folders are listed again.
struct Tree {
    files: BTreeMap<PathBuf, Stamp>,
    dirs: BTreeMap<PathBuf, Stamp>,
}

impl Tree {
    fn new(root: &Path) -> Self {
        let mut tree = Self {
            files: BTreeMap::new(),
            dirs: BTreeMap::new(),
        };
        tree.add_dir(root, &mut BTreeSet::new());
        tree
    }

    /// Adds `dir` and what is under it; files not seen before go into `new`.
    fn add_dir(&mut self, dir: &Path, new: &mut BTreeSet<PathBuf>) {
        let Some(dir_stamp) = stamp(dir) else { return };
        self.dirs.insert(dir.to_owned(), dir_stamp);
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            // Not followed through symlinks: a link to a parent would loop.
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                if !skipped_dir(&path) && !self.dirs.contains_key(&path) {
                    self.add_dir(&path, new);
                }
            } else if watched_file(&path) && !self.files.contains_key(&path) {
                if let Some(file_stamp) = stamp(&path) {
                    self.files.insert(path.clone(), file_stamp);
                    new.insert(path);
                }
            }
        }
    }

    /// The files created, changed or removed since the last poll.
    fn poll(&mut self) -> BTreeSet<PathBuf> {
        let mut changed = BTreeSet::new();
        let dirs: Vec<(PathBuf, Stamp)> = self.dirs.iter().map(|(p, s)| (p.clone(), *s)).collect();
        for (dir, old) in dirs {
            match stamp(&dir) {
                None => {
                    self.dirs.retain(|d, _| !d.starts_with(&dir));
                }
                Some(now) if now != old => self.add_dir(&dir, &mut changed),
                Some(_) => {}
            }
        }
        self.files.retain(|file, old| match stamp(file) {
            None => {
                changed.insert(file.clone());
                false
            }
            Some(now) => {
                if now != *old {
                    changed.insert(file.clone());
                    *old = now;
                }
                true
            }
        });
        changed
    }
}

/// Python checks a `.pyc` against the source's whole-second mtime and size: a same-size
/// edit within one second would run the old bytecode. The changed file's are removed.
fn remove_bytecode(file: &Path) {
    let (Some(dir), Some(stem)) = (file.parent(), file.file_stem()) else {
        return;
    };
    let prefix = format!("{}.", stem.to_string_lossy());
    let Ok(entries) = std::fs::read_dir(dir.join("__pycache__")) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(&prefix) && name.ends_with(".pyc") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

// ------------------------------------------------------------------------------- the loop

/// Why waiting ended.
enum Wake {
    Changed(BTreeSet<PathBuf>),
    Signal(i32),
}

struct Signals {
    interrupt: Signal,
    terminate: Signal,
}

impl Signals {
    fn install() -> Result<Self, CliError> {
        let io = |source| {
            CliError::Agent(shardex_agent::AgentError::Io {
                doing: "installing the SIGINT/SIGTERM handlers".into(),
                source,
            })
        };
        Ok(Self {
            interrupt: signal(SignalKind::interrupt()).map_err(io)?,
            terminate: signal(SignalKind::terminate()).map_err(io)?,
        })
    }

    /// A signal received since the last look (during a run, the run's own handlers got it
    /// too), as the exit code it gives.
    async fn pending(&mut self) -> Option<i32> {
        tokio::select! {
            biased;
            _ = self.interrupt.recv() => Some(EXIT_SIGINT),
            _ = self.terminate.recv() => Some(EXIT_SIGTERM),
            () = std::future::ready(()) => None,
        }
    }
}

/// The line between runs: rewritten in place on a terminal, printed once per wait otherwise.
struct Status {
    tty: bool,
    shown: Option<String>,
}

impl Status {
    fn show(&mut self, line: String) {
        if self.shown.as_ref() == Some(&line) {
            return;
        }
        let mut out = std::io::stdout().lock();
        if self.tty {
            let _ = write!(out, "\r\x1b[2K{line}");
        } else if self.shown.is_none() {
            let _ = writeln!(out, "{line}");
        }
        let _ = out.flush();
        self.shown = Some(line);
    }

    fn clear(&mut self) {
        if self.shown.take().is_some() && self.tty {
            let mut out = std::io::stdout().lock();
            let _ = write!(out, "\r\x1b[2K");
            let _ = out.flush();
        }
    }
}

/// `3 passed, 1 failed in 0.82s`, in pytest's words and order.
fn last_run(summary: &RunSummary) -> String {
    let counts = summary.counts();
    let parts: Vec<String> = Category::SUMMARY_ORDER
        .iter()
        .filter_map(|c| counts.get(c).map(|n| format!("{n} {}", c.summary_word(*n))))
        .collect();
    let what = if parts.is_empty() {
        "no tests ran".to_owned()
    } else {
        parts.join(", ")
    };
    format!("{what} in {:.2}s", summary.wall.as_secs_f64())
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The line before a run: what changed and what runs.
fn announce(changed: &[String], plan: &Plan) -> String {
    let mut names: Vec<&str> = changed.iter().take(3).map(String::as_str).collect();
    let more = changed.len().saturating_sub(names.len());
    let extra = format!("and {more} more");
    if more > 0 {
        names.push(&extra);
    }
    let running = match plan {
        Plan::Whole => "the whole selection".to_owned(),
        Plan::Select { counts, .. } => describe_counts(counts),
    };
    format!("shardex: changed: {}; running {running}", names.join(", "))
}

fn describe_counts(counts: &PlanCounts) -> String {
    let mut parts = Vec::new();
    if counts.changed_files > 0 {
        parts.push(plural(
            counts.changed_files,
            "changed test file",
            "changed test files",
        ));
    }
    if counts.failed > 0 {
        parts.push(plural(counts.failed, "earlier failure", "earlier failures"));
    }
    if counts.dependent_files > 0 {
        parts.push(plural(
            counts.dependent_files,
            "test file that imports a changed module",
            "test files that import a changed module",
        ));
    }
    if counts.rest > 0 {
        parts.push("the rest".to_owned());
    }
    parts.join(", then ")
}

/// What the loop keeps between runs.
struct Watch {
    mode: WatchMode,
    base: RunConfig,
    color: crate::settings::ColorChoice,
    options: Vec<String>,
    positionals: Vec<String>,
    rootdir: PathBuf,
    tree: Tree,
    state: WatchState,
    status: Status,
    /// Every run goes through the project's daemon as `shardex run` would.
    daemon: DaemonChoice,
    /// `--timeline` and `--maxfail`: each run writes the file anew (the last run's picture).
    timeline: (Option<PathBuf>, Option<u32>),
}

/// Runs, then waits for changes and runs again until a signal; returns 130 after SIGINT,
/// 143 after SIGTERM (a run in progress is interrupted as `shardex run`'s would be).
pub fn run(
    mode: WatchMode,
    settings: Settings,
    config: RunConfig,
    output: ReporterOptions,
    daemon: DaemonChoice,
) -> Result<i32, CliError> {
    refuse_combinations(&settings)?;
    let (options, positionals) = split_positionals(&config.pytest_args, &config.cwd);
    let rootdir = config.cwd.clone();
    let watch = Watch {
        mode,
        color: settings.color,
        options,
        positionals,
        tree: Tree::new(&rootdir),
        rootdir,
        base: config,
        state: WatchState::default(),
        status: Status {
            tty: std::io::stdout().is_terminal(),
            shown: None,
        },
        daemon,
        timeline: (settings.timeline.clone(), settings.maxfail),
    };
    runtime()?.block_on(watch.go(settings.notes, output))
}

impl Watch {
    async fn go(mut self, notes: Vec<String>, output: ReporterOptions) -> Result<i32, CliError> {
        // Installed before the first run, so no signal falls between two runs' handlers.
        let mut signals = Signals::install()?;
        let first = execute_in(
            self.base.clone(),
            notes,
            output,
            &self.daemon,
            self.recorder(),
        )
        .await;
        let mut last = self.absorb(first, &Plan::Whole)?;
        self.after_first(&last);
        loop {
            if last.interrupted.is_some() {
                return Ok(signals.pending().await.unwrap_or(EXIT_SIGINT));
            }
            if let Some(code) = signals.pending().await {
                return Ok(code);
            }
            let changed = match self.wait(&mut signals, &last).await {
                Wake::Signal(code) => return Ok(code),
                Wake::Changed(changed) => changed,
            };
            last = self.run_changed(&changed).await?;
        }
    }

    /// The first run told where pytest's rootdir is: it is what is watched.
    fn after_first(&mut self, summary: &RunSummary) {
        let Some(session) = &summary.session else {
            return;
        };
        let rootdir = PathBuf::from(&session.rootdir);
        if rootdir != self.rootdir && rootdir.is_dir() {
            self.tree = Tree::new(&rootdir);
            self.rootdir = rootdir;
        }
    }

    /// Polls until something changed and stayed unchanged for one more poll.
    async fn wait(&mut self, signals: &mut Signals, last: &RunSummary) -> Wake {
        let mut changed = BTreeSet::new();
        let mut interval = POLL;
        loop {
            if changed.is_empty() {
                let line = format!(
                    "shardex: watching {} files; last run: {}; Ctrl-C to stop",
                    self.tree.files.len(),
                    last_run(last)
                );
                self.status.show(line);
            }
            tokio::select! {
                biased;
                _ = signals.interrupt.recv() => return self.woke(Wake::Signal(EXIT_SIGINT)),
                _ = signals.terminate.recv() => return self.woke(Wake::Signal(EXIT_SIGTERM)),
                () = tokio::time::sleep(interval) => {}
            }
            let started = Instant::now();
            let now = self.tree.poll();
            // A huge tree is polled less often than it takes to poll it.
            interval = POLL.max(started.elapsed() * 4);
            if now.is_empty() && !changed.is_empty() {
                return self.woke(Wake::Changed(changed));
            }
            changed.extend(now);
        }
    }

    fn woke(&mut self, wake: Wake) -> Wake {
        self.status.clear();
        if matches!(wake, Wake::Signal(_)) && self.status.tty {
            // After the terminal's `^C`, the shell's prompt starts on a line of its own.
            println!();
        }
        wake
    }

    /// One run for `changed` files: its plan, the run, and (when pytest refused a
    /// selection by ids that no longer exist) the whole selection instead.
    async fn run_changed(&mut self, changed: &BTreeSet<PathBuf>) -> Result<RunSummary, CliError> {
        for file in changed
            .iter()
            .filter(|f| f.extension().is_some_and(|e| e == "py"))
        {
            remove_bytecode(file);
        }
        let rel: BTreeSet<String> = changed
            .iter()
            .filter_map(|f| rel_to_root(f, &self.rootdir))
            .collect();
        let (existing, removed): (BTreeSet<String>, BTreeSet<String>) = rel
            .iter()
            .cloned()
            .partition(|f| self.rootdir.join(f).exists());
        let plan = self.plan(&existing, &removed);
        let shown: Vec<String> = rel.iter().cloned().collect();
        println!("{}", announce(&shown, &plan));
        let mut outcome = self.run_plan(&plan).await;
        let refused = matches!(&outcome, Ok((code, _)) if *code == exit_code::USAGE_ERROR)
            || matches!(&outcome, Err(err) if err.exit_code() == exit_code::USAGE_ERROR);
        if refused && plan != Plan::Whole {
            println!("shardex: pytest refused the selection; running the whole selection");
            outcome = self.run_plan(&Plan::Whole).await;
            return self.absorb(outcome, &Plan::Whole);
        }
        self.absorb(outcome, &plan)
    }

    fn absorb(
        &mut self,
        outcome: Result<(i32, RunSummary), CliError>,
        plan: &Plan,
    ) -> Result<RunSummary, CliError> {
        match outcome {
            Ok((_, summary)) => {
                self.state.absorb(&summary, plan);
                Ok(summary)
            }
            // pytest's own usage error (a bad option after an edit of pytest.ini): the
            // next change may fix it.
            Err(err) if err.exit_code() == exit_code::USAGE_ERROR => {
                eprintln!("{}", err.render());
                Ok(RunSummary::default())
            }
            Err(err) => Err(err),
        }
    }

    fn plan(&self, existing: &BTreeSet<String>, removed: &BTreeSet<String>) -> Plan {
        let test_files = self.state.test_files();
        let mut files: BTreeSet<String> = self
            .tree
            .files
            .keys()
            .filter_map(|f| rel_to_root(f, &self.rootdir))
            .collect();
        files.extend(removed.iter().cloned());
        let modules: BTreeSet<String> = existing
            .iter()
            .chain(removed)
            .filter(|f| f.ends_with(".py"))
            .cloned()
            .collect();
        let root = self.rootdir.clone();
        let mut read = |rel: &str| std::fs::read_to_string(root.join(rel)).ok();
        let dependents = dependent_test_files(&test_files, &modules, &files, &mut read);
        let scope = scope(&self.positionals, &self.base.cwd, &self.rootdir);
        plan(&PlanInput {
            changed: existing,
            removed,
            state: &self.state,
            dependents: &dependents,
            scope: &scope,
            all: self.mode.all,
        })
    }

    async fn run_plan(&mut self, plan: &Plan) -> Result<(i32, RunSummary), CliError> {
        let mut config = self.base.clone();
        if let Plan::Select { args, .. } = plan {
            config.pytest_args = self.options.clone();
            // After `--`: an option with an optional value (`--cov`) cannot take one.
            config.pytest_args.push("--".to_owned());
            config.pytest_args.extend(
                args.iter()
                    .map(|a| arg_from_cwd(a, &self.base.cwd, &self.rootdir)),
            );
        }
        execute_in(
            config,
            Vec::new(),
            reporter_options(self.color),
            &self.daemon,
            self.recorder(),
        )
        .await
    }

    fn recorder(&self) -> Option<Recorder> {
        let (path, maxfail) = &self.timeline;
        path.clone().map(|path| Recorder::new(path, *maxfail))
    }
}

#[cfg(test)]
mod tests;
