//! `shardex slowest`: the tests that dominate the makespan, by their median duration over
//! their last runs, each with its share of the sum of every test's median. Reads the same
//! history as `shardex flaky` (see there).

use clap::{ArgMatches, Command};
use shardex_core::history::{SlowTest, DURATIONS_KEPT};

use super::flaky::{history_args, load, no_runs, plural, print_lines};
use crate::errors::CliError;
use crate::exit_code;

pub fn command() -> Command {
    Command::new("slowest")
        .about("The tests that dominate the run time: longest median durations first")
        .args(history_args())
}

pub fn run(matches: &ArgMatches) -> Result<i32, CliError> {
    let query = match load(matches)? {
        Ok(query) => query,
        Err(code) => return Ok(code),
    };
    let (slowest, total) = query.evidence.slowest();
    let runs = query.evidence.run_count();
    let shown = &slowest[..slowest.len().min(query.limit)];
    if query.json {
        let tests: Vec<serde_json::Value> = shown
            .iter()
            .map(|s| {
                serde_json::json!({
                    "id": s.id.as_str(),
                    "median_seconds": s.median,
                    "share": s.share,
                    "runs": s.runs,
                })
            })
            .collect();
        let out = serde_json::json!({
            "sources": query.sources,
            "runs": runs,
            "total_seconds": total,
            "count": slowest.len(),
            "tests": tests,
        });
        print_lines([format!("{out:#}")]);
    } else {
        print_lines(render(shown, slowest.len(), total, runs, &query.sources));
    }
    Ok(exit_code::OK)
}

/// The slowest tests as lines, then what they add up to.
pub fn render(
    shown: &[SlowTest],
    count: usize,
    total: f64,
    runs: usize,
    sources: &[String],
) -> Vec<String> {
    let from = sources.join(" and ");
    if runs == 0 {
        return vec![no_runs(&from)];
    }
    if count == 0 {
        return vec![format!(
            "no test durations in the last {} ({from})",
            plural(runs, "run")
        )];
    }
    let mut lines = vec![format!(
        "slowest tests (median of their last {DURATIONS_KEPT} runs at most) in the last {} \
         ({from}):",
        plural(runs, "run")
    )];
    for s in shown {
        lines.push(format!(
            "{:>9}  {:>5.1}%  {}",
            format!("{:.2}s", s.median),
            s.share * 100.0,
            s.id
        ));
    }
    let shown_share: f64 = shown.iter().map(|s| s.share).sum();
    lines.push(format!(
        "{} of {} take {:.1}% of {total:.2}s, the sum of every test's median",
        shown.len(),
        plural(count, "test"),
        shown_share * 100.0
    ));
    lines
}

#[cfg(test)]
mod tests {
    use shardex_core::TestId;

    use super::*;

    #[test]
    fn renders_medians_and_shares() {
        let slow = |id: &str, median: f64, share: f64| SlowTest {
            id: TestId::new(id),
            median,
            runs: 3,
            share,
        };
        let lines = render(
            &[slow("t.py::slow", 3.0, 0.75), slow("t.py::mid", 0.5, 0.125)],
            3,
            4.0,
            3,
            &["s".into()],
        );
        assert_eq!(
            lines,
            vec![
                "slowest tests (median of their last 10 runs at most) in the last 3 runs (s):",
                "    3.00s   75.0%  t.py::slow",
                "    0.50s   12.5%  t.py::mid",
                "2 of 3 tests take 87.5% of 4.00s, the sum of every test's median",
            ]
        );
        assert_eq!(
            render(&[], 0, 0.0, 2, &["s".into()]),
            vec!["no test durations in the last 2 runs (s)"]
        );
    }
}
