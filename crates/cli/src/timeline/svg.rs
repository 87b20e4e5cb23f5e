//! The `.svg` timeline: a static picture (any viewer, no script): the title as text, a
//! `<rect>` per attempt with a `<title>` (the hover text), lanes as translated groups so
//! that each bar carries only its x and width.

use std::fmt::Write as _;

use super::chart::{secs, Bar, Chart, Kind};
use super::html::escape;

const LABEL_W: f64 = 90.0;
const CHART_W: f64 = 1400.0;
const LANE_H: f64 = 20.0;
/// A node's heading row above its lanes (with a shared queue).
const GROUP_H: f64 = 18.0;
const LINE_H: f64 = 17.0;
const AXIS_H: f64 = 26.0;

pub(super) fn render(chart: &Chart) -> String {
    let mut out = String::with_capacity(110 * chart.bars.len() + 16_384);
    let lines = header_lines(chart);
    let top = 10.0 + LINE_H * (lines.len() as f64 + 2.0) + AXIS_H;
    // A row under the lanes for the stop's words (the axis' labels are above).
    let foot = if chart.stop.is_some() { 24.0 } else { 10.0 };
    let height = top + lanes_height(chart) + foot;
    let width = LABEL_W + CHART_W + 40.0;
    let _ = write!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
         viewBox=\"0 0 {width} {height}\" font-family=\"sans-serif\" font-size=\"11\">\
         <title>{}</title><style>text{{fill:#333}}.h{{font-size:15px;font-weight:bold}}\
         .lane{{fill:#fff}}.odd{{fill:#f5f5f5}}.tick{{stroke:#e2e2e2}}.startup{{fill:#eef0fb}}\
         .gap{{fill:url(#hatch)}}.a{{stroke:#000;stroke-dasharray:2 1}}.m{{font-weight:bold}}\
         .u{{fill:#e8e8e8;stroke:#777;stroke-dasharray:3 2}}\
         .stop{{stroke:#d00;stroke-width:2;stroke-dasharray:6 3}}.stopl{{fill:#d00;font-weight:bold}}",
        escape(&chart.heading)
    );
    for kind in Kind::ALL {
        let _ = write!(out, ".k-{}{{fill:{}}}", kind.code(), kind.color());
    }
    out.push_str(
        "</style><defs><pattern id=\"hatch\" width=\"6\" height=\"6\" \
         patternUnits=\"userSpaceOnUse\" patternTransform=\"rotate(45)\"><rect width=\"6\" \
         height=\"6\" fill=\"#fff3ee\"/><line x1=\"0\" y1=\"0\" x2=\"0\" y2=\"6\" \
         stroke=\"#eaa58f\" stroke-width=\"2\"/></pattern></defs>\
         <rect width=\"100%\" height=\"100%\" fill=\"#fff\"/>",
    );
    for (i, line) in lines.iter().enumerate() {
        let class = if i == 0 { " class=\"h\"" } else { "" };
        let y = 10.0 + LINE_H * (i as f64 + 1.0);
        let _ = write!(
            out,
            "<text x=\"8\" y=\"{y}\"{class}>{}</text>",
            escape(line)
        );
    }
    legend(&mut out, 10.0 + LINE_H * (lines.len() as f64 + 1.2));
    lanes(&mut out, chart, top);
    let scale = CHART_W / chart.end.max(1e-3);
    let _ = write!(out, "<g transform=\"translate({LABEL_W},{top})\">");
    background(&mut out, chart, scale);
    bars(&mut out, chart, scale);
    for open in &chart.open {
        let _ = write!(
            out,
            "<rect class=\"u\" x=\"{:.1}\" y=\"{}\" width=\"{:.1}\" height=\"14\">\
             <title>{}\nstarted, no result after {}: the stop ended its worker (not run)\
             </title></rect>",
            open.start * scale,
            lane_y(chart, open.lane) + 3.0,
            ((open.end - open.start) * scale).max(0.6),
            escape(&chart.tests[open.test]),
            secs(open.end - open.start)
        );
    }
    out.push_str("</g></svg>\n");
    out
}

fn header_lines(chart: &Chart) -> Vec<String> {
    let mut lines = vec![chart.heading.clone()];
    lines.extend(chart.facts.iter().cloned());
    if !chart.slowest.is_empty() {
        let slowest: Vec<String> = chart
            .slowest
            .iter()
            .map(|(id, d)| format!("{id} ({})", secs(*d)))
            .collect();
        lines.push(format!("slowest: {}", slowest.join(", ")));
    }
    lines
}

fn legend(out: &mut String, y: f64) {
    let mut x = 8.0;
    for kind in Kind::ALL {
        let label = match kind.marker() {
            Some(m) => format!("{} {m}", kind.label()),
            None => kind.label().to_owned(),
        };
        let _ = write!(
            out,
            "<rect class=\"k-{}\" x=\"{x}\" y=\"{}\" width=\"11\" height=\"11\"/>\
             <text x=\"{}\" y=\"{}\">{label}</text>",
            kind.code(),
            y - 9.0,
            x + 15.0,
            y
        );
        x += 30.0 + 6.5 * label.chars().count() as f64;
    }
    let _ = write!(
        out,
        "<rect class=\"a\" fill=\"none\" x=\"{x}\" y=\"{}\" width=\"11\" height=\"11\"/>\
         <text x=\"{}\" y=\"{y}\">a retry</text>\
         <rect class=\"gap\" x=\"{}\" y=\"{}\" width=\"11\" height=\"11\"/>\
         <text x=\"{}\" y=\"{y}\">idle</text>\
         <rect class=\"u\" x=\"{}\" y=\"{}\" width=\"11\" height=\"11\"/>\
         <text x=\"{}\" y=\"{y}\">stopped before a result</text>",
        y - 9.0,
        x + 15.0,
        x + 75.0,
        y - 9.0,
        x + 90.0,
        x + 130.0,
        y - 9.0,
        x + 145.0
    );
}

