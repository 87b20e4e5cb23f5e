//! The daemon's warm base process (`daemon::base`) against real CPython + pytest (the
//! repo's .venv): its watch set, forks that run real zygotes for a real `Pool`, exits,
//! kills, and its end when the handle goes.

use std::collections::{BTreeMap, HashMap};
use std::os::fd::{IntoRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use shardex_agent::daemon::base::{
    Base, BaseEvent, BaseLink, BaseReady, BaseSpec, ForkRequest, LaunchVars,
};
use shardex_agent::pool::process::signal_group;
use shardex_agent::pool::{LaunchSpec, Launcher, ProcOwner, RawEvent};
use shardex_agent::run::{execute_with, pool_spec};
use shardex_agent::{plugin, RunConfig, RunEvent, RunSummary};
use shardex_core::Outcome;
use tokio::sync::mpsc::UnboundedSender;

mod python_suite;
use python_suite::{suite, venv_python, write};

/// A conftest, an app package a test imports, and that test.
fn app_suite(test_body: &str) -> tempfile::TempDir {
    suite(&[
        (
            "conftest.py",
            "import pytest\n\n@pytest.fixture\ndef answer():\n    return 42\n",
        ),
        ("app/__init__.py", ""),
        // What an app module does to the environment at import is there in each run,
        // as in a cold one (the module is imported by the base only).
        (
            "app/core.py",
            "import os\n\nos.environ.setdefault('APP_IMPORTED', 'yes')\nVALUE = 1\n",
        ),
        ("tests/test_app.py", test_body),
    ])
}

const APP_TESTS: &str = "import os\nfrom app.core import VALUE\n\ndef test_value():\n    assert VALUE == 1\n\ndef test_answer(answer):\n    assert answer == 42\n\ndef test_import_env():\n    assert os.environ['APP_IMPORTED'] == 'yes'\n";

fn config(dir: &Path, workers: usize) -> RunConfig {
    let mut config = RunConfig::new(
        venv_python(),
        vec!["-p".into(), "no:cacheprovider".into()],
        dir.to_owned(),
        workers,
    );
    config.no_timing_store = true;
    config
}

fn full_env(extra: &[(String, String)]) -> Vec<(String, String)> {
    let mut env: BTreeMap<String, String> = std::env::vars().collect();
    env.extend(extra.iter().cloned());
    env.into_iter().collect()
}

/// The base a daemon would start for runs with `config`.
fn base_spec(config: &RunConfig, plugin_dir: &Path) -> BaseSpec {
    BaseSpec {
        python: config.python.clone(),
        pytest_args: pool_spec(config).launch.args,
        cwd: config.cwd.clone(),
        env: full_env(&config.env),
        plugin_dir: plugin::install(plugin_dir).unwrap(),
    }
}

async fn start(config: &RunConfig) -> (Base, BaseReady, tempfile::TempDir) {
    let plugin_dir = tempfile::tempdir().unwrap();
    let (base, ready) = Base::start(&base_spec(config, plugin_dir.path()))
        .await
        .unwrap_or_else(|err| panic!("{err}: {err:?}"));
    (base, ready, plugin_dir)
}

fn outcomes(summary: &RunSummary) -> BTreeMap<String, Outcome> {
    summary
        .results
        .iter()
        .map(|r| (r.id.to_string(), r.outcome))
        .collect()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().unwrap()
}

/// Zygotes' exits, routed from the base's events to the pool that launched each.
#[derive(Default)]
struct Routes {
    pools: HashMap<u32, UnboundedSender<RawEvent>>,
    /// Exits that came before their launcher registered the pid.
    early: HashMap<u32, (Option<i32>, Option<i32>)>,
    exits: Vec<(u32, Option<i32>, Option<i32>)>,
}

impl Routes {
    fn exited(&mut self, pid: u32, code: Option<i32>, signal: Option<i32>) {
        self.exits.push((pid, code, signal));
        match self.pools.remove(&pid) {
            Some(tx) => send_exit(&tx, code, signal),
            None => {
                self.early.insert(pid, (code, signal));
            }
        }
    }
}

fn send_exit(tx: &UnboundedSender<RawEvent>, code: Option<i32>, signal: Option<i32>) {
    let _ = tx.send(RawEvent::ProcessExited {
        owner: ProcOwner::Zygote,
        code,
        signal,
    });
}

/// A warm base serving pools: the task owns the `Base` and routes its events; `stop` drops it.
struct Served {
    link: BaseLink,
    routes: Arc<Mutex<Routes>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Vec<BaseEvent>>,
}

impl Served {
    fn new(mut base: Base) -> Self {
        let link = base.link();
        let routes = Arc::new(Mutex::new(Routes::default()));
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let shared = Arc::clone(&routes);
        let task = tokio::spawn(async move {
            let mut others = Vec::new();
            loop {
                tokio::select! {
                    event = base.events().recv() => match event {
                        Some(BaseEvent::Exited { pid, code, signal }) => {
                            shared.lock().unwrap().exited(pid, code, signal);
                        }
                        Some(event) => others.push(event),
                        None => break,
                    },
                    _ = &mut stopped => break,
                }
            }
            others
        });
        Self {
            link,
            routes,
            stop: Some(stop),
            task,
        }
    }

    fn launcher(&self, out: &Path) -> Box<dyn Launcher> {
        Box::new(BaseLauncher {
            link: self.link.clone(),
            routes: Arc::clone(&self.routes),
            out: out.to_owned(),
        })
    }

    /// Drops the base; returns the events other than exits it reported.
    async fn stop(mut self) -> Vec<BaseEvent> {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap()
    }
}

/// What a daemon's client does: the pool's zygote forked from the warm base, with the
/// launch variables the pool put in its environment. `fork_blocking`: `launch_zygote` is
/// synchronous.
struct BaseLauncher {
    link: BaseLink,
    routes: Arc<Mutex<Routes>>,
    out: PathBuf,
}

impl Launcher for BaseLauncher {
    fn launch_zygote(
        &mut self,
        spec: &LaunchSpec,
        events: &UnboundedSender<RawEvent>,
    ) -> std::io::Result<u32> {
        assert_eq!(spec.args[0], "-c", "the pool's bootstrap prefix");
        let mut env = full_env(&spec.env);
        let launch = LaunchVars::take_from_env(&mut env);
        let req = ForkRequest {
            args: spec.args[3..].to_vec(),
            cwd: spec.cwd.clone(),
            env,
            launch,
            stdout: output(&self.out.join("zygote.out")),
            stderr: output(&self.out.join("zygote.err")),
        };
        let pid = self
            .link
            .fork_blocking(req, Duration::from_secs(30))
            .map_err(std::io::Error::other)?;
        let mut routes = self.routes.lock().unwrap();
        match routes.early.remove(&pid) {
            Some((code, signal)) => send_exit(events, code, signal),
            None => {
                routes.pools.insert(pid, events.clone());
            }
        }
        Ok(pid)
    }

    fn launch_worker(
        &mut self,
        _spec: &LaunchSpec,
        _owner: ProcOwner,
        _stderr: PathBuf,
        _events: &UnboundedSender<RawEvent>,
    ) -> std::io::Result<u32> {
        Err(std::io::Error::other("--spawn is not served by a base"))
    }

    fn signal(&mut self, pgid: u32, signal: Signal) {
        signal_group(pgid, signal);
    }

    fn zygote_stderr_tail(&self) -> String {
        std::fs::read_to_string(self.out.join("zygote.err")).unwrap_or_default()
    }
}

/// A file for the zygote's output; its descriptor stays open for the test's life.
fn output(path: &Path) -> RawFd {
    std::fs::File::create(path).unwrap().into_raw_fd()
}

async fn run_cold(config: RunConfig) -> RunSummary {
    timed_cold(config).await.0
}

async fn run_warm(config: RunConfig, served: &Served, out: &Path) -> RunSummary {
    timed_warm(config, served, out).await.0
}

/// How long a run took from its launch to its collection and to its first result.
#[derive(Clone, Copy, Debug, Default)]
struct Firsts {
    collected: Duration,
    result: Duration,
}

async fn timed(
    config: RunConfig,
    launcher: Box<dyn Launcher>,
) -> (Result<RunSummary, shardex_agent::AgentError>, Firsts) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let started = Instant::now();
    let firsts = tokio::spawn(async move {
        let mut firsts = Firsts::default();
        while let Some(event) = rx.recv().await {
            match event {
                RunEvent::Collected { .. } => firsts.collected = started.elapsed(),
                RunEvent::TestFinished(_) if firsts.result.is_zero() => {
                    firsts.result = started.elapsed();
                }
                _ => {}
            }
        }
        firsts
    });
    let summary = execute_with(config, tx, launcher, None).await;
    (summary, firsts.await.unwrap())
}

