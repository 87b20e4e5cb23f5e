//! `shardex flaky`: the tests that both passed and failed on the same code in the recent
//! history (a pass on a retry is both), with their failure rate and last failure message.
//!
//! Also where the history is found for `shardex slowest`: the timing store
//! (`.shardex/timings.json` or `--timing-store`) and, with `--queue redis://…`, the project's
//! history on the shared queue's Redis, merged (the same run in both counts once).

use std::path::{Path, PathBuf};

use clap::{Arg, ArgAction, ArgMatches, Command};
use shardex_core::history::{Evidence, FlakyTest};
use shardex_core::timing::TimingStore;

use crate::errors::{CliError, UsageError};
use crate::exit_code;
use crate::settings::{detect_ci_project, FileSettings, RedisUrl};

const DEFAULT_LIMIT: &str = "20";
/// Files that make a folder pytest's rootdir (its ini files), nearest first.
const ROOT_MARKERS: [&str; 5] = [
    "pytest.ini",
    ".pytest.ini",
    "pyproject.toml",
    "tox.ini",
    "setup.cfg",
];

pub fn command() -> Command {
    Command::new("flaky")
        .about("Tests that both passed and failed on the same code in recent runs")
        .args(history_args())
}

/// The options `flaky` and `slowest` share.
pub fn history_args() -> Vec<Arg> {
    vec![
        Arg::new("timing-store")
            .long("timing-store")
            .value_name("PATH")
            .env("SHARDEX_TIMING_STORE")
            .help("The timing store to read [default: <rootdir>/.shardex/timings.json]"),
        Arg::new("queue")
            .long("queue")
            .value_name("URL")
            .env("SHARDEX_QUEUE")
            .help("Also read the project's history on the shared queue: redis://… or rediss://…"),
        Arg::new("project")
            .long("project")
            .value_name("NAME")
            .env("SHARDEX_PROJECT")
            .help(
                "The project's name on the shared queue [default: from CircleCI, GitLab or \
                 Buildkite, else the rootdir's folder name]",
            ),
        Arg::new("limit")
            .long("limit")
            .value_name("N")
            .default_value(DEFAULT_LIMIT)
            .help("Show at most N tests"),
        Arg::new("json")
            .long("json")
            .action(ArgAction::SetTrue)
            .help("Print JSON instead of text"),
    ]
}

/// What `flaky` and `slowest` were asked for.
pub struct HistoryQuery {
    pub evidence: Evidence,
    /// Where the history came from, for the header.
    pub sources: Vec<String>,
    pub limit: usize,
    pub json: bool,
}

pub fn run(matches: &ArgMatches) -> Result<i32, CliError> {
    let query = match load(matches)? {
        Ok(query) => query,
        Err(code) => return Ok(code),
    };
    let flaky = query.evidence.flaky();
    let runs = query.evidence.run_count();
    let shown = &flaky[..flaky.len().min(query.limit)];
    if query.json {
        let out = serde_json::json!({
            "sources": query.sources,
            "runs": runs,
            "flaky": shown.iter().map(flaky_json).collect::<Vec<_>>(),
            "total": flaky.len(),
        });
        print_lines([format!("{out:#}")]);
    } else {
        print_lines(render(shown, flaky.len(), runs, &query.sources));
    }
    Ok(exit_code::OK)
}

fn flaky_json(f: &FlakyTest) -> serde_json::Value {
    serde_json::json!({
        "id": f.id.as_str(),
        "rate": f.rate(),
        "runs": f.runs,
        "failed": f.failed,
        "passed_on_retry": f.passed_on_retry,
        "last_failure": f.last_failure,
    })
}

