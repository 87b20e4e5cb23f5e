//! The shared queue's client: one `Remote` per node (CI container) talks to a Redis that all
//! nodes reach. Layout and meaning of the keys: docs/ARCHITECTURE.md ("The shared queue");
//! every key of a build sits
//! under one hash tag `{shardex:<build>}` so that Redis Cluster keeps a build on one slot, and
//! the Lua scripts (`scripts/*.lua`) do each batch take, renewal and acknowledgement in one
//! round trip, with Redis's own clock for every deadline.

mod conn;
mod url;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use redis::{Script, Value};
use shardex_core::history::{
    evidence_from_remote, remote_entry, Evidence, RunIdentity, TestRun, HISTORY_RUNS,
};
use shardex_core::TestId;

use conn::{Conn, Request};
pub use shardex_core::queue_plan::{
    collection_digest, decode_entry, encode_entry, first_differences, lease_millis, Entry, SeedPlan,
};
pub use url::QueueUrl;

/// Leases last `LEASE_FACTOR` × the test's expected duration (at least the floor).
pub const LEASE_FACTOR: u32 = 3;
/// How many differing ids a `CollectionDiffers` names.
const DIFFERENCES_SHOWN: usize = 5;
const SEED_POLL: Duration = Duration::from_millis(50);
const MIN_SEED_MARKER: Duration = Duration::from_secs(5);
/// Acknowledgements per script call (the script unpacks the ids: Lua's stack has ~8,000 slots).
const ACK_CHUNK: usize = 1000;
/// Runs whose identity (code) a project's history keeps: every node of a job is a run.
const HISTORY_RUN_IDS: usize = 5000;
/// The project's timings and history live this long after their last write.
const PROJECT_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

#[derive(Clone, Debug)]
pub struct RemoteOptions {
    /// The deadline of every call.
    pub call_timeout: Duration,
    pub connect_timeout: Duration,
    /// TTL of every key of the build.
    pub ttl: Duration,
    /// The shortest lease (`--queue-lease`).
    pub lease_floor: Duration,
    /// A PEM CA for `rediss://`; `None`: `SHARDEX_REDIS_CA` if set, else the system store.
    pub ca_file: Option<PathBuf>,
}