async fn timed_cold(config: RunConfig) -> (RunSummary, Firsts) {
    let launcher = Box::<shardex_agent::pool::ProcessLauncher>::default();
    let (summary, first) = timed(config, launcher).await;
    (summary.expect("cold run"), first)
}

async fn timed_warm(config: RunConfig, served: &Served, out: &Path) -> (RunSummary, Firsts) {
    let (summary, first) = timed(config, served.launcher(out)).await;
    let stderr = std::fs::read_to_string(out.join("zygote.err")).unwrap_or_default();
    let summary = summary.unwrap_or_else(|err| panic!("warm run: {err}\nzygote stderr:\n{stderr}"));
    (summary, first)
}

#[test]
fn ready_watches_imports_and_conftests_but_not_test_modules() {
    let dir = app_suite(APP_TESTS);
    let config = config(dir.path(), 1);
    runtime().block_on(async {
        let (base, ready, _plugin) = start(&config).await;
        let root = dir.path().canonicalize().unwrap();
        assert!(
            ready.watch.contains(&root.join("conftest.py")),
            "{:#?}",
            ready.watch
        );
        assert!(
            ready.watch.contains(&root.join("app/core.py")),
            "{:#?}",
            ready.watch
        );
        assert!(ready.watch.contains(&root.join("pytest.ini")));
        assert!(
            !ready.watch.iter().any(|p| p.ends_with("tests/test_app.py")),
            "a collected test module is imported afresh by each fork, never watched"
        );
        assert!(ready.watch.iter().any(|p| p.ends_with("site-packages")));
        assert!(ready
            .watch
            .iter()
            .any(|p| p.to_string_lossy().contains(".dist-info/RECORD")));
        assert!(
            ready
                .watch
                .windows(2)
                .all(|w| w[0].as_os_str() < w[1].as_os_str()),
            "sorted, once each"
        );
        assert!(ready.errors.is_empty(), "{:?}", ready.errors);
        assert_eq!(ready.pid, base.pid());
        assert!(ready.modules > 100 && ready.seconds > 0.0);
    });
}

