//! A node's report of its part of a shared-queue job, and the job-wide summary built from
//! all nodes' reports (`shardex report`).
//!
//! Reports travel as JSON between nodes that may run different shardex versions: every
//! field but the node's identity and counts has a serde default, and unknown fields are
//! ignored, so an older or newer node's report still reads.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// A test's failure, as a node reports it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    pub id: String,
    #[serde(default)]
    pub message: String,
}

/// A test's duration, seconds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Slow {
    pub id: String,
    pub seconds: f64,
}

/// One node's part of the job, written at its end.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeReport {
    /// 0-based.
    pub node: u32,
    pub nodes: u32,
    /// Unix milliseconds.
    #[serde(default)]
    pub started_ms: u64,
    #[serde(default)]
    pub finished_ms: u64,
    /// pytest's exit code for this node.
    pub exit_code: i32,
    #[serde(default)]
    pub passed: u64,
    #[serde(default)]
    pub failed: u64,
    #[serde(default)]
    pub errors: u64,
    #[serde(default)]
    pub skipped: u64,
    #[serde(default)]
    pub xfailed: u64,
    #[serde(default)]
    pub xpassed: u64,
    #[serde(default)]
    pub flaky: Vec<String>,
    #[serde(default)]
    pub failures: Vec<Failure>,
    #[serde(default)]
    pub slowest: Vec<Slow>,
    /// Tests this node ran that it had reclaimed from another node's expired lease.
    #[serde(default)]
    pub reclaimed: u64,
    /// Tests this node ran whose acknowledgement came second (another node's counted).
    #[serde(default)]
    pub ran_twice: Vec<String>,
    /// Tests this node ran after losing the queue, from its own seeded share.
    #[serde(default)]
    pub without_queue: Vec<String>,
    /// Why the job stopped early, if it did (maxfail, a stop request).
    #[serde(default)]
    pub stopped: Option<String>,
    /// The node's timeline (the `.html` page's data, JSON, opaque here) for the job's
    /// picture (`shardex report --timeline`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeline: Option<String>,
}

/// A failure in the job, with the node that reported it.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeFailure {
    pub node: u32,
    pub id: String,
    pub message: String,
}

/// A slow test in the job, with the node that ran it.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeSlow {
    pub node: u32,
    pub id: String,
    pub seconds: f64,
}

/// How many of the job's slowest tests the summary keeps.
pub const SLOWEST: usize = 10;

/// The job-wide result of all nodes' reports.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct JobSummary {
    pub nodes: u32,
    /// Nodes in `0..nodes` without a report (crashed, still running, never started).
    pub missing: Vec<u32>,
    pub passed: u64,
    pub failed: u64,
    pub errors: u64,
    pub skipped: u64,
    pub xfailed: u64,
    pub xpassed: u64,
    /// Every node's failures, by node, then in the node's order.
    pub failures: Vec<NodeFailure>,
    /// Union of the nodes' flaky tests, in id order.
    pub flaky: Vec<String>,
    /// The `SLOWEST` slowest tests across nodes: seconds descending, ties by id.
    pub slowest: Vec<NodeSlow>,
    /// Per reporting node (by node), milliseconds from the earliest start to its finish.
    pub finish_ms: Vec<(u32, u64)>,
    /// Latest finish minus earliest finish, milliseconds (0 with fewer than two reports).
    pub finish_spread_ms: u64,
    pub reclaimed: u64,
    /// Union, in id order.
    pub ran_twice: Vec<String>,
    /// Union, in id order.
    pub without_queue: Vec<String>,
    /// The first stop reason, by node.
    pub stopped: Option<String>,
    /// Each reporting node's exit code, by node.
    pub exit_codes: Vec<(u32, i32)>,
}

/// Exit code for a job with a node missing: its result is unknown, which is an error of
/// the run (like pytest's internal error), not a test's failure.
pub const MISSING_NODE_EXIT: i32 = 3;

/// `--fail-on-flaky` and a test passed only on a retry.
const FLAKY_EXIT: i32 = 7;

impl JobSummary {
    /// The job's exit code, with pytest's meanings: an internal error (3; also a missing
    /// node, see `MISSING_NODE_EXIT`, and any code pytest never gives, e.g. a killed
    /// process) first, then interrupted (2), then a usage error (4), then test failures
    /// (1), then a flaky test under `--fail-on-flaky` (7, pytest-rerunfailures' code); 5
    /// (no tests collected) only when every node says so; else 0.
    pub fn exit_code(&self) -> i32 {
        let codes = || self.exit_codes.iter().map(|&(_, c)| c);
        let known = |c: i32| (0..=5).contains(&c) || c == FLAKY_EXIT;
        let internal = !self.missing.is_empty() || codes().any(|c| !known(c));
        if internal || codes().any(|c| c == 3) {
            return 3;
        }
        for code in [2, 4, 1, FLAKY_EXIT] {
            if codes().any(|c| c == code) {
                return code;
            }
        }
        if codes().all(|c| c == 5) {
            return 5;
        }
        0
    }
}

