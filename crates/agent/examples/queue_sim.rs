//! Issue 8's scale check by simulation: the real `queue::redis::Remote` code driven by simulated
//! nodes and workers (tokio tasks, sleeps instead of tests, no Python) against one private
//! `redis-server`. Run by `bench/queue_sim.sh`; prints Redis round trips and CPU per test, the
//! latency of a batch take, and whether every test was acknowledged exactly once.
//!
//! cargo run --release -p shardex-agent --example queue_sim -- --redis-server PATH
//!     [--nodes 64] [--workers 8] [--tests 100000] [--median-ms 40] [--kill-node]
//! QUEUE_SIM_SLOWLOG=1 prints, per script (sha), the calls Redis took over 40 µs to run.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shardex_agent::queue::redis::{
    collection_digest, Ack, Entry, Leased, QueueUrl, Remote, RemoteOptions, SeedPlan, Taken,
};
use shardex_core::TestId;
use tokio::sync::mpsc;

#[derive(Clone, Debug)]
struct Args {
    redis_server: String,
    nodes: u32,
    workers: usize,
    tests: usize,
    median_ms: f64,
    /// The last node dies a few seconds in: its leases must expire and be reclaimed.
    kill_node: bool,
    lease_floor: Duration,
}

fn parse_args() -> Args {
    let mut a = Args {
        redis_server: "redis-server".into(),
        nodes: 64,
        workers: 8,
        tests: 100_000,
        median_ms: 40.0,
        kill_node: false,
        lease_floor: Duration::from_secs(2),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--redis-server" => a.redis_server = val(),
            "--nodes" => a.nodes = val().parse().expect("--nodes N"),
            "--workers" => a.workers = val().parse().expect("--workers N"),
            "--tests" => a.tests = val().parse().expect("--tests N"),
            "--median-ms" => a.median_ms = val().parse().expect("--median-ms MS"),
            "--kill-node" => a.kill_node = true,
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

// ---------------------------------------------------------------- a private redis-server

struct Server {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start(bin: &str) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(bin)
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin}: {e} (run scripts/setup.sh)"));
        let t = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "redis-server did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Server {
            child,
            port,
            _dir: dir,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Redis's own time per script call (µs, every EVALSHA: takes, acks and renewals).
async fn evalsha_usec(c: &mut redis::aio::MultiplexedConnection) -> f64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(c)
        .await
        .unwrap();
    let line = info
        .lines()
        .find(|l| l.starts_with("cmdstat_evalsha:"))
        .unwrap_or_default();
    let field = line
        .split(',')
        .find_map(|f| f.strip_prefix("usec_per_call="));
    field.and_then(|v| v.parse().ok()).unwrap_or(0.0)
}

/// Pairs of a RESP2 array or a RESP3 map.
fn pairs(v: &redis::Value) -> Vec<(redis::Value, redis::Value)> {
    match v {
        redis::Value::Map(m) => m.clone(),
        redis::Value::Array(a) => a
            .chunks(2)
            .filter_map(|c| Some((c.first()?.clone(), c.get(1)?.clone())))
            .collect(),
        _ => Vec::new(),
    }
}

/// Redis's own p50/p99 execution time of EVALSHA (µs buckets of LATENCY HISTOGRAM: powers of
/// two, cumulative counts), all scripts together.
async fn evalsha_percentiles(c: &mut redis::aio::MultiplexedConnection) -> (u64, u64) {
    let v: redis::Value = redis::cmd("LATENCY")
        .arg("HISTOGRAM")
        .arg("evalsha")
        .query_async(c)
        .await
        .unwrap();
    let num = |v: &redis::Value| redis::from_redis_value::<u64>(v.clone()).unwrap_or(0);
    let Some((_, stats)) = pairs(&v).into_iter().next() else {
        return (0, 0);
    };
    let fields = pairs(&stats);
    let get = |name: &str| {
        fields
            .iter()
            .find(|(k, _)| {
                redis::from_redis_value::<String>(k.clone()).ok().as_deref() == Some(name)
            })
            .map(|(_, v)| v.clone())
    };
    let calls = get("calls").map(|v| num(&v)).unwrap_or(0);
    let mut hist: Vec<(u64, u64)> = get("histogram_usec")
        .map(|h| pairs(&h).iter().map(|(b, n)| (num(b), num(n))).collect())
        .unwrap_or_default();
    hist.sort();
    let at = |q: f64| {
        hist.iter()
            .find(|(_, n)| *n as f64 >= q * calls as f64)
            .map_or(0, |(b, _)| *b)
    };
    (at(0.5), at(0.99))
}

/// Redis's own CPU seconds (user + sys), from INFO cpu.
async fn redis_cpu(c: &mut redis::aio::MultiplexedConnection) -> f64 {
    let info: String = redis::cmd("INFO").arg("cpu").query_async(c).await.unwrap();
    info.lines()
        .filter(|l| l.starts_with("used_cpu_user:") || l.starts_with("used_cpu_sys:"))
        .filter_map(|l| l.split_once(':')?.1.trim().parse::<f64>().ok())
        .sum()
}

// ---------------------------------------------------------------- the simulated suite

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn unit(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        ((self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    fn normal(&mut self) -> f64 {
        (-2.0 * self.unit().ln()).sqrt() * (std::f64::consts::TAU * self.unit()).cos()
    }
}

/// Ids with planned micros (log-normal, capped at 4 s) and the actual ones (stale timings:
/// planned × e^N(0, 0.5)).
fn make_tests(a: &Args) -> Vec<(TestId, u64, u64)> {
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    (0..a.tests)
        .map(|i| {
            let planned = (a.median_ms * 1000.0 * rng.normal().exp()).clamp(200.0, 4_000_000.0);
            let actual = (planned * (0.5 * rng.normal()).exp()).min(6_000_000.0);
            (
                TestId::new(format!("tests/test_m{:03}.py::test_{i:06}", i / 500)),
                planned as u64,
                actual as u64,
            )
        })
        .collect()
}

/// Longest processing time first onto the least loaded node; each list longest first (what
/// `shardex_core::queue_plan::seed_plan` does for single-test atoms).
fn make_plan(tests: &[(TestId, u64, u64)], nodes: usize) -> SeedPlan {
    let mut order: Vec<&(TestId, u64, u64)> = tests.iter().collect();
    order.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut lists = vec![Vec::new(); nodes];
    let mut load = vec![0u64; nodes];
    for (id, planned, _) in order {
        let k = (0..nodes).min_by_key(|k| (load[*k], *k)).unwrap();
        load[k] += planned;
        lists[k].push(Entry {
            ids: vec![id.clone()],
            micros: *planned,
        });
    }
    let mut sorted_ids: Vec<TestId> = tests.iter().map(|t| t.0.clone()).collect();
    sorted_ids.sort();
    SeedPlan {
        digest: collection_digest(&sorted_ids),
        lists,
        sorted_ids,
    }
}

// ---------------------------------------------------------------- a simulated node

#[derive(Default)]
struct NodeStats {
    firsts: Vec<TestId>,
    /// (when it started, how long it took)
    takes: Vec<(Instant, Duration)>,
    round_trips: u64,
    ran: usize,
    finished: Option<Instant>,
    reclaimed: usize,
}

struct Node {
    remote: Remote,
    local: VecDeque<Leased>,
    /// Leases taken and not yet acknowledged: renewed until then.
    held: HashMap<TestId, u64>,
    pending: Vec<Ack>,
    stats: NodeStats,
    exhausted: bool,
}

impl Node {
    async fn take(&mut self, workers: usize, want: u64) {
        let t = Instant::now();
        let r = self
            .remote
            .take(workers as u32 * 2, want)
            .await
            .expect("take");
        self.stats.takes.push((t, t.elapsed()));
        match r {
            Taken::Tests(v) => {
                for l in v {
                    self.stats.reclaimed += usize::from(l.reclaimed);
                    self.held.insert(l.id.clone(), l.lease);
                    self.local.push_back(l);
                }
            }
            Taken::Drained => tokio::time::sleep(Duration::from_millis(20)).await,
            Taken::Exhausted => self.exhausted = true,
            Taken::Stopped(why) => panic!("stopped: {why}"),
        }
    }

    async fn flush(&mut self) {
        let acks = std::mem::take(&mut self.pending);
        let firsts = self.remote.ack(&acks, 0).await.expect("ack");
        for (a, first) in acks.into_iter().zip(firsts) {
            if first {
                self.stats.firsts.push(a.id);
            }
        }
    }

    async fn renew(&mut self) {
        let held: Vec<(TestId, u64)> = self.held.iter().map(|(i, l)| (i.clone(), *l)).collect();
        self.remote.renew(&held).await.expect("renew");
    }
}

/// One node: a coordinator loop owning the `Remote`, and `workers` tasks that sleep each test's
/// actual duration. `die_at`: the node vanishes then (no ack, no renewal, ever again).
async fn run_node(
    remote: Remote,
    actual: Arc<HashMap<TestId, u64>>,
    a: Args,
    die_at: Option<Instant>,
) -> NodeStats {
    let mut node = Node {
        remote,
        local: VecDeque::new(),
        held: HashMap::new(),
        pending: Vec::new(),
        stats: NodeStats::default(),
        exhausted: false,
    };
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(usize, Option<Ack>)>();
    let mut to_worker = Vec::new();
    for w in 0..a.workers {
        let (tx, mut rx) = mpsc::unbounded_channel::<(TestId, u64)>();
        to_worker.push(tx);
        let (done, actual) = (done_tx.clone(), actual.clone());
        tokio::spawn(async move {
            let _ = done.send((w, None));
            while let Some((id, lease)) = rx.recv().await {
                tokio::time::sleep(Duration::from_micros(actual[&id])).await;
                let _ = done.send((
                    w,
                    Some(Ack {
                        id,
                        lease,
                        hard_failure: false,
                    }),
                ));
            }
        });
    }
    drop(done_tx);
    let want = (a.median_ms * 1000.0 * 2.0) as u64 * a.workers as u64;
    let mut idle: Vec<usize> = Vec::new();
    let mut tick = tokio::time::interval(a.lease_floor / 4);
    let mut last_ack = Instant::now();
    loop {
        tokio::select! {
            m = done_rx.recv() => {
                let Some((w, ack)) = m else { break };
                if let Some(ack) = ack {
                    node.held.remove(&ack.id);
                    node.pending.push(ack);
                    node.stats.ran += 1;
                }
                idle.push(w);
            }
            _ = tick.tick() => node.renew().await,
        }
        if die_at.is_some_and(|d| Instant::now() >= d) {
            // What it acknowledged before dying counts; the rest of its leases expire.
            node.stats.round_trips = node.remote.round_trips();
            return node.stats;
        }
        if node.pending.len() >= 2 * a.workers || last_ack.elapsed() >= Duration::from_millis(100) {
            node.flush().await;
            last_ack = Instant::now();
        }
        while let Some(&w) = idle.last() {
            if node.local.is_empty() && !node.exhausted {
                node.take(a.workers, want).await;
            }
            let Some(l) = node.local.pop_front() else {
                break;
            };
            idle.pop();
            let _ = to_worker[w].send((l.id, l.lease));
        }
        if node.exhausted && node.local.is_empty() && idle.len() == a.workers {
            break;
        }
    }
    node.flush().await;
    node.stats.finished = Some(Instant::now());
    node.stats.round_trips = node.remote.round_trips();
    node.stats
}

// ---------------------------------------------------------------- the run and its table

fn pct(v: &[Duration], p: f64) -> f64 {
    v[((v.len() - 1) as f64 * p).round() as usize].as_secs_f64() * 1000.0
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let a = parse_args();
    let server = Server::start(&a.redis_server);
    let url = QueueUrl::parse(&format!("redis://127.0.0.1:{}", server.port)).unwrap();
    let tests = make_tests(&a);
    let plan = Arc::new(make_plan(&tests, a.nodes as usize));
    let actual: Arc<HashMap<TestId, u64>> =
        Arc::new(tests.iter().map(|t| (t.0.clone(), t.2)).collect());
    let total_s: f64 = tests.iter().map(|t| t.2 as f64).sum::<f64>() / 1e6;
    let longest_s = tests.iter().map(|t| t.2).max().unwrap_or(0) as f64 / 1e6;
    let lb = (total_s / (a.nodes as f64 * a.workers as f64)).max(longest_s);
    let mut raw = redis::Client::open(url.to_string())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let opts = RemoteOptions {
        lease_floor: a.lease_floor,
        call_timeout: Duration::from_secs(10),
        ..RemoteOptions::default()
    };

    // Seeding first (one node pushes 100,000 entries), measured apart from the run.
    let t0 = Instant::now();
    let mut remotes = Vec::new();
    for k in 0..a.nodes {
        remotes.push(
            Remote::connect(&url, "sim", k, opts.clone())
                .await
                .expect("connect"),
        );
    }
    remotes[0]
        .join(&plan, Duration::from_secs(30))
        .await
        .expect("seed");
    let seed_s = t0.elapsed().as_secs_f64();
    // The others join at once (each reads its share with LRANGE), before the clock starts: on
    // CI they start at different times, and a join is not a take.
    let t0 = Instant::now();
    let mut joins = Vec::new();
    for mut r in remotes.drain(1..) {
        let plan = plan.clone();
        joins.push(tokio::spawn(async move {
            r.join(&plan, Duration::from_secs(30)).await.expect("join");
            r
        }));
    }
    for j in joins {
        remotes.push(j.await.expect("join task"));
    }
    let join_s = t0.elapsed().as_secs_f64();
    let cpu0 = redis_cpu(&mut raw).await;
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(&mut raw)
        .await
        .unwrap();
    if std::env::var_os("QUEUE_SIM_SLOWLOG").is_some() {
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("slowlog-log-slower-than")
            .arg(
                std::env::var("QUEUE_SIM_SLOWLOG")
                    .ok()
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(40),
            )
            .query_async(&mut raw)
            .await
            .unwrap();
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("slowlog-max-len")
            .arg(100000)
            .query_async(&mut raw)
            .await
            .unwrap();
    }
    let start = Instant::now();
    let mut handles = Vec::new();
    for (k, r) in remotes.into_iter().enumerate() {
        let die =
            (a.kill_node && k + 1 == a.nodes as usize).then(|| start + Duration::from_secs(3));
        handles.push(tokio::spawn(run_node(r, actual.clone(), a.clone(), die)));
    }
    let mut stats = Vec::new();
    for h in handles {
        stats.push(h.await.expect("node task"));
    }
    let wall = start.elapsed().as_secs_f64();
    if std::env::var_os("QUEUE_SIM_SLOWLOG").is_some() {
        let log: Vec<(i64, i64, i64, Vec<String>, String, String)> = redis::cmd("SLOWLOG")
            .arg("GET")
            .arg(100000)
            .query_async(&mut raw)
            .await
            .unwrap_or_default();
        let mut by: HashMap<String, (usize, i64)> = HashMap::new();
        for (_, _, us, args, _, _) in log {
            let k = args
                .get(1)
                .map(|s| s.chars().take(12).collect())
                .unwrap_or_default();
            let e = by.entry(k).or_default();
            e.0 += 1;
            e.1 += us;
        }
        for (k, (n, us)) in by {
            eprintln!("slowlog {k}: {n} calls logged, mean {} us", us / n as i64);
        }
    }
    let cpu = redis_cpu(&mut raw).await - cpu0;
    report(
        &a,
        &stats,
        &mut raw,
        Summary {
            wall,
            cpu,
            seed_s,
            join_s,
            lb,
            start,
        },
    )
    .await;
}

struct Summary {
    wall: f64,
    cpu: f64,
    seed_s: f64,
    join_s: f64,
    lb: f64,
    start: Instant,
}

async fn report(
    a: &Args,
    stats: &[NodeStats],
    raw: &mut redis::aio::MultiplexedConnection,
    s: Summary,
) {
    let n = a.tests as f64;
    let mut firsts = HashSet::new();
    let mut twice = 0;
    for st in stats {
        for id in &st.firsts {
            twice += usize::from(!firsts.insert(id.clone()));
        }
    }
    let done: usize = redis::cmd("HLEN")
        .arg("{shardex:sim}:done")
        .query_async(raw)
        .await
        .unwrap();
    let runs: HashMap<String, u32> = redis::cmd("HGETALL")
        .arg("{shardex:sim}:runs")
        .query_async(raw)
        .await
        .unwrap();
    let ran_twice = runs.values().filter(|r| **r > 1).count();
    let mut takes: Vec<Duration> = stats
        .iter()
        .flat_map(|x| x.takes.iter().map(|t| t.1))
        .collect();
    // The first second holds every node's first takes at once (and the workers' start).
    let mut later: Vec<Duration> = stats
        .iter()
        .flat_map(|x| {
            x.takes
                .iter()
                .filter(|t| t.0 >= s.start + Duration::from_secs(1))
                .map(|t| t.1)
        })
        .collect();
    later.sort();
    takes.sort();
    let trips: u64 = stats.iter().map(|s| s.round_trips).sum();
    let ends: Vec<f64> = stats
        .iter()
        .filter_map(|x| x.finished)
        .map(|f| (f - s.start).as_secs_f64())
        .collect();
    let spread =
        ends.iter().cloned().fold(0.0, f64::max) - ends.iter().cloned().fold(f64::MAX, f64::min);
    let reclaimed: usize = stats.iter().map(|s| s.reclaimed).sum();
    let ok = done == a.tests && firsts.len() == a.tests && twice == 0;
    println!("| Measure | Value | Target |");
    println!("|---|---:|---:|");
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "| load average at the end (2 CPUs shared) | {} | |",
        load.split(' ').take(3).collect::<Vec<_>>().join(" ")
    );
    println!(
        "| nodes × workers, tests | {} × {}, {} | 64 × 8, 100,000 |",
        a.nodes, a.workers, a.tests
    );
    println!(
        "| seeding (one node pushes every list); the others' joins | {:.2} s; {:.2} s | |",
        s.seed_s, s.join_s
    );
    println!(
        "| run wall / LB (LB = max(total / workers, longest)) | {:.2} s / {:.2} s = {:.2} | |",
        s.wall,
        s.lb,
        s.wall / s.lb
    );
    println!("| node finish spread (live nodes) | {spread:.2} s | |");
    println!("| Redis round trips per test | {:.3} | |", trips as f64 / n);
    println!(
        "| takes, tests per take | {}, {:.1} | |",
        takes.len(),
        n / takes.len() as f64
    );
    println!(
        "| Redis CPU per test (INFO used_cpu_user+sys) | {:.4} ms | ≤ 0.2 ms |",
        s.cpu * 1000.0 / n
    );
    println!(
        "| Redis time per script call (commandstats, evalsha) | {:.1} µs | |",
        evalsha_usec(raw).await
    );
    let (e50, e99) = evalsha_percentiles(raw).await;
    println!("| Redis-side script execution p50 / p99 (LATENCY HISTOGRAM, ≤ bucket) | {e50} / {e99} µs | |");
    println!(
        "| take latency p50 / p90 / p99 / max | {:.2} / {:.2} / {:.2} / {:.2} ms | p99 ≤ 5 ms |",
        pct(&takes, 0.5),
        pct(&takes, 0.9),
        pct(&takes, 0.99),
        pct(&takes, 1.0)
    );
    println!(
        "| take latency after the first second p50 / p99 | {:.2} / {:.2} ms | |",
        pct(&later, 0.5),
        pct(&later, 0.99)
    );
    println!(
        "| reclaimed leases (killed node: {}) | {reclaimed} | |",
        a.kill_node
    );
    println!("| ran twice (runs > 1) | {ran_twice} | |");
    println!(
        "| done in Redis / first acks / first acked twice | {done} / {} / {twice} | {} / {} / 0 |",
        firsts.len(),
        a.tests,
        a.tests
    );
    println!(
        "| every test acknowledged exactly once | {} | yes |",
        if ok { "yes" } else { "NO" }
    );
    if !ok {
        std::process::exit(1);
    }
}
