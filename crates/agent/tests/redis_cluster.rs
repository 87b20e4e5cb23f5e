//! The shared queue's client against a real 3-master Redis Cluster (no replicas) on 127.0.0.1:
//! three `redis-server --cluster-enabled yes` on free ports with a private directory, joined by
//! `redis-cli --cluster create`, killed when the test ends. The `Remote`s are given the URL of
//! one master only; builds are picked so that their hash tags live on the other masters, so
//! every call needs the cluster's routing (a plain connection would get `MOVED`).

use std::collections::{HashMap, HashSet};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use shardex_agent::queue::redis::{
    key_prefix, timings_key, QueueUrl, Remote, RemoteError, RemoteOptions, SeedPlan, Taken,
};
use shardex_core::TestId;

mod support;
use support::*;

const PASSWORD: &str = "s3cret-pw";
/// `ci` may do anything; `noinfo` may not run `INFO` (the client's cluster probe), so that it
/// finds the cluster at the first `MOVED`.
const ACL: &str = "user default off\n\
                   user ci on >s3cret-pw ~* &* +@all\n\
                   user noinfo on >s3cret-pw ~* &* +@all -info\n";

// ---------------------------------------------------------------- a private cluster

struct Cluster {
    children: Vec<Child>,
    ports: Vec<u16>,
    dir: tempfile::TempDir,
    /// TLS only (the plain ports off), with a CA made here: `dir/ca.pem`.
    tls: bool,
    /// (first slot, last slot, port) of each master's ranges.
    slots: Vec<(u16, u16, u16)>,
}

impl Cluster {
    fn start() -> Cluster {
        Self::start_with(false)
    }