/// Lane names on the left, each with its totals as hover text.
fn lanes(out: &mut String, chart: &Chart, top: f64) {
    for (first, group) in &chart.groups {
        let _ = write!(
            out,
            "<text x=\"4\" y=\"{}\" class=\"m\">{}</text>",
            top + lane_y(chart, *first) - 5.0,
            escape(group)
        );
    }
    for (i, lane) in chart.lanes.iter().enumerate() {
        let _ = write!(
            out,
            "<text x=\"4\" y=\"{}\">{}<title>{}: {} attempts, busy {}, idle {}</title></text>",
            top + lane_y(chart, i) + 14.0,
            escape(&lane.label),
            escape(&lane.label),
            lane.attempts,
            secs(lane.busy),
            secs(lane.idle)
        );
    }
}

/// Lane stripes, the start-up, the time axis, the idle gaps and the stop line.
fn background(out: &mut String, chart: &Chart, scale: f64) {
    let height = lanes_height(chart);
    for i in 0..chart.lanes.len() {
        let class = if i % 2 == 1 { "lane odd" } else { "lane" };
        let _ = write!(
            out,
            "<rect class=\"{class}\" y=\"{}\" width=\"{CHART_W}\" height=\"{LANE_H}\"/>",
            lane_y(chart, i)
        );
    }
    let _ = write!(
        out,
        "<rect class=\"startup\" width=\"{:.1}\" height=\"{height}\"/>",
        chart.first_start * scale
    );
    let raw = 100.0 / scale;
    let p = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * p)
        .find(|&s| s >= raw)
        .unwrap_or(raw);
    let mut i = 0.0;
    while i * step <= chart.end {
        let x = i * step * scale;
        let label = if i == 0.0 {
            "0".to_owned()
        } else {
            secs(i * step)
        };
        let _ = write!(
            out,
            "<line class=\"tick\" x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"-5\" y2=\"{height}\"/>\
             <text x=\"{x:.1}\" y=\"-9\">{label}</text>"
        );
        i += 1.0;
    }
    for gap in &chart.gaps {
        let _ = write!(
            out,
            "<rect class=\"gap\" x=\"{:.1}\" y=\"{}\" width=\"{:.1}\" height=\"14\">\
             <title>{} idle {}</title></rect>",
            gap.start * scale,
            lane_y(chart, gap.lane) + 3.0,
            (gap.end - gap.start) * scale,
            escape(&chart.lanes[gap.lane].label),
            secs(gap.end - gap.start)
        );
    }
    if let Some((at, why)) = &chart.stop {
        let x = at * scale;
        let anchor = if x > CHART_W / 2.0 {
            " text-anchor=\"end\""
        } else {
            ""
        };
        let _ = write!(
            out,
            "<line class=\"stop\" x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"-4\" y2=\"{}\"/>\
             <text class=\"stopl\"{anchor} x=\"{x:.1}\" y=\"{}\">stop: {}</text>",
            height + 14.0,
            height + 11.0,
            escape(why)
        );
    }
}

/// A group per lane (its y), a rect per attempt (x, width) with its hover text.
fn bars(out: &mut String, chart: &Chart, scale: f64) {
    let mut lane = None;
    for bar in &chart.bars {
        if lane != Some(bar.lane) {
            if lane.is_some() {
                out.push_str("</g>");
            }
            lane = Some(bar.lane);
            let _ = write!(
                out,
                "<g transform=\"translate(0,{})\">",
                lane_y(chart, bar.lane) + 3.0
            );
        }
        bar_rect(out, chart, bar, scale);
    }
    if lane.is_some() {
        out.push_str("</g>");
    }
}

fn bar_rect(out: &mut String, chart: &Chart, bar: &Bar, scale: f64) {
    let retry = if bar.attempt > 0 { " a" } else { "" };
    let x = bar.start * scale;
    let width = ((bar.end - bar.start) * scale).max(0.6);
    let _ = write!(
        out,
        "<rect class=\"b k-{}{retry}\" x=\"{x:.1}\" width=\"{width:.1}\" height=\"14\">\
         <title>{}\n{}, {}, attempt {}</title></rect>",
        bar.kind.code(),
        escape(&chart.tests[bar.test]),
        bar.kind.label(),
        secs(bar.end - bar.start),
        bar.attempt + 1
    );
    if let Some(marker) = bar.kind.marker() {
        let _ = write!(
            out,
            "<text class=\"m\" x=\"{:.1}\" y=\"12\">{marker}</text>",
            x + width
        );
    }
}

/// A lane's top below the axis: a heading row above each group's first lane.
fn lane_y(chart: &Chart, lane: usize) -> f64 {
    let headings = chart
        .groups
        .iter()
        .filter(|(first, _)| *first <= lane)
        .count();
    LANE_H * lane as f64 + GROUP_H * headings as f64
}

fn lanes_height(chart: &Chart) -> f64 {
    LANE_H * chart.lanes.len() as f64 + GROUP_H * chart.groups.len() as f64
}