/// The warm-up's failure: its message and the base's stderr.
fn failed_start(dir: &Path, extra_args: &[&str]) -> (String, String) {
    let mut config = config(dir, 1);
    config
        .pytest_args
        .extend(extra_args.iter().map(|a| a.to_string()));
    runtime().block_on(async {
        let plugin_dir = tempfile::tempdir().unwrap();
        let Err(err) = Base::start(&base_spec(&config, plugin_dir.path())).await else {
            panic!("this base cannot be ready");
        };
        let shardex_agent::daemon::base::BaseError::Failed {
            message,
            stderr_tail,
        } = err
        else {
            panic!("{err:?}");
        };
        (message, stderr_tail)
    })
}

#[test]
fn a_failed_warm_up_says_why() {
    let dir = suite(&[("conftest.py", "raise RuntimeError('conftest is broken')\n")]);
    let (message, stderr_tail) = failed_start(dir.path(), &[]);
    assert!(message.contains("conftest"), "{message}");
    assert!(stderr_tail.contains("conftest is broken"), "{stderr_tail}");
}

/// A fork copies only the forking thread: a base with another thread alive refuses to serve.
#[test]
fn a_thread_alive_after_the_warm_up_refuses_the_base() {
    let dir = suite(&[(
        "conftest.py",
        "import threading, time\n\nthreading.Thread(target=time.sleep, args=(600,), daemon=True).start()\n",
    )]);
    let (message, _) = failed_start(dir.path(), &[]);
    assert!(message.contains("threads are alive"), "{message}");
    assert!(
        message.contains("conftest.py:3"),
        "where it was started: {message}"
    );
}