/// The flaky tests as lines: the highest failure rate first, each with its last failure.
pub fn render(shown: &[FlakyTest], total: usize, runs: usize, sources: &[String]) -> Vec<String> {
    let from = sources.join(" and ");
    if runs == 0 {
        return vec![no_runs(&from)];
    }
    if total == 0 {
        return vec![format!(
            "no flaky tests in the last {} ({from})",
            plural(runs, "run")
        )];
    }
    let mut lines = vec![format!(
        "flaky tests (passed and failed on the same code) in the last {} ({from}):",
        plural(runs, "run")
    )];
    for f in shown {
        let retried = if f.passed_on_retry > 0 {
            format!(", {} passed on a retry", f.passed_on_retry)
        } else {
            String::new()
        };
        lines.push(format!(
            "{:>4.0}%  {}  (failed in {} of {}{retried})",
            f.rate() * 100.0,
            f.id,
            f.failed,
            plural(f.runs, "run"),
        ));
        if let Some(failure) = &f.last_failure {
            lines.push(format!("       last failure: {}", failure.message));
        }
    }
    let mut last = plural(total, "flaky test");
    if shown.len() < total {
        last.push_str(&format!(" ({} shown: --limit)", shown.len()));
    }
    lines.push(last);
    lines
}

/// Reads the history the options point at; `Err(code)` when an error line was printed.
pub fn load(matches: &ArgMatches) -> Result<Result<HistoryQuery, i32>, CliError> {
    let limit = parse_limit(matches)?;
    let cwd = std::env::current_dir()
        .map_err(|err| UsageError::new(format!("cannot read the current directory: {err}")))?;
    let rootdir = find_rootdir(&cwd);
    let queue = queue_url(matches)?;
    let (store_path, explicit) = store_path(matches, &cwd, &rootdir)?;
    let mut evidence = Evidence::default();
    let mut sources = Vec::new();
    if explicit && !store_path.exists() {
        return Err(UsageError::new(format!(
            "--timing-store {} does not exist",
            store_path.display()
        ))
        .into());
    }
    if store_path.exists() || queue.is_none() {
        let store = TimingStore::load_store(&store_path)?;
        evidence.merge(store.history().evidence());
        let shown = store_path.strip_prefix(&cwd).unwrap_or(&store_path);
        sources.push(shown.display().to_string());
    }
    if let Some(url) = queue {
        let project = matches
            .get_one::<String>("project")
            .map(|p| p.trim().to_owned())
            .filter(|p| !p.is_empty())
            .or_else(|| detect_ci_project(&|name| std::env::var(name).ok()))
            .unwrap_or_else(|| folder_name(&rootdir));
        let shown = url.to_string();
        match read_remote(&url, &project) {
            Ok(remote) => evidence.merge(remote),
            Err(message) => {
                eprintln!("shardex: error: {shown} (project {project}): {message}");
                return Ok(Err(exit_code::INTERNAL_ERROR));
            }
        }
        sources.push(format!("{shown}, project {project}"));
    }
    Ok(Ok(HistoryQuery {
        evidence,
        sources,
        limit,
        json: matches.get_flag("json"),
    }))
}

fn parse_limit(matches: &ArgMatches) -> Result<usize, UsageError> {
    let raw = matches
        .get_one::<String>("limit")
        .map_or(DEFAULT_LIMIT, String::as_str);
    crate::settings::parse_count(raw, 1, 1_000_000)
        .map(|n| n as usize)
        .map_err(|expected| UsageError::invalid_value("argument --limit", raw, &expected))
}

/// `--queue`, unless it says `local` (what `shardex run` takes for "no shared queue").
fn queue_url(matches: &ArgMatches) -> Result<Option<RedisUrl>, UsageError> {
    let Some(raw) = matches
        .get_one::<String>("queue")
        .map(|q| q.trim())
        .filter(|q| !q.is_empty() && *q != "local")
    else {
        return Ok(None);
    };
    let url = RedisUrl::parse(raw).map_err(|expected| {
        UsageError::invalid_value(
            "argument --queue",
            &crate::settings::redact_url(raw),
            &expected,
        )
    })?;
    crate::settings::check_queue_url("argument --queue", &url)?;
    Ok(Some(url))
}

