//! `shardex run [PYTEST ARGS...]`: resolve the settings, check every input before a test
//! runs, then execute the run on a tokio runtime while the reporter prints its events.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};

use shardex_agent::python::{find_python_from, locate_python, PythonInfo};
use shardex_agent::{sizing, RunConfig, RunEvent, RunSummary, WorkerMode};
use shardex_core::timing::TimingStore;
use shardex_core::Outcome;
use tokio::sync::mpsc::unbounded_channel;

use crate::compat::split_args;
use crate::daemon_use;
use crate::errors::{CliError, UsageError};
use crate::exit_code;
use crate::reporter::{Reporter, ReporterOptions};
use crate::settings::{ColorChoice, FileSettings, Settings, TimingStoreChoice};
use crate::timeline::Recorder;

/// Runs `shardex run` with its arguments (after `run`) and returns the exit code.
pub fn run(argv: Vec<String>) -> Result<i32, CliError> {
    let (flags, pytest_args) = split_args(argv.clone())?;
    if flags.help {
        return Ok(crate::app::print_run_help());
    }
    let watch = super::watch::requested(&flags);
    let cwd = std::env::current_dir()
        .map_err(|err| UsageError::new(format!("cannot read the current directory: {err}")))?;
    let file = FileSettings::discover(&cwd)?;
    for warning in file.iter().flat_map(|f| &f.warnings) {
        eprintln!("shardex: warning: {warning}");
    }
    let settings = Settings::resolve(flags, pytest_args, &process_env, file.as_ref())?;
    tracing::debug!(?settings, config_file = ?file.as_ref().map(|f| &f.path), "resolved settings");

    validate(&settings)?;
    let explicit = settings
        .python
        .as_ref()
        .map(|p| (p.path.as_path(), p.origin.as_str()));
    let python = if daemon_use::likely(daemon_use::want(&settings), &cwd) {
        PythonInfo {
            path: locate_python(explicit)?,
            version: "(checked by the daemon)".into(),
            pytest_version: String::new(),
        }
    } else {
        find_python_from(explicit)?
    };
    tracing::debug!(?python, "python");
    let workers = settings.workers(sizing::auto_workers(), sizing::logical_workers());
    let output = reporter_options(settings.color);
    let config = run_config(&settings, &python, cwd, workers, &output);
    let daemon = DaemonChoice {
        want: daemon_use::want(&settings),
        argv,
    };
    if let Some(mode) = watch {
        return super::watch::run(mode, settings, config, output, daemon);
    }
    let timeline = timeline_recorder(&settings);
    execute(config, settings.notes, output, &daemon, timeline)
}

/// The `--timeline` file's recorder for one run (each `--watch` run writes the file anew).
pub(super) fn timeline_recorder(settings: &Settings) -> Option<Recorder> {
    (settings.timeline.clone()).map(|path| Recorder::new(path, settings.maxfail))
}

/// Whether the run goes through the project's daemon, and the run's arguments (for a
/// daemon `--daemon` starts).
#[derive(Clone, Debug)]
pub struct DaemonChoice {
    pub want: daemon_use::Want,
    pub argv: Vec<String>,
}

fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Everything that can be wrong with the input, checked before any test runs (and before
/// any file is written: a usage error leaves no report behind).
fn validate(settings: &Settings) -> Result<(), CliError> {
    if let Some(path) = &settings.junitxml {
        check_writable("--junitxml", path)?;
    }
    if let Some(path) = &settings.timeline {
        check_writable("--timeline", path)?;
    }
    // Parsed here only to fail early with one clear line; the agent loads them again.
    let mut timings = TimingStore::new();
    for source in &settings.timings {
        timings.merge_source(source)?;
    }
    Ok(())
}

/// A report path must be a file we can create, checked without leaving anything behind: an
/// existing file is opened for appending (its content stays), a new one is created in the
/// nearest existing folder and removed again (the agent makes the missing folders when it
/// writes the report, as pytest does).
fn check_writable(flag: &'static str, path: &Path) -> Result<(), CliError> {
    if path.is_dir() {
        return Err(UsageError::new(format!(
            "{flag} must be a filename, given: {}",
            path.display()
        ))
        .into());
    }
    let report_err = |source| CliError::ReportPath {
        flag,
        path: path.to_owned(),
        source,
    };
    if path.exists() {
        return OpenOptions::new()
            .append(true)
            .open(path)
            .map(drop)
            .map_err(report_err);
    }
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let Some(existing) = parent.ancestors().find(|a| a.exists()) else {
        return Ok(());
    };
    if !existing.is_dir() {
        // create_dir_all would say only "File exists": name the file in the way.
        return Err(report_err(std::io::Error::other(format!(
            "{} is a file, not a folder",
            existing.display()
        ))));
    }
    // The file itself where its folder exists, else a probe in the nearest folder that
    // does (the folders below it would be made by the same user).
    let probe = if existing == parent {
        path.to_owned()
    } else {
        existing.join(format!(".shardex-probe-{}", std::process::id()))
    };
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
        .map_err(report_err)?;
    std::fs::remove_file(&probe).map_err(report_err)
}

pub(crate) fn run_config(
    settings: &Settings,
    python: &PythonInfo,
    cwd: PathBuf,
    workers: usize,
    output: &ReporterOptions,
) -> RunConfig {
    // Absolute, not canonical: a venv's bin/python is a symlink that must stay the venv's.
    let python_path = if python.path.is_absolute() {
        python.path.clone()
    } else {
        cwd.join(&python.path)
    };
    let mut config = RunConfig::new(python_path, settings.pytest_args.clone(), cwd, workers);
    if settings.spawn {
        config.mode = WorkerMode::Spawn;
    }
    config.dist = settings.dist;
    config.dist_given = settings.dist_given;
    config.workers_given = settings.numprocesses_given;
    config.timings = settings.timings.clone();
    match &settings.timing_store {
        TimingStoreChoice::Default => {}
        TimingStoreChoice::Path(path) => config.timing_store = Some(path.clone()),
        TimingStoreChoice::Disabled => config.no_timing_store = true,
    }
    config.junitxml = settings.junitxml.clone();
    config.junit_prefix = settings.junit_prefix.clone();
    config.timeout = settings.timeout;
    config.kill_grace = settings.kill_grace;
    config.maxfail = settings.maxfail;
    config.stop_grace = settings.stop_grace;
    config.retry = settings.retry.clone();
    config.node = settings.node.clone();
    config.shared_queue = settings.shared_queue.clone();
    config.color = output.color;
    config.width = output.width;
    config
}

/// The reporter's options: detected from the terminal and environment as pytest does, with
/// `--color yes|no` overriding the colour decision.
pub(super) fn reporter_options(color: ColorChoice) -> ReporterOptions {
    let mut options = ReporterOptions::detect();
    match color {
        ColorChoice::Auto => {}
        ColorChoice::Yes => options.color = true,
        ColorChoice::No => options.color = false,
    }
    options
}

/// Runs the agent and the reporter on one thread.
fn execute(
    config: RunConfig,
    notes: Vec<String>,
    output: ReporterOptions,
    daemon: &DaemonChoice,
    timeline: Option<Recorder>,
) -> Result<i32, CliError> {
    runtime()?.block_on(async move {
        let (code, summary) = execute_in(config, notes, output, daemon, timeline).await?;
        // The process ends next: freeing every result one by one would only delay the exit.
        std::mem::forget(summary);
        Ok(code)
    })
}

/// The runtime runs execute on: one thread runs the agent (its state has one owner anyway);
/// the reporter gets a blocking thread. Fewer threads than cores leaves the cores to the
/// pytest workers.
pub(super) fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name("shardex")
        .build()
        .map_err(CliError::Runtime)
}