/// Lines run at import would not be measured in a fork: pytest-cov is refused.
#[test]
fn coverage_is_not_served_from_a_base() {
    let dir = app_suite(APP_TESTS);
    let (message, _) = failed_start(dir.path(), &["--cov=app"]);
    assert!(message.contains("coverage"), "{message}");
}

/// A run through the base gives what a cold run gives; an edit to a test module between
/// two runs is seen by the second (no rebuild); each zygote's exit is reported with its code.
#[test]
fn forked_zygotes_run_like_cold_ones_and_see_edited_tests() {
    let dir = app_suite(APP_TESTS);
    let out = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let cold = run_cold(config(dir.path(), 2)).await;
        let (base, _ready, _plugin) = start(&config(dir.path(), 2)).await;
        let served = Served::new(base);
        let warm = run_warm(config(dir.path(), 2), &served, out.path()).await;
        assert_eq!(outcomes(&warm), outcomes(&cold));
        assert_eq!(outcomes(&warm).len(), 3);
        assert!(outcomes(&warm).values().all(|o| *o == Outcome::Passed));
        assert_eq!(warm.collected, cold.collected);
        assert!(warm.internal_error.is_none() && warm.interrupted.is_none());

        // Same size would let pytest's own pyc cache miss the change: a longer body.
        write(
            &dir.path().join("tests/test_app.py"),
            &APP_TESTS.replace("assert VALUE == 1", "assert VALUE == 2, 'edited'"),
        );
        let edited = run_warm(config(dir.path(), 2), &served, out.path()).await;
        let edited = outcomes(&edited);
        assert_eq!(edited["tests/test_app.py::test_value"], Outcome::Failed);
        assert_eq!(edited["tests/test_app.py::test_answer"], Outcome::Passed);

        let exits = served.routes.lock().unwrap().exits.clone();
        assert_eq!(exits.len(), 2, "one zygote per run: {exits:?}");
        for (pid, code, signal) in exits {
            assert_eq!((code, signal), (Some(0), None), "zygote {pid}");
        }
        assert_alive_to_the_end(served).await;
    });
}

/// The fork without a pool (launch mode empty: plain pytest in the zygote).
fn plain_fork(dir: &Path, out: &Path, args: &[&str]) -> ForkRequest {
    ForkRequest {
        args: args.iter().map(|a| a.to_string()).collect(),
        cwd: dir.to_owned(),
        env: full_env(&[]),
        launch: LaunchVars::default(),
        stdout: output(&out.join("plain.out")),
        stderr: output(&out.join("plain.err")),
    }
}

