//! `shardex serve`: runs through the daemon print what runs without it print, never use code
//! older than the disk's, survive the death of any of its processes, and take turns.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use shardex_e2e::{
    assert_same_results, copy_fixture, serial, shardex_cmd, shardex_raw, venv_python, RunOutput,
    Suite,
};

use crate::shardex_bin;

/// A `shardex serve` in the foreground, stopped (and waited for) on drop.
struct Served {
    child: Option<Child>,
    dir: PathBuf,
    log: PathBuf,
}

impl Served {
    fn start(suite: &Suite, args: &[&str]) -> Served {
        let log = suite.scratch.join("daemon.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(shardex_bin())
            .current_dir(&suite.dir)
            .arg("serve")
            .arg("--python")
            .arg(venv_python())
            .args(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("start shardex serve");
        let served = Served {
            child: Some(child),
            dir: suite.dir.clone(),
            log,
        };
        served.wait_warm(1);
        served
    }

    fn pid(&self) -> i32 {
        self.child.as_ref().map_or(0, |c| c.id() as i32)
    }

    fn status(&self) -> String {
        let out = shardex_raw(shardex_bin(), &self.dir, &["serve", "--status"]).run();
        out.stdout
    }

    /// Waits until the warm process of `generation` (or a later one) is ready.
    fn wait_warm(&self, generation: u32) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let status = self.status();
            if status_generation(&status).is_some_and(|g| g >= generation) {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "no warm process of generation {generation}: {status}\nlog:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for the daemon to exit by itself; its exit code.
    fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        let child = self.child.as_mut()?;
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "the daemon did not exit within {within:?}; log:\n{}",
            self.log_text()
        );
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
            let _ = child.wait();
        }
    }
}

/// Stops the project's daemon (one a run started) when the test ends, passed or not.
struct StopOnDrop(PathBuf);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let _ = shardex_raw(shardex_bin(), &self.0, &["serve", "--stop"]).run();
    }
}

