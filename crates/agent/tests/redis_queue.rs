//! The shared queue's client against a real `redis-server` (one per test, on 127.0.0.1, a free
//! port and a private directory, killed when the test ends). Several `Remote`s in one process
//! play the CI containers.

use std::collections::{HashMap, HashSet};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use shardex_agent::queue::redis::{
    history_keys, key_prefix, Ack, Entry, QueueUrl, Remote, RemoteError, RemoteOptions, SeedPlan,
    Taken,
};
use shardex_core::TestId;

mod support;
use support::*;

// ---------------------------------------------------------------- a private redis-server

struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    extra: Vec<String>,
    /// The TLS test's certificates, removed with the server.
    certs: Option<tempfile::TempDir>,
}

impl RedisServer {
    fn start() -> RedisServer {
        Self::start_with(Vec::new(), false)
    }

    /// `tls`: `extra` configures the TLS port; the plain port is off.
    fn start_with(extra: Vec<String>, tls: bool) -> RedisServer {
        let dir = tempfile::tempdir().unwrap();
        let mut s = RedisServer {
            child: None,
            port: free_port(),
            dir,
            extra,
            certs: None,
        };
        s.spawn(tls);
        s
    }

    fn spawn(&mut self, tls: bool) {
        let port = self.port.to_string();
        let mut cmd = Command::new(bin("redis-server"));
        if tls {
            cmd.args(["--port", "0", "--tls-port", &port]);
        } else {
            cmd.args(["--port", &port]);
        }
        cmd.args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        self.child = Some(cmd.spawn().expect("start redis-server"));
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "redis-server did not listen on {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn url(&self) -> QueueUrl {
        QueueUrl::parse(&format!("redis://127.0.0.1:{}", self.port)).unwrap()
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// A restart without persistence: same port, no data.
    fn restart(&mut self) {
        self.kill();
        self.spawn(false);
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().unwrap().id().to_string();
        assert!(Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap()
            .success());
    }

    /// A plain connection for looking at the keys behind the client's back.
    async fn raw(&self) -> redis::aio::MultiplexedConnection {
        let c = redis::Client::open(format!("redis://127.0.0.1:{}", self.port)).unwrap();
        c.get_multiplexed_async_connection().await.unwrap()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(c) = &self.child {
            // A stopped (SIGSTOP) server would ignore nothing but SIGKILL; wake it anyway.
            let _ = Command::new("kill")
                .args(["-CONT", &c.id().to_string()])
                .status();
        }
        self.kill();
    }
}

// ---------------------------------------------------------------- plans and nodes

fn opts(lease_floor_ms: u64) -> RemoteOptions {
    RemoteOptions {
        call_timeout: Duration::from_millis(1500),
        connect_timeout: Duration::from_millis(1500),
        lease_floor: Duration::from_millis(lease_floor_ms),
        ..RemoteOptions::default()
    }
}

async fn node(s: &RedisServer, build: &str, node: u32, o: RemoteOptions) -> Remote {
    Remote::connect(&s.url(), build, node, o).await.unwrap()
}

/// Nodes `0..k` of `build`, all joined to `p` (node 0 seeds).
async fn joined(s: &RedisServer, build: &str, p: &SeedPlan, floor_ms: u64) -> Vec<Remote> {
    let mut out = Vec::new();
    for k in 0..p.lists.len() as u32 {
        let mut r = node(s, build, k, opts(floor_ms)).await;
        r.join(p, Duration::from_secs(5)).await.unwrap();
        out.push(r);
    }
    out
}

async fn hget(c: &mut redis::aio::MultiplexedConnection, key: &str, field: &str) -> Option<String> {
    redis::cmd("HGET")
        .arg(key)
        .arg(field)
        .query_async(c)
        .await
        .unwrap()
}

async fn zscore(c: &mut redis::aio::MultiplexedConnection, key: &str, member: &str) -> Option<f64> {
    redis::cmd("ZSCORE")
        .arg(key)
        .arg(member)
        .query_async(c)
        .await
        .unwrap()
}

// ---------------------------------------------------------------- seeding

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_one_of_k_concurrent_nodes_seeds() {
    let s = RedisServer::start();
    let p = plan(60, 6, 1000);
    let mut tasks = Vec::new();
    for k in 0..6u32 {
        let (url, p) = (s.url(), p.clone());
        tasks.push(tokio::spawn(async move {
            let mut r = Remote::connect(&url, "b1", k, opts(10_000)).await.unwrap();
            r.join(&p, Duration::from_secs(5)).await.unwrap()
        }));
    }
    let mut seeders = Vec::new();
    for (k, t) in tasks.into_iter().enumerate() {
        let j = t.await.unwrap();
        if j.seeded_here {
            seeders.push(k as u32);
        }
        assert_eq!(j.share, p.lists[k], "node {k}'s share is its seeded list");
        seeders.iter().for_each(|s| assert_eq!(j.seeded_by, *s));
    }
    assert_eq!(seeders.len(), 1, "seeded by {seeders:?}");
    let mut c = s.raw().await;
    let pre = key_prefix("b1");
    assert_eq!(
        hget(&mut c, &format!("{pre}:meta"), "count")
            .await
            .as_deref(),
        Some("60")
    );
    let ttl: i64 = redis::cmd("TTL")
        .arg(format!("{pre}:q:3"))
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(ttl > 11 * 3600, "keys carry the TTL: {ttl}");
}

#[tokio::test]
async fn a_node_whose_collection_differs_gets_the_first_differences() {
    let s = RedisServer::start();
    let ours = plan(10, 2, 1000);
    let mut seeder = node(&s, "b", 0, opts(10_000)).await;
    assert!(
        seeder
            .join(&ours, Duration::from_secs(1))
            .await
            .unwrap()
            .seeded_here
    );
    // Node 1 lacks test_0003 and has an extra test.
    let mut lists = ours.lists.clone();
    lists[1].retain(|e| e.ids[0] != id(3));
    lists[1].push(Entry {
        ids: vec![TestId::new("tests/test_m.py::test_0003b")],
        micros: 5,
    });
    let theirs = plan_of(lists);
    let mut other = node(&s, "b", 1, opts(10_000)).await;
    match other.join(&theirs, Duration::from_secs(1)).await {
        Err(RemoteError::CollectionDiffers {
            ours,
            theirs,
            seeded_by,
            differences,
        }) => {
            assert_eq!((ours, theirs, seeded_by), (10, 10, 0));
            assert_eq!(
                differences,
                [
                    "- tests/test_m.py::test_0003",
                    "+ tests/test_m.py::test_0003b"
                ]
            );
        }
        other => panic!("expected CollectionDiffers, got {other:?}"),
    }
}

#[tokio::test]
async fn a_dead_seeder_is_a_seed_timeout() {
    let s = RedisServer::start();
    let mut c = s.raw().await;
    let _: () = redis::cmd("SET")
        .arg(format!("{}:seed", key_prefix("b")))
        .arg("seeding 3")
        .query_async(&mut c)
        .await
        .unwrap();
    let mut r = node(&s, "b", 0, opts(10_000)).await;
    let t = Instant::now();
    let e = r
        .join(&plan(4, 2, 1), Duration::from_millis(300))
        .await
        .unwrap_err();
    assert_eq!(e, RemoteError::SeedTimeout(Duration::from_millis(300)));
    assert!(t.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn a_waiting_node_seeds_when_the_seeder_died() {
    let s = RedisServer::start();
    let mut c = s.raw().await;
    // Node 3 won and died before seeding: its marker expires.
    let _: () = redis::cmd("SET")
        .arg(format!("{}:seed", key_prefix("b")))
        .arg("seeding 3")
        .arg("EX")
        .arg(1)
        .query_async(&mut c)
        .await
        .unwrap();
    let mut r = node(&s, "b", 1, opts(10_000)).await;
    let p = plan(4, 2, 1);
    let j = r.join(&p, Duration::from_secs(4)).await.unwrap();
    assert!(j.seeded_here && j.seeded_by == 1, "{j:?}");
    let ttl: i64 = redis::cmd("TTL")
        .arg(format!("{}:seed", key_prefix("b")))
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(ttl > 11 * 3600, "`ready` carries the build's TTL: {ttl}");
}

// ---------------------------------------------------------------- taking and acknowledging

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn k_nodes_acknowledge_every_test_exactly_once() {
    let s = RedisServer::start();
    let n = 400;
    let p = plan(n, 4, 2000);
    let mut tasks = Vec::new();
    for k in 0..4u32 {
        let (url, p) = (s.url(), p.clone());
        tasks.push(tokio::spawn(async move {
            let mut r = Remote::connect(&url, "b", k, opts(10_000)).await.unwrap();
            r.join(&p, Duration::from_secs(5)).await.unwrap();
            let (mut firsts, mut taken) = (Vec::new(), 0);
            loop {
                let trips = r.round_trips();
                let t = r.take(7, 20_000).await.unwrap();
                assert_eq!(r.round_trips(), trips + 1, "a take is one round trip");
                match t {
                    Taken::Tests(v) => {
                        taken += v.len();
                        // Node 3 is slow: the others end up stealing from its list.
                        tokio::time::sleep(Duration::from_millis(if k == 3 { 20 } else { 1 }))
                            .await;
                        let acks: Vec<Ack> = v.iter().map(ack_of).collect();
                        let ok = r.ack(&acks, 0).await.unwrap();
                        firsts.extend(v.into_iter().zip(ok).filter(|(_, f)| *f).map(|(l, _)| l.id));
                    }
                    Taken::Drained => tokio::time::sleep(Duration::from_millis(5)).await,
                    Taken::Exhausted => return (firsts, taken),
                    Taken::Stopped(r) => panic!("stopped: {r}"),
                }
            }
        }));
    }
    let mut seen = HashSet::new();
    let mut per_node = Vec::new();
    for t in tasks {
        let (firsts, taken) = t.await.unwrap();
        assert_eq!(
            firsts.len(),
            taken,
            "no lease expired, so every ack was first"
        );
        per_node.push(taken);
        for f in firsts {
            assert!(seen.insert(f.clone()), "{f} acknowledged first twice");
        }
    }
    assert_eq!(seen.len(), n, "every test acknowledged: {per_node:?}");
    assert!(
        per_node[3] < n / 4,
        "the fast nodes stole from the slow one: {per_node:?}"
    );
    let mut c = s.raw().await;
    let pre = key_prefix("b");
    let done: usize = redis::cmd("HLEN")
        .arg(format!("{pre}:done"))
        .query_async(&mut c)
        .await
        .unwrap();
    let runs: HashMap<String, u32> = redis::cmd("HGETALL")
        .arg(format!("{pre}:runs"))
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(done, n);
    assert!(runs.values().all(|r| *r == 1));
    // Every key of the build carries the TTL (the lease keys since seeding: takes do not refresh).
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(keys.len() >= 8, "{keys:?}");
    for k in keys {
        let ttl: i64 = redis::cmd("TTL").arg(&k).query_async(&mut c).await.unwrap();
        assert!(ttl > 11 * 3600, "{k}: TTL {ttl}");
    }
}

#[tokio::test]
async fn a_dry_node_steals_from_the_tail_of_the_list_with_most_time_left() {
    let s = RedisServer::start();
    let e = |i: usize, micros| Entry {
        ids: vec![id(i)],
        micros,
    };
    // Node 0: 3 entries, 3,000 µs left; node 1: 4 entries, 10,000 µs; node 2: nothing.
    let lists = vec![
        vec![e(0, 1000), e(1, 1000), e(2, 1000)],
        vec![e(3, 7000), e(4, 1000), e(5, 1000), e(6, 1000)],
        vec![],
    ];
    let p = plan_of(lists);
    let mut nodes = joined(&s, "b", &p, 10_000).await;
    // Half of node 1's 10,000 µs at most: its tail, last entry first.
    let got = tests_of(nodes[2].take(10, 100_000).await.unwrap());
    let ids: Vec<TestId> = got.iter().map(|l| l.id.clone()).collect();
    assert_eq!(ids, [id(6), id(5), id(4)]);
    // Its head (the heavy atom) stays with node 1.
    let own = tests_of(nodes[1].take(1, 1).await.unwrap());
    assert_eq!(own[0].id, id(3));
    let mut c = s.raw().await;
    // An empty list leaves `left` (thieves scan only what is there).
    let left: HashMap<String, u64> = redis::cmd("HGETALL")
        .arg(format!("{}:left", key_prefix("b")))
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(left, HashMap::from([("0".to_string(), 3000)]));
    // A node takes its own list's head first even with max_tests 1 and a small want.
    let own = tests_of(nodes[0].take(1, 1).await.unwrap());
    assert_eq!(own[0].id, id(0));
}

#[tokio::test]
async fn an_entry_stays_together_and_takes_respect_the_batch_size() {
    let s = RedisServer::start();
    let big = Entry {
        ids: vec![id(0), id(1), id(2)],
        micros: 3000,
    };
    let lists = vec![vec![
        big,
        Entry {
            ids: vec![id(3)],
            micros: 10,
        },
        Entry {
            ids: vec![id(4)],
            micros: 10,
        },
    ]];
    let mut nodes = joined(&s, "b", &plan_of(lists), 10_000).await;
    let got = tests_of(nodes[0].take(2, 1).await.unwrap());
    assert_eq!(
        got.iter().map(|l| l.micros).collect::<Vec<_>>(),
        [1000, 1000, 1000]
    );
    let got = tests_of(nodes[0].take(1, 1_000_000).await.unwrap());
    assert_eq!(got.len(), 1, "max_tests bounds a batch");
    assert_eq!(got[0].id, id(3));
    // want_micros bounds it too: 10 µs >= 5 after one entry.
    let got = tests_of(nodes[0].take(5, 5).await.unwrap());
    assert_eq!(
        got.iter().map(|l| l.id.clone()).collect::<Vec<_>>(),
        [id(4)]
    );
    let leases: HashSet<u64> = [&got[0]].iter().map(|l| l.lease).collect();
    assert_eq!(leases.len(), 1);
    // Every list is empty, five leases are in flight.
    assert_eq!(nodes[0].take(5, 5).await.unwrap(), Taken::Drained);
}

// ---------------------------------------------------------------- leases and fencing

#[tokio::test]
async fn an_expired_lease_is_reclaimed_and_the_stale_ack_is_fenced_out() {
    let s = RedisServer::start();
    let p = plan(1, 2, 10);
    let mut nodes = joined(&s, "b", &p, 200).await;
    let first = tests_of(nodes[0].take(1, 1).await.unwrap()).remove(0);
    assert!(!first.reclaimed);
    assert_eq!(
        nodes[1].take(1, 1).await.unwrap(),
        Taken::Drained,
        "leased, not expired"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let again = tests_of(nodes[1].take(1, 1).await.unwrap()).remove(0);
    assert_eq!(again.id, first.id);
    assert!(again.reclaimed && again.lease > first.lease);
    // Node 0 was only slow: its late ack is not the one that counts...
    assert_eq!(nodes[0].ack(&[ack_of(&first)], 0).await.unwrap(), [false]);
    // ...and it left node 1's lease alone.
    let mut c = s.raw().await;
    let pre = key_prefix("b");
    let owner = hget(&mut c, &format!("{pre}:owner"), first.id.as_str())
        .await
        .unwrap();
    assert!(owner.starts_with(&format!("1 {} ", again.lease)), "{owner}");
    assert!(
        zscore(&mut c, &format!("{pre}:deadline"), first.id.as_str())
            .await
            .is_some()
    );
    assert_eq!(
        hget(&mut c, &format!("{pre}:done"), first.id.as_str()).await,
        None
    );
    assert_eq!(nodes[1].ack(&[ack_of(&again)], 0).await.unwrap(), [true]);
    assert_eq!(
        hget(&mut c, &format!("{pre}:runs"), first.id.as_str())
            .await
            .as_deref(),
        Some("2")
    );
    assert_eq!(
        hget(&mut c, &format!("{pre}:reclaimed"), first.id.as_str())
            .await
            .as_deref(),
        Some("1")
    );
    assert_eq!(nodes[0].take(1, 1).await.unwrap(), Taken::Exhausted);
}

#[tokio::test]
async fn renewing_keeps_a_lease_alive_past_its_deadline() {
    let s = RedisServer::start();
    let mut nodes = joined(&s, "b", &plan(1, 2, 10), 300).await;
    let l = tests_of(nodes[0].take(1, 1).await.unwrap()).remove(0);
    for _ in 0..7 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            nodes[0].renew(&[(l.id.clone(), l.lease)]).await.unwrap(),
            None
        );
    }
    // 700 ms after the take, more than twice the lease.
    assert_eq!(nodes[1].take(1, 1).await.unwrap(), Taken::Drained);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        tests_of(nodes[1].take(1, 1).await.unwrap())[0].reclaimed,
        "without renewals it expires"
    );
}

#[tokio::test]
async fn a_stale_renewal_after_a_reclaim_does_not_extend() {
    let s = RedisServer::start();
    let mut nodes = joined(&s, "b", &plan(1, 2, 10), 200).await;
    let stale = tests_of(nodes[0].take(1, 1).await.unwrap()).remove(0);
    tokio::time::sleep(Duration::from_millis(250)).await;
    let fresh = tests_of(nodes[1].take(1, 1).await.unwrap()).remove(0);
    let mut c = s.raw().await;
    let key = format!("{}:deadline", key_prefix("b"));
    let before = zscore(&mut c, &key, fresh.id.as_str()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    nodes[0]
        .renew(&[(stale.id.clone(), stale.lease)])
        .await
        .unwrap();
    assert_eq!(
        zscore(&mut c, &key, fresh.id.as_str()).await.unwrap(),
        before,
        "the stale lease extended the new one"
    );
    nodes[1]
        .renew(&[(fresh.id.clone(), fresh.lease)])
        .await
        .unwrap();
    assert!(
        zscore(&mut c, &key, fresh.id.as_str()).await.unwrap() > before,
        "the holder's renewal extends"
    );
}

// ---------------------------------------------------------------- stopping

#[tokio::test]
async fn maxfail_sets_the_stop_flag_that_take_and_renew_see() {
    let s = RedisServer::start();
    let mut nodes = joined(&s, "b", &plan(10, 2, 10), 10_000).await;
    let a = tests_of(nodes[0].take(1, 1).await.unwrap()).remove(0);
    let b = tests_of(nodes[1].take(1, 1).await.unwrap()).remove(0);
    let hard = |l: &shardex_agent::queue::redis::Leased| Ack {
        hard_failure: true,
        ..ack_of(l)
    };
    assert_eq!(nodes[0].ack(&[hard(&a)], 2).await.unwrap(), [true]);
    assert_eq!(
        nodes[0].renew(&[]).await.unwrap(),
        None,
        "one failure of two"
    );
    // The same failure acknowledged again does not count twice.
    assert_eq!(nodes[0].ack(&[hard(&a)], 2).await.unwrap(), [false]);
    assert_eq!(nodes[0].renew(&[]).await.unwrap(), None);
    assert_eq!(nodes[1].ack(&[hard(&b)], 2).await.unwrap(), [true]);
    // Nodes are numbered from 1 in what users read (node index 1 is "node 2").
    let why = "2 hard failures reached --maxfail=2 (node 2)".to_string();
    assert_eq!(
        nodes[0].take(5, 5).await.unwrap(),
        Taken::Stopped(why.clone())
    );
    assert_eq!(nodes[0].renew(&[]).await.unwrap(), Some(why.clone()));
    // The first reason stays.
    nodes[0]
        .request_stop("interrupted on node 0")
        .await
        .unwrap();
    assert_eq!(nodes[1].take(5, 5).await.unwrap(), Taken::Stopped(why));
}

#[tokio::test]
async fn request_stop_stops_every_node() {
    let s = RedisServer::start();
    let mut nodes = joined(&s, "b", &plan(10, 2, 10), 10_000).await;
    nodes[1]
        .request_stop("interrupted on node 1")
        .await
        .unwrap();
    assert_eq!(
        nodes[0].take(5, 5).await.unwrap(),
        Taken::Stopped("interrupted on node 1".into())
    );
    assert_eq!(
        nodes[0].renew(&[]).await.unwrap().as_deref(),
        Some("interrupted on node 1")
    );
}

// ---------------------------------------------------------------- outages

#[tokio::test]
async fn a_dead_or_hung_redis_is_an_error_within_the_call_timeout() {
    let mut s = RedisServer::start();
    let mut nodes = joined(&s, "b", &plan(10, 1, 10), 10_000).await;
    // Hung (SIGSTOP): the connection stays open, nothing answers.
    s.signal("-STOP");
    let t = Instant::now();
    assert_eq!(
        nodes[0].take(1, 1).await.unwrap_err(),
        RemoteError::Timeout("take")
    );
    assert!(
        t.elapsed() < Duration::from_millis(2500),
        "{:?}",
        t.elapsed()
    );
    s.signal("-CONT");
    s.kill();
    for _ in 0..2 {
        let t = Instant::now();
        match nodes[0]
            .ack(
                &[Ack {
                    id: id(0),
                    lease: 1,
                    hard_failure: false,
                }],
                0,
            )
            .await
        {
            Err(RemoteError::Unreachable(_) | RemoteError::Timeout(_)) => {}
            other => panic!("expected unreachable, got {other:?}"),
        }
        assert!(
            t.elapsed() < Duration::from_millis(2500),
            "{:?}",
            t.elapsed()
        );
    }
    let e = Remote::connect(&s.url(), "b", 0, opts(10))
        .await
        .unwrap_err();
    assert!(
        matches!(e, RemoteError::Unreachable(ref m) if m.contains("refused")),
        "{e}"
    );
}

#[tokio::test]
async fn redis_restarted_without_its_data_is_lost() {
    let mut s = RedisServer::start();
    let mut nodes = joined(&s, "b", &plan(10, 1, 10), 10_000).await;
    let l = tests_of(nodes[0].take(1, 1).await.unwrap()).remove(0);
    s.restart();
    // The first call may see the old connection break; the next reconnects and finds no queue.
    let mut last = None;
    for _ in 0..3 {
        match nodes[0].take(1, 1).await {
            Err(RemoteError::Unreachable(_)) => continue,
            other => {
                last = Some(other);
                break;
            }
        }
    }
    assert_eq!(last, Some(Err(RemoteError::Lost)));
    assert_eq!(
        nodes[0].renew(&[(l.id.clone(), l.lease)]).await,
        Err(RemoteError::Lost)
    );
    assert_eq!(nodes[0].ack(&[ack_of(&l)], 0).await, Err(RemoteError::Lost));
}

// ---------------------------------------------------------------- timings and reports

#[tokio::test]
async fn timings_and_reports_round_trip() {
    let s = RedisServer::start();
    let mut nodes = joined(&s, "b", &plan(4, 2, 10), 10_000).await;
    nodes[0]
        .write_timings("proj/x", &[(id(1), 1.5), (id(2), 0.25)])
        .await
        .unwrap();
    let mut t = nodes[1].read_timings("proj/x").await.unwrap();
    t.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(t, [(id(1), 1.5), (id(2), 0.25)]);
    assert!(nodes[1].read_timings("other").await.unwrap().is_empty());
    let mut c = s.raw().await;
    let ttl: i64 = redis::cmd("TTL")
        .arg("{shardex:timings}:proj/x")
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(ttl > 29 * 24 * 3600, "{ttl}");
    nodes[1].publish_report(r#"{"node":1}"#).await.unwrap();
    let st = nodes[0].job_state().await.unwrap().unwrap();
    assert_eq!(
        (st.nodes, st.count, st.reports),
        (2, 4, vec![(1, r#"{"node":1}"#.to_string())])
    );
    let mut other = node(&s, "never-seeded", 0, opts(10)).await;
    assert_eq!(other.job_state().await.unwrap(), None);
}

/// A project's history: nodes append runs at once, each test keeps its last
/// `HISTORY_RUNS` runs, a run of more tests than one script call takes is whole.
#[tokio::test]
async fn history_is_appended_bounded_and_read_back() {
    use shardex_core::history::{RunIdentity, RunOutcome, TestRun, HISTORY_RUNS};
    let s = RedisServer::start();
    let mut a = node(&s, "", 0, opts(10)).await;
    let mut b = node(&s, "", 1, opts(10)).await;
    let run = |n: u64| RunIdentity {
        id: format!("{n}.r"),
        code: "git:abc".into(),
        at: n,
    };
    let many: Vec<TestRun> = (0..1500)
        .map(|i| TestRun {
            id: id(i),
            outcome: RunOutcome::Passed,
            secs: 0.5,
            failure: None,
        })
        .collect();
    a.write_history("proj/h", &run(1), &many).await.unwrap();
    for n in 0..60u64 {
        let failed = n % 2 == 1;
        let t = TestRun {
            id: id(0),
            outcome: if failed {
                RunOutcome::Failed
            } else {
                RunOutcome::Passed
            },
            secs: 1.0,
            failure: failed.then(|| format!("boom {n}")),
        };
        let remote = if failed { &mut b } else { &mut a };
        remote
            .write_history("proj/h", &run(n + 2), &[t])
            .await
            .unwrap();
    }
    let evidence = b.read_history("proj/h").await.unwrap();
    let flaky = evidence.flaky();
    assert_eq!(flaky.len(), 1, "{flaky:?}");
    assert_eq!(flaky[0].id, id(0));
    assert_eq!(
        (flaky[0].runs, flaky[0].failed),
        (HISTORY_RUNS, HISTORY_RUNS / 2)
    );
    assert_eq!(flaky[0].last_failure.as_ref().unwrap().message, "boom 59");
    assert_eq!(evidence.slowest().0.len(), 1500);
    assert!(b.read_history("other").await.unwrap().is_empty());
    let mut c = s.raw().await;
    let ttl: i64 = redis::cmd("TTL")
        .arg(&history_keys("proj/h")[0])
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(ttl > 29 * 24 * 3600, "{ttl}");
}

#[test]
fn build_ids_cannot_break_the_hash_tag() {
    assert_eq!(key_prefix("123-abc_x.y:z/w"), "{shardex:123-abc_x.y:z/w}");
    assert_eq!(key_prefix("a}b {c"), "{shardex:a%7Db%20%7Bc}");
}

// ---------------------------------------------------------------- TLS and ACL

/// A CA, a server certificate for 127.0.0.1 signed by it, and an ACL file with user `ci`.
fn tls_server() -> (RedisServer, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    make_certs(p);
    std::fs::write(
        p.join("users.acl"),
        "user default off\nuser ci on >s3cret-pw ~* &* +@all\n",
    )
    .unwrap();
    let mut extra = Vec::new();
    for (flag, file) in [
        ("--tls-cert-file", "server.pem"),
        ("--tls-key-file", "server.key"),
        ("--tls-ca-cert-file", "ca.pem"),
        ("--aclfile", "users.acl"),
    ] {
        extra.push(flag.to_string());
        extra.push(p.join(file).to_string_lossy().into_owned());
    }
    extra.extend(["--tls-auth-clients".to_string(), "no".to_string()]);
    let mut s = RedisServer::start_with(extra, true);
    let ca = p.join("ca.pem");
    s.certs = Some(d);
    (s, ca)
}

#[tokio::test]
async fn tls_with_a_private_ca_and_an_acl_user() {
    let (s, ca) = tls_server();
    let url = QueueUrl::parse(&format!("rediss://ci:s3cret-pw@127.0.0.1:{}", s.port)).unwrap();
    let with_ca = RemoteOptions {
        ca_file: Some(ca.clone()),
        ..opts(10_000)
    };
    let mut r = Remote::connect(&url, "b", 0, with_ca.clone())
        .await
        .unwrap();
    assert!(
        r.join(&plan(3, 1, 10), Duration::from_secs(2))
            .await
            .unwrap()
            .seeded_here
    );
    assert_eq!(tests_of(r.take(5, 100).await.unwrap()).len(), 3);

    // The system store does not know the private CA.
    let e = Remote::connect(&url, "b", 0, opts(10_000))
        .await
        .unwrap_err();
    let RemoteError::Unreachable(m) = &e else {
        panic!("{e:?}")
    };
    assert!(
        m.contains("certificate") && m.contains("SHARDEX_REDIS_CA"),
        "{m}"
    );

    let wrong = QueueUrl::parse(&format!("rediss://ci:not-the-pw@127.0.0.1:{}", s.port)).unwrap();
    let e = Remote::connect(&wrong, "b", 0, with_ca).await.unwrap_err();
    let shown = format!("{e} {e:?}");
    assert!(shown.contains("authentication failed for ci"), "{shown}");
    assert!(
        !shown.contains("not-the-pw") && !shown.contains("s3cret-pw"),
        "{shown}"
    );
}

#[tokio::test]
async fn big_batches_stay_within_luas_limits() {
    let s = RedisServer::start();
    // One entry of 9,000 tests (a big scope stays together), more than Lua's unpack takes.
    let ids: Vec<TestId> = (0..9000).map(id).collect();
    let mut nodes = joined(
        &s,
        "b",
        &plan_of(vec![vec![Entry {
            ids,
            micros: 9_000_000,
        }]]),
        10_000,
    )
    .await;
    let got = tests_of(nodes[0].take(1, 1).await.unwrap());
    assert_eq!(got.len(), 9000);
    let trips = nodes[0].round_trips();
    let firsts = nodes[0]
        .ack(&got.iter().map(ack_of).collect::<Vec<_>>(), 0)
        .await
        .unwrap();
    assert!(firsts.len() == 9000 && firsts.iter().all(|f| *f));
    assert_eq!(
        nodes[0].round_trips() - trips,
        9,
        "one round trip per 1,000 acks"
    );
    assert_eq!(nodes[0].take(1, 1).await.unwrap(), Taken::Exhausted);
}
