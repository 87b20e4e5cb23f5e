//! One work-stealing queue on Redis for all CI containers of a job (`--queue redis://…`): K
//! agents on this machine play K containers, each on its own copy of `fixtures/queue` (its own
//! checkout), started at once against a private `redis-server`, each with its own JUnit file
//! and `--node-index i --node-total K --build-id B` (a fresh build id per test).
//!
//! `fixtures/queue` has 47 tests: quick ones, ten `test_slow_*` sleeping 0.2–0.5 s (×
//! `QUEUE_SLOW`), and `test_alpha.py::test_fails_when_asked` (fails under `QUEUE_FAIL=1`).
//! With `QUEUE_LOG` every test appends `start|end|fail <nodeid> <unix time> <pid>` to a file:
//! each node gets its own, so "what was running on the node that was killed" and "did anyone
//! start a test after the stop" are read from there.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use shardex_e2e::redis_server::{RedisServer, TLS_PASSWORD};
use shardex_e2e::{
    assert_no_survivors, copy_fixture, describe_status, kill_tree, parse_junit, parse_summary,
    serial, shardex_cmd, shardex_raw, venv_python, wait_all, RunOutput, Running, Suite,
};

use crate::shardex_bin;

const FIXTURE: &str = "queue";
const RUN_TIMEOUT: Duration = Duration::from_secs(40);

// ------------------------------------------------------------------------------------------ helpers

/// The suite's test ids, from plain pytest's collection (once per process).
fn all_ids() -> &'static BTreeSet<String> {
    static IDS: OnceLock<BTreeSet<String>> = OnceLock::new();
    IDS.get_or_init(|| {
        let suite = copy_fixture(FIXTURE);
        let out = Command::new(venv_python())
            .current_dir(&suite.dir)
            .args(["-m", "pytest", "--collect-only", "-q"])
            .env_remove("PYTEST_ADDOPTS")
            .output()
            .expect("pytest --collect-only");
        let ids: BTreeSet<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains("::"))
            .map(str::to_string)
            .collect();
        assert_eq!(ids.len(), 47, "fixtures/queue changed? {ids:?}");
        ids
    })
}

/// The JUnit key (`classname::name`) of a pytest node id: `test_beta.py::TestBeta::test_a`
/// → `test_beta.TestBeta::test_a`.
fn junit_key(nodeid: &str) -> String {
    let mut parts: Vec<&str> = nodeid.split("::").collect();
    let name = parts.pop().unwrap();
    let file = parts[0].trim_end_matches(".py").replace('/', ".");
    let mut classname = vec![file.as_str()];
    classname.extend_from_slice(&parts[1..]);
    format!("{}::{name}", classname.join("."))
}

fn all_keys() -> BTreeSet<String> {
    all_ids().iter().map(|id| junit_key(id)).collect()
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// A build id no other test (or earlier run) uses.
fn fresh_build(label: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "e2e-{label}-{}-{}",
        std::process::id(),
        nanos % 1_000_000_000
    )
}

#[derive(Debug, Clone)]
struct LogLine {
    kind: String,
    nodeid: String,
    at: f64,
}

fn read_log(path: &Path) -> Vec<LogLine> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            Some(LogLine {
                kind: it.next()?.to_string(),
                nodeid: it.next()?.to_string(),
                at: it.next()?.parse().ok()?,
            })
        })
        .collect()
}

/// Tests that started and did not end (in flight when the log was read).
fn in_flight(log: &[LogLine]) -> BTreeSet<String> {
    let mut open: BTreeMap<&str, i32> = BTreeMap::new();
    for l in log {
        match l.kind.as_str() {
            "start" => *open.entry(&l.nodeid).or_default() += 1,
            "end" => *open.entry(&l.nodeid).or_default() -= 1,
            _ => {}
        }
    }
    open.into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(id, _)| id.to_string())
        .collect()
}

/// K nodes of one CI job: one checkout each, one queue URL, one build id.
struct Job {
    suites: Vec<Suite>,
    url: String,
    build: String,
    /// Unix time at which each node was started.
    started_at: Vec<f64>,
}

