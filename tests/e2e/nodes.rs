//! CI parallelism without a shared queue: with `CIRCLE_NODE_TOTAL`/`CIRCLE_NODE_INDEX`, each
//! node runs only its share of one deterministic, timing-balanced split, its JUnit holds only
//! that share, and it says which share it runs.

use std::collections::BTreeMap;

use shardex_e2e::{copy_fixture, serial, shardex_cmd};

use crate::shardex_bin;

const NODES: usize = 3;

/// "node 2 of 3 (CircleCI): running 12 of 44 tests, estimated 0.71 s of 2.13 s"
fn share_line(stdout: &str) -> (usize, usize, f64, f64) {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("node "))
        .unwrap_or_else(|| panic!("no share line in:\n{stdout}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    let number = |w: &str| w.trim_end_matches(',').parse::<f64>().unwrap();
    (
        number(words[6]) as usize,
        number(words[8]) as usize,
        number(words[11]),
        number(words[14]),
    )
}

#[test]
fn three_ci_nodes_run_every_test_exactly_once_in_balanced_shares() {
    let _guard = serial();
    let suite = copy_fixture("nodes");
    // A first run records every test's time in the timing store; each node then starts
    // from a copy of it, as CI containers restore the same cache (their own runs update
    // their own copies, not each other's).
    let warm = shardex_cmd(shardex_bin(), &suite.path("."), &["-n", "2"], None).run();
    warm.assert_code(0);
    let timings = suite.path("timings-from-cache.json");
    std::fs::copy(suite.path(".shardex/timings.json"), &timings).unwrap();
    let timings_arg = format!("--timings={}", timings.display());
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut estimates = Vec::new();
    for index in 0..NODES {
        let junit = suite.path(format!("junit-{index}.xml"));
        let args = ["-n", "2", "--no-timing-store", timings_arg.as_str()];
        let out = shardex_cmd(shardex_bin(), &suite.path("."), &args, Some(&junit))
            .env("CIRCLE_NODE_TOTAL", NODES.to_string())
            .env("CIRCLE_NODE_INDEX", index.to_string())
            .run();
        out.assert_code(0);
        let (running, all, mine, total) = share_line(&out.stdout);
        assert!(
            out.stdout
                .contains(&format!("node {} of {NODES} (CircleCI)", index + 1)),
            "{}",
            out.describe()
        );
        assert_eq!(all, 44);
        let cases = out.junit().cases;
        assert_eq!(
            cases.len(),
            running,
            "the JUnit holds only this node's share"
        );
        for case in cases {
            *seen
                .entry(format!("{}::{}", case.classname, case.name))
                .or_default() += 1;
        }
        estimates.push((mine, total));
    }
    assert_eq!(seen.len(), 44, "every test ran on some node: {seen:?}");
    assert!(
        seen.values().all(|&n| n == 1),
        "no test ran twice: {seen:?}"
    );
    let total = estimates[0].1;
    let busiest = estimates.iter().map(|(mine, _)| *mine).fold(0.0, f64::max);
    assert!(
        busiest <= 1.05 * total / NODES as f64 + 0.01,
        "busiest share {busiest} s of {total} s"
    );
}
