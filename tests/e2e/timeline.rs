//! `--timeline PATH`: a run with a retry, a crash, a timeout and `-x` writes a page that a real
//! headless Chromium (`scripts/chromium.sh`) loads without console output and that has one
//! bar per attempt; the `.svg` form parses in Chromium with one bar per attempt too.
//!
//! Every attempt appends `start <nodeid>` to `$TL_LOG` from an autouse fixture: the attempts
//! that started, whether they finished or were stopped by `-x`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use shardex_e2e::redis_server::RedisServer;
use shardex_e2e::{
    empty_suite, repo_root, serial, shardex_cmd, shardex_raw, wait_all, Running, Suite,
};

use crate::shardex_bin;

const CONFTEST: &str = r#"
import os
import time

import pytest


@pytest.fixture(autouse=True)
def _log_attempt(request):
    with open(os.environ["TL_LOG"], "a") as f:
        f.write("start %s\n" % request.node.nodeid)
    yield


def _path(name):
    return os.path.join(os.environ["TL_DIR"], name)


@pytest.fixture
def attempt():
    """How many times `name` was counted before (survives crashes and retries)."""
    def count(name):
        path = _path(name)
        n = int(open(path).read()) if os.path.exists(path) else 0
        with open(path, "w") as f:
            f.write(str(n + 1))
        return n
    return count


@pytest.fixture
def mark():
    return lambda name: open(_path(name), "w").close()


@pytest.fixture
def wait_for():
    def wait(*names):
        deadline = time.time() + 50
        while not all(os.path.exists(_path(n)) for n in names):
            assert time.time() < deadline, "never saw %s" % (names,)
            time.sleep(0.02)
    return wait
"#;

const TESTS: &str = r#"
import os
import signal
import time

import pytest


@pytest.mark.parametrize("i", range(6))
def test_pass(i):
    time.sleep(0.05)


@pytest.mark.flaky(reruns=1)
def test_flaky(attempt, mark):
    n = attempt("flaky")
    mark("flaky.%d" % n)
    assert n >= 1, "fails the first time"


@pytest.mark.flaky(reruns=1)
def test_crash(attempt, mark):
    if attempt("crash") == 0:
        mark("crash.0")
        os._exit(3)


@pytest.mark.flaky(reruns=1)
@pytest.mark.timeout(1)
def test_hang(attempt, mark):
    if attempt("hang") == 0:
        mark("hang.0")
        # Deaf to pytest-timeout's SIGALRM: shardex's kill ends it (1 s + --kill-grace 1 +
        # its 1 s margin), a timeout rather than a failure.
        signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGALRM])
        time.sleep(30)


def test_zz_fails_after_the_others(wait_for):
    wait_for("flaky.1", "crash.0", "hang.0")
    # The timeout (3 s after hang.0) is seen before this failure stops the run.
    time.sleep(4.5)
    assert False, "the failure that stops the run"
"#;

fn suite() -> Suite {
    let suite = empty_suite("timeline");
    std::fs::write(suite.path("pytest.ini"), "[pytest]\n").unwrap();
    std::fs::write(suite.path("conftest.py"), CONFTEST).unwrap();
    std::fs::write(suite.path("test_tl.py"), TESTS).unwrap();
    suite
}

/// What a run did: attempts that began in pytest (the log), results (pytest's summary line
/// counts every attempt: "1 failed, 9 passed, 3 rerun"), and where its timeline is.
struct Ran {
    began: Vec<String>,
    results: usize,
    timeline: PathBuf,
}

/// Runs the suite with `-x` and `--timeline <scratch>/out/<name>`.
fn run(suite: &Suite, name: &str) -> Ran {
    let timeline = suite.scratch.join("out").join(name);
    let log = suite.scratch.join("attempts.log");
    let arg = format!("--timeline={}", timeline.display());
    let out = shardex_cmd(
        shardex_bin(),
        &suite.dir,
        &[
            "-n",
            "3",
            "-x",
            "--kill-grace",
            "1",
            "-p",
            "no:cacheprovider",
            &arg,
        ],
        None,
    )
    .env("TL_LOG", &log)
    .env("TL_DIR", &suite.scratch)
    .run();
    out.assert_code(1);
    assert!(
        out.stdout.contains("stopping after 1 failures"),
        "{}",
        out.describe()
    );
    let attempts: Vec<String> = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .map(|l| l.trim_start_matches("start ").to_owned())
        .collect();
    for must in [
        "test_tl.py::test_flaky",
        "test_tl.py::test_crash",
        "test_tl.py::test_hang",
    ] {
        assert!(
            attempts.iter().any(|a| a == must),
            "{must} never started: {attempts:?}"
        );
    }
    assert!(
        timeline.is_file(),
        "no timeline at {}\n{}",
        timeline.display(),
        out.describe()
    );
    let results = out
        .summary()
        .iter()
        .filter(|(word, _)| !matches!(word.as_str(), "deselected" | "warnings"))
        .map(|(_, n)| *n as usize)
        .sum();
    Ran {
        began: attempts,
        results,
        timeline,
    }
}