impl Job {
    fn new(label: &str, url: String, nodes: usize) -> Job {
        Job {
            suites: (0..nodes).map(|_| copy_fixture(FIXTURE)).collect(),
            url,
            build: fresh_build(label),
            started_at: vec![0.0; nodes],
        }
    }

    fn nodes(&self) -> usize {
        self.suites.len()
    }

    fn junit(&self, i: usize) -> PathBuf {
        self.suites[i].scratch.join("junit.xml")
    }

    fn log(&self, i: usize) -> PathBuf {
        self.suites[i].scratch.join("queue.log")
    }

    /// `shardex run -n 2 --node-index i --node-total K --build-id B --queue URL ARGS`.
    fn start(&mut self, i: usize, args: &[&str], env: &[(&str, &str)]) -> Running {
        let (index, total) = (i.to_string(), self.nodes().to_string());
        let mut all = vec!["-n", "2", "--node-index", &index, "--node-total", &total];
        all.extend(["--build-id", &self.build, "--queue", &self.url]);
        all.extend_from_slice(args);
        let junit = self.junit(i);
        let mut inv = shardex_cmd(shardex_bin(), &self.suites[i].dir, &all, Some(&junit))
            .env("QUEUE_LOG", self.log(i));
        for (k, v) in env {
            inv = inv.env(k, v);
        }
        inv.label = format!("node {i}");
        self.started_at[i] = unix_now();
        inv.start()
    }

    fn start_all(&mut self, args: &[&str], env: &[(&str, &str)]) -> Vec<Running> {
        (0..self.nodes())
            .map(|i| self.start(i, args, env))
            .collect()
    }

    /// `shardex report --queue URL --build-id B --wait 20`.
    fn report(&self) -> RunOutput {
        let args = ["report", "--queue", &self.url, "--build-id", &self.build];
        let mut inv = shardex_raw(shardex_bin(), &self.suites[0].dir, &args);
        inv.cmd.args(["--wait", "20"]);
        inv.label = "shardex report".into();
        inv.start().wait(RUN_TIMEOUT)
    }

    fn assert_no_survivors(&self, outs: &[&RunOutput]) {
        for (suite, out) in self.suites.iter().zip(outs) {
            assert_no_survivors(&suite.dir, out);
        }
    }
}

/// Which nodes' JUnit files hold each test (JUnit key → node indexes), checking that every
/// file parses and that each node's summary line counts what its JUnit holds.
fn junit_cases(outs: &[(usize, &RunOutput)]) -> BTreeMap<String, Vec<usize>> {
    let mut seen: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, out) in outs {
        let cases = out.junit().cases;
        if let Some(summary) = parse_summary(&out.stdout) {
            let counted: u64 = summary
                .iter()
                .filter(|(k, _)| !matches!(k.as_str(), "warnings" | "rerun"))
                .map(|(_, n)| n)
                .sum();
            assert_eq!(
                counted as usize,
                cases.len(),
                "node {i}: the summary counts what its JUnit holds\n{}",
                out.describe()
            );
        }
        for c in cases {
            seen.entry(format!("{}::{}", c.classname, c.name))
                .or_default()
                .push(*i);
        }
    }
    seen
}

fn describe_all(outs: &[&RunOutput]) -> String {
    outs.iter()
        .map(|o| o.describe())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every test of the suite in exactly one of the JUnit files.
fn assert_exactly_once(outs: &[(usize, &RunOutput)]) {
    let seen = junit_cases(outs);
    let keys: BTreeSet<String> = seen.keys().cloned().collect();
    let twice: Vec<_> = seen.iter().filter(|(_, n)| n.len() > 1).collect();
    let missing: Vec<_> = all_keys().difference(&keys).cloned().collect();
    let all: Vec<&RunOutput> = outs.iter().map(|(_, o)| *o).collect();
    assert!(
        twice.is_empty() && missing.is_empty() && keys == all_keys(),
        "every test in exactly one JUnit file: twice {twice:?}, missing {missing:?}, \
         unknown {:?}\n{}",
        keys.difference(&all_keys()).collect::<Vec<_>>(),
        describe_all(&all)
    );
}

/// The lines of a run's stdout and stderr that start with `prefix`.
fn lines_starting<'a>(out: &'a RunOutput, prefix: &str) -> Vec<&'a str> {
    out.stdout
        .lines()
        .chain(out.stderr.lines())
        .filter(|l| l.trim_start().starts_with(prefix))
        .collect()
}