fn status_field(status: &str, after: &str) -> Option<u64> {
    let rest = &status[status.find(after)? + after.len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

fn status_generation(status: &str) -> Option<u32> {
    status_field(status, "generation ").map(|g| g as u32)
}

fn base_pid(status: &str) -> i32 {
    status_field(status, "warm: pid ").expect("a warm pid in the status") as i32
}

fn runs_served(status: &str) -> u64 {
    let at = status
        .find(" runs served")
        .expect("runs served in the status");
    let digits: String = status[..at]
        .chars()
        .rev()
        .take_while(char::is_ascii_digit)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    digits.parse().unwrap()
}

fn run(suite: &Suite, args: &[&str]) -> RunOutput {
    shardex_cmd(shardex_bin(), &suite.dir, args, None).run()
}

/// stdout with the times taken out (`in 0.52s`).
fn without_times(stdout: &str) -> String {
    stdout
        .lines()
        .map(|line| match line.rfind(" in ") {
            Some(at) if line[at..].contains('s') && line.starts_with('=') => line[..at].to_owned(),
            _ => line.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn alive(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
}

fn wait_gone(pid: i32, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if !alive(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[test]
fn a_run_through_the_daemon_prints_what_a_run_without_it_prints() {
    let _guard = serial();
    let suite = copy_fixture("daemon");
    let served = Served::start(&suite, &[]);
    for args in [&["-n", "1"][..], &["-n", "2"]] {
        let junit_cold = suite.scratch.join("cold.xml");
        let junit_warm = suite.scratch.join("warm.xml");
        let mut no_daemon = args.to_vec();
        no_daemon.push("--no-daemon");
        let cold = shardex_cmd(shardex_bin(), &suite.dir, &no_daemon, Some(&junit_cold)).run();
        let before = runs_served(&served.status());
        let warm = shardex_cmd(shardex_bin(), &suite.dir, args, Some(&junit_warm)).run();
        assert_eq!(
            runs_served(&served.status()),
            before + 1,
            "the run went through the daemon"
        );
        cold.assert_code(1);
        warm.assert_code(1);
        assert_same_results("daemon vs no daemon", &cold, &warm, &suite.dir);
        if args == ["-n", "1"] {
            assert_eq!(
                without_times(&cold.stdout),
                without_times(&warm.stdout),
                "same output"
            );
        }
        assert!(
            warm.stderr.trim().is_empty(),
            "a warm run says nothing more: {}",
            warm.describe()
        );
    }
    // pytest's cache is the run's own: --lf after it runs the failure only.
    let last_failed = run(&suite, &["-n", "1", "--lf"]);
    assert_eq!(
        last_failed.summary().get("failed"),
        Some(&1),
        "{}",
        last_failed.describe()
    );
    assert_eq!(last_failed.summary().get("passed"), None);
}

#[test]
fn a_run_never_uses_code_older_than_the_disk() {
    let _guard = serial();
    let suite = copy_fixture("daemon");
    let served = Served::start(&suite, &[]);
    let first = run(&suite, &["-n", "1", "tests/test_app.py"]);
    first.assert_code(0);
    let generation = status_generation(&served.status()).unwrap();

    // A test file: collected again in the fork, no rebuild.
    std::fs::write(
        suite.path("tests/test_app.py"),
        std::fs::read_to_string(suite.path("tests/test_app.py")).unwrap()
            + "\n\ndef test_added():\n    assert False, 'the edited test file ran'\n",
    )
    .unwrap();
    let edited = run(&suite, &["-n", "1", "tests/test_app.py"]);
    edited.assert_code(1);
    assert!(
        edited.stdout.contains("the edited test file ran"),
        "{}",
        edited.describe()
    );
    assert_eq!(
        status_generation(&served.status()),
        Some(generation),
        "a test file's edit needs no rebuild"
    );

    // A conftest fixture, edited right before the run (no time for the background poll).
    let conftest = std::fs::read_to_string(suite.path("conftest.py")).unwrap();
    std::fs::write(suite.path("conftest.py"), conftest.replace("42", "43")).unwrap();
    let fixture_edited = run(&suite, &["-n", "1", "tests/test_app.py::test_answer"]);
    fixture_edited.assert_code(1);
    assert!(
        fixture_edited.stdout.contains("assert 43 == 42"),
        "{}",
        fixture_edited.describe()
    );

    // An app module, same size, same second as its last import: bytecode must not win.
    let core = std::fs::read_to_string(suite.path("app/core.py")).unwrap();
    std::fs::write(
        suite.path("app/core.py"),
        core.replace("VALUE = 1", "VALUE = 2"),
    )
    .unwrap();
    let module_edited = run(&suite, &["-n", "1", "tests/test_app.py::test_value"]);
    module_edited.assert_code(1);
    assert!(
        module_edited.stdout.contains("assert 2 == 1"),
        "{}",
        module_edited.describe()
    );
    let after = status_generation(&served.status()).unwrap();
    assert!(
        after >= generation + 2,
        "conftest and module edits rebuilt the warm process ({generation} -> {after})"
    );
}

#[test]
fn every_process_of_the_daemon_may_die() {
    let _guard = serial();
    let suite = copy_fixture("daemon");
    let mut served = Served::start(&suite, &[]);
    // The warm process dies: it is rebuilt, and the next run passes through the daemon.
    let status = served.status();
    let base = base_pid(&status);
    kill(Pid::from_raw(base), Signal::SIGKILL).unwrap();
    let generation = status_generation(&status).unwrap();
    served.wait_warm(generation + 1);
    let after_base = run(&suite, &["-n", "2", "tests/test_app.py"]);
    after_base.assert_code(0);
    assert!(
        after_base.stderr.trim().is_empty(),
        "{}",
        after_base.describe()
    );

    // The daemon dies: its warm process follows, the socket it left is cleaned by the next
    // run, which runs without it and says so.
    let base = base_pid(&served.status());
    let daemon = served.pid();
    kill(Pid::from_raw(daemon), Signal::SIGKILL).unwrap();
    served.wait_exit(Duration::from_secs(5));
    assert!(
        wait_gone(base, Duration::from_secs(5)),
        "the warm process outlived its daemon"
    );
    assert!(
        !suite.path(".shardex/daemon.sock").exists(),
        "the warm process removes the socket of a daemon that died"
    );
    let without = run(&suite, &["-n", "2", "tests/test_app.py"]);
    without.assert_code(0);
    assert!(
        without.stderr.contains("is gone; running without it"),
        "{}",
        without.describe()
    );
    let again = run(&suite, &["-n", "2", "tests/test_app.py"]);
    again.assert_code(0);
    assert!(again.stderr.trim().is_empty(), "{}", again.describe());

    // The daemon and its warm process die at once (a container's OOM kill): the socket
    // stays; the next run removes it, says so and runs without it.
    let mut served = Served::start(&suite, &[]);
    let killed = shardex_e2e::kill_tree(served.pid());
    assert!(
        killed.len() >= 2,
        "the daemon and its warm process: {killed:?}"
    );
    served.wait_exit(Duration::from_secs(5));
    assert!(suite.path(".shardex/daemon.sock").exists());
    let stale = run(&suite, &["-n", "2", "tests/test_app.py"]);
    stale.assert_code(0);
    assert!(
        stale.stderr.contains("stale socket was removed"),
        "{}",
        stale.describe()
    );
    assert!(!suite.path(".shardex/daemon.sock").exists());
}

#[test]
fn two_runs_at_once_take_turns() {
    let _guard = serial();
    let suite = copy_fixture("daemon");
    let served = Served::start(&suite, &[]);
    std::fs::write(suite.path("slow.flag"), "2").unwrap();
    let first = shardex_cmd(shardex_bin(), &suite.dir, &["-n", "2"], None).start();
    // The first run holds the daemon once its zygote is forked.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !served.status().contains("serving the run of pid") {
        assert!(
            Instant::now() < deadline,
            "the first run never held the daemon"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let second = run(&suite, &["-n", "2", "tests/test_app.py"]);
    let first = first.wait(Duration::from_secs(60));
    first.assert_code(1);
    second.assert_code(0);
    assert!(
        second.stderr.contains("waiting for it to end"),
        "{}",
        second.describe()
    );
    assert_eq!(runs_served(&served.status()), 2);
}

#[test]
fn the_daemon_ends_when_asked_idle_or_orphaned() {
    let _guard = serial();
    let suite = copy_fixture("daemon");
    // Stop: the socket goes, status says so, a second serve while one runs is refused.
    let mut served = Served::start(&suite, &[]);
    let twice = shardex_raw(
        shardex_bin(),
        &suite.dir,
        &["serve", "--python", venv_python().to_str().unwrap()],
    )
    .run();
    twice.assert_code(1);
    assert!(
        twice.stderr.contains("already serves"),
        "{}",
        twice.describe()
    );
    let stop = shardex_raw(shardex_bin(), &suite.dir, &["serve", "--stop"]).run();
    stop.assert_code(0);
    assert_eq!(served.wait_exit(Duration::from_secs(10)), Some(0));
    assert!(!suite.path(".shardex/daemon.sock").exists());
    let status = shardex_raw(shardex_bin(), &suite.dir, &["serve", "--status"]).run();
    status.assert_code(1);
    assert!(
        status.stdout.contains("no daemon serves"),
        "{}",
        status.describe()
    );

    // Idle: it exits by itself.
    let mut idle = Served::start(&suite, &["--idle-timeout", "1"]);
    assert_eq!(idle.wait_exit(Duration::from_secs(10)), Some(0));
    assert!(idle.log_text().contains("idle"), "{}", idle.log_text());

    // Orphaned: the project is deleted.
    let mut orphan = Served::start(&suite, &[]);
    let base = base_pid(&orphan.status());
    std::fs::remove_dir_all(&suite.dir).unwrap();
    assert_eq!(orphan.wait_exit(Duration::from_secs(10)), Some(0));
    assert!(wait_gone(base, Duration::from_secs(5)));
}

#[test]
fn run_daemon_starts_one_when_none_runs() {
    let _guard = serial();
    let suite = copy_fixture("daemon");
    let _stop = StopOnDrop(suite.dir.clone());
    let started = run(&suite, &["-n", "2", "--daemon", "tests/test_app.py"]);
    started.assert_code(0);
    assert!(
        started.stderr.contains("started the daemon"),
        "{}",
        started.describe()
    );
    let status = shardex_raw(shardex_bin(), &suite.dir, &["serve", "--status"]).run();
    status.assert_code(0);
    assert_eq!(runs_served(&status.stdout), 1, "{}", status.describe());
    let daemon = status_field(&status.stdout, ": pid ").unwrap() as i32;
    let stop = shardex_raw(shardex_bin(), &suite.dir, &["serve", "--stop"]).run();
    stop.assert_code(0);
    assert!(wait_gone(daemon, Duration::from_secs(10)));
}

#[test]
fn django_on_postgresql_runs_through_the_daemon() {
    let _guard = serial();
    assert!(
        std::env::var_os("SHARDEX_PG_PORT").is_some(),
        "needs the private PostgreSQL (scripts/test.sh starts it)"
    );
    let suite = copy_fixture("django");
    let served = Served::start(&suite, &["--reuse-db"]);
    let junit_cold = suite.scratch.join("cold.xml");
    let junit_warm = suite.scratch.join("warm.xml");
    let args = ["-n", "2", "--reuse-db"];
    let cold = shardex_cmd(
        shardex_bin(),
        &suite.dir,
        &[&args[..], &["--no-daemon"]].concat(),
        Some(&junit_cold),
    )
    .run();
    cold.assert_code(0);
    for round in 0..2 {
        let warm = shardex_cmd(shardex_bin(), &suite.dir, &args, Some(&junit_warm)).run();
        warm.assert_code(0);
        assert_same_results(
            &format!("django through the daemon, run {round}"),
            &cold,
            &warm,
            &suite.dir,
        );
    }
    assert_eq!(runs_served(&served.status()), 2);
}

#[test]
fn the_warm_process_learns_what_runs_import_from_outside_the_project() {
    let _guard = serial();
    let suite = copy_fixture("daemon");
    let served = Served::start(&suite, &[]);
    let watched = |status: &str| status_field(status, "modules, ").expect("files watched");
    let before = watched(&served.status());
    run(&suite, &["-n", "1", "tests/test_app.py"]).assert_code(0);
    // The run imported `wave` (stdlib, outside the project): the warm process imports it
    // once the run's zygote ends, and watches its file.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut after = watched(&served.status());
    while after <= before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        after = watched(&served.status());
    }
    assert!(after > before, "watched files {before} -> {after}");
    let generation = status_generation(&served.status());
    run(&suite, &["-n", "1", "tests/test_app.py"]).assert_code(0);
    assert_eq!(
        status_generation(&served.status()),
        generation,
        "learning rebuilds nothing"
    );
}
