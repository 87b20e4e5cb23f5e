use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use shardex_agent::{RunEvent, RunSummary};
use shardex_core::run_events::TestResult;
use shardex_core::{Outcome, TestId, WorkerId};

use super::chart::{Chart, Kind};
use super::record::Recorder;
use super::{html, svg, TimelineFormat};

fn recorder(maxfail: Option<u32>) -> Recorder {
    Recorder::new("t.html".into(), maxfail)
}

fn started(r: &mut Recorder, at: f64, id: &str, worker: usize) {
    let event = RunEvent::TestStarted {
        id: TestId::new(id),
        worker: WorkerId(worker),
    };
    r.handle_at(&event, at);
}

#[expect(
    clippy::too_many_arguments,
    reason = "a test's whole attempt in one line"
)]
fn finished(
    r: &mut Recorder,
    at: f64,
    id: &str,
    worker: usize,
    outcome: Outcome,
    duration: f64,
    attempt: u32,
    will_retry: bool,
) {
    let result = TestResult {
        id: TestId::new(id),
        worker: WorkerId(worker),
        outcome,
        duration,
        reports: Vec::new(),
        attempt,
        will_retry,
    };
    r.handle_at(&RunEvent::TestFinished(Arc::new(result)), at);
}

fn collected(r: &mut Recorder, workers: usize) {
    let event = RunEvent::Collected {
        total: 0,
        deselected: 0,
        report_lines: Vec::new(),
        workers,
        estimated_total: 0.0,
    };
    r.handle_at(&event, 0.5);
}

fn chart(r: Recorder, end: f64, summary: &RunSummary) -> Chart {
    Chart::build(r.into_recorded(end), summary)
}

/// (lane, start, end, kind, attempt) of each bar, times rounded to ms.
fn bars(chart: &Chart) -> Vec<(usize, f64, f64, Kind, u32)> {
    let ms = |t: f64| (t * 1000.0).round() / 1000.0;
    chart
        .bars
        .iter()
        .map(|b| (b.lane, ms(b.start), ms(b.end), b.kind, b.attempt))
        .collect()
}

#[test]
fn the_format_is_the_extension() {
    let ok = |p: &str| TimelineFormat::from_path(Path::new(p));
    assert_eq!(ok("a/t.html"), Ok(TimelineFormat::Html));
    assert_eq!(ok("t.HTM"), Ok(TimelineFormat::Html));
    assert_eq!(ok("t.svg"), Ok(TimelineFormat::Svg));
    for bad in ["t.png", "timeline", "t.html.gz"] {
        assert_eq!(
            ok(bad).unwrap_err().0,
            format!("--timeline must end in .html or .svg, given: {bad}")
        );
    }
}

/// Results that arrive in one batch (held-back passes) must not pile up at the batch's
/// arrival: each lane is packed backwards from its last result.
#[test]
fn a_batch_of_results_is_packed_back_from_its_arrival() {
    let mut r = recorder(None);
    collected(&mut r, 2);
    started(&mut r, 1.0, "t.py::a", 0);
    // a ran 0.1 s, b 0.2 s, c 0.3 s: all three results arrive at 1.7.
    finished(&mut r, 1.7, "t.py::a", 0, Outcome::Passed, 0.1, 0, false);
    started(&mut r, 1.7, "t.py::b", 0);
    finished(&mut r, 1.7, "t.py::b", 0, Outcome::Passed, 0.2, 0, false);
    started(&mut r, 1.7, "t.py::c", 0);
    finished(&mut r, 1.7, "t.py::c", 0, Outcome::Failed, 0.3, 0, false);
    let chart = chart(r, 2.0, &RunSummary::default());
    assert_eq!(
        bars(&chart),
        vec![
            (0, 1.1, 1.2, Kind::Passed, 0),
            (0, 1.2, 1.4, Kind::Passed, 0),
            (0, 1.4, 1.7, Kind::Failed, 0),
        ]
    );
    assert_eq!(chart.lanes.len(), 2, "an unused worker keeps its lane");
    assert_eq!(chart.lanes[1].attempts, 0);
}