impl Default for RemoteOptions {
    fn default() -> Self {
        RemoteOptions {
            call_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            ttl: Duration::from_secs(12 * 3600),
            lease_floor: Duration::from_secs(10),
            ca_file: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RemoteError {
    #[error("unreachable: {0}")]
    Unreachable(String),
    #[error("no answer within the call timeout ({0})")]
    Timeout(&'static str),
    #[error(
        "no node seeded the shared queue within {} s (the seeding node may have died; \
         rerun the job)", .0.as_secs()
    )]
    SeedTimeout(Duration),
    #[error("the queue's data is gone (Redis restarted without persistence, or evicted it)")]
    Lost,
    #[error(
        "this node collected {ours} tests, the queue was seeded by node {} with {theirs}; \
         first differences: {} (every node must collect the same tests: the same \
         dependencies, paths and -k/-m)", seeded_by + 1, differences.join(", ")
    )]
    CollectionDiffers {
        ours: usize,
        theirs: usize,
        /// From 0 (shown from 1, as the header's node numbers).
        seeded_by: u32,
        differences: Vec<String>,
    },
    #[error("unexpected answer from Redis: {0}")]
    Protocol(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Joined {
    pub seeded_here: bool,
    pub seeded_by: u32,
    /// This node's list as seeded (what it runs alone if the queue is lost).
    pub share: Vec<Entry>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leased {
    pub id: TestId,
    pub lease: u64,
    pub micros: u64,
    /// Taken over from an expired lease of another node (or of this one).
    pub reclaimed: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Taken {
    Tests(Vec<Leased>),
    /// The lists are empty but leases are in flight elsewhere: ask again later.
    Drained,
    /// Every test is acknowledged.
    Exhausted,
    Stopped(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    pub id: TestId,
    pub lease: u64,
    pub hard_failure: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobState {
    pub nodes: u32,
    pub count: usize,
    /// (node, report JSON) of the nodes that published theirs.
    pub reports: Vec<(u32, String)>,
}

struct Scripts {
    seed: Script,
    take: Script,
    ack: Script,
    renew: Script,
    history: Script,
}

impl Scripts {
    fn new() -> Scripts {
        Scripts {
            seed: Script::new(include_str!("scripts/seed.lua")),
            take: Script::new(include_str!("scripts/take.lua")),
            ack: Script::new(include_str!("scripts/ack.lua")),
            renew: Script::new(include_str!("scripts/renew.lua")),
            history: Script::new(include_str!("scripts/history.lua")),
        }
    }
}

pub struct Remote {
    conn: Conn,
    scripts: Scripts,
    /// `{shardex:<build>}`
    prefix: String,
    node: u32,
    nodes: u32,
    opts: RemoteOptions,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Remote({}, node {})", self.prefix, self.node)
    }
}

/// `{shardex:<build>}` with the build id percent-encoded outside `[A-Za-z0-9._:/-]`, so that no
/// build id can break the hash tag (a `}`) or collide with another build's keys.
pub fn key_prefix(build: &str) -> String {
    format!("{{shardex:{}}}", encode_name(build))
}

/// The timings hash of a project (its own hash tag: only plain commands touch it).
pub fn timings_key(project: &str) -> String {
    format!("{{shardex:timings}}:{}", encode_name(project))
}

/// The history of a project: its tests' lines, its runs, its tests' last failures (one hash
/// tag: the script that appends a run touches all three).
pub fn history_keys(project: &str) -> [String; 3] {
    let project = encode_name(project);
    ["tests", "runs", "fail"].map(|part| format!("{{shardex:history}}:{part}:{project}"))
}

fn encode_name(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"._:/-".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn secs(d: Duration) -> u64 {
    d.as_secs().max(1)
}

impl Remote {
    /// Connects (and authenticates) now: an unreachable Redis or a refused password is known
    /// before the run starts.
    pub async fn connect(
        url: &QueueUrl,
        build: &str,
        node: u32,
        opts: RemoteOptions,
    ) -> Result<Remote, RemoteError> {
        let ca = opts
            .ca_file
            .clone()
            .or_else(|| std::env::var_os("SHARDEX_REDIS_CA").map(PathBuf::from));
        let mut conn = Conn::new(url, ca, opts.call_timeout, opts.connect_timeout)?;
        conn.open().await?;
        Ok(Remote {
            conn,
            scripts: Scripts::new(),
            prefix: key_prefix(build),
            node,
            nodes: 0,
            opts,
        })
    }

    pub fn round_trips(&self) -> u64 {
        self.conn.round_trips()
    }

    pub fn node(&self) -> u32 {
        self.node
    }

    /// Whether the calls go to a Redis Cluster (found on connect, or at the first `MOVED`).
    pub fn is_cluster(&self) -> bool {
        self.conn.is_cluster()
    }

    fn key(&self, name: &str) -> String {
        format!("{}:{name}", self.prefix)
    }

    /// Seeds the queue when this node wins the election, else waits up to `wait` for the
    /// winner; then checks that both collected the same tests.
    pub async fn join(&mut self, plan: &SeedPlan, wait: Duration) -> Result<Joined, RemoteError> {
        self.nodes = u32::try_from(plan.lists.len())
            .map_err(|_| RemoteError::Protocol("too many nodes".into()))?;
        let start = Instant::now();
        loop {
            // The marker outlives the seed call (the plan is computed before) but not a dead
            // seeder: then a waiting node finds it gone and seeds instead.
            let marker_ttl = (2 * self.opts.call_timeout).max(MIN_SEED_MARKER);
            let mut set = redis::cmd("SET");
            set.arg(self.key("seed"))
                .arg(format!("seeding {}", self.node))
                .arg("NX")
                .arg("EX")
                .arg(secs(marker_ttl));
            let won: Option<String> = self.conn.call("join", Request::Cmd(&set)).await?;
            if won.is_some() && self.seed(plan).await? {
                let share = plan
                    .lists
                    .get(self.node as usize)
                    .cloned()
                    .unwrap_or_default();
                return Ok(Joined {
                    seeded_here: true,
                    seeded_by: self.node,
                    share,
                });
            }
            // Someone else seeds: wait for `ready` (a vanished key: the seeder's marker expired
            // or Redis restarted; compete again).
            loop {
                let get = redis::cmd("GET").arg(self.key("seed")).to_owned();
                let state: Option<String> = self.conn.call("join", Request::Cmd(&get)).await?;
                match state.as_deref() {
                    Some("ready") => return self.check_joined(plan).await,
                    None => break,
                    Some(_) if start.elapsed() >= wait => {
                        return Err(RemoteError::SeedTimeout(wait))
                    }
                    Some(_) => tokio::time::sleep(SEED_POLL).await,
                }
            }
        }
    }

    /// Pushes the plan (one script call: `ready` comes last, atomically). False: not ours.
    async fn seed(&mut self, plan: &SeedPlan) -> Result<bool, RemoteError> {
        let ids: Vec<&str> = plan.sorted_ids.iter().map(TestId::as_str).collect();
        let mut inv = self.scripts.seed.key(self.key("seed"));
        inv.arg(&self.prefix)
            .arg(self.node)
            .arg(secs(self.opts.ttl))
            .arg(&plan.digest)
            .arg(plan.sorted_ids.len())
            .arg(ids.join("\n"))
            .arg(plan.lists.len());
        for list in &plan.lists {
            inv.arg(list.len());
            for e in list {
                inv.arg(encode_entry(e));
            }
        }
        let done: i64 = self.conn.call("join", Request::Script(&inv)).await?;
        Ok(done == 1)
    }

    async fn check_joined(&mut self, plan: &SeedPlan) -> Result<Joined, RemoteError> {
        let mut p = redis::pipe();
        p.cmd("HMGET")
            .arg(self.key("meta"))
            .arg(&["nodes", "count", "digest", "seeded_by"]);
        p.cmd("LRANGE")
            .arg(self.key(&format!("q:{}", self.node)))
            .arg(0)
            .arg(-1);
        type Meta = (Option<u32>, Option<usize>, Option<String>, Option<u32>);
        let ((nodes, count, digest, seeded_by), list): (Meta, Vec<String>) =
            self.conn.call("join", Request::Pipe(&p)).await?;
        let (Some(nodes), Some(count), Some(digest), Some(seeded_by)) =
            (nodes, count, digest, seeded_by)
        else {
            return Err(RemoteError::Lost);
        };
        if digest != plan.digest {
            let get = redis::cmd("GET").arg(self.key("ids")).to_owned();
            let theirs: Option<String> = self.conn.call("join", Request::Cmd(&get)).await?;
            let theirs: Vec<TestId> = theirs
                .unwrap_or_default()
                .split('\n')
                .filter(|s| !s.is_empty())
                .map(TestId::new)
                .collect();
            let differences = first_differences(&plan.sorted_ids, &theirs, DIFFERENCES_SHOWN);
            return Err(RemoteError::CollectionDiffers {
                ours: plan.sorted_ids.len(),
                theirs: count,
                seeded_by,
                differences,
            });
        }
        if nodes != self.nodes {
            return Err(RemoteError::Protocol(format!(
                "the queue was seeded for {nodes} nodes, this node counts {}",
                self.nodes
            )));
        }
        let share = list
            .iter()
            .map(|s| decode_entry(s).ok_or_else(|| bad_entry(s)))
            .collect::<Result<_, _>>()?;
        Ok(Joined {
            seeded_here: false,
            seeded_by,
            share,
        })
    }

    /// One batch: expired leases first, then the head of this node's list, else the tail of
    /// the list with most time left. One script call.
    pub async fn take(&mut self, max_tests: u32, want_micros: u64) -> Result<Taken, RemoteError> {
        let mut inv = self.scripts.take.key(self.key("seed"));
        inv.arg(&self.prefix)
            .arg(self.node)
            .arg(self.nodes)
            .arg(max_tests.max(1))
            .arg(want_micros)
            .arg(LEASE_FACTOR)
            .arg(self.opts.lease_floor.as_millis() as u64)
            .arg(secs(self.opts.ttl));
        let reply: Vec<Value> = self.conn.call("take", Request::Script(&inv)).await?;
        let (tag, rest) = split_tag(&reply)?;
        match tag.as_str() {
            "lost" => Err(RemoteError::Lost),
            "stop" => Ok(Taken::Stopped(
                rest.first().map(text).transpose()?.unwrap_or_default(),
            )),
            "drained" => Ok(Taken::Drained),
            "exhausted" => Ok(Taken::Exhausted),
            "tests" => {
                let leased = rest
                    .chunks(4)
                    .map(|c| match c {
                        [id, lease, micros, reclaimed] => Ok(Leased {
                            id: TestId::new(text(id)?),
                            lease: int(lease)?,
                            micros: int(micros)?,
                            reclaimed: int(reclaimed)? == 1,
                        }),
                        _ => Err(RemoteError::Protocol("take: a truncated lease".into())),
                    })
                    .collect::<Result<_, _>>()?;
                Ok(Taken::Tests(leased))
            }
            other => Err(RemoteError::Protocol(format!(
                "take: unknown reply {other}"
            ))),
        }
    }

    /// Extends the leases this node still holds (fenced: a reclaimed one is not extended).
    /// Returns the stop reason when the job is stopping.
    pub async fn renew(&mut self, held: &[(TestId, u64)]) -> Result<Option<String>, RemoteError> {
        let mut inv = self.scripts.renew.key(self.key("seed"));
        inv.arg(&self.prefix)
            .arg(LEASE_FACTOR)
            .arg(self.opts.lease_floor.as_millis() as u64);
        for (id, lease) in held {
            inv.arg(id.as_str()).arg(*lease);
        }
        let reply: Vec<Value> = self.conn.call("renew", Request::Script(&inv)).await?;
        match split_tag(&reply)? {
            (t, _) if t == "lost" => Err(RemoteError::Lost),
            (t, [stop, _renewed]) if t == "ok" => Ok(Some(text(stop)?).filter(|s| !s.is_empty())),
            (t, _) => Err(RemoteError::Protocol(format!("renew: unknown reply {t}"))),
        }
    }

    /// Acknowledges finished tests; per test, whether this was the first acknowledgement (the
    /// one that counts). Hard failures count toward `maxfail` (0: no limit) job-wide.
    /// One round trip per `ACK_CHUNK` acknowledgements.
    pub async fn ack(&mut self, acks: &[Ack], maxfail: u32) -> Result<Vec<bool>, RemoteError> {
        let mut firsts = Vec::with_capacity(acks.len());
        for chunk in acks.chunks(ACK_CHUNK) {
            firsts.extend(self.ack_chunk(chunk, maxfail).await?);
        }
        Ok(firsts)
    }

    async fn ack_chunk(&mut self, acks: &[Ack], maxfail: u32) -> Result<Vec<bool>, RemoteError> {
        let mut inv = self.scripts.ack.key(self.key("seed"));
        inv.arg(&self.prefix)
            .arg(self.node)
            .arg(maxfail)
            .arg(secs(self.opts.ttl));
        for a in acks {
            inv.arg(a.id.as_str())
                .arg(a.lease)
                .arg(u8::from(a.hard_failure));
        }
        let reply: Vec<Value> = self.conn.call("ack", Request::Script(&inv)).await?;
        match split_tag(&reply)? {
            (t, _) if t == "lost" => Err(RemoteError::Lost),
            (t, firsts) if t == "ok" && firsts.len() == acks.len() => {
                firsts.iter().map(|v| int(v).map(|i| i == 1)).collect()
            }
            (t, _) => Err(RemoteError::Protocol(format!("ack: unexpected reply {t}"))),
        }
    }

    /// Stops the job on every node (the first reason stays).
    pub async fn request_stop(&mut self, reason: &str) -> Result<(), RemoteError> {
        let mut set = redis::cmd("SET");
        set.arg(self.key("stop"))
            .arg(reason)
            .arg("NX")
            .arg("EX")
            .arg(secs(self.opts.ttl));
        let _: Option<String> = self.conn.call("request_stop", Request::Cmd(&set)).await?;
        Ok(())
    }

    pub async fn read_timings(&mut self, project: &str) -> Result<Vec<(TestId, f64)>, RemoteError> {
        let cmd = redis::cmd("HGETALL").arg(timings_key(project)).to_owned();
        let all: Vec<(String, String)> = self.conn.call("read_timings", Request::Cmd(&cmd)).await?;
        // A value that is not a number is skipped: Redis is shared, its data not trusted.
        Ok(all
            .into_iter()
            .filter_map(|(k, v)| Some((TestId::new(k), v.parse().ok()?)))
            .collect())
    }

    /// Merges durations (seconds) into the project's hash, TTL 30 days from this write.
    pub async fn write_timings(
        &mut self,
        project: &str,
        t: &[(TestId, f64)],
    ) -> Result<(), RemoteError> {
        if t.is_empty() {
            return Ok(());
        }
        let key = timings_key(project);
        let mut p = redis::pipe();
        let hset = p.cmd("HSET").arg(&key);
        for (id, s) in t {
            hset.arg(id.as_str()).arg(s.to_string());
        }
        p.ignore()
            .cmd("EXPIRE")
            .arg(&key)
            .arg(PROJECT_TTL.as_secs())
            .ignore();
        let () = self.conn.call("write_timings", Request::Pipe(&p)).await?;
        Ok(())
    }

    /// Appends one run's outcomes to the project's history (each test's last
    /// `HISTORY_RUNS` runs). One script call per `ACK_CHUNK` tests.
    pub async fn write_history(
        &mut self,
        project: &str,
        run: &RunIdentity,
        tests: &[TestRun],
    ) -> Result<(), RemoteError> {
        let [tests_key, runs_key, fail_key] = history_keys(project);
        for chunk in tests.chunks(ACK_CHUNK) {
            let mut inv = self.scripts.history.key(&tests_key);
            inv.key(&runs_key)
                .key(&fail_key)
                .arg(format!("{} {}", run.id, run.code))
                .arg(run.at)
                .arg(PROJECT_TTL.as_secs())
                .arg(HISTORY_RUNS)
                .arg(HISTORY_RUN_IDS);
            for test in chunk {
                inv.arg(test.id.as_str())
                    .arg(remote_entry(run, test))
                    .arg(test.failure.as_deref().unwrap_or(""));
            }
            let _: i64 = self
                .conn
                .call("write_history", Request::Script(&inv))
                .await?;
        }
        Ok(())
    }

    /// The project's history as `shardex flaky` and `shardex slowest` read it.
    pub async fn read_history(&mut self, project: &str) -> Result<Evidence, RemoteError> {
        let [tests_key, runs_key, fail_key] = history_keys(project);
        let mut p = redis::pipe();
        p.cmd("ZRANGE")
            .arg(&runs_key)
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES");
        p.cmd("HGETALL").arg(&tests_key);
        p.cmd("HGETALL").arg(&fail_key);
        type All = (
            Vec<(String, f64)>,
            Vec<(String, String)>,
            Vec<(String, String)>,
        );
        let (runs, entries, failures): All =
            self.conn.call("read_history", Request::Pipe(&p)).await?;
        let runs: Vec<(String, u64)> = runs
            .into_iter()
            .map(|(member, at)| (member, at.max(0.0) as u64))
            .collect();
        Ok(evidence_from_remote(&runs, &entries, &failures))
    }

    /// This node's report (`NodeReport` JSON), for `shardex report`.
    pub async fn publish_report(&mut self, json: &str) -> Result<(), RemoteError> {
        let key = self.key("nodes");
        let mut p = redis::pipe();
        p.cmd("HSET").arg(&key).arg(self.node).arg(json).ignore();
        p.cmd("EXPIRE").arg(&key).arg(secs(self.opts.ttl)).ignore();
        let () = self.conn.call("publish_report", Request::Pipe(&p)).await?;
        Ok(())
    }

    /// The job as `shardex report` sees it; `None` when the build was never seeded.
    pub async fn job_state(&mut self) -> Result<Option<JobState>, RemoteError> {
        let mut p = redis::pipe();
        p.cmd("HMGET")
            .arg(self.key("meta"))
            .arg(&["nodes", "count"]);
        p.cmd("HGETALL").arg(self.key("nodes"));
        type State = ((Option<u32>, Option<usize>), Vec<(u32, String)>);
        let ((nodes, count), reports): State =
            self.conn.call("job_state", Request::Pipe(&p)).await?;
        let (Some(nodes), Some(count)) = (nodes, count) else {
            return Ok(None);
        };
        let mut reports = reports;
        reports.sort_by_key(|(n, _)| *n);
        Ok(Some(JobState {
            nodes,
            count,
            reports,
        }))
    }
}

fn bad_entry(s: &str) -> RemoteError {
    RemoteError::Protocol(format!(
        "bad queue entry {:?}",
        s.chars().take(80).collect::<String>()
    ))
}

fn split_tag(reply: &[Value]) -> Result<(String, &[Value]), RemoteError> {
    match reply.split_first() {
        Some((tag, rest)) => Ok((text(tag)?, rest)),
        None => Err(RemoteError::Protocol("an empty reply".into())),
    }
}

fn text(v: &Value) -> Result<String, RemoteError> {
    match v {
        Value::BulkString(b) => {
            String::from_utf8(b.clone()).map_err(|_| RemoteError::Protocol("not UTF-8".into()))
        }
        Value::SimpleString(s) => Ok(s.clone()),
        Value::Int(i) => Ok(i.to_string()),
        other => Err(RemoteError::Protocol(format!(
            "expected a string, got {other:?}"
        ))),
    }
}

fn int(v: &Value) -> Result<u64, RemoteError> {
    match v {
        Value::Int(i) => {
            u64::try_from(*i).map_err(|_| RemoteError::Protocol(format!("negative {i}")))
        }
        other => text(other)?
            .parse()
            .map_err(|_| RemoteError::Protocol(format!("expected a number, got {other:?}"))),
    }
}