/// Poll `what` every 20 ms until it returns Some, or panic after `limit` with `runs`' output.
fn poll<T>(limit: Duration, runs: &[Running], why: &str, mut what: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = what() {
            return v;
        }
        if Instant::now() >= deadline {
            let outs: Vec<String> = runs
                .iter()
                .map(|r| format!("--- {}:\n{}", r.label, r.stdout_so_far()))
                .collect();
            for r in runs {
                kill_tree(r.pid().as_raw());
            }
            panic!(
                "waited {limit:?} for {why} (killed the nodes)\n{}",
                outs.join("\n")
            );
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// The number (as in "node K of N") of the node that seeded the queue: the one whose output
/// says `shared queue: seeded it`; every other node must name it in `seeded by node K`.
fn seeder_number(outs: &[&RunOutput], nodes: usize) -> usize {
    let mut seeders = Vec::new();
    for out in outs {
        let header = (1..=nodes)
            .find(|k| out.stdout.contains(&format!(", node {k} of {nodes}")))
            .unwrap_or_else(|| panic!("no `node K of {nodes}` in\n{}", out.describe()));
        if out.stdout.contains("shared queue: seeded it") {
            seeders.push(header);
        }
    }
    assert_eq!(seeders.len(), 1, "one seeder\n{}", describe_all(outs));
    let k = seeders[0];
    for out in outs {
        let says_seeded = out.stdout.contains("shared queue: seeded it")
            || out
                .stdout
                .contains(&format!("shared queue: seeded by node {k};"));
        assert!(says_seeded, "`seeded by node {k}`\n{}", out.describe());
    }
    k
}

fn exit_times(job: &Job, outs: &[RunOutput]) -> Vec<f64> {
    outs.iter()
        .enumerate()
        .map(|(i, o)| job.started_at[i] + o.elapsed.as_secs_f64())
        .collect()
}

// ------------------------------------------------------------------------------------------ tests

/// (a) + (h): three nodes share the queue, every test runs exactly once across their JUnit
/// files, each says which queue, build and node it is; every key lives under the build's hash
/// tag with a TTL; `shardex report` lists every node and the job's exit code.
#[test]
fn three_nodes_run_every_test_exactly_once_and_report_the_job() {
    let _guard = serial();
    three_nodes_on(RedisServer::start());
}

/// (a) on Valkey: the same job, the same checks.
#[test]
fn three_nodes_on_valkey_run_every_test_exactly_once() {
    let _guard = serial();
    let valkey = RedisServer::start_valkey();
    assert!(
        valkey.cli(&["INFO", "server"]).contains("valkey_version"),
        "not a Valkey server"
    );
    three_nodes_on(valkey);
}

fn three_nodes_on(redis: RedisServer) {
    let mut job = Job::new("three", redis.url(), 3);
    let runs = job.start_all(&[], &[]);
    let outs = wait_all(runs, RUN_TIMEOUT);
    let refs: Vec<&RunOutput> = outs.iter().collect();
    for (i, out) in outs.iter().enumerate() {
        out.assert_code(0);
        let want = format!(
            "shared queue: {} (build {}, node {} of 3",
            redis.url(),
            job.build,
            i + 1
        );
        assert_eq!(
            lines_starting(out, &want).len(),
            1,
            "one line `{want}…`\n{}",
            out.describe()
        );
    }
    job.assert_no_survivors(&refs);
    seeder_number(&refs, 3);
    let indexed: Vec<(usize, &RunOutput)> = outs.iter().enumerate().collect();
    assert_exactly_once(&indexed);

    let keys = redis.cli(&["--scan", "--pattern", "*"]);
    let tag = format!("{{shardex:{}}}", job.build);
    for key in keys.lines() {
        // The build's keys under its hash tag; the project's timings and run history
        // (kept across builds) under theirs.
        assert!(
            key.starts_with(&tag)
                || key.starts_with("{shardex:timings}:")
                || key.starts_with("{shardex:history}:"),
            "key {key} outside the hash tag {tag}"
        );
        let ttl: i64 = redis.cli(&["TTL", key]).trim().parse().unwrap();
        assert!(ttl > 0, "key {key} has no TTL ({ttl})");
    }
    assert!(keys.lines().any(|k| k.starts_with(&tag)), "no keys: {keys}");

    let report = job.report();
    report.assert_code(0);
    for i in 1..=3 {
        assert!(
            report.stdout.contains(&format!("node {i}")),
            "the report lists node {i}\n{}",
            report.describe()
        );
    }
    let summary = report.summary();
    assert_eq!(summary.get("passed"), Some(&47), "{}", report.describe());
}

/// (b): `kill -9` of one node (its workers too) mid-run, leases of 2 s: the others finish,
/// the tests it was running are run by them within their lease + 2 s, and nothing is lost
/// or counted twice (what the killed node finished and acknowledged is in no JUnit file: it
/// wrote none, so it is read from its log).
#[test]
fn a_node_killed_mid_run_has_its_leased_tests_run_by_the_others_once() {
    let _guard = serial();
    let redis = RedisServer::start();
    let mut job = Job::new("kill", redis.url(), 3);
    let env = [("QUEUE_SLOW", "3")];
    let mut runs = job.start_all(&["--queue-lease", "2"], &env);
    // The victim: the first node seen running a slow test (which node gets which tests
    // depends on who joins first and steals what).
    let logs: Vec<PathBuf> = (0..3).map(|i| job.log(i)).collect();
    let victim_index = poll(
        Duration::from_secs(40),
        &runs,
        "a node running a slow test",
        || {
            (0..3).find(|&i| {
                in_flight(&read_log(&logs[i]))
                    .iter()
                    .any(|id| id.contains("slow"))
            })
        },
    );
    let victim = runs.remove(victim_index);
    let killed = kill_tree(victim.pid().as_raw());
    let killed_at = unix_now();
    let victim_out = victim.wait(RUN_TIMEOUT);
    assert_eq!(
        victim_out.code(),
        None,
        "node {victim_index} was killed: {}",
        describe_status(victim_out.status)
    );
    let outs = wait_all(runs, RUN_TIMEOUT);
    let survivor_indexes: Vec<usize> = (0..3).filter(|&i| i != victim_index).collect();
    let survivors: Vec<(usize, &RunOutput)> =
        survivor_indexes.iter().copied().zip(outs.iter()).collect();
    for (_, out) in &survivors {
        out.assert_code(0);
    }
    let victim_log = read_log(&job.log(victim_index));
    let flying = in_flight(&victim_log);
    assert!(!flying.is_empty(), "the victim was killed while a test ran");
    let victim_ended: BTreeSet<String> = victim_log
        .iter()
        .filter(|l| l.kind == "end")
        .map(|l| junit_key(&l.nodeid))
        .collect();

    let seen = junit_cases(&survivors);
    let twice: Vec<_> = seen.iter().filter(|(_, n)| n.len() > 1).collect();
    let lost: Vec<String> = all_keys()
        .into_iter()
        .filter(|k| !seen.contains_key(k) && !victim_ended.contains(k))
        .collect();
    let refs: Vec<&RunOutput> = outs.iter().collect();
    // What the killed node finished is in no JUnit file: acknowledged (P:done, the spec's
    // layout), or else it was lost when the survivors left with a lease still out.
    let done_key = format!("{{shardex:{}}}:done", job.build);
    let acked: BTreeSet<String> = redis
        .cli(&["HKEYS", &done_key])
        .lines()
        .map(str::to_string)
        .collect();
    let unacked: Vec<&String> = all_ids().difference(&acked).collect();
    assert!(
        unacked.is_empty(),
        "not acknowledged in {done_key}: {unacked:?}\n{}",
        describe_all(&refs)
    );
    assert!(
        twice.is_empty() && lost.is_empty(),
        "killed node {victim_index} (pids {killed:?}) while it ran {flying:?}: counted twice {twice:?}, \
         lost {lost:?}\n{}",
        describe_all(&refs)
    );
    // Each test in flight on the killed node: run by a survivor within lease (2 s) + 2 s.
    let logs: Vec<Vec<LogLine>> = survivor_indexes
        .iter()
        .map(|&i| read_log(&job.log(i)))
        .collect();
    for id in &flying {
        assert!(
            seen.contains_key(&junit_key(id)),
            "{id} was running on the killed node: a survivor reports it\n{}",
            describe_all(&refs)
        );
        let restarted = logs
            .iter()
            .flatten()
            .filter(|l| l.kind == "start" && &l.nodeid == id && l.at >= killed_at)
            .map(|l| l.at)
            .fold(f64::INFINITY, f64::min);
        assert!(
            restarted - killed_at <= 4.0,
            "{id} restarted {:.2} s after the kill (lease 2 s + 2 s)\n{}",
            restarted - killed_at,
            describe_all(&refs)
        );
    }
    let mut all_outs: Vec<&RunOutput> = outs.iter().collect();
    all_outs.insert(victim_index, &victim_out);
    job.assert_no_survivors(&all_outs);
}

/// (c): Redis restarted mid-run without persistence (the queue vanished): every node says so
/// once, runs what it knows is not done of its seeded share, exits 0, and together they ran
/// every test (at least once); the summary says how many ran without the queue.
#[test]
fn redis_restarted_mid_run_every_node_finishes_without_the_queue() {
    let _guard = serial();
    let outs = lose_redis_mid_run("restart", 3, RedisServer::restart);
    let mut without = 0;
    for out in &outs {
        // "… without it (N tests; …)": N of what it held or had left of its share. A node
        // that joined late may have had nothing left (the others took its list).
        let line = out
            .stdout
            .lines()
            .find(|l| l.starts_with("warning: lost the shared queue"))
            .unwrap_or_default();
        let n: usize = line
            .split_once("without it (")
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no count in `{line}`\n{}", out.describe()));
        let summary = format!(
            "{n} test{} ran without the queue",
            if n == 1 { "" } else { "s" }
        );
        assert_eq!(
            out.stdout.contains(&summary),
            n > 0,
            "the summary says `{summary}` when N > 0\n{}",
            out.describe()
        );
        without += n;
    }
    assert!(without > 0, "no node ran anything without the queue");
}

/// (c'): Redis gone for good mid-run: no node hangs (every Redis call has a timeout).
#[test]
fn redis_gone_mid_run_no_node_hangs() {
    let _guard = serial();
    lose_redis_mid_run("gone", 2, RedisServer::stop);
}

/// Starts `nodes` nodes, does `lose` to Redis once every node runs tests, and checks that
/// every node says it lost the queue (once), exits 0, and that no test was lost.
fn lose_redis_mid_run(label: &str, nodes: usize, lose: fn(&mut RedisServer)) -> Vec<RunOutput> {
    let mut redis = RedisServer::start();
    let mut job = Job::new(label, redis.url(), nodes);
    let runs = job.start_all(&[], &[("QUEUE_SLOW", "3")]);
    let logs: Vec<PathBuf> = (0..nodes).map(|i| job.log(i)).collect();
    poll(
        Duration::from_secs(40),
        &runs,
        "every node running tests",
        || {
            logs.iter()
                .all(|l| read_log(l).iter().any(|e| e.kind == "start"))
                .then_some(())
        },
    );
    lose(&mut redis);
    let outs = wait_all(runs, RUN_TIMEOUT);
    let refs: Vec<&RunOutput> = outs.iter().collect();
    let prefix = format!("warning: lost the shared queue at {}", redis.url());
    for out in &outs {
        out.assert_code(0);
        assert_eq!(
            lines_starting(out, &prefix).len(),
            1,
            "one line `{prefix} …`\n{}",
            out.describe()
        );
    }
    let indexed: Vec<(usize, &RunOutput)> = outs.iter().enumerate().collect();
    let seen = junit_cases(&indexed);
    let missing: Vec<_> = all_keys()
        .into_iter()
        .filter(|k| !seen.contains_key(k))
        .collect();
    assert!(
        missing.is_empty(),
        "lost with the queue: {missing:?}\n{}",
        describe_all(&refs)
    );
    job.assert_no_survivors(&refs);
    outs
}

/// (d): Redis absent at start: one warning line per node, each runs its share of the static
/// split, and the shares add up to every test exactly once.
#[test]
fn redis_absent_at_start_each_node_runs_its_static_share() {
    let _guard = serial();
    let redis = RedisServer::absent();
    let mut job = Job::new("absent", redis.url(), 3);
    let runs = job.start_all(&[], &[]);
    let outs = wait_all(runs, RUN_TIMEOUT);
    let refs: Vec<&RunOutput> = outs.iter().collect();
    let warning = format!(
        "warning: the shared queue at {} is unreachable",
        redis.url()
    );
    for (i, out) in outs.iter().enumerate() {
        out.assert_code(0);
        let lines = lines_starting(out, "warning: ");
        assert!(
            lines.len() == 1
                && lines[0].starts_with(&warning)
                && lines[0].ends_with("this node runs its share of the static split"),
            "one warning line `{warning} (…): this node runs its share of the static split`\n{}",
            out.describe()
        );
        let share = format!("node {} of 3", i + 1);
        assert!(
            lines_starting(out, &share).len() == 1,
            "the share line `{share} …`\n{}",
            out.describe()
        );
    }
    let indexed: Vec<(usize, &RunOutput)> = outs.iter().enumerate().collect();
    assert_exactly_once(&indexed);
    job.assert_no_survivors(&refs);
}

/// (e): `rediss://` with a self-made CA (`SHARDEX_REDIS_CA`) and an ACL user; without the CA a
/// line that says why (and the static split); the password never appears in any output.
#[test]
fn tls_with_a_private_ca_and_an_acl_user_never_prints_the_password() {
    let _guard = serial();
    let redis = RedisServer::start_tls();
    let ca = redis.ca_path().to_string_lossy().into_owned();
    let mut job = Job::new("tls", redis.url(), 2);
    let runs = job.start_all(&[], &[("SHARDEX_REDIS_CA", &ca)]);
    let outs = wait_all(runs, RUN_TIMEOUT);
    let refs: Vec<&RunOutput> = outs.iter().collect();
    for (i, out) in outs.iter().enumerate() {
        out.assert_code(0);
        assert_password_hidden(out, &job.junit(i));
        assert_eq!(
            lines_starting(out, "shared queue: rediss://").len(),
            1,
            "{}",
            out.describe()
        );
    }
    let indexed: Vec<(usize, &RunOutput)> = outs.iter().enumerate().collect();
    assert_exactly_once(&indexed);
    job.assert_no_survivors(&refs);

    // The same server without its CA: the certificate is not trusted.
    let mut job = Job::new("tls-noca", redis.url(), 2);
    let out = job.start(0, &["-k", "test_one"], &[]).wait(RUN_TIMEOUT);
    assert_password_hidden(&out, &job.junit(0));
    let said = lines_starting(&out, "warning: the shared queue at rediss://")
        .into_iter()
        .chain(lines_starting(&out, "shardex: error:"))
        .find(|l| {
            let l = l.to_lowercase();
            l.contains("certificate") || l.contains("tls")
        })
        .map(str::to_string);
    assert!(
        said.is_some(),
        "without the CA: a line naming the certificate (or TLS) problem\n{}",
        out.describe()
    );
    job.assert_no_survivors(&[&out]);
}

fn assert_password_hidden(out: &RunOutput, junit: &Path) {
    let junit_text = std::fs::read_to_string(junit).unwrap_or_default();
    for (what, text) in [
        ("stdout", &out.stdout),
        ("stderr", &out.stderr),
        ("JUnit", &junit_text),
    ] {
        assert!(
            !text.contains(TLS_PASSWORD),
            "the password appears in {what}\n{}",
            out.describe()
        );
    }
}

/// (f): nodes whose collection differs from the seeder's (an extra file; `-k`) exit 3 naming
/// the first differing ids; the others run every test of the queue.
#[test]
fn a_node_with_a_different_collection_exits_3_naming_the_differences() {
    let _guard = serial();
    let redis = RedisServer::start();
    let mut job = Job::new("differs", redis.url(), 4);
    std::fs::write(
        job.suites[2].path("test_extra.py"),
        "def test_only_here():\n    pass\n",
    )
    .unwrap();
    let runs = vec![job.start(0, &[], &[]), job.start(1, &[], &[])];
    // Once a node runs tests the queue is seeded by one of the first two.
    let logs = [job.log(0), job.log(1)];
    poll(
        Duration::from_secs(40),
        &runs,
        "a node running tests",
        || {
            logs.iter()
                .any(|l| read_log(l).iter().any(|e| e.kind == "start"))
                .then_some(())
        },
    );
    let extra = job.start(2, &[], &[]);
    let narrower = job.start(3, &["-k", "not test_two"], &[]);
    let mut runs = runs;
    runs.extend([extra, narrower]);
    let mut outs = wait_all(runs, RUN_TIMEOUT);
    let differing = outs.split_off(2);
    // The error names the seeder as its own start line does ("node K of 4").
    let seeder = seeder_number(&[&outs[0], &outs[1]], 4);
    let expect = [
        (
            &differing[0],
            "collected 48 tests",
            "+ test_extra.py::test_only_here",
        ),
        // -k "not test_two" deselects test_alpha.py::test_two and TestZeta::test_two.
        (
            &differing[1],
            "collected 45 tests",
            "- test_alpha.py::test_two",
        ),
    ];
    for (out, count, diff) in expect {
        out.assert_code(3);
        let line = lines_starting(out, "shardex: error: this node")
            .first()
            .map(|l| l.to_string())
            .unwrap_or_default();
        let seeded = format!("seeded by node {seeder} with 47");
        assert!(
            line.contains(count)
                && line.contains(&seeded)
                && line.contains("first differences:")
                && line.contains(diff),
            "`shardex: error: this node {count}, the queue was {seeded}; \
             first differences: {diff}`\n{}",
            out.describe()
        );
    }
    for (i, n) in [(2usize, 0usize), (3, 1)] {
        let started = read_log(&job.log(i));
        assert!(
            started.is_empty(),
            "node {i} ran tests: {started:?}\n{}",
            differing[n].describe()
        );
    }
    for out in &outs {
        out.assert_code(0);
    }
    assert_exactly_once(&[(0, &outs[0]), (1, &outs[1])]);
    job.assert_no_survivors(&[&outs[0], &outs[1], &differing[0], &differing[1]]);
}

/// (g): `-x` with one failing test: every node stops taking work within 1 s of the failure,
/// says so, and exits 1; `shardex report` says the job failed and names the test.
#[test]
fn dash_x_one_failure_stops_every_node_within_a_second() {
    let _guard = serial();
    let redis = RedisServer::start();
    let mut job = Job::new("stop", redis.url(), 3);
    let env = [("QUEUE_SLOW", "3"), ("QUEUE_FAIL", "1")];
    let runs = job.start_all(&["-x"], &env);
    let outs = wait_all(runs, RUN_TIMEOUT);
    let refs: Vec<&RunOutput> = outs.iter().collect();
    let logs: Vec<Vec<LogLine>> = (0..3).map(|i| read_log(&job.log(i))).collect();
    let failed_at = logs
        .iter()
        .flatten()
        .find(|l| l.kind == "fail")
        .map(|l| l.at)
        .unwrap_or_else(|| panic!("the test did not fail\n{}", describe_all(&refs)));
    let failing = (0..3)
        .find(|&i| logs[i].iter().any(|l| l.kind == "fail"))
        .unwrap();
    let exits = exit_times(&job, &outs);
    for (i, out) in outs.iter().enumerate() {
        out.assert_code(1);
        // The failing node may say it as pytest -x does; the others name it as their start
        // line names it ("node K of 3").
        let named = format!("(node {})", failing + 1);
        let stop_lines = lines_starting(out, "stopping:");
        assert!(
            (i == failing && out.stdout.contains("stopping after 1 failures"))
                || stop_lines.iter().any(|l| l.contains(&named)),
            "node {i}: a `stopping: … {named}` line\n{}",
            out.describe()
        );
        let late: Vec<String> = logs[i]
            .iter()
            .filter(|l| l.kind == "start" && l.at > failed_at + 1.0)
            .map(|l| format!("{} +{:.2} s", l.nodeid, l.at - failed_at))
            .collect();
        assert!(
            late.is_empty(),
            "node {i} started tests more than 1 s after the failure: {late:?}\n{}",
            out.describe()
        );
        // A slow test running at the stop may finish (≤ 1.5 s here), then the node exits.
        assert!(
            exits[i] - failed_at <= 4.0,
            "node {i} exited {:.2} s after the failure\n{}",
            exits[i] - failed_at,
            out.describe()
        );
    }
    let indexed: Vec<(usize, &RunOutput)> = outs.iter().enumerate().collect();
    let seen = junit_cases(&indexed);
    assert!(
        seen.values().all(|n| n.len() == 1) && seen.len() < 47,
        "each test reported once, and not all ran: {seen:?}"
    );
    job.assert_no_survivors(&refs);

    let report = job.report();
    report.assert_code(1);
    assert!(
        report.stdout.contains("test_fails_when_asked"),
        "the report names the failure\n{}",
        report.describe()
    );
}

/// (i) + (h): a node that starts after the others took everything exits 0 at once with an
/// empty, valid JUnit; the report then covers all three nodes.
#[test]
fn a_late_node_finds_nothing_left_and_exits_0_with_an_empty_junit() {
    let _guard = serial();
    let redis = RedisServer::start();
    let mut job = Job::new("late", redis.url(), 3);
    let runs = vec![job.start(0, &[], &[]), job.start(1, &[], &[])];
    let outs = wait_all(runs, RUN_TIMEOUT);
    for out in &outs {
        out.assert_code(0);
    }
    assert_exactly_once(&[(0, &outs[0]), (1, &outs[1])]);
    let late = job.start(2, &[], &[]).wait(RUN_TIMEOUT);
    late.assert_code(0);
    let text = std::fs::read_to_string(job.junit(2))
        .unwrap_or_else(|e| panic!("no JUnit from the late node: {e}\n{}", late.describe()));
    let junit = parse_junit(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert!(
        junit.cases.is_empty() && !junit.suites.is_empty(),
        "an empty, valid JUnit: {text}"
    );
    assert!(read_log(&job.log(2)).is_empty(), "the late node ran tests");
    job.assert_no_survivors(&[&outs[0], &outs[1], &late]);

    let report = job.report();
    report.assert_code(0);
    for i in 1..=3 {
        assert!(
            report.stdout.contains(&format!("node {i}")),
            "{}",
            report.describe()
        );
    }
    assert_eq!(
        report.summary().get("passed"),
        Some(&47),
        "{}",
        report.describe()
    );
}

/// The harness itself: a restart loses every key (no persistence), the TLS server answers
/// the ACL user through the private CA and refuses a client that does not authenticate.
#[test]
fn redis_harness_restart_loses_keys_and_tls_needs_the_acl_user() {
    let _guard = serial();
    let mut redis = RedisServer::start();
    assert_eq!(redis.cli(&["SET", "k", "v"]).trim(), "OK");
    let port = redis.port();
    redis.restart();
    assert_eq!(redis.port(), port);
    assert_eq!(redis.cli(&["GET", "k"]).trim(), "");
    redis.stop();
    assert!(!redis.is_running());
    assert_eq!(shardex_e2e::redis_server::ping(port), None);

    let tls = RedisServer::start_tls();
    assert_eq!(tls.cli(&["PING"]).trim(), "PONG");
    let anonymous = Command::new("redis-cli")
        .args(["-p", &tls.port().to_string(), "--tls", "--cacert"])
        .arg(tls.ca_path())
        .arg("PING")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&anonymous.stdout).to_string()
        + &String::from_utf8_lossy(&anonymous.stderr);
    assert!(!said.contains("PONG"), "the default user is off: {said}");
}

/// `--collect-only` with a shared queue lists the tests and leaves the job's queue alone:
/// nothing is seeded (a later real run of the same build would find it taken).
#[test]
fn collect_only_leaves_the_queue_alone() {
    let _guard = serial();
    let redis = RedisServer::start();
    let mut job = Job::new("collect", redis.url(), 2);
    let out = job.start(0, &["--collect-only"], &[]).wait(RUN_TIMEOUT);
    out.assert_code(0);
    assert!(
        out.stdout.contains("47 tests collected"),
        "the whole collection, not a share of it\n{}",
        out.describe()
    );
    let keys = redis.cli(&["--scan", "--pattern", "*"]);
    assert!(keys.trim().is_empty(), "keys written: {keys}");
}