/// `--timing-store`, else `timing-store` in `[tool.shardex]`, else the rootdir's; and
/// whether it was named here (a store named on the command line that does not exist is a
/// mistake; the configured one only has no runs yet).
fn store_path(
    matches: &ArgMatches,
    cwd: &Path,
    rootdir: &Path,
) -> Result<(PathBuf, bool), UsageError> {
    if let Some(raw) = matches.get_one::<String>("timing-store") {
        if raw.trim().is_empty() {
            return Err(UsageError::invalid_value(
                "argument --timing-store",
                raw,
                "a path",
            ));
        }
        return Ok((cwd.join(raw), true));
    }
    if let Some(file) = FileSettings::discover(cwd)? {
        if let Some(raw) = file.scalar("timing-store")? {
            let dir = file.path.parent().unwrap_or(cwd);
            return Ok((dir.join(raw), false));
        }
    }
    Ok((rootdir.join(".shardex").join("timings.json"), false))
}

/// pytest's rootdir as far as it can be told without pytest: the nearest folder with an ini
/// file, else the current one.
pub fn find_rootdir(cwd: &Path) -> PathBuf {
    cwd.ancestors()
        .find(|dir| ROOT_MARKERS.iter().any(|m| dir.join(m).is_file()))
        .unwrap_or(cwd)
        .to_owned()
}

fn folder_name(dir: &Path) -> String {
    dir.file_name().map_or_else(
        || dir.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

fn read_remote(url: &RedisUrl, project: &str) -> Result<Evidence, String> {
    let ca_file = std::env::var_os("SHARDEX_REDIS_CA").map(PathBuf::from);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|err| format!("cannot start the async runtime: {err}"))?;
    runtime.block_on(shardex_agent::queue::shared::read_history(
        &url.url, ca_file, project,
    ))
}

/// Prints to stdout, stopping quietly when it is closed (`shardex flaky | head`).
pub fn print_lines(lines: impl IntoIterator<Item = String>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    for line in lines {
        if writeln!(out, "{line}").is_err() {
            return;
        }
    }
    let _ = out.flush();
}

/// What `flaky` and `slowest` say before any run was recorded.
pub fn no_runs(from: &str) -> String {
    format!("no runs recorded in {from} yet (`shardex run` records each run's outcomes)")
}

pub fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

#[cfg(test)]
mod tests {
    use shardex_core::history::LastFailure;
    use shardex_core::TestId;

    use super::*;

    fn flaky(id: &str, runs: usize, failed: usize, retried: usize) -> FlakyTest {
        FlakyTest {
            id: TestId::new(id),
            runs,
            failed,
            passed_on_retry: retried,
            last_failure: Some(LastFailure {
                message: format!("AssertionError: {id}"),
                at: 1,
            }),
        }
    }

    #[test]
    fn renders_rates_and_messages() {
        let shown = [flaky("t.py::a", 4, 2, 0), flaky("t.py::b", 3, 1, 1)];
        let lines = render(&shown, 3, 6, &[".shardex/timings.json".into()]);
        assert_eq!(
            lines,
            vec![
                "flaky tests (passed and failed on the same code) in the last 6 runs (.shardex/timings.json):",
                "  50%  t.py::a  (failed in 2 of 4 runs)",
                "       last failure: AssertionError: t.py::a",
                "  33%  t.py::b  (failed in 1 of 3 runs, 1 passed on a retry)",
                "       last failure: AssertionError: t.py::b",
                "3 flaky tests (2 shown: --limit)",
            ]
        );
        assert_eq!(
            render(&[], 0, 1, &["s".into(), "q".into()]),
            vec!["no flaky tests in the last 1 run (s and q)"]
        );
        assert_eq!(
            render(&[], 0, 0, &["s".into()]),
            vec!["no runs recorded in s yet (`shardex run` records each run's outcomes)"]
        );
    }

    #[test]
    fn rootdir_is_the_nearest_ini_folder() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("a/b");
        std::fs::create_dir_all(&deep).unwrap();
        assert_eq!(find_rootdir(&deep), deep);
        std::fs::write(dir.path().join("a/tox.ini"), "").unwrap();
        assert_eq!(find_rootdir(&deep), dir.path().join("a"));
    }
}