/// One run, reported as it goes; its exit code and summary (`--watch` runs several).
pub(super) async fn execute_in(
    config: RunConfig,
    notes: Vec<String>,
    output: ReporterOptions,
    daemon: &DaemonChoice,
    timeline: Option<Recorder>,
) -> Result<(i32, RunSummary), CliError> {
    // Waiting for a daemon (another run, a rebuild) blocks this thread: nothing else runs
    // on it before the run starts.
    let remote = daemon_use::launcher(daemon.want, &config, &daemon.argv);
    let shared = config.shared_queue.clone();
    let started_ms = unix_millis();
    let (tx, mut rx) = unbounded_channel();
    for note in notes {
        // The receiver is alive: it is dropped only after this function's end.
        let _ = tx.send(RunEvent::Note(note));
    }
    // A node of a shared queue leaves its chart with its report, for the job's picture
    // (`shardex report --timeline`), with or without a `--timeline` file of its own.
    let timeline = timeline
        .or_else(|| (config.shared_queue.is_some()).then(|| Recorder::unwritten(config.maxfail)));
    let mut sink = ReportSink::new(output, timeline);
    // The reporter runs on the agent's thread: events cost no thread hand-off. Its
    // writes are buffered; a slow terminal slows the run as it would slow pytest.
    let drain = async {
        while let Some(event) = rx.recv().await {
            sink.handle(&event);
        }
    };
    // `execute` drops its sender when it returns, which ends the drain.
    let agent = async {
        match remote {
            Some(launcher) => {
                shardex_agent::run::execute_through(config, tx, Box::new(launcher)).await
            }
            None => shardex_agent::execute(config, tx).await,
        }
    };
    let (result, ()) = tokio::join!(agent, drain);
    let summary = result?;
    let chart = sink.finish(&summary);
    if std::env::var_os("SHARDEX_STATS").is_some() {
        let usage = shardex_agent::stats::self_usage();
        let tests = summary.results.len().max(1) as f64;
        eprintln!(
            "shardex stats: agent cpu {:.3}s user + {:.3}s sys ({:.1} us/test), max rss {:.1} MB, {} tests",
            usage.user.as_secs_f64(),
            usage.system.as_secs_f64(),
            (usage.user + usage.system).as_secs_f64() * 1e6 / tests,
            usage.max_rss as f64 / 1e6,
            summary.results.len()
        );
    }
    let code = exit_code::from_summary(&summary);
    // Only a node that took part in the job's queue reports to it (not --collect-only).
    if let Some(shared) = shared.as_ref().filter(|_| summary.shared.is_some()) {
        publish_node_report(shared, &summary, code, started_ms, chart).await;
    }
    Ok((code, summary))
}

/// Leaves this node's report on the shared queue for `shardex report`, with its tests'
/// times for the project's next runs. A failure is one line: the run's result stands.
async fn publish_node_report(
    shared: &shardex_agent::SharedQueueConfig,
    summary: &RunSummary,
    code: i32,
    started_ms: u64,
    timeline: Option<String>,
) {
    let mut report = crate::node_report::node_report(summary, code, started_ms, unix_millis());
    report.timeline = timeline;
    let json = match serde_json::to_string(&report) {
        Ok(json) => json,
        Err(err) => {
            eprintln!("shardex: warning: cannot encode this node's report: {err}");
            return;
        }
    };
    let timings: Vec<(shardex_core::TestId, f64)> = summary
        .results
        .iter()
        .filter(|r| r.is_final() && !matches!(r.outcome, Outcome::Crashed | Outcome::TimedOut))
        .map(|r| (r.id.clone(), r.duration))
        .collect();
    let rootdir = summary.session.as_ref().map_or("", |s| s.rootdir.as_str());
    let project = shardex_agent::queue::shared::project_name(shared, rootdir);
    let tests = shardex_core::history::test_runs(summary);
    let history = summary.identity.as_ref().map(|run| (run, tests.as_slice()));
    let published = shardex_agent::queue::shared::publish(
        shared,
        report.node,
        &json,
        &timings,
        &project,
        history,
    )
    .await;
    if let Err(err) = published {
        eprintln!(
            "shardex: warning: cannot leave this node's report on the shared queue at {} \
             ({err}): `shardex report` will miss it",
            shared.shown
        );
    }
}