/// The job-wide summary of `reports` for a job of `nodes` nodes. A report of a node
/// outside `0..nodes` still counts; a node of `0..nodes` without one is `missing`.
pub fn aggregate(reports: &[NodeReport], nodes: u32) -> JobSummary {
    let mut reports: Vec<&NodeReport> = reports.iter().collect();
    reports.sort_by_key(|r| r.node);
    let reported: BTreeSet<u32> = reports.iter().map(|r| r.node).collect();
    let mut s = JobSummary {
        nodes,
        missing: (0..nodes).filter(|n| !reported.contains(n)).collect(),
        ..JobSummary::default()
    };
    let (mut flaky, mut twice, mut without) = (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
    let mut slowest: Vec<NodeSlow> = Vec::new();
    for r in &reports {
        s.passed += r.passed;
        s.failed += r.failed;
        s.errors += r.errors;
        s.skipped += r.skipped;
        s.xfailed += r.xfailed;
        s.xpassed += r.xpassed;
        s.reclaimed += r.reclaimed;
        s.failures.extend(r.failures.iter().map(|f| NodeFailure {
            node: r.node,
            id: f.id.clone(),
            message: f.message.clone(),
        }));
        flaky.extend(r.flaky.iter().cloned());
        twice.extend(r.ran_twice.iter().cloned());
        without.extend(r.without_queue.iter().cloned());
        slowest.extend(r.slowest.iter().map(|t| NodeSlow {
            node: r.node,
            id: t.id.clone(),
            seconds: t.seconds,
        }));
        if s.stopped.is_none() {
            s.stopped.clone_from(&r.stopped);
        }
        s.exit_codes.push((r.node, r.exit_code));
    }
    slowest.sort_by(|a, b| {
        b.seconds
            .total_cmp(&a.seconds)
            .then_with(|| a.id.cmp(&b.id))
            .then_with(|| a.node.cmp(&b.node))
    });
    slowest.truncate(SLOWEST);
    s.slowest = slowest;
    s.flaky = flaky.into_iter().collect();
    s.ran_twice = twice.into_iter().collect();
    s.without_queue = without.into_iter().collect();
    let start = reports.iter().map(|r| r.started_ms).min().unwrap_or(0);
    s.finish_ms = reports
        .iter()
        .map(|r| (r.node, r.finished_ms.saturating_sub(start)))
        .collect();
    let finished = reports.iter().map(|r| r.finished_ms);
    s.finish_spread_ms = match (finished.clone().max(), finished.min()) {
        (Some(hi), Some(lo)) => hi - lo,
        _ => 0,
    };
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(node: u32, exit_code: i32) -> NodeReport {
        NodeReport {
            node,
            nodes: 3,
            started_ms: 1_000 + u64::from(node) * 10,
            finished_ms: 5_000 + u64::from(node) * 100,
            exit_code,
            passed: 10,
            ..NodeReport::default()
        }
    }

    fn code(codes: &[i32], nodes: u32) -> i32 {
        let reports: Vec<NodeReport> = (0..).zip(codes).map(|(n, &c)| report(n, c)).collect();
        aggregate(&reports, nodes).exit_code()
    }

    #[test]
    fn exit_code_precedence() {
        assert_eq!(code(&[0, 0, 0], 3), 0);
        assert_eq!(code(&[0, 5, 0], 3), 0, "some nodes found nothing");
        assert_eq!(code(&[5, 5, 5], 3), 5, "nothing collected anywhere");
        assert_eq!(code(&[0, 1, 5], 3), 1);
        assert_eq!(code(&[4, 1, 0], 3), 4, "usage before failures");
        assert_eq!(code(&[1, 4, 2], 3), 2, "interrupted before usage");
        assert_eq!(code(&[2, 3, 1], 3), 3, "internal error first");
        assert_eq!(code(&[0, -9, 0], 3), 3, "killed: not a pytest code");
        assert_eq!(code(&[0, 137, 0], 3), 3);
        assert_eq!(code(&[0, 7, 5], 3), 7, "--fail-on-flaky on one node");
        assert_eq!(code(&[7, 1, 0], 3), 1, "failures before flaky");
        assert_eq!(code(&[0, 0], 3), MISSING_NODE_EXIT, "node 2 missing");
        assert_eq!(code(&[5, 5], 3), MISSING_NODE_EXIT);
        assert_eq!(code(&[], 0), 5, "no nodes, nothing ran");
    }

    #[test]
    fn counts_failures_and_unions() {
        let mut a = report(0, 1);
        a.failed = 2;
        a.skipped = 1;
        a.reclaimed = 3;
        a.failures = vec![Failure {
            id: "a.py::t".into(),
            message: "boom".into(),
        }];
        a.flaky = vec!["z.py::f".into(), "b.py::f".into()];
        a.ran_twice = vec!["r.py::x".into()];
        a.stopped = Some("maxfail 1 reached".into());
        let mut c = report(2, 0);
        c.flaky = vec!["b.py::f".into()];
        c.without_queue = vec!["w.py::t".into()];
        c.xfailed = 4;
        c.xpassed = 1;
        c.errors = 1;
        let s = aggregate(&[c, a], 3);
        assert_eq!(
            (s.passed, s.failed, s.errors, s.skipped, s.xfailed, s.xpassed),
            (20, 2, 1, 1, 4, 1)
        );
        assert_eq!(s.reclaimed, 3);
        assert_eq!(
            s.failures,
            [NodeFailure {
                node: 0,
                id: "a.py::t".into(),
                message: "boom".into()
            }]
        );
        assert_eq!(s.flaky, ["b.py::f", "z.py::f"]);
        assert_eq!(s.ran_twice, ["r.py::x"]);
        assert_eq!(s.without_queue, ["w.py::t"]);
        assert_eq!(s.stopped.as_deref(), Some("maxfail 1 reached"));
        assert_eq!(s.missing, [1]);
        assert_eq!(s.exit_codes, [(0, 1), (2, 0)]);
        // Node 0 started first (1000 ms): finishes at 4000 and 4200 ms after it.
        assert_eq!(s.finish_ms, [(0, 4_000), (2, 4_200)]);
        assert_eq!(s.finish_spread_ms, 200);
        assert_eq!(s.exit_code(), MISSING_NODE_EXIT);
    }

    #[test]
    fn slowest_top_ten_across_nodes_ties_by_id() {
        let mut reports = vec![report(0, 0), report(1, 0)];
        for (n, r) in reports.iter_mut().enumerate() {
            r.slowest = (0..8)
                .map(|i| Slow {
                    id: format!("n{n}.py::t{i}"),
                    seconds: f64::from(i + n as u32 % 2),
                })
                .collect();
        }
        let s = aggregate(&reports, 2);
        let got: Vec<(&str, f64)> = s
            .slowest
            .iter()
            .map(|t| (t.id.as_str(), t.seconds))
            .collect();
        assert_eq!(
            got,
            [
                ("n1.py::t7", 8.0),
                ("n0.py::t7", 7.0),
                ("n1.py::t6", 7.0),
                ("n0.py::t6", 6.0),
                ("n1.py::t5", 6.0),
                ("n0.py::t5", 5.0),
                ("n1.py::t4", 5.0),
                ("n0.py::t4", 4.0),
                ("n1.py::t3", 4.0),
                ("n0.py::t3", 3.0),
            ]
        );
        assert_eq!(s.slowest[0].node, 1);
    }

    #[test]
    fn empty_job() {
        let s = aggregate(&[], 2);
        assert_eq!(s.missing, [0, 1]);
        assert_eq!((s.finish_spread_ms, s.finish_ms.len()), (0, 0));
        assert_eq!(s.exit_code(), MISSING_NODE_EXIT);
    }

    #[test]
    fn json_reads_older_and_newer_reports() {
        let full = NodeReport {
            flaky: vec!["a".into()],
            failures: vec![Failure {
                id: "f".into(),
                message: "m".into(),
            }],
            slowest: vec![Slow {
                id: "s".into(),
                seconds: 1.5,
            }],
            stopped: Some("x".into()),
            ..report(1, 1)
        };
        let json = serde_json::to_string(&full).unwrap();
        assert_eq!(serde_json::from_str::<NodeReport>(&json).unwrap(), full);
        // An older node: only the essentials. A newer one: a field this one does not know.
        let old: NodeReport =
            serde_json::from_str(r#"{"node":2,"nodes":4,"exit_code":0}"#).unwrap();
        assert_eq!(
            (old.node, old.nodes, old.passed, old.stopped),
            (2, 4, 0, None)
        );
        let newer: NodeReport =
            serde_json::from_str(r#"{"node":0,"nodes":1,"exit_code":5,"later":[1]}"#).unwrap();
        assert_eq!(newer.exit_code, 5);
    }
}
