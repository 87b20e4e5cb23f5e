//! `shardex report`: waits until every node of a job that shared one queue has reported,
//! then prints the job's summary (counts, failures, flaky and slowest tests, each node's
//! finish time) and exits with the job's code.

use std::time::{Duration, Instant};

use clap::{Arg, ArgMatches, Command};
use shardex_core::job_report::{aggregate, JobSummary, NodeReport};

use std::path::{Path, PathBuf};

use crate::errors::{CliError, UsageError};
use crate::exit_code;
use crate::settings::{detect_ci_build, RedisUrl};
use crate::timeline::{write_job, NodeTimeline, TimelineFormat};

/// How often the job's state is read while waiting for its nodes.
const POLL: Duration = Duration::from_millis(500);

pub fn command() -> Command {
    Command::new("report")
        .about("The summary of a job that shared a queue, once every node reported")
        .arg(
            Arg::new("queue")
                .long("queue")
                .value_name("URL")
                .env("SHARDEX_QUEUE")
                .required(true)
                .help("The shared queue: redis://[USER:PASSWORD@]HOST[:PORT][/DB] or rediss://…"),
        )
        .arg(
            Arg::new("build-id")
                .long("build-id")
                .value_name("ID")
                .env("SHARDEX_BUILD_ID")
                .help("The job's build id [default: from CircleCI, GitLab or Buildkite]"),
        )
        .arg(
            Arg::new("timeline")
                .long("timeline")
                .value_name("PATH")
                .help(
                    "Write the job's timeline (.html or .svg): one group of lanes per node on \
                     one time axis",
                ),
        )
        .arg(
            Arg::new("wait")
                .long("wait")
                .value_name("SECS")
                .default_value("600")
                .help("How long to wait for the nodes' reports"),
        )
}

pub fn run(matches: &ArgMatches) -> Result<i32, CliError> {
    let raw_url = matches
        .get_one::<String>("queue")
        .cloned()
        .unwrap_or_default();
    let url = RedisUrl::parse(&raw_url).map_err(|expected| {
        UsageError::invalid_value(
            "argument --queue",
            &crate::settings::redact_url(&raw_url),
            &expected,
        )
    })?;
    crate::settings::check_queue_url("argument --queue", &url)?;
    let env = |name: &str| std::env::var(name).ok();
    let build = match matches.get_one::<String>("build-id") {
        Some(build) if !build.trim().is_empty() => build.trim().to_owned(),
        _ => detect_ci_build(&env).map(|(b, _)| b).ok_or_else(|| {
            UsageError::new(
                "shardex report needs the job's build id: give --build-id (or SHARDEX_BUILD_ID); \
                 on CircleCI, GitLab and Buildkite it is found by itself",
            )
        })?,
    };
    let wait = matches
        .get_one::<String>("wait")
        .map(|w| crate::settings::parse_secs(w, 86_400.0).map(Duration::from_secs_f64))
        .transpose()
        .map_err(|expected| {
            UsageError::invalid_value(
                "argument --wait",
                matches.get_one::<String>("wait").map_or("", |s| s),
                &expected,
            )
        })?
        .unwrap_or(Duration::from_secs(600));
    let timeline = matches
        .get_one::<String>("timeline")
        .map(|path| timeline_path(path))
        .transpose()?;
    let ca_file = std::env::var_os("SHARDEX_REDIS_CA").map(std::path::PathBuf::from);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(CliError::Runtime)?;
    let shown = url.to_string();
    let outcome = runtime.block_on(wait_for_nodes(&url.url, &build, ca_file, wait));
    let (reports, nodes) = match outcome {
        Ok(found) => found,
        Err(message) => {
            eprintln!("shardex: error: {shown} (build {build}): {message}");
            return Ok(exit_code::INTERNAL_ERROR);
        }
    };
    let summary = aggregate(&reports, nodes);
    for line in render(&summary, &shown, &build) {
        println!("{line}");
    }
    if let Some(path) = timeline {
        println!("{}", write_timeline(&path, &build, &reports));
    }
    Ok(summary.exit_code())
}