fn unix_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The one place `run` talks to the terminal reporter (and the `--timeline` recorder).
struct ReportSink(Reporter, Option<Recorder>);

impl ReportSink {
    fn new(options: ReporterOptions, timeline: Option<Recorder>) -> Self {
        Self(Reporter::new(options), timeline)
    }

    fn handle(&mut self, event: &RunEvent) {
        if let Some(timeline) = &mut self.1 {
            timeline.handle(event);
        }
        self.0.handle(event);
    }

    /// Ends the report; returns the timeline's chart as a node's report carries it.
    fn finish(&mut self, summary: &RunSummary) -> Option<String> {
        let chart = self.1.take().map(|timeline| timeline.finish(summary));
        self.0.finish(summary);
        chart
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only the folder's contents before and after: the check leaves nothing behind.
    fn listing(dir: &Path) -> Vec<PathBuf> {
        let mut all: Vec<PathBuf> = std::fs::read_dir(dir)
            .expect("read_dir")
            .map(|e| e.expect("entry").path())
            .collect();
        all.sort();
        all
    }

    #[test]
    fn report_paths_are_checked_without_a_trace() {
        let dir = tempfile::tempdir().expect("tempdir");
        let nested = dir.path().join("a/b/junit.xml");
        check_writable("--junitxml", &nested).expect("missing folders are fine");
        check_writable("--junitxml", &dir.path().join("junit.xml")).expect("new file");
        assert_eq!(listing(dir.path()), Vec::<PathBuf>::new());

        std::fs::create_dir_all(dir.path().join("ro")).expect("mkdir");
        let mut perms = std::fs::metadata(dir.path().join("ro"))
            .expect("meta")
            .permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o555);
        std::fs::set_permissions(dir.path().join("ro"), perms).expect("chmod");
        let refused = check_writable("--junitxml", &dir.path().join("ro/x/junit.xml"));
        // root writes anywhere: only a normal user sees the refusal.
        if std::fs::write(dir.path().join("ro/t"), "").is_err() {
            let err = refused.unwrap_err();
            assert_eq!(err.exit_code(), exit_code::USAGE_ERROR);
            assert!(
                err.render().contains("Permission denied"),
                "{}",
                err.render()
            );
        }
        let _ = std::fs::remove_file(dir.path().join("ro/t"));
        assert_eq!(listing(&dir.path().join("ro")), Vec::<PathBuf>::new());

        std::fs::create_dir_all(nested.parent().expect("parent")).expect("mkdir");
        std::fs::write(&nested, "<old/>").expect("write");
        check_writable("--junitxml", &nested).expect("existing file");
        assert_eq!(std::fs::read_to_string(&nested).expect("read"), "<old/>");

        let err = check_writable("--junitxml", dir.path()).unwrap_err();
        assert_eq!(
            err.render(),
            format!(
                "shardex: error: --junitxml must be a filename, given: {}",
                dir.path().display()
            )
        );
        assert_eq!(err.exit_code(), exit_code::USAGE_ERROR);

        let blocker = dir.path().join("file");
        std::fs::write(&blocker, "").expect("write");
        let err = check_writable("--timeline", &blocker.join("t.html")).unwrap_err();
        assert!(
            err.render().starts_with(&format!(
                "shardex: error: cannot write --timeline {}",
                blocker.join("t.html").display()
            )),
            "{}",
            err.render()
        );
    }
}