    fn start_with(tls: bool) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("users.acl"), ACL).unwrap();
        if tls {
            make_certs(dir.path());
        }
        let mut c = Cluster {
            children: Vec::new(),
            ports: Vec::new(),
            dir,
            tls,
            slots: Vec::new(),
        };
        for _ in 0..3 {
            c.spawn_node();
        }
        let mut create = vec!["--cluster".to_string(), "create".to_string()];
        create.extend(c.ports.iter().map(|p| format!("127.0.0.1:{p}")));
        create.extend(["--cluster-replicas", "0", "--cluster-yes"].map(String::from));
        let out = c.cli_output(&create);
        assert!(out.contains("All 16384 slots covered"), "{out}");
        c.wait_ok();
        c.slots = c.read_slots();
        c
    }

    fn spawn_node(&mut self) {
        let port = free_port();
        // The bus port too (the default, port + 10000, may be taken or above 65535).
        let bus = free_port();
        let d = self.dir.path();
        let mut cmd = Command::new(bin("redis-server"));
        if self.tls {
            cmd.args(["--port", "0", "--tls-port", &port.to_string()])
                .args(["--tls-cluster", "yes", "--tls-auth-clients", "no"]);
            for (flag, file) in [
                ("--tls-cert-file", "server.pem"),
                ("--tls-key-file", "server.key"),
                ("--tls-ca-cert-file", "ca.pem"),
            ] {
                cmd.arg(flag).arg(d.join(file));
            }
        } else {
            cmd.args(["--port", &port.to_string()]);
        }
        let child = cmd
            .args(["--bind", "127.0.0.1"])
            .args([
                "--cluster-enabled",
                "yes",
                "--cluster-port",
                &bus.to_string(),
            ])
            .arg("--cluster-config-file")
            .arg(d.join(format!("nodes-{port}.conf")))
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(d)
            .arg("--aclfile")
            .arg(d.join("users.acl"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.children.push(child);
        self.ports.push(port);
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "redis-server did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs redis-cli as user `ci` (options before the command); its stdout.
    fn cli_output(&self, args: &[String]) -> String {
        // Under coreutils' timeout: `--cluster create` waits for the nodes to agree, forever.
        let mut cmd = Command::new("timeout");
        cmd.arg("60").arg(bin("redis-cli"));
        if self.tls {
            cmd.args(["--tls", "--cacert"]).arg(self.ca());
        }
        let out = cmd
            .args(["--user", "ci", "--pass", PASSWORD, "--no-auth-warning"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run redis-cli");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "redis-cli failed: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        text
    }

    fn cli(&self, port: u16, args: &[&str]) -> String {
        let mut all = vec!["-p".to_string(), port.to_string()];
        all.extend(args.iter().map(|a| a.to_string()));
        self.cli_output(&all)
    }

    fn wait_ok(&self) {
        let start = Instant::now();
        for &p in &self.ports {
            while !self
                .cli(p, &["CLUSTER", "INFO"])
                .contains("cluster_state:ok")
            {
                assert!(
                    start.elapsed() < Duration::from_secs(30),
                    "the cluster is not ok: {}",
                    self.cli(p, &["CLUSTER", "INFO"])
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    /// From `CLUSTER NODES`: `<id> 127.0.0.1:<port>@<bus> <flags> … <from>-<to> …`.
    fn read_slots(&self) -> Vec<(u16, u16, u16)> {
        let mut out = Vec::new();
        for line in self.cli(self.ports[0], &["CLUSTER", "NODES"]).lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            let port: u16 = f[1]
                .split(['@'])
                .next()
                .and_then(|a| a.rsplit(':').next())
                .and_then(|p| p.parse().ok())
                .unwrap_or_else(|| panic!("{line}"));
            for range in f.iter().skip(8) {
                let (a, b) = range.split_once('-').unwrap_or((range, range));
                out.push((a.parse().unwrap(), b.parse().unwrap(), port));
            }
        }
        assert_eq!(out.iter().map(|(a, b, _)| b - a + 1).sum::<u16>(), 16384);
        out
    }

    /// The port of the master holding `key`'s slot.
    fn owner(&self, key: &str) -> u16 {
        let slot: u16 = self
            .cli(self.ports[0], &["CLUSTER", "KEYSLOT", key])
            .trim()
            .parse()
            .unwrap();
        self.slots
            .iter()
            .find(|(a, b, _)| (*a..=*b).contains(&slot))
            .map(|(_, _, p)| *p)
            .unwrap()
    }

    /// A build id whose hash tag lives on `port`.
    fn build_on(&self, port: u16) -> String {
        (0..1000)
            .map(|i| format!("build-{i}"))
            .find(|b| self.owner(&key_prefix(b)) == port)
            .unwrap()
    }

    fn url(&self, user: &str, port: u16) -> QueueUrl {
        let scheme = if self.tls { "rediss" } else { "redis" };
        QueueUrl::parse(&format!("{scheme}://{user}:{PASSWORD}@127.0.0.1:{port}")).unwrap()
    }

    fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A plain (not cluster) connection to one node, to look at the keys it holds.
    async fn raw(&self, port: u16) -> redis::aio::MultiplexedConnection {
        let url = format!("redis://ci:{PASSWORD}@127.0.0.1:{port}");
        let c = redis::Client::open(url).unwrap();
        c.get_multiplexed_async_connection().await.unwrap()
    }
}

impl Cluster {
    fn kill(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.kill();
    }
}

// ---------------------------------------------------------------- plans and nodes

fn opts(lease_floor_ms: u64) -> RemoteOptions {
    RemoteOptions {
        call_timeout: Duration::from_millis(3000),
        connect_timeout: Duration::from_millis(3000),
        lease_floor: Duration::from_millis(lease_floor_ms),
        ..RemoteOptions::default()
    }
}

async fn joined(url: &QueueUrl, build: &str, p: &SeedPlan, floor_ms: u64) -> Vec<Remote> {
    let mut out = Vec::new();
    for k in 0..p.lists.len() as u32 {
        let mut r = Remote::connect(url, build, k, opts(floor_ms))
            .await
            .unwrap();
        r.join(p, Duration::from_secs(5)).await.unwrap();
        assert!(r.is_cluster());
        out.push(r);
    }
    out
}

/// One node's loop: take, renew what it holds, acknowledge; the ids it acknowledged first.
async fn drain(url: QueueUrl, build: String, k: u32, p: SeedPlan) -> (Vec<TestId>, usize) {
    let mut r = Remote::connect(&url, &build, k, opts(10_000))
        .await
        .unwrap();
    assert!(r.is_cluster(), "a cluster node is found on connect");
    r.join(&p, Duration::from_secs(10)).await.unwrap();
    let (mut firsts, mut taken) = (Vec::new(), 0);
    loop {
        let trips = r.round_trips();
        let t = r.take(5, 10_000).await.unwrap();
        assert_eq!(r.round_trips(), trips + 1, "a take is one round trip");
        match t {
            Taken::Tests(v) => {
                taken += v.len();
                // Node 2 is slow: the others steal from its list.
                tokio::time::sleep(Duration::from_millis(if k == 2 { 15 } else { 1 })).await;
                let held: Vec<(TestId, u64)> = v.iter().map(|l| (l.id.clone(), l.lease)).collect();
                assert_eq!(r.renew(&held).await.unwrap(), None);
                let ok = r
                    .ack(&v.iter().map(ack_of).collect::<Vec<_>>(), 0)
                    .await
                    .unwrap();
                firsts.extend(v.into_iter().zip(ok).filter(|(_, f)| *f).map(|(l, _)| l.id));
            }
            Taken::Drained => tokio::time::sleep(Duration::from_millis(5)).await,
            Taken::Exhausted => return (firsts, taken),
            Taken::Stopped(r) => panic!("stopped: {r}"),
        }
    }
}

// ---------------------------------------------------------------- tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_builds_on_other_masters_are_each_drained_exactly_once() {
    let c = Cluster::start();
    let url = c.url("ci", c.ports[0]);
    let builds = [c.build_on(c.ports[1]), c.build_on(c.ports[2])];
    let n = 150;
    let p = plan(n, 3, 2000);
    let mut tasks = Vec::new();
    for b in &builds {
        for k in 0..3u32 {
            tasks.push(tokio::spawn(drain(url.clone(), b.clone(), k, p.clone())));
        }
    }
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }
    for (b, (build, per_build)) in builds.iter().zip(results.chunks(3)).enumerate() {
        let mut seen = HashSet::new();
        for (firsts, taken) in per_build {
            assert_eq!(
                firsts.len(),
                *taken,
                "no lease expired: every ack was first"
            );
            for f in firsts {
                assert!(
                    seen.insert(f.clone()),
                    "{build}: {f} acknowledged first twice"
                );
            }
        }
        assert_eq!(seen.len(), n, "{build}: every test acknowledged");
        // The build's keys sit on its own master, nowhere else.
        let owner = c.ports[b + 1];
        let pre = key_prefix(build);
        let mut raw = c.raw(owner).await;
        let done: usize = redis::cmd("HLEN")
            .arg(format!("{pre}:done"))
            .query_async(&mut raw)
            .await
            .unwrap();
        let runs: HashMap<String, u32> = redis::cmd("HGETALL")
            .arg(format!("{pre}:runs"))
            .query_async(&mut raw)
            .await
            .unwrap();
        assert_eq!(done, n);
        assert!(runs.len() == n && runs.values().all(|r| *r == 1));
        let mut elsewhere = c.raw(c.ports[0]).await;
        let e = redis::cmd("HLEN")
            .arg(format!("{pre}:done"))
            .query_async::<usize>(&mut elsewhere)
            .await
            .unwrap_err();
        assert_eq!(
            e.kind(),
            redis::ErrorKind::Server(redis::ServerErrorKind::Moved),
            "{e}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_stop_timings_and_job_state_in_a_cluster() {
    let c = Cluster::start();
    let url = c.url("ci", c.ports[0]);
    let build = c.build_on(c.ports[2]);

    // Reclaim and fencing: node 0's lease expires, node 1 takes the test over.
    let mut nodes = joined(&url, &build, &plan(1, 2, 10), 200).await;
    let first = tests_of(nodes[0].take(1, 1).await.unwrap()).remove(0);
    assert_eq!(nodes[1].take(1, 1).await.unwrap(), Taken::Drained);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let again = tests_of(nodes[1].take(1, 1).await.unwrap()).remove(0);
    assert!(again.id == first.id && again.reclaimed && again.lease > first.lease);
    // Renewal keeps node 1's lease past its deadline; node 0's stale one is not extended.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(120)).await;
        let held = [(again.id.clone(), again.lease)];
        assert_eq!(nodes[1].renew(&held).await.unwrap(), None);
        let stale = [(first.id.clone(), first.lease)];
        assert_eq!(nodes[0].renew(&stale).await.unwrap(), None);
    }
    assert_eq!(
        nodes[0].take(1, 1).await.unwrap(),
        Taken::Drained,
        "still leased"
    );
    assert_eq!(nodes[0].ack(&[ack_of(&first)], 0).await.unwrap(), [false]);
    assert_eq!(nodes[1].ack(&[ack_of(&again)], 0).await.unwrap(), [true]);
    assert_eq!(nodes[0].take(1, 1).await.unwrap(), Taken::Exhausted);

    // Timings (their own slot) and the job's state.
    nodes[0]
        .write_timings("proj/x", &[(id(1), 1.5), (id(2), 0.25)])
        .await
        .unwrap();
    let mut t = nodes[1].read_timings("proj/x").await.unwrap();
    t.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(t, [(id(1), 1.5), (id(2), 0.25)]);
    let mut raw = c.raw(c.owner(&timings_key("proj/x"))).await;
    let ttl: i64 = redis::cmd("TTL")
        .arg(timings_key("proj/x"))
        .query_async(&mut raw)
        .await
        .unwrap();
    assert!(ttl > 29 * 24 * 3600, "{ttl}");
    nodes[1].publish_report(r#"{"node":1}"#).await.unwrap();
    let st = nodes[0].job_state().await.unwrap().unwrap();
    assert_eq!(
        (st.nodes, st.count, st.reports),
        (2, 1, vec![(1, r#"{"node":1}"#.to_string())])
    );
    let mut never = Remote::connect(&url, &c.build_on(c.ports[1]), 0, opts(10))
        .await
        .unwrap();
    assert_eq!(never.job_state().await.unwrap(), None);

    // maxfail on one node stops the other, through take and renew.
    let build = c.build_on(c.ports[1]);
    let mut nodes = joined(&url, &build, &plan(6, 2, 10), 10_000).await;
    let mut fail = ack_of(&tests_of(nodes[0].take(1, 1).await.unwrap())[0]);
    fail.hard_failure = true;
    let held = tests_of(nodes[1].take(1, 1).await.unwrap());
    assert_eq!(nodes[0].ack(&[fail], 1).await.unwrap(), [true]);
    let Taken::Stopped(reason) = nodes[1].take(1, 1).await.unwrap() else {
        panic!("the stop flag is seen by take")
    };
    let held = [(held[0].id.clone(), held[0].lease)];
    assert_eq!(nodes[1].renew(&held).await.unwrap(), Some(reason));
}

#[tokio::test]
async fn an_acl_user_without_info_finds_the_cluster_at_the_first_moved() {
    let c = Cluster::start();
    let build = c.build_on(c.ports[1]);
    let url = c.url("noinfo", c.ports[0]);
    let mut r = Remote::connect(&url, &build, 0, opts(10_000))
        .await
        .unwrap();
    assert!(!r.is_cluster(), "INFO is refused: not known yet");
    let trips = r.round_trips();
    let j = r
        .join(&plan(4, 1, 10), Duration::from_secs(5))
        .await
        .unwrap();
    assert!(j.seeded_here && r.is_cluster());
    assert_eq!(
        r.round_trips() - trips,
        2,
        "SET NX and the seed script, each counted once"
    );
    assert_eq!(tests_of(r.take(10, 1000).await.unwrap()).len(), 4);

    // A wrong password is refused on the cluster as on a single server, and never shown.
    let wrong = QueueUrl::parse(&format!("redis://ci:not-the-pw@127.0.0.1:{}", c.ports[2]));
    let e = Remote::connect(&wrong.unwrap(), &build, 0, opts(10))
        .await
        .unwrap_err();
    let shown = format!("{e} {e:?}");
    assert!(matches!(e, RemoteError::Unreachable(_)), "{shown}");
    assert!(shown.contains("authentication failed for ci"), "{shown}");
    assert!(
        !shown.contains("not-the-pw") && !shown.contains(PASSWORD),
        "{shown}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_private_ca_and_an_acl_user_on_every_master() {
    let c = Cluster::start_with(true);
    let url = c.url("ci", c.ports[0]);
    let with_ca = RemoteOptions {
        ca_file: Some(c.ca()),
        ..opts(10_000)
    };
    // Two builds on the other masters: both need the CA and the user on a node the URL
    // does not name.
    for port in [c.ports[1], c.ports[2]] {
        let build = c.build_on(port);
        let p = plan(6, 2, 10);
        let mut nodes = Vec::new();
        for k in 0..2 {
            let mut r = Remote::connect(&url, &build, k, with_ca.clone())
                .await
                .unwrap();
            r.join(&p, Duration::from_secs(5)).await.unwrap();
            assert!(r.is_cluster());
            nodes.push(r);
        }
        let mut acked = 0;
        for r in &mut nodes {
            while let Taken::Tests(v) = r.take(2, 1).await.unwrap() {
                let firsts = r.ack(&v.iter().map(ack_of).collect::<Vec<_>>(), 0).await;
                acked += firsts.unwrap().into_iter().filter(|f| *f).count();
            }
        }
        assert_eq!(acked, 6);
        assert_eq!(nodes[0].take(1, 1).await.unwrap(), Taken::Exhausted);
    }
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
}

#[tokio::test]
async fn a_dead_cluster_is_an_error_within_the_call_timeout() {
    let mut c = Cluster::start();
    let url = c.url("ci", c.ports[0]);
    let build = c.build_on(c.ports[1]);
    let o = RemoteOptions {
        call_timeout: Duration::from_millis(1000),
        ..opts(10_000)
    };
    let mut r = Remote::connect(&url, &build, 0, o.clone()).await.unwrap();
    r.join(&plan(4, 1, 10), Duration::from_secs(5))
        .await
        .unwrap();
    c.kill();
    for _ in 0..2 {
        let start = Instant::now();
        let e = r.take(1, 1).await.unwrap_err();
        assert!(
            matches!(e, RemoteError::Unreachable(_) | RemoteError::Timeout(_)),
            "{e:?}"
        );
        assert!(
            start.elapsed() < Duration::from_millis(1500),
            "{:?}",
            start.elapsed()
        );
    }
    let start = Instant::now();
    assert!(Remote::connect(&url, &build, 0, o).await.is_err());
    assert!(
        start.elapsed() < Duration::from_millis(3500),
        "{:?}",
        start.elapsed()
    );
}

/// A single redis-server (not a cluster), killed on drop; its directory removed after it.
struct Single(Child, #[allow(dead_code)] tempfile::TempDir);

impl Drop for Single {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn a_single_redis_stays_on_the_plain_path() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let child = Command::new(bin("redis-server"))
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no", "--dir"])
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start redis-server");
    let _server = Single(child, dir);
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(start.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(20));
    }
    // Database 2: a single server has several (a cluster only 0).
    let url = QueueUrl::parse(&format!("redis://127.0.0.1:{port}/2")).unwrap();
    let mut r = Remote::connect(&url, "b", 0, opts(10_000)).await.unwrap();
    r.join(&plan(3, 1, 10), Duration::from_secs(5))
        .await
        .unwrap();
    assert!(!r.is_cluster());
    assert_eq!(tests_of(r.take(5, 100).await.unwrap()).len(), 3);
}