#[test]
fn exits_come_with_their_code_and_a_zygote_can_be_killed() {
    let dir = suite(&[
        ("test_ok.py", "def test_ok():\n    pass\n"),
        ("test_bad.py", "def test_bad():\n    assert 0\n"),
        (
            "test_slow.py",
            "import time\n\ndef test_slow():\n    time.sleep(600)\n",
        ),
    ]);
    let out = tempfile::tempdir().unwrap();
    let config = config(dir.path(), 1);
    runtime().block_on(async {
        let (mut base, _ready, _plugin) = start(&config).await;
        for (file, want) in [("test_ok.py", 0), ("test_bad.py", 1)] {
            let pid = base
                .fork(plain_fork(dir.path(), out.path(), &[file]))
                .await
                .unwrap();
            let event = next_exit(&mut base).await;
            let printed = std::fs::read_to_string(out.path().join("plain.out")).unwrap();
            assert_eq!(
                event,
                BaseEvent::Exited {
                    pid,
                    code: Some(want),
                    signal: None
                },
                "{printed}"
            );
            assert!(
                printed.contains(if want == 0 { "1 passed" } else { "1 failed" }),
                "{printed}"
            );
        }
        let pid = base
            .fork(plain_fork(dir.path(), out.path(), &["test_slow.py"]))
            .await
            .unwrap();
        assert_eq!(
            socket_fds(base.pid()),
            1,
            "the base holds its own end of the socket only"
        );
        // The child closes its copy first thing: give it that time.
        let deadline = Instant::now() + Duration::from_secs(20);
        while socket_fds(pid) != 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            socket_fds(pid),
            0,
            "a zygote holds no end of the base's socket"
        );
        base.kill(pid);
        let event = tokio::time::timeout(Duration::from_secs(30), next_exit(&mut base)).await;
        assert_eq!(
            event.unwrap(),
            BaseEvent::Exited {
                pid,
                code: None,
                signal: Some(9)
            }
        );
    });
}

/// Stops serving; the base reported no death until then (learned imports, `Watch`, may
/// have come).
async fn assert_alive_to_the_end(served: Served) {
    let others = served.stop().await;
    assert!(
        !others.iter().any(|e| matches!(e, BaseEvent::Died { .. })),
        "the base died: {others:?}"
    );
}

/// The base's next event other than learned imports (`Watch`, sent after a run's end).
async fn next_exit(base: &mut Base) -> BaseEvent {
    loop {
        match base.events().recv().await.expect("the base's events ended") {
            BaseEvent::Watch { .. } => continue,
            event => return event,
        }
    }
}

/// How many sockets `pid` has open.
fn socket_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target.to_string_lossy().starts_with("socket:"))
        .count()
}

/// Alive and not a zombie.
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat.rsplit(')').next().unwrap_or("").trim_start();
            !state.starts_with('Z') && !state.starts_with('X')
        }
        Err(_) => false,
    }
}