/// `--timeline`'s path, checked before waiting: a format shardex writes, a folder it can
/// write in (made if missing, as `shardex run --timeline` makes it).
fn timeline_path(raw: &str) -> Result<PathBuf, UsageError> {
    let path = PathBuf::from(raw);
    TimelineFormat::from_path(&path)?;
    if path.is_dir() {
        return Err(UsageError::new(format!(
            "argument --timeline: {raw} is a folder: give a file name ending in .html or .svg"
        )));
    }
    Ok(path)
}

/// Writes the job's picture; the line that says what was written (or why not).
fn write_timeline(path: &Path, build: &str, reports: &[NodeReport]) -> String {
    let parts: Vec<NodeTimeline> = reports
        .iter()
        .map(|r| NodeTimeline {
            node: r.node,
            nodes: r.nodes,
            data: r.timeline.as_deref(),
        })
        .collect();
    match write_job(path, build, &parts) {
        Ok(drawn) => format!(
            "timeline: {} ({drawn} of {} reported nodes)",
            path.display(),
            reports.len()
        ),
        Err(why) => format!("timeline: not written: {why}"),
    }
}

/// Reads the job's state until every node reported or `wait` is over. Returns the
/// reports and the job's node count.
async fn wait_for_nodes(
    url: &str,
    build: &str,
    ca_file: Option<std::path::PathBuf>,
    wait: Duration,
) -> Result<(Vec<NodeReport>, u32), String> {
    let started = Instant::now();
    loop {
        let state = shardex_agent::queue::shared::job_state(url, build, ca_file.clone()).await;
        let over = started.elapsed() >= wait;
        // Redis may be restarting or briefly out of reach: ask again until the wait is over.
        let state = match state {
            Ok(state) => state,
            Err(err) if over => return Err(err),
            Err(err) => {
                tracing::debug!(%err, "shardex report: the queue did not answer; asking again");
                tokio::time::sleep(POLL).await;
                continue;
            }
        };
        match state {
            Some(state) => {
                let reports: Vec<NodeReport> = state
                    .reports
                    .iter()
                    .filter_map(|(_, json)| serde_json::from_str(json).ok())
                    .collect();
                if reports.len() >= state.nodes as usize || over {
                    return Ok((reports, state.nodes));
                }
            }
            None if over => {
                return Err(format!(
                    "no node joined this job's queue within {} s",
                    wait.as_secs()
                ))
            }
            None => {}
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The job's summary, as lines.
pub fn render(summary: &JobSummary, shown: &str, build: &str) -> Vec<String> {
    let mut lines = vec![format!(
        "shared queue: {shown} (build {build}): {} of {} nodes reported",
        summary.exit_codes.len(),
        summary.nodes
    )];
    for &(node, at) in &summary.finish_ms {
        let code = summary
            .exit_codes
            .iter()
            .find(|(n, _)| *n == node)
            .map_or(0, |(_, c)| *c);
        lines.push(format!(
            "node {}: finished at +{:.2} s, exit {code}",
            node + 1,
            at as f64 / 1000.0
        ));
    }
    for node in &summary.missing {
        lines.push(format!(
            "node {}: no report (it crashed, was cancelled or is still running)",
            node + 1
        ));
    }
    if summary.finish_ms.len() > 1 {
        lines.push(format!(
            "finish spread: {:.2} s",
            summary.finish_spread_ms as f64 / 1000.0
        ));
    }
    for failure in &summary.failures {
        lines.push(format!(
            "FAILED {} (node {}) - {}",
            failure.id,
            failure.node + 1,
            failure.message
        ));
    }
    for id in &summary.flaky {
        lines.push(format!("FLAKY {id} (passed on a retry)"));
    }
    if !summary.slowest.is_empty() {
        lines.push("slowest tests:".into());
        for slow in &summary.slowest {
            lines.push(format!(
                "  {:.2}s {} (node {})",
                slow.seconds,
                slow.id,
                slow.node + 1
            ));
        }
    }
    if !summary.ran_twice.is_empty() {
        lines.push(format!(
            "{} ran twice (a lease expired on a slow node): counted once",
            tests(summary.ran_twice.len())
        ));
    }
    if !summary.without_queue.is_empty() {
        lines.push(format!(
            "{} ran without the queue (it was lost): some may have run on two nodes",
            tests(summary.without_queue.len())
        ));
    }
    if let Some(stopped) = &summary.stopped {
        lines.push(format!("stopped: {stopped}"));
    }
    lines.push(final_line(summary));
    lines
}

fn final_line(summary: &JobSummary) -> String {
    let mut parts = Vec::new();
    for (n, word) in [
        (summary.failed, "failed"),
        (summary.passed, "passed"),
        (summary.skipped, "skipped"),
        (summary.xfailed, "xfailed"),
        (summary.xpassed, "xpassed"),
        (
            summary.errors,
            if summary.errors == 1 {
                "error"
            } else {
                "errors"
            },
        ),
    ] {
        if n > 0 {
            parts.push(format!("{n} {word}"));
        }
    }
    if !summary.flaky.is_empty() {
        parts.push(format!("{} flaky", summary.flaky.len()));
    }
    if parts.is_empty() {
        parts.push("no tests ran".into());
    }
    // The job's wall time: from the first node's start to the last one's finish.
    let wall = summary
        .finish_ms
        .iter()
        .map(|&(_, at)| at)
        .max()
        .unwrap_or(0);
    format!(
        "==== {} in {:.2}s ({} of {} nodes) ====",
        parts.join(", "),
        wall as f64 / 1000.0,
        summary.exit_codes.len(),
        summary.nodes
    )
}

fn tests(n: usize) -> String {
    if n == 1 {
        "1 test".into()
    } else {
        format!("{n} tests")
    }
}

#[cfg(test)]
mod tests {
    use shardex_core::job_report::{Failure, Slow};

    use super::*;

    fn report(node: u32, finished_ms: u64, exit_code: i32) -> NodeReport {
        NodeReport {
            node,
            nodes: 3,
            started_ms: 1_000,
            finished_ms,
            exit_code,
            passed: 10,
            ..NodeReport::default()
        }
    }

    #[test]
    fn renders_every_node_failures_and_the_job_line() {
        let mut failing = report(1, 5_200, 1);
        failing.failed = 1;
        failing.failures = vec![Failure {
            id: "t.py::test_b".into(),
            message: "AssertionError".into(),
        }];
        failing.slowest = vec![Slow {
            id: "t.py::test_b".into(),
            seconds: 2.5,
        }];
        let summary = aggregate(&[report(0, 5_000, 0), failing], 3);
        let lines = render(&summary, "redis://h:6379", "b7");
        assert_eq!(
            lines[0],
            "shared queue: redis://h:6379 (build b7): 2 of 3 nodes reported"
        );
        assert!(
            lines.contains(&"node 1: finished at +4.00 s, exit 0".to_owned()),
            "{lines:#?}"
        );
        assert!(
            lines.contains(
                &"node 3: no report (it crashed, was cancelled or is still running)".to_owned()
            ),
            "{lines:#?}"
        );
        assert!(lines.contains(&"FAILED t.py::test_b (node 2) - AssertionError".to_owned()));
        assert!(lines.contains(&"  2.50s t.py::test_b (node 2)".to_owned()));
        assert_eq!(
            lines.last().unwrap(),
            "==== 1 failed, 20 passed in 4.20s (2 of 3 nodes) ===="
        );
        assert_eq!(summary.exit_code(), 3, "a node without a report");
    }
}