/// One bar per attempt (per result); a test the `-x` stop ended without a result is drawn
/// apart (`class="u"`), so what began in pytest is covered by the two.
fn assert_bars(dom: &str, ran: &Ran, details: &str) {
    let bars = dom.matches("<rect class=\"b ").count();
    let open = dom.matches("<rect class=\"u\"").count();
    assert_eq!(
        bars, ran.results,
        "one bar per attempt: {:?}\n{details}",
        ran.began
    );
    assert!(
        bars <= ran.began.len() && ran.began.len() <= bars + open,
        "{bars} bars + {open} open for {:?}\n{details}",
        ran.began
    );
}

fn chromium() -> PathBuf {
    let script = repo_root().join("scripts/chromium.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg("bin")
        .output()
        .expect("run scripts/chromium.sh");
    assert!(
        out.status.success(),
        "no chromium: run scripts/setup.sh (it calls scripts/chromium.sh install)\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// Loads `page` in headless Chromium: (the DOM after its scripts ran, the console lines).
fn load(page: &Path) -> (String, Vec<String>) {
    let profile = tempfile::tempdir().expect("profile dir");
    let out = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("--dump-dom")
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("run chromium");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "chromium failed: {stderr}");
    // The page logs nothing: any console line (an error, an uncaught exception) is a defect.
    let console = stderr
        .lines()
        .filter(|l| l.contains(":CONSOLE"))
        .map(str::to_owned)
        .collect();
    (String::from_utf8_lossy(&out.stdout).into_owned(), console)
}

/// The drawn chart of a page's DOM: its script has the same words in its source.
fn chart_of(dom: &str) -> &str {
    dom.split("<svg id=\"tl\"")
        .nth(1)
        .and_then(|chart| chart.split("</svg>").next())
        .expect("the chart's svg")
}

/// The page's data (for a failure's message).
fn data(html: &str) -> &str {
    html.split("type=\"application/json\">")
        .nth(1)
        .and_then(|rest| rest.split("</script>").next())
        .unwrap_or(html)
}

#[test]
fn the_html_timeline_loads_in_chromium_with_a_bar_per_attempt() {
    let _guard = serial();
    let suite = suite();
    let ran = run(&suite, "timeline.html");
    let html = std::fs::read_to_string(&ran.timeline).unwrap();
    assert!(
        !html.contains("src=\"http") && !html.contains("href=\"http"),
        "no network"
    );
    let (dom, console) = load(&ran.timeline);
    assert_eq!(console, Vec::<String>::new(), "console output");
    assert!(
        dom.contains("data-drawn-ms="),
        "the script did not finish:\n{dom}"
    );
    let chart = chart_of(&dom);
    assert_bars(chart, &ran, data(&html));
    assert_eq!(chart.matches(" data-i=\"").count(), ran.results);
    for kind in ["k-r", "k-c", "k-t", "k-f"] {
        assert!(
            chart.contains(&format!("class=\"b {kind}")),
            "no {kind} bar"
        );
    }
    // The retries (attempt 2 of the flaky test at least) are outlined.
    assert!(chart.contains(" a\" data-i="), "no retry outlined");
    assert!(chart.contains("class=\"stop\""), "no -x stop line");
    assert!(chart.contains("stop: stopping after 1 failures"));
    assert!(dom.contains("makespan ") && dom.contains("lower bound"));
    assert!(dom.contains("slowest tests:") && dom.contains("test_zz_fails_after_the_others"));
}

#[test]
fn the_svg_timeline_parses_in_chromium_with_a_bar_per_attempt() {
    let _guard = serial();
    let suite = suite();
    let ran = run(&suite, "timeline.svg");
    let (dom, console) = load(&ran.timeline);
    assert_eq!(console, Vec::<String>::new(), "console output");
    assert!(
        !dom.contains("parsererror"),
        "the SVG does not parse:\n{dom}"
    );
    assert_bars(&dom, &ran, &dom);
    assert!(
        dom.contains("<title>test_tl.py::test_crash\ncrashed"),
        "hover text"
    );
}

const NODE_TESTS: &str = r#"
import os
import time

import pytest


@pytest.mark.parametrize("i", range(10))
def test_sleep(i):
    time.sleep(0.05)


def test_flaky(attempt):
    # Fails on its first attempt, on whichever node takes it.
    assert attempt("flaky") > 0
"#;

/// The job's picture: two nodes of one shared queue each leave their chart with their
/// report; `shardex report --timeline` draws both, one group of lanes per node, one bar per
/// attempt of the whole job (the retry included), and Chromium loads it without a word.
#[test]
fn the_job_timeline_has_a_group_of_lanes_per_node() {
    let _guard = serial();
    let redis = RedisServer::start();
    let build = format!(
        "e2e-tl-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
            % 1_000_000_000
    );
    let url = redis.url();
    // One checkout per node, one counter folder for the job (the flaky test's attempts).
    let shared = empty_suite("timeline-job");
    let suites: Vec<Suite> = (0..2)
        .map(|_| {
            let suite = empty_suite("timeline-node");
            std::fs::write(suite.path("pytest.ini"), "[pytest]\n").unwrap();
            std::fs::write(suite.path("conftest.py"), CONFTEST).unwrap();
            std::fs::write(suite.path("test_nodes.py"), NODE_TESTS).unwrap();
            suite
        })
        .collect();
    let runs: Vec<Running> = suites
        .iter()
        .enumerate()
        .map(|(i, suite)| {
            let index = i.to_string();
            let args = [
                "-n",
                "2",
                "--node-index",
                &index,
                "--node-total",
                "2",
                "--build-id",
                &build,
                "--queue",
                &url,
                "--reruns",
                "1",
                "-p",
                "no:cacheprovider",
            ];
            shardex_cmd(shardex_bin(), &suite.dir, &args, None)
                .env("TL_LOG", suite.scratch.join("attempts.log"))
                .env("TL_DIR", &shared.scratch)
                .start()
        })
        .collect();
    let outs = wait_all(runs, Duration::from_secs(60));
    let mut attempts = 0;
    for out in &outs {
        out.assert_code(0);
        attempts += out
            .summary()
            .iter()
            .filter(|(word, _)| !matches!(word.as_str(), "deselected" | "warnings"))
            .map(|(_, n)| *n as usize)
            .sum::<usize>();
    }
    assert_eq!(attempts, 12, "11 tests and one retry across the nodes");

    let page = shared.scratch.join("job").join("timeline.html");
    let page_arg = page.display().to_string();
    let report = shardex_raw(
        shardex_bin(),
        &suites[0].dir,
        &[
            "report",
            "--queue",
            &url,
            "--build-id",
            &build,
            "--wait",
            "20",
            "--timeline",
            &page_arg,
        ],
    )
    .run();
    report.assert_code(0);
    assert!(
        report
            .stdout
            .contains(&format!("timeline: {page_arg} (2 of 2 reported nodes)")),
        "{}",
        report.describe()
    );
    let html = std::fs::read_to_string(&page).unwrap();
    let (dom, console) = load(&page);
    assert_eq!(console, Vec::<String>::new(), "console output");
    assert!(dom.contains("data-drawn-ms="), "the script did not finish");
    let chart = chart_of(&dom);
    assert_eq!(
        chart.matches("<rect class=\"b ").count(),
        attempts,
        "one bar per attempt of the job: {}",
        data(&html)
    );
    assert!(chart.contains(" a\" data-i="), "the retry is outlined");
    assert_eq!(
        chart.matches("<rect class=\"grp\"").count(),
        2,
        "a heading row per node"
    );
    let labels = dom
        .split("<svg id=\"labels\"")
        .nth(1)
        .and_then(|l| l.split("</svg>").next())
        .expect("the labels' svg");
    assert!(labels.contains(">node 1 of 2<") && labels.contains(">node 2 of 2<"));
    assert_eq!(
        labels.matches(" data-l=\"").count(),
        4,
        "two workers per node"
    );
    assert!(dom.contains("in 2 nodes") && dom.contains("the nodes started within"));

    // A path shardex cannot draw is refused before waiting: exit 4, one line.
    let refused = shardex_raw(
        shardex_bin(),
        &suites[0].dir,
        &[
            "report",
            "--queue",
            &url,
            "--build-id",
            &build,
            "--timeline",
            "job.png",
        ],
    )
    .run();
    refused.assert_code(4);
    assert!(refused
        .stderr
        .contains("--timeline must end in .html or .svg"));
}