async fn gone_within(pid: u32, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if !alive(pid) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[test]
fn dropping_the_handle_ends_the_base_but_not_a_running_zygote() {
    let dir = suite(&[(
        "test_slow.py",
        "import time\n\ndef test_slow():\n    time.sleep(600)\n",
    )]);
    let out = tempfile::tempdir().unwrap();
    let config = config(dir.path(), 1);
    runtime().block_on(async {
        let (mut base, _ready, _plugin) = start(&config).await;
        let base_pid = base.pid();
        let zygote = base
            .fork(plain_fork(dir.path(), out.path(), &[]))
            .await
            .unwrap();
        let link = base.link();
        assert!(alive(base_pid) && alive(zygote));
        drop(base);
        assert!(
            gone_within(base_pid, Duration::from_secs(20)).await,
            "the base outlived its socket"
        );
        // A zygote belongs to its run, which ends it (a daemon that dies must not take
        // the runs it served with it).
        assert!(alive(zygote), "the base's end killed a running zygote");
        signal_group(zygote, Signal::SIGKILL);
        assert!(gone_within(zygote, Duration::from_secs(20)).await);
        let late = link.fork(plain_fork(dir.path(), out.path(), &[])).await;
        assert!(late.is_err(), "{late:?}");
    });
}

#[test]
fn a_retired_base_exits_when_its_last_zygote_has_ended() {
    let dir = suite(&[(
        "test_quick.py",
        "import time\n\ndef test_quick():\n    time.sleep(1)\n",
    )]);
    let out = tempfile::tempdir().unwrap();
    let config = config(dir.path(), 1);
    runtime().block_on(async {
        let (mut base, _ready, _plugin) = start(&config).await;
        let base_pid = base.pid();
        let zygote = base
            .fork(plain_fork(dir.path(), out.path(), &[]))
            .await
            .unwrap();
        base.retire();
        let refused = base.fork(plain_fork(dir.path(), out.path(), &[])).await;
        assert!(refused.is_err(), "{refused:?}");
        let mut seen = Vec::new();
        while let Some(event) = base.events().recv().await {
            seen.push(event);
        }
        assert_eq!(
            seen,
            [BaseEvent::Exited {
                pid: zygote,
                code: Some(0),
                signal: None
            }],
            "its zygote's exit, then the channel closes (no Died)"
        );
        assert!(gone_within(base_pid, Duration::from_secs(20)).await);
    });
}

fn require_pg() {
    assert!(
        std::env::var_os("SHARDEX_PG_PORT").is_some(),
        "SHARDEX_PG_PORT is not set: the Django test needs the private PostgreSQL. Run the \
         tests via scripts/test.sh (or `eval \"$(bash scripts/pg.sh env)\"` first)."
    );
}

/// fixtures/django (pytest-django, PostgreSQL): a run forked from a base warmed on it
/// (Django set up there, the DB blocker restored, connections closed) passes as a cold run
/// does. Prints the warm-up's time and each run's time to its first result.
#[test]
fn a_django_run_forked_from_a_warm_base_passes_like_a_cold_one() {
    require_pg();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/django");
    let dir = dir.canonicalize().unwrap();
    let out = tempfile::tempdir().unwrap();
    // Test DBs of their own (test_<NAME>_gwN): other tests may use the fixture's at once.
    let db = format!("shardex_base_{}", std::process::id());
    let django = |workers| {
        let mut config = config(&dir, workers);
        config.env = vec![("SHARDEX_PG_DB".into(), db.clone())];
        config
    };
    runtime().block_on(async {
        let (cold, cold_first) = timed_cold(django(2)).await;
        let started = Instant::now();
        let (base, ready, _plugin) = start(&django(2)).await;
        let warm_up = started.elapsed();
        assert!(ready.errors.is_empty(), "{:?}", ready.errors);
        assert!(ready
            .watch
            .iter()
            .any(|p| p.ends_with("shardexsite/settings.py")));
        let served = Served::new(base);
        let (warm, warm_first) = timed_warm(django(2), &served, out.path()).await;
        assert_eq!(outcomes(&warm), outcomes(&cold));
        assert!(outcomes(&cold).len() >= 20);
        assert!(
            outcomes(&warm).values().all(|o| *o == Outcome::Passed),
            "{:?}",
            outcomes(&warm)
        );
        let (again, again_first) = timed_warm(django(2), &served, out.path()).await;
        assert_eq!(outcomes(&again), outcomes(&cold));
        eprintln!(
            "django: base warm-up {:.2}s (in python {:.2}s, {} modules). From the launch to \
             collected / first result / end: cold {}, forked {}, forked again {}",
            warm_up.as_secs_f64(),
            ready.seconds,
            ready.modules,
            shown(cold_first, &cold),
            shown(warm_first, &warm),
            shown(again_first, &again),
        );
        assert_alive_to_the_end(served).await;
    });
}

fn shown(firsts: Firsts, summary: &RunSummary) -> String {
    format!(
        "{:.2}s / {:.2}s / {:.2}s",
        firsts.collected.as_secs_f64(),
        firsts.result.as_secs_f64(),
        summary.wall.as_secs_f64()
    )
}