#[test]
fn makespan_lower_bound_idle_gaps_and_slowest() {
    let mut r = recorder(None);
    collected(&mut r, 2);
    started(&mut r, 1.0, "t.py::long", 0);
    finished(&mut r, 3.0, "t.py::long", 0, Outcome::Passed, 2.0, 0, false);
    started(&mut r, 1.0, "t.py::short", 1);
    finished(
        &mut r,
        1.5,
        "t.py::short",
        1,
        Outcome::Passed,
        0.5,
        0,
        false,
    );
    let summary = RunSummary {
        wall: Duration::from_millis(3200),
        workers: 2,
        ..RunSummary::default()
    };
    let chart = chart(r, 3.2, &summary);
    assert!((chart.makespan - 2.0).abs() < 1e-9);
    // max(2.5 s / 2 workers, 2.0 s longest)
    assert!((chart.lower_bound - 2.0).abs() < 1e-9);
    assert_eq!(chart.gaps.len(), 1, "{:?}", chart.gaps);
    assert_eq!(chart.gaps[0].lane, 1);
    assert!((chart.gaps[0].start - 1.5).abs() < 1e-9 && (chart.gaps[0].end - 3.0).abs() < 1e-9);
    assert!((chart.lanes[1].idle - 1.5).abs() < 1e-9);
    assert_eq!(chart.slowest[0], ("t.py::long".to_owned(), 2.0));
    assert!(chart.facts[1].starts_with("makespan 2.00 s / lower bound 2.00 s = 1.00"));
    assert!(
        chart.facts[0].starts_with("wall 3.20 s"),
        "{}",
        chart.facts[0]
    );
}

#[test]
fn retries_crashes_timeouts_and_the_stop_are_marked() {
    let mut r = recorder(Some(2));
    collected(&mut r, 2);
    started(&mut r, 1.0, "t.py::flaky", 0);
    finished(&mut r, 1.1, "t.py::flaky", 0, Outcome::Failed, 0.1, 0, true);
    started(&mut r, 1.1, "t.py::flaky", 0);
    finished(
        &mut r,
        1.2,
        "t.py::flaky",
        0,
        Outcome::Passed,
        0.1,
        1,
        false,
    );
    started(&mut r, 1.0, "t.py::crash", 1);
    finished(
        &mut r,
        1.3,
        "t.py::crash",
        1,
        Outcome::Crashed,
        0.3,
        0,
        false,
    );
    started(&mut r, 1.5, "t.py::hang", 1);
    finished(
        &mut r,
        2.5,
        "t.py::hang",
        1,
        Outcome::TimedOut,
        1.0,
        0,
        false,
    );
    // Running when the run stopped: no result.
    started(&mut r, 1.2, "t.py::late", 0);
    let summary = RunSummary {
        stopped: Some("stopping after 2 failures".into()),
        not_run: vec![TestId::new("t.py::late")],
        ..RunSummary::default()
    };
    let chart = chart(r, 3.0, &summary);
    let kinds: Vec<(Kind, u32)> = chart.bars.iter().map(|b| (b.kind, b.attempt)).collect();
    assert_eq!(
        kinds,
        vec![
            (Kind::Rerun, 0),
            (Kind::Passed, 1),
            (Kind::Crashed, 0),
            (Kind::TimedOut, 0),
        ]
    );
    assert_eq!(chart.open.len(), 1, "not an attempt, but shown");
    let late = &chart.open[0];
    assert!((late.start - 1.2).abs() < 1e-9 && (late.end - 3.0).abs() < 1e-9);
    // The second hard failure (the timeout) reached --maxfail 2.
    assert_eq!(chart.stop, Some((2.5, "stopping after 2 failures".into())));
    assert!(chart.facts.iter().any(|f| f == "1 tests not run"));
    assert!(chart.facts[2].contains("1 crashed") && chart.facts[2].contains("1 failed, rerun"));
}

