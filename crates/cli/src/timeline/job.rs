//! The job's picture for `shardex report --timeline PATH`: one group of lanes per node on
//! one time axis. Each node of a shared queue leaves its chart with its report (the `.html`
//! page's data plus when its recorder started, Unix ms); the report lays them side by side.

use std::collections::HashMap;
use std::path::Path;

use serde_json::Value;

use super::chart::{Bar, Chart, Gap, Kind, Lane};
use super::html::data;
use super::record::{render, write};
use super::TimelineFormat;

/// A node's chart as its report carries it.
pub fn node_data(chart: &Chart, origin_ms: u64) -> String {
    let mut value = data(chart);
    value["origin_ms"] = Value::from(origin_ms);
    value.to_string()
}

/// One node's part of the job.
pub struct NodeTimeline<'a> {
    /// 0-based.
    pub node: u32,
    pub nodes: u32,
    /// `node_data`'s text; `None`: the node left none.
    pub data: Option<&'a str>,
}

/// Writes the job's picture to `path` (its extension picks the format). Returns how many
/// nodes' charts it holds, or why it could not draw one.
pub fn write_job(path: &Path, build: &str, parts: &[NodeTimeline]) -> Result<usize, String> {
    let format = TimelineFormat::from_path(path).map_err(|e| e.to_string())?;
    let mut charts: Vec<(u32, u32, u64, Chart)> = Vec::new();
    let mut without: Vec<u32> = Vec::new();
    for part in parts {
        match part.data.and_then(parse) {
            Some((origin_ms, chart)) => charts.push((part.node, part.nodes, origin_ms, chart)),
            None => without.push(part.node),
        }
    }
    if charts.is_empty() {
        return Err("no node left its timeline with its report".to_owned());
    }
    charts.sort_by_key(|c| c.0);
    let chart = job_chart(build, &charts, &without);
    write(path, &render(&chart, format))?;
    Ok(charts.len())
}

/// Seconds from the page's units (0.1 ms).
fn secs(value: &Value) -> f64 {
    value.as_i64().unwrap_or(0) as f64 / 1e4
}

fn index(value: &Value) -> usize {
    value
        .as_u64()
        .and_then(|v| usize::try_from(v).ok())
        .unwrap_or(0)
}

/// A node's chart back from `node_data`; `None` when it does not parse (another shardex
/// version's, or damaged): that node is named as missing from the picture.
fn parse(text: &str) -> Option<(u64, Chart)> {
    let value: Value = serde_json::from_str(text).ok()?;
    let origin_ms = value.get("origin_ms")?.as_u64()?;
    let tests: Vec<String> = value
        .get("tests")?
        .as_array()?
        .iter()
        .map(|t| t.as_str().unwrap_or("").to_owned())
        .collect();
    let rows = |name: &str| -> Option<Vec<Vec<Value>>> {
        value
            .get(name)?
            .as_array()?
            .iter()
            .map(|row| row.as_array().cloned())
            .collect()
    };
    let lanes: Vec<Lane> = rows("lanes")?
        .into_iter()
        .map(|l| Lane {
            label: l.first().and_then(Value::as_str).unwrap_or("").to_owned(),
            attempts: l.get(1).map_or(0, index),
            busy: l.get(2).map_or(0.0, secs),
            idle: l.get(3).map_or(0.0, secs),
        })
        .collect();
    let in_range = |lane: usize, test: usize| lane < lanes.len() && test < tests.len();
    let mut bars = Vec::new();
    for b in rows("bars")? {
        let [lane, start, len, kind, attempt, test] = b.as_slice() else {
            return None;
        };
        let (lane, test) = (index(lane), index(test));
        if !in_range(lane, test) {
            return None;
        }
        let (start, len) = (secs(start), secs(len));
        bars.push(Bar {
            lane,
            start,
            end: start + len,
            kind: Kind::from_index(index(kind))?,
            attempt: u32::try_from(index(attempt)).unwrap_or(u32::MAX),
            test,
            duration: len,
        });
    }
    let mut open = Vec::new();
    for o in rows("open")? {
        let [lane, start, len, test] = o.as_slice() else {
            return None;
        };
        let (lane, test) = (index(lane), index(test));
        if !in_range(lane, test) {
            return None;
        }
        let (start, len) = (secs(start), secs(len));
        open.push(Bar {
            lane,
            start,
            end: start + len,
            kind: Kind::NotRun,
            attempt: 0,
            test,
            duration: len,
        });
    }
    let mut gaps = Vec::new();
    for g in rows("gaps")? {
        let [lane, start, end] = g.as_slice() else {
            return None;
        };
        if index(lane) >= lanes.len() {
            return None;
        }
        gaps.push(Gap {
            lane: index(lane),
            start: secs(start),
            end: secs(end),
        });
    }
    let stop = value.get("stop").and_then(Value::as_array).and_then(|s| {
        let why = s.get(1)?.as_str()?.to_owned();
        Some((secs(s.first()?), why))
    });
    let chart = Chart {
        end: secs(value.get("end")?),
        first_start: secs(value.get("first")?),
        lanes,
        tests,
        bars,
        open,
        gaps,
        stop,
        ..Chart::default()
    };
    Some((origin_ms, chart))
}

