//! Helpers shared by the Redis client's integration tests (`redis_queue.rs`,
//! `redis_cluster.rs`): finding the servers, free ports, certificates, seed plans.
#![allow(dead_code)] // each test file uses its own part

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use shardex_agent::queue::redis::{collection_digest, Ack, Entry, Leased, SeedPlan, Taken};
use shardex_core::TestId;

/// `name` (redis-server, redis-cli) on PATH or in Debian's folders; `SHARDEX_REDIS_SERVER`
/// overrides redis-server. A missing one fails the test, saying how to get it.
pub fn bin(name: &str) -> PathBuf {
    if name == "redis-server" {
        if let Some(p) = std::env::var_os("SHARDEX_REDIS_SERVER") {
            return PathBuf::from(p);
        }
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([
            "/usr/bin".into(),
            "/usr/sbin".into(),
            "/usr/local/bin".into(),
        ])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "{name} not found on PATH: run scripts/setup.sh (it installs Debian's \
                 redis-server, which brings redis-cli)"
            )
        })
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `openssl` with whitespace-separated arguments, in `dir`.
pub fn openssl(dir: &Path, args: &str) {
    let st = Command::new("openssl")
        .args(args.split_whitespace())
        .current_dir(dir)
        .stderr(Stdio::null())
        .status();
    assert!(st.expect("openssl").success(), "openssl {args}");
}

pub fn id(i: usize) -> TestId {
    TestId::new(format!("tests/test_m.py::test_{i:04}"))
}

/// `n` tests of `micros` each, dealt to `nodes` lists round robin, one test per entry.
pub fn plan(n: usize, nodes: usize, micros: u64) -> SeedPlan {
    let sorted_ids: Vec<TestId> = (0..n).map(id).collect();
    let mut lists = vec![Vec::new(); nodes];
    for (i, t) in sorted_ids.iter().enumerate() {
        lists[i % nodes].push(Entry {
            ids: vec![t.clone()],
            micros,
        });
    }
    plan_of(lists)
}

pub fn plan_of(lists: Vec<Vec<Entry>>) -> SeedPlan {
    let mut sorted_ids: Vec<TestId> = lists.iter().flatten().flat_map(|e| e.ids.clone()).collect();
    sorted_ids.sort();
    SeedPlan {
        digest: collection_digest(&sorted_ids),
        lists,
        sorted_ids,
    }
}

pub fn tests_of(t: Taken) -> Vec<Leased> {
    match t {
        Taken::Tests(v) => v,
        other => panic!("expected tests, got {other:?}"),
    }
}

pub fn ack_of(l: &Leased) -> Ack {
    Ack {
        id: l.id.clone(),
        lease: l.lease,
        hard_failure: false,
    }
}

/// In `p`: a CA (`ca.pem`) and a certificate for 127.0.0.1 signed by it (`server.pem`,
/// `server.key`), for a server's (and a cluster bus's) TLS.
pub fn make_certs(p: &Path) {
    openssl(p, "req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=shardex-test-CA");
    openssl(
        p,
        "req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=127.0.0.1",
    );
    std::fs::write(
        p.join("san.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .unwrap();
    openssl(
        p,
        "x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 -extfile san.ext",
    );
}