#[test]
fn the_stop_count_comes_from_pytests_words_without_maxfail() {
    let mut r = recorder(None);
    started(&mut r, 1.0, "t.py::a", 0);
    finished(&mut r, 1.4, "t.py::a", 0, Outcome::Failed, 0.4, 0, false);
    let summary = RunSummary {
        stopped: Some("stopping after 1 failures".into()),
        ..RunSummary::default()
    };
    assert_eq!(chart(r, 2.0, &summary).stop.map(|s| s.0), Some(1.4));
    let mut r = recorder(Some(1));
    finished(&mut r, 1.4, "t.py::a", 0, Outcome::Failed, 0.4, 0, false);
    let job = RunSummary {
        stopped: Some("stopping: the job reached 1 failures".into()),
        ..RunSummary::default()
    };
    assert_eq!(
        chart(r, 2.0, &job).stop,
        None,
        "another node stopped the job"
    );
}

/// A test asked back from a worker before it ran got a `TestStarted` and no result there.
#[test]
fn a_test_taken_back_is_not_an_attempt() {
    let mut r = recorder(None);
    started(&mut r, 1.0, "t.py::a", 0);
    started(&mut r, 1.1, "t.py::b", 0);
    finished(&mut r, 1.5, "t.py::b", 0, Outcome::Passed, 0.3, 0, false);
    started(&mut r, 1.6, "t.py::a", 1);
    finished(&mut r, 1.9, "t.py::a", 1, Outcome::Passed, 0.3, 0, false);
    // Started on gw0 last, then taken back and run on gw1.
    started(&mut r, 1.7, "t.py::c", 0);
    finished(&mut r, 2.0, "t.py::c", 1, Outcome::Passed, 0.1, 0, false);
    let chart = chart(r, 2.5, &RunSummary::default());
    assert_eq!(chart.bars.len(), 3, "{:?}", bars(&chart));
    assert!(chart.bars.iter().all(|b| b.kind == Kind::Passed));
}

fn sample() -> Chart {
    let mut r = recorder(None);
    collected(&mut r, 2);
    for (i, worker) in [(0, 0), (1, 1), (2, 0)] {
        let id = format!("t.py::test[</script><!--{i}&\"]");
        started(&mut r, 1.0 + f64::from(i), &id, worker);
        finished(
            &mut r,
            1.5 + f64::from(i),
            &id,
            worker,
            Outcome::Passed,
            0.5,
            0,
            false,
        );
    }
    let summary = RunSummary {
        shared: Some(shardex_core::run_events::SharedOutcome {
            build: "b1".into(),
            node: 1,
            nodes: 3,
            ..Default::default()
        }),
        ..RunSummary::default()
    };
    chart(r, 4.0, &summary)
}

#[test]
fn the_html_keeps_test_ids_inside_its_data() {
    let chart = sample();
    let page = html::render(&chart);
    let data = page
        .split("<script id=\"data\" type=\"application/json\">")
        .nth(1)
        .and_then(|rest| rest.split("</script>").next())
        .expect("the data script");
    assert!(!data.contains('<'), "{data}");
    let value: serde_json::Value = serde_json::from_str(data).expect("JSON");
    assert_eq!(value["bars"].as_array().map(Vec::len), Some(3));
    assert_eq!(value["tests"][0], "t.py::test[</script><!--0&\"]");
    assert_eq!(value["groups"], serde_json::json!([[0, "node 2 of 3"]]));
    assert!(page.contains("these are this node's workers only"));
    assert_eq!(
        page.matches("<script").count(),
        2,
        "no network, two inline scripts"
    );
    assert!(!page.contains("src=") && !page.contains("http://") && !page.contains("https://"));
}

#[test]
fn the_svg_has_one_rect_and_title_per_attempt() {
    let chart = sample();
    let picture = svg::render(&chart);
    assert_eq!(picture.matches("<rect class=\"b ").count(), 3);
    assert!(picture.contains(
        "<title>t.py::test[&lt;/script&gt;&lt;!--2&amp;&quot;]\npassed, 500 ms, attempt 1</title>"
    ));
    assert!(picture.contains("node 2 of 3"));
    assert!(!picture.contains("<script"));
}