/// The nodes' charts on one axis: time 0 is the earliest node's start; each node's lanes
/// under its heading; tests named once.
fn job_chart(build: &str, charts: &[(u32, u32, u64, Chart)], without: &[u32]) -> Chart {
    let t0 = charts.iter().map(|c| c.2).min().unwrap_or(0);
    let mut job = Chart::default();
    let mut test_index: HashMap<String, usize> = HashMap::new();
    let mut stops: Vec<(f64, String)> = Vec::new();
    let mut ends: Vec<f64> = Vec::new();
    let nodes = charts.iter().map(|c| c.1).max().unwrap_or(0);
    for (node, _, origin_ms, chart) in charts {
        let offset = (origin_ms - t0) as f64 / 1000.0;
        let lane0 = job.lanes.len();
        job.groups
            .push((lane0, format!("node {} of {nodes}", node + 1)));
        job.lanes.extend(chart.lanes.iter().cloned());
        let tests: Vec<usize> = chart
            .tests
            .iter()
            .map(|id| {
                let next = job.tests.len();
                *test_index.entry(id.clone()).or_insert_with(|| {
                    job.tests.push(id.clone());
                    next
                })
            })
            .collect();
        let moved = |b: &Bar| Bar {
            lane: lane0 + b.lane,
            start: b.start + offset,
            end: b.end + offset,
            test: tests[b.test],
            ..b.clone()
        };
        job.bars.extend(chart.bars.iter().map(moved));
        job.open.extend(chart.open.iter().map(moved));
        job.gaps.extend(chart.gaps.iter().map(|g| Gap {
            lane: lane0 + g.lane,
            start: g.start + offset,
            end: g.end + offset,
        }));
        if let Some((at, why)) = &chart.stop {
            stops.push((at + offset, format!("node {}: {why}", node + 1)));
        }
        ends.push(chart.end + offset);
        job.end = job.end.max(chart.end + offset);
    }
    job.stop = stops.into_iter().min_by(|a, b| a.0.total_cmp(&b.0));
    let workers = job.lanes.len().max(1);
    let first = job.bars.iter().map(|b| b.start).reduce(f64::min);
    let last = job.bars.iter().map(|b| b.end).reduce(f64::max);
    job.first_start = first.unwrap_or(job.end);
    job.makespan = last.zip(first).map_or(0.0, |(l, f)| l - f);
    let (total, longest) = job.total_and_longest();
    job.lower_bound = (total / workers as f64).max(longest);
    describe(&mut job, build, charts, without, &ends, total, longest);
    job
}

fn describe(
    job: &mut Chart,
    build: &str,
    charts: &[(u32, u32, u64, Chart)],
    without: &[u32],
    ends: &[f64],
    total: f64,
    longest: f64,
) {
    use super::chart::secs as shown;
    let workers = job.lanes.len();
    job.heading = format!(
        "shardex report: build {build}: {} tests, {} attempts on {workers} workers in {} nodes",
        job.tests.len(),
        job.bars.len(),
        charts.len()
    );
    let ratio = if job.lower_bound > 0.0 {
        format!(" = {:.2}\u{d7}", job.makespan / job.lower_bound)
    } else {
        String::new()
    };
    job.facts.push(format!(
        "makespan {} / lower bound {}{ratio} (first test start on any node to last test end; \
         lower bound = max(total test time {} / {workers} workers, longest attempt {}))",
        shown(job.makespan),
        shown(job.lower_bound),
        shown(total),
        shown(longest),
    ));
    job.facts.push(job.counts_line());
    let starts: Vec<f64> = charts
        .iter()
        .map(|c| (c.2 - charts.iter().map(|c| c.2).min().unwrap_or(0)) as f64 / 1000.0)
        .collect();
    let spread = |v: &[f64]| {
        v.iter().copied().fold(f64::MIN, f64::max) - v.iter().copied().fold(f64::MAX, f64::min)
    };
    job.facts.push(format!(
        "the nodes started within {} of each other and ended within {}",
        shown(spread(&starts)),
        shown(spread(ends))
    ));
    if let Some((_, why)) = &job.stop {
        job.facts
            .push(format!("stopped early (-x/--maxfail): {why}; the red line"));
    }
    if !without.is_empty() {
        let names: Vec<String> = without.iter().map(|n| format!("node {}", n + 1)).collect();
        job.facts.push(format!(
            "not drawn: {} (no timeline in its report)",
            names.join(", ")
        ));
    }
    job.slowest = job.slowest_tests();
}
