//! The `.html` timeline: the title and legend as HTML, the bars as one compact JSON array
//! drawn into an inline SVG by inline JS (`page.js`), a tooltip on hover. No network.

use std::fmt::Write as _;

use serde_json::{json, Value};

use super::chart::{secs, Chart, Kind};

const SCRIPT: &str = include_str!("page.js");

const STYLE: &str = "\
body{font:13px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:14px;color:#222}\
h1{font-size:17px;margin:0 0 6px}ul.facts{margin:0 0 6px;padding-left:18px}\
.slow ol{margin:2px 0 6px;padding-left:24px}code{font:12px ui-monospace,monospace}\
.legend span{display:inline-block;margin-right:12px;white-space:nowrap}\
.legend i{display:inline-block;width:11px;height:11px;margin-right:4px;vertical-align:-1px}\
.zoom{margin:6px 0}.zoom button{min-width:2.4em}\
#chart{display:flex;border:1px solid #ddd}#labels{flex:none;background:#fafafa;border-right:1px solid #ddd}\
#scroll{overflow-x:auto;flex:1}svg text{font-size:11px;fill:#444}\
.lane{fill:#fff}.lane.odd{fill:#f5f5f5}.grp{fill:#e4e7f2}.tick{stroke:#e2e2e2}.startup{fill:#eef0fb}\
.gap{fill:url(#hatch)}.b:hover{stroke:#000}.a{stroke:#000;stroke-dasharray:2 1}\
.m{font-weight:bold;fill:#000!important}.u{fill:#e8e8e8;stroke:#777;stroke-dasharray:3 2}.stop{stroke:#d00;stroke-width:2;stroke-dasharray:6 3}\
.stopl{fill:#d00!important;font-weight:bold}\
#tip{position:fixed;pointer-events:none;background:#222;color:#fff;padding:4px 7px;border-radius:3px;\
font-size:12px;max-width:60em;overflow-wrap:anywhere;z-index:2}";

/// Times in the page's data: integers in units of 0.1 ms (small, and exact enough).
pub(super) fn units(secs: f64) -> i64 {
    (secs * 1e4).round() as i64
}

pub(super) fn render(chart: &Chart) -> String {
    let mut page = String::with_capacity(64 * chart.bars.len() + 16_384);
    page.push_str("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">");
    let _ = write!(
        page,
        "<title>{}</title><link rel=\"icon\" href=\"data:,\"><style>{STYLE}",
        escape(&chart.heading)
    );
    for kind in Kind::ALL {
        let _ = write!(page, ".k-{}{{fill:{}}}", kind.code(), kind.color());
    }
    page.push_str("</style></head><body><header>");
    header(&mut page, chart);
    page.push_str(
        "</header><div class=\"zoom\"><button id=\"zout\" title=\"zoom out\">\u{2212}</button> \
         <button id=\"zfit\">fit</button> <button id=\"zin\" title=\"zoom in\">+</button></div>\
         <div id=\"chart\"><svg id=\"labels\" width=\"110\"></svg><div id=\"scroll\">\
         <svg id=\"tl\"></svg></div></div>\
         <div id=\"tip\" hidden></div>\n<script id=\"data\" type=\"application/json\">",
    );
    // `</script` or `<!--` inside a script element would change how it is read: `<` only
    // occurs in JSON strings, where `\u003c` is the same character.
    page.push_str(&data(chart).to_string().replace('<', "\\u003c"));
    page.push_str("</script>\n<script>\n");
    page.push_str(SCRIPT);
    page.push_str("</script></body></html>\n");
    page
}

fn header(page: &mut String, chart: &Chart) {
    let _ = write!(
        page,
        "<h1>{}</h1><ul class=\"facts\">",
        escape(&chart.heading)
    );
    for fact in &chart.facts {
        let _ = write!(page, "<li>{}</li>", escape(fact));
    }
    page.push_str("</ul>");
    if !chart.slowest.is_empty() {
        page.push_str("<div class=\"slow\">slowest tests:<ol>");
        for (id, duration) in &chart.slowest {
            let _ = write!(
                page,
                "<li><code>{}</code> {}</li>",
                escape(id),
                secs(*duration)
            );
        }
        page.push_str("</ol></div>");
    }
    page.push_str("<div class=\"legend\">");
    for kind in Kind::ALL {
        let _ = write!(
            page,
            "<span><i class=\"k-{}\" style=\"background:{}\"></i>{}{}</span>",
            kind.code(),
            kind.color(),
            kind.label(),
            kind.marker().map(|m| format!(" {m}")).unwrap_or_default()
        );
    }
    page.push_str(
        "<span><i style=\"border:1px dashed #000\"></i>a retry</span>\
         <span><i style=\"background:#e8e8e8;border:1px dashed #777\"></i>stopped before a result</span>\
         <span><i style=\"background:#eaa58f\"></i>idle</span>\
         <span><i style=\"background:#eef0fb\"></i>start-up</span></div>",
    );
}

/// The page's data: lanes `[name, attempts, busy, idle]`, bars `[lane, start, length,
/// kind, attempt, test]`, open `[lane, start, length, test]`, gaps `[lane, start, end]`,
/// kinds `[code, label, marker]`.
pub(super) fn data(chart: &Chart) -> Value {
    let lanes: Vec<Value> = chart
        .lanes
        .iter()
        .map(|l| json!([l.label, l.attempts, units(l.busy), units(l.idle)]))
        .collect();
    let bars: Vec<[i64; 6]> = chart
        .bars
        .iter()
        .map(|b| {
            [
                b.lane as i64,
                units(b.start),
                units(b.end - b.start),
                b.kind.index() as i64,
                i64::from(b.attempt),
                b.test as i64,
            ]
        })
        .collect();
    let open: Vec<[i64; 4]> = chart
        .open
        .iter()
        .map(|b| {
            [
                b.lane as i64,
                units(b.start),
                units(b.end - b.start),
                b.test as i64,
            ]
        })
        .collect();
    let gaps: Vec<[i64; 3]> = chart
        .gaps
        .iter()
        .map(|g| [g.lane as i64, units(g.start), units(g.end)])
        .collect();
    let kinds: Vec<Value> = Kind::ALL
        .iter()
        .map(|k| json!([k.code(), k.label(), k.marker().unwrap_or("")]))
        .collect();
    json!({
        "end": units(chart.end),
        "first": units(chart.first_start),
        "groups": chart.groups.iter().map(|(lane, name)| json!([lane, name])).collect::<Vec<_>>(),
        "lanes": lanes,
        "tests": chart.tests,
        "bars": bars,
        "open": open,
        "gaps": gaps,
        "kinds": kinds,
        "stop": chart.stop.as_ref().map(|(at, why)| json!([units(*at), why])),
    })
}

/// Text for HTML and XML content and attribute values.
pub(super) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}