#[test]
fn finish_writes_the_format_of_the_extension_making_its_folders() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, start) in [("a/b/t.svg", "<svg "), ("c/t.HTML", "<!DOCTYPE html>")] {
        let path = dir.path().join(name);
        let mut r = Recorder::new(path.clone(), None);
        started(&mut r, 0.1, "t.py::a", 0);
        finished(&mut r, 0.2, "t.py::a", 0, Outcome::Passed, 0.1, 0, false);
        r.finish(&RunSummary::default());
        let text = std::fs::read_to_string(&path).expect("written");
        assert!(text.starts_with(start), "{name}: {}", &text[..40]);
    }
    // A folder where the file should be: one warning line, no panic, the run goes on.
    let blocked = dir.path().join("d.html");
    std::fs::create_dir(&blocked).expect("mkdir");
    Recorder::new(blocked.clone(), None).finish(&RunSummary::default());
    assert!(blocked.is_dir());
}

/// The page's data of an `.html` timeline.
fn page_data(page: &str) -> serde_json::Value {
    let data = page
        .split("<script id=\"data\" type=\"application/json\">")
        .nth(1)
        .and_then(|rest| rest.split("</script>").next())
        .expect("the data script");
    serde_json::from_str(data).expect("JSON")
}

#[test]
fn the_job_chart_puts_each_node_under_its_heading_on_one_axis() {
    let dir = tempfile::tempdir().expect("tempdir");
    let one = super::job::node_data(&sample(), 10_000);
    let two = super::job::node_data(&sample(), 11_500);
    let part = |node, data| super::job::NodeTimeline {
        node,
        nodes: 3,
        data,
    };
    let path = dir.path().join("job.html");
    let drawn = super::job::write_job(
        &path,
        "b1",
        &[
            part(2, Some(two.as_str())),
            part(0, Some(one.as_str())),
            part(1, Some("{\"not\": \"a chart\"}")),
        ],
    );
    assert_eq!(drawn, Ok(2));
    let page = std::fs::read_to_string(&path).expect("written");
    let value = page_data(&page);
    // Nodes in their order, each heading before its own two lanes.
    assert_eq!(
        value["groups"],
        serde_json::json!([[0, "node 1 of 3"], [2, "node 3 of 3"]])
    );
    assert_eq!(value["lanes"].as_array().map(Vec::len), Some(4));
    let bars: Vec<Vec<i64>> = serde_json::from_value(value["bars"].clone()).expect("bars");
    assert_eq!(bars.len(), 6, "every node's attempts");
    // Node 3 started 1.5 s after node 1: its bars are 1.5 s later on the job's axis, on its
    // own lanes, naming the same tests (each test id once).
    let (first, later) = bars.split_at(3);
    for (a, b) in first.iter().zip(later) {
        assert_eq!(b[0], a[0] + 2);
        assert_eq!(b[1] - a[1], 15_000);
        assert_eq!(b[5], a[5]);
    }
    assert_eq!(value["tests"].as_array().map(Vec::len), Some(3));
    assert!(page.contains("in 2 nodes"));
    assert!(page.contains("not drawn: node 2 (no timeline in its report)"));
    assert!(page.contains("the nodes started within 1.50 s of each other"));

    // The same job as a picture without script.
    let svg_path = dir.path().join("job.svg");
    let one_part = [part(0, Some(one.as_str()))];
    assert_eq!(super::job::write_job(&svg_path, "b1", &one_part), Ok(1));
    let picture = std::fs::read_to_string(&svg_path).expect("written");
    assert_eq!(picture.matches("<rect class=\"b ").count(), 3);
    assert!(picture.contains(">node 1 of 3<"));

    // Nothing to draw is said, and no file is left.
    let none = dir.path().join("none.html");
    let nothing = super::job::write_job(&none, "b1", &[part(0, None)]);
    assert_eq!(
        nothing,
        Err("no node left its timeline with its report".to_owned())
    );
    assert!(!none.exists());
}
