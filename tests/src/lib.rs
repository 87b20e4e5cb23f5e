//! End-to-end helpers: run plain pytest and `shardex run` on copies of the suites in `fixtures/`,
//! parse what they print and write (summary line, JUnit xunit1), compare them with readable diffs,
//! and look for processes a run left behind.
//!
//! The binary under test is passed in by the test crate (`env!("CARGO_BIN_EXE_shardex-dup")` is only
//! defined for integration tests, not for this library).

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fmt;
use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

pub mod redis_server;

// ------------------------------------------------------------------------------------------ paths

/// The repository root (the parent of this crate's manifest dir).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// `<root>/.venv/bin/python`; panics with a clear message when the venv does not exist.
pub fn venv_python() -> PathBuf {
    let py = repo_root().join(".venv/bin/python");
    assert!(
        py.exists(),
        "{} does not exist: run scripts/setup.sh (it creates .venv with requirements-dev.txt)",
        py.display()
    );
    py
}

/// Per-process timeout for every command the helpers run (`SHARDEX_E2E_TIMEOUT` seconds, default 120).
pub fn default_timeout() -> Duration {
    let secs = std::env::var("SHARDEX_E2E_TIMEOUT")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(120);
    Duration::from_secs(secs)
}

/// e2e tests start many processes and some are timing-sensitive (timeouts, SIGINT after 1 s);
/// on a 2-core machine they run one at a time. Hold the guard for the whole test.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

// ------------------------------------------------------------------------------------------ suites

/// A private copy of one fixture suite in a temp dir (deleted on drop).
pub struct Suite {
    _tmp: tempfile::TempDir,
    /// The suite's rootdir (canonical path: what `/proc/<pid>/cwd` shows).
    pub dir: PathBuf,
    /// A scratch dir next to (not inside) the suite, for JUnit files, pid files, etc.
    pub scratch: PathBuf,
}

impl Suite {
    pub fn path(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.dir.join(rel)
    }
}

/// Copy `fixtures/<name>` (without caches) to a fresh temp dir.
pub fn copy_fixture(name: &str) -> Suite {
    let src = repo_root().join("fixtures").join(name);
    assert!(src.is_dir(), "no fixture suite at {}", src.display());
    let suite = empty_suite(name);
    copy_tree(&src, &suite.dir);
    suite
}

/// An empty suite dir (for "no tests" cases).
pub fn empty_suite(label: &str) -> Suite {
    let tmp = tempfile::Builder::new()
        .prefix(&format!("shardex-e2e-{label}-"))
        .tempdir()
        .expect("create temp dir");
    let base = tmp.path().canonicalize().expect("canonicalize temp dir");
    let dir = base.join("suite");
    let scratch = base.join("scratch");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::create_dir_all(&scratch).unwrap();
    Suite {
        _tmp: tmp,
        dir,
        scratch,
    }
}

fn copy_tree(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for entry in std::fs::read_dir(src).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if name == OsStr::new("__pycache__") || name == OsStr::new(".pytest_cache") {
            continue;
        }
        let ty = entry.file_type().unwrap();
        let to = dst.join(&name);
        if ty.is_dir() {
            copy_tree(&entry.path(), &to);
        } else if ty.is_file() {
            std::fs::copy(entry.path(), &to).unwrap();
        }
    }
}

// ------------------------------------------------------------------------------------------ running

/// What one finished command did.
pub struct RunOutput {
    pub label: String,
    pub cmdline: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
    pub junit_path: Option<PathBuf>,
    /// Set when the process exited but something (an orphan) kept its stdout/stderr open.
    pub pipes_held_open: bool,
}

impl RunOutput {
    /// The exit code, or None if killed by a signal.
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// Command, status and the tail of both streams: for assertion messages.
    pub fn describe(&self) -> String {
        format!(
            "--- {label}: {cmd}\n--- status: {status} after {el:.2?}{held}\n--- stdout (tail):\n{out}\n--- stderr (tail):\n{err}\n---",
            label = self.label,
            cmd = self.cmdline,
            status = describe_status(self.status),
            el = self.elapsed,
            held = if self.pipes_held_open {
                " (stdout/stderr held open by leftover processes!)"
            } else {
                ""
            },
            out = tail(&self.stdout, 40),
            err = tail(&self.stderr, 25),
        )
    }

    /// Panics (with the run's output) unless the exit code is `code`.
    pub fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code(),
            Some(code),
            "expected exit code {code}, got {}\n{}",
            describe_status(self.status),
            self.describe()
        );
        self
    }

    /// The summary line's counts; panics with the output when there is none.
    pub fn summary(&self) -> Summary {
        parse_summary(&self.stdout).unwrap_or_else(|| {
            panic!(
                "no pytest summary line (`N passed ... in X.XXs`) on stdout\n{}",
                self.describe()
            )
        })
    }

    /// The JUnit report this run wrote; panics (with output) when it is missing or malformed.
    pub fn junit(&self) -> JunitReport {
        let path = self
            .junit_path
            .as_ref()
            .expect("run was started without a JUnit path");
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| {
            panic!(
                "cannot read JUnit file {}: {e}\n{}",
                path.display(),
                self.describe()
            )
        });
        parse_junit(&text).unwrap_or_else(|e| {
            panic!(
                "malformed JUnit file {}: {e}\n--- content:\n{}\n{}",
                path.display(),
                tail(&text, 40),
                self.describe()
            )
        })
    }
}

pub fn describe_status(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit code {c}"),
        (None, Some(s)) => format!(
            "killed by signal {s} ({})",
            Signal::try_from(s).map(|s| s.as_str()).unwrap_or("?")
        ),
        _ => format!("{status:?}"),
    }
}

fn tail(s: &str, lines: usize) -> String {
    let all: Vec<&str> = s.lines().collect();
    let start = all.len().saturating_sub(lines);
    let mut out = String::new();
    if start > 0 {
        out.push_str(&format!("[... {start} lines omitted ...]\n"));
    }
    out.push_str(&all[start..].join("\n"));
    out
}

/// A started command whose output is being collected in the background.
pub struct Running {
    pub label: String,
    pub cmdline: String,
    pub child: Child,
    pub started: Instant,
    pub junit_path: Option<PathBuf>,
    /// Processes whose cwd/cmdline mention this dir are killed if the run times out.
    pub cleanup_dir: Option<PathBuf>,
    out: Arc<Mutex<Vec<u8>>>,
    err: Arc<Mutex<Vec<u8>>>,
    readers: Vec<thread::JoinHandle<()>>,
}

impl Running {
    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    /// Send a signal to the process itself (not its group).
    pub fn signal(&self, sig: Signal) {
        kill(self.pid(), sig).unwrap_or_else(|e| panic!("kill({}, {sig}): {e}", self.pid()));
    }

    /// The exit status if the process has already exited (it is not reaped twice: `wait` still works).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("try_wait")
    }

    /// Waits `wait`, then fails the test if the process has already exited (it was meant
    /// to be interrupted while it ran).
    pub fn assert_still_running_after(mut self, wait: Duration) -> Running {
        std::thread::sleep(wait);
        if let Some(status) = self.exited() {
            let run = self.wait(default_timeout());
            panic!(
                "shardex exited ({}) before it was interrupted\n{}",
                describe_status(status),
                run.describe()
            );
        }
        self
    }

    /// Output so far (lossy UTF-8).
    pub fn stdout_so_far(&self) -> String {
        String::from_utf8_lossy(&self.out.lock().unwrap()).into_owned()
    }

    /// Wait for exit; on timeout kill the process group (and leftovers in `cleanup_dir`) and panic.
    pub fn wait(mut self, timeout: Duration) -> RunOutput {
        let deadline = self.started + timeout;
        let status = loop {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                break st;
            }
            if Instant::now() >= deadline {
                let _ = killpg(self.pid(), Signal::SIGKILL);
                let _ = self.child.kill();
                let _ = self.child.wait();
                let mut killed = Vec::new();
                if let Some(dir) = &self.cleanup_dir {
                    killed = kill_processes_referencing(dir);
                }
                thread::sleep(Duration::from_millis(200));
                panic!(
                    "TIMEOUT: {} did not finish within {:?}; killed it{}\n--- cmd: {}\n--- stdout (tail):\n{}\n--- stderr (tail):\n{}",
                    self.label,
                    timeout,
                    if killed.is_empty() {
                        String::new()
                    } else {
                        format!(" and leftovers {killed:?}")
                    },
                    self.cmdline,
                    tail(&String::from_utf8_lossy(&self.out.lock().unwrap()), 40),
                    tail(&String::from_utf8_lossy(&self.err.lock().unwrap()), 25),
                );
            }
            thread::sleep(Duration::from_millis(20));
        };
        let elapsed = self.started.elapsed();
        // Leftover processes that inherited the pipes would block the readers forever: bound the wait.
        let pipes_deadline = Instant::now() + Duration::from_secs(5);
        let mut pipes_held_open = false;
        for r in self.readers.drain(..) {
            while !r.is_finished() && Instant::now() < pipes_deadline {
                thread::sleep(Duration::from_millis(10));
            }
            if r.is_finished() {
                let _ = r.join();
            } else {
                pipes_held_open = true;
            }
        }
        let stdout = String::from_utf8_lossy(&self.out.lock().unwrap()).into_owned();
        let stderr = String::from_utf8_lossy(&self.err.lock().unwrap()).into_owned();
        RunOutput {
            label: self.label,
            cmdline: self.cmdline,
            status,
            stdout,
            stderr,
            elapsed,
            junit_path: self.junit_path,
            pipes_held_open,
        }
    }
}

fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

fn render_cmdline(cmd: &Command) -> String {
    let mut parts = vec![shell_quote(&cmd.get_program().to_string_lossy())];
    parts.extend(cmd.get_args().map(|a| shell_quote(&a.to_string_lossy())));
    let mut s = parts.join(" ");
    if let Some(dir) = cmd.get_current_dir() {
        s = format!("(cd {} && {s})", shell_quote(&dir.to_string_lossy()));
    }
    s
}

/// Environment every run gets: no colours, no user addopts, no inherited xdist worker identity.
fn scrub_env(cmd: &mut Command) {
    for var in [
        "PYTEST_ADDOPTS",
        "PYTEST_PLUGINS",
        "PYTEST_XDIST_WORKER",
        "PYTEST_XDIST_WORKER_COUNT",
        "PYTEST_XDIST_TESTRUNUID",
        "PYTEST_CURRENT_TEST",
        "PYTEST_DISABLE_PLUGIN_AUTOLOAD",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("PY_COLORS", "0")
        .env("NO_COLOR", "1")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("COLUMNS", "120");
}

/// Start `cmd` in its own process group with stdout/stderr collected.
pub fn start(label: &str, mut cmd: Command, junit_path: Option<PathBuf>) -> Running {
    scrub_env(&mut cmd);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let cmdline = render_cmdline(&cmd);
    let cleanup_dir = cmd.get_current_dir().map(Path::to_path_buf);
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {label}: {cmdline}: {e}"));
    let out = Arc::new(Mutex::new(Vec::new()));
    let err = Arc::new(Mutex::new(Vec::new()));
    let mut readers = Vec::new();
    if let Some(pipe) = child.stdout.take() {
        readers.push(spawn_reader(pipe, out.clone()));
    }
    if let Some(pipe) = child.stderr.take() {
        readers.push(spawn_reader(pipe, err.clone()));
    }
    Running {
        label: label.to_string(),
        cmdline,
        child,
        started,
        junit_path,
        cleanup_dir,
        out,
        err,
        readers,
    }
}

fn spawn_reader(
    mut pipe: impl Read + Send + 'static,
    buf: Arc<Mutex<Vec<u8>>>,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let mut chunk = [0u8; 8192];
        loop {
            match pipe.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.lock().unwrap().extend_from_slice(&chunk[..n]),
            }
        }
    })
}

/// Wait for several runs at once (K agents playing K CI containers): each is reaped when it
/// exits, so each `elapsed` is its own (waiting one after the other would stretch the
/// earlier finishers' times). A timeout panics as [`Running::wait`] does.
pub fn wait_all(runs: Vec<Running>, timeout: Duration) -> Vec<RunOutput> {
    let waiters: Vec<_> = runs
        .into_iter()
        .map(|r| thread::spawn(move || r.wait(timeout)))
        .collect();
    waiters
        .into_iter()
        .map(|w| {
            w.join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
        .collect()
}

fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// `pid` and every live descendant (by parent pid, whatever their process groups).
pub fn process_tree(pid: i32) -> Vec<i32> {
    let mut parents: Vec<(i32, i32)> = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for e in entries.flatten() {
            if let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) {
                if let Some(pp) = parent_of(p) {
                    parents.push((p, pp));
                }
            }
        }
    }
    let mut tree = vec![pid];
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        tree.extend(
            parents
                .iter()
                .filter(|(_, pp)| *pp == parent)
                .map(|(p, _)| *p),
        );
        i += 1;
    }
    tree
}

/// SIGKILL a process and all its descendants at once, as when a CI container dies (its
/// workers may sit in process groups of their own). Everything is stopped first, so nothing
/// forks or reacts between the listing and the kill. Returns the pids killed.
pub fn kill_tree(pid: i32) -> Vec<i32> {
    let tree = process_tree(pid);
    for p in &tree {
        let _ = kill(Pid::from_raw(*p), Signal::SIGSTOP);
    }
    let tree = process_tree(pid);
    for p in &tree {
        let _ = kill(Pid::from_raw(*p), Signal::SIGKILL);
    }
    tree
}

/// Builder for `python -m pytest` (baseline) and `shardex-dup run` invocations in a suite dir.
pub struct Invocation {
    pub label: String,
    pub cmd: Command,
    pub junit_path: Option<PathBuf>,
}

impl Invocation {
    pub fn env(mut self, key: impl AsRef<OsStr>, val: impl AsRef<OsStr>) -> Self {
        self.cmd.env(key, val);
        self
    }

    pub fn start(self) -> Running {
        start(&self.label, self.cmd, self.junit_path)
    }

    /// Run to completion with [`default_timeout`].
    pub fn run(self) -> RunOutput {
        self.start().wait(default_timeout())
    }
}

/// Plain pytest in `dir`: `python -m pytest -p no:cacheprovider ARGS -o junit_family=xunit1 --junitxml=<junit>`.
pub fn pytest_cmd(dir: &Path, args: &[&str], junit: Option<&Path>) -> Invocation {
    let mut cmd = Command::new(venv_python());
    cmd.current_dir(dir)
        .args(["-m", "pytest", "-p", "no:cacheprovider"])
        .args(args);
    if let Some(j) = junit {
        cmd.args(["-o", "junit_family=xunit1"])
            .arg(format!("--junitxml={}", j.display()));
    }
    Invocation {
        label: "pytest".into(),
        cmd,
        junit_path: junit.map(Path::to_path_buf),
    }
}

/// `shardex-dup run --python <venv python> ARGS --junitxml=<junit>` in `dir`.
pub fn shardex_cmd(bin: &Path, dir: &Path, args: &[&str], junit: Option<&Path>) -> Invocation {
    let mut cmd = Command::new(bin);
    cmd.current_dir(dir)
        .arg("run")
        .arg("--python")
        .arg(venv_python())
        .args(args);
    if let Some(j) = junit {
        cmd.arg(format!("--junitxml={}", j.display()));
    }
    Invocation {
        label: "shardex".into(),
        cmd,
        junit_path: junit.map(Path::to_path_buf),
    }
}

/// `shardex-dup ARGS` exactly as given (no `run`, no `--python`): for CLI error cases.
pub fn shardex_raw(bin: &Path, dir: &Path, args: &[&str]) -> Invocation {
    let mut cmd = Command::new(bin);
    cmd.current_dir(dir).args(args);
    Invocation {
        label: "shardex".into(),
        cmd,
        junit_path: None,
    }
}

// ------------------------------------------------------------------------------------------ summary

/// Counts from pytest's final line, keyed by pytest's words; singular forms are normalised to
/// plural (`warning` → `warnings`, `error` → `errors`). "no tests ran" gives an empty map.
pub type Summary = BTreeMap<String, u64>;

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c2 in chars.by_ref() {
                    if c2.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

fn is_duration(tok: &str) -> bool {
    // "0.52s", "12s", "61.23s (0:01:01)"
    let tok = tok.split_whitespace().next().unwrap_or("");
    let Some(num) = tok.strip_suffix('s') else {
        return false;
    };
    !num.is_empty() && num.chars().all(|c| c.is_ascii_digit() || c == '.')
}

/// Parse one candidate summary line (with or without the `=====` border).
pub fn parse_summary_line(line: &str) -> Option<Summary> {
    let line = strip_ansi(line);
    let body = line.trim().trim_matches('=').trim();
    let idx = body.rfind(" in ")?;
    let (counts, rest) = (&body[..idx], &body[idx + 4..]);
    if !is_duration(rest) {
        return None;
    }
    let mut map = Summary::new();
    if counts.trim() == "no tests ran" {
        return Some(map);
    }
    for part in counts.split(',') {
        let mut it = part.split_whitespace();
        let n: u64 = it.next()?.parse().ok()?;
        let word = it.next()?;
        if it.next().is_some() {
            return None;
        }
        let word = match word {
            "warning" => "warnings",
            "error" => "errors",
            w => w,
        };
        *map.entry(word.to_string()).or_default() += n;
    }
    if map.is_empty() {
        None
    } else {
        Some(map)
    }
}

/// The last summary line in a run's stdout.
pub fn parse_summary(stdout: &str) -> Option<Summary> {
    stdout.lines().rev().find_map(parse_summary_line)
}

pub fn format_summary(s: &Summary) -> String {
    if s.is_empty() {
        return "no tests ran".into();
    }
    s.iter()
        .map(|(k, v)| format!("{v} {k}"))
        .collect::<Vec<_>>()
        .join(", ")
}

// ------------------------------------------------------------------------------------------ JUnit

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Pass,
    Failure,
    Error,
    Skipped,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Pass => "pass",
            Kind::Failure => "failure",
            Kind::Error => "error",
            Kind::Skipped => "skipped",
        })
    }
}

#[derive(Clone, Debug, Default)]
pub struct TestCase {
    pub classname: String,
    pub name: String,
    pub file: Option<String>,
    pub line: Option<String>,
    pub time: Option<f64>,
    pub kind: Option<Kind>,
    /// `message` of the failure/error/skipped element.
    pub message: Option<String>,
    /// `type` of the `<skipped>` element (`pytest.skip`, `pytest.xfail`).
    pub skip_type: Option<String>,
    /// `type` of the failure/error element, when present.
    pub result_type: Option<String>,
    /// Text of the failure/error/skipped element (traceback etc.).
    pub text: String,
    pub properties: Vec<(String, String)>,
    pub system_out: String,
    pub system_err: String,
    /// `<flakyFailure>`/`<rerunFailure>` children (earlier attempts of a retried test).
    pub reruns: usize,
    /// The same children with their details, in document order.
    pub rerun_children: Vec<RerunChild>,
}

/// One `<flakyFailure>`/`<flakyError>`/`<rerunFailure>`/`<rerunError>` child of a testcase
/// (Maven surefire's layout for earlier attempts of a retried test).
#[derive(Clone, Debug, Default)]
pub struct RerunChild {
    /// The element name, e.g. `flakyFailure`.
    pub tag: String,
    pub message: Option<String>,
    pub result_type: Option<String>,
    /// All text inside the element (nested `<stackTrace>`, `<system-out>`... included).
    pub text: String,
}

impl RerunChild {
    /// message, type and text together: what a human would read about this attempt.
    pub fn all_text(&self) -> String {
        format!(
            "{}\n{}\n{}",
            self.message.as_deref().unwrap_or(""),
            self.result_type.as_deref().unwrap_or(""),
            self.text
        )
    }
}

impl TestCase {
    pub fn kind(&self) -> Kind {
        self.kind.unwrap_or(Kind::Pass)
    }

    /// Everything a human would read about this test's result: message, text, captured output.
    pub fn all_text(&self) -> String {
        format!(
            "{}\n{}\n{}\n{}",
            self.message.as_deref().unwrap_or(""),
            self.text,
            self.system_out,
            self.system_err
        )
    }

    /// The fields a parity comparison looks at (not `time`, not captured output or tracebacks).
    pub fn key(&self) -> CaseKey {
        CaseKey {
            classname: self.classname.clone(),
            name: self.name.clone(),
            file: self.file.clone(),
            line: self.line.clone(),
            kind: self.kind(),
            message: self.message.clone(),
            skip_type: self.skip_type.clone(),
            properties: self.properties.clone(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct CaseKey {
    pub classname: String,
    pub name: String,
    pub file: Option<String>,
    pub line: Option<String>,
    pub kind: Kind,
    pub message: Option<String>,
    pub skip_type: Option<String>,
    pub properties: Vec<(String, String)>,
}

impl fmt::Display for CaseKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}::{} [{}] @{}:{}",
            self.classname,
            self.name,
            self.kind,
            self.file.as_deref().unwrap_or("-"),
            self.line.as_deref().unwrap_or("-")
        )?;
        if let Some(t) = &self.skip_type {
            write!(f, " type={t}")?;
        }
        if let Some(m) = &self.message {
            let m: String = m.chars().take(160).collect();
            write!(f, " message={m:?}")?;
        }
        if !self.properties.is_empty() {
            write!(f, " properties={:?}", self.properties)?;
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Default)]
pub struct JunitSuite {
    pub name: String,
    pub attrs: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Default)]
pub struct JunitReport {
    pub suites: Vec<JunitSuite>,
    pub cases: Vec<TestCase>,
}

impl JunitReport {
    pub fn find(&self, classname: &str, name: &str) -> Vec<&TestCase> {
        self.cases
            .iter()
            .filter(|c| c.classname == classname && c.name == name)
            .collect()
    }

    /// Replace `root` (e.g. the suite dir) by `<ROOT>` in messages and texts.
    pub fn normalize_paths(&mut self, root: &Path) {
        let r = root.to_string_lossy().into_owned();
        for c in &mut self.cases {
            if let Some(m) = &mut c.message {
                *m = m.replace(&r, "<ROOT>");
            }
            c.text = c.text.replace(&r, "<ROOT>");
        }
    }
}

fn attrs_of(e: &BytesStart) -> Result<BTreeMap<String, String>, String> {
    let mut map = BTreeMap::new();
    for a in e.attributes() {
        let a = a.map_err(|e| e.to_string())?;
        let key = String::from_utf8_lossy(a.key.as_ref()).into_owned();
        let val = a.unescape_value().map_err(|e| e.to_string())?.into_owned();
        map.insert(key, val);
    }
    Ok(map)
}

/// Which text buffer we are inside.
#[derive(Clone, Copy, PartialEq)]
enum TextSink {
    None,
    Result,
    SystemOut,
    SystemErr,
    Rerun,
}

const RERUN_TAGS: [&str; 4] = ["flakyFailure", "rerunFailure", "flakyError", "rerunError"];

/// Parse a JUnit XML report (pytest's xunit1 layout: `<testsuites><testsuite><testcase>...`).
pub fn parse_junit(xml: &str) -> Result<JunitReport, String> {
    let mut reader = Reader::from_str(xml);
    reader.config_mut().trim_text(false);
    let mut report = JunitReport::default();
    let mut current: Option<TestCase> = None;
    let mut sink = TextSink::None;
    let mut stack: Vec<String> = Vec::new();
    let mut saw_root = false;

    loop {
        let ev = reader
            .read_event()
            .map_err(|e| format!("at byte {}: {e}", reader.buffer_position()))?;
        match ev {
            Event::Eof => break,
            Event::Start(ref e) | Event::Empty(ref e) => {
                let is_empty = matches!(ev, Event::Empty(_));
                let tag = String::from_utf8_lossy(e.name().as_ref()).into_owned();
                let attrs = attrs_of(e)?;
                saw_root = true;
                match tag.as_str() {
                    "testsuite" => report.suites.push(JunitSuite {
                        name: attrs.get("name").cloned().unwrap_or_default(),
                        attrs: attrs.clone(),
                    }),
                    "testcase" => {
                        if current.is_some() {
                            return Err("nested <testcase>".into());
                        }
                        let tc = TestCase {
                            classname: attrs.get("classname").cloned().unwrap_or_default(),
                            name: attrs.get("name").cloned().unwrap_or_default(),
                            file: attrs.get("file").cloned(),
                            line: attrs.get("line").cloned(),
                            time: attrs.get("time").and_then(|t| t.parse().ok()),
                            ..Default::default()
                        };
                        if is_empty {
                            report.cases.push(tc);
                        } else {
                            current = Some(tc);
                        }
                    }
                    "failure" | "error" | "skipped" => {
                        if let Some(tc) = current.as_mut() {
                            let kind = match tag.as_str() {
                                "failure" => Kind::Failure,
                                "error" => Kind::Error,
                                _ => Kind::Skipped,
                            };
                            // precedence if several: error > failure > skipped
                            let rank = |k: Kind| match k {
                                Kind::Error => 3,
                                Kind::Failure => 2,
                                Kind::Skipped => 1,
                                Kind::Pass => 0,
                            };
                            let replaces = match tc.kind {
                                None => true,
                                Some(k) => rank(kind) > rank(k),
                            };
                            if replaces {
                                tc.kind = Some(kind);
                                tc.message = attrs.get("message").cloned();
                                if kind == Kind::Skipped {
                                    tc.skip_type = attrs.get("type").cloned();
                                    tc.result_type = None;
                                } else {
                                    tc.result_type = attrs.get("type").cloned();
                                    tc.skip_type = None;
                                }
                            }
                            if !is_empty {
                                sink = TextSink::Result;
                            }
                        }
                    }
                    "flakyFailure" | "rerunFailure" | "flakyError" | "rerunError" => {
                        if let Some(tc) = current.as_mut() {
                            tc.reruns += 1;
                            tc.rerun_children.push(RerunChild {
                                tag: tag.clone(),
                                message: attrs.get("message").cloned(),
                                result_type: attrs.get("type").cloned(),
                                text: String::new(),
                            });
                            if !is_empty {
                                sink = TextSink::Rerun;
                            }
                        }
                    }
                    "property" => {
                        if let Some(tc) = current.as_mut() {
                            tc.properties.push((
                                attrs.get("name").cloned().unwrap_or_default(),
                                attrs.get("value").cloned().unwrap_or_default(),
                            ));
                        }
                    }
                    "system-out" if !is_empty && stack.last().is_some_and(|p| p == "testcase") => {
                        sink = TextSink::SystemOut
                    }
                    "system-err" if !is_empty && stack.last().is_some_and(|p| p == "testcase") => {
                        sink = TextSink::SystemErr
                    }
                    _ => {}
                }
                if !is_empty {
                    stack.push(tag);
                }
            }
            Event::End(ref e) => {
                let tag = String::from_utf8_lossy(e.name().as_ref()).into_owned();
                match stack.pop() {
                    Some(open) if open == tag => {}
                    other => return Err(format!("</{tag}> closes {other:?}")),
                }
                match tag.as_str() {
                    "testcase" => {
                        let tc = current.take().ok_or("</testcase> without <testcase>")?;
                        report.cases.push(tc);
                        sink = TextSink::None;
                    }
                    "failure" | "error" | "skipped" | "system-out" | "system-err" => {
                        sink = TextSink::None
                    }
                    t if RERUN_TAGS.contains(&t) => sink = TextSink::None,
                    _ => {}
                }
                // still inside a rerun child (its nested <stackTrace>, <system-out>... ended)
                if stack.iter().any(|t| RERUN_TAGS.contains(&t.as_str())) {
                    sink = TextSink::Rerun;
                }
            }
            Event::Text(t) => {
                let s = t.unescape().map_err(|e| e.to_string())?;
                push_text(&mut current, sink, &s);
            }
            Event::CData(t) => {
                let s = String::from_utf8_lossy(&t.into_inner()).into_owned();
                push_text(&mut current, sink, &s);
            }
            _ => {}
        }
    }
    if !saw_root {
        return Err("empty document".into());
    }
    if !stack.is_empty() {
        return Err(format!("unclosed elements at end of file: {stack:?}"));
    }
    Ok(report)
}

fn push_text(current: &mut Option<TestCase>, sink: TextSink, s: &str) {
    if let Some(tc) = current.as_mut() {
        match sink {
            TextSink::Result => tc.text.push_str(s),
            TextSink::SystemOut => tc.system_out.push_str(s),
            TextSink::SystemErr => tc.system_err.push_str(s),
            TextSink::Rerun => {
                if let Some(child) = tc.rerun_children.last_mut() {
                    child.text.push_str(s)
                }
            }
            TextSink::None => {}
        }
    }
}

// ------------------------------------------------------------------------------------------ comparing

/// Multiset difference of testcases (order ignored); None when equal.
pub fn diff_junit(
    left_label: &str,
    left: &JunitReport,
    right_label: &str,
    right: &JunitReport,
) -> Option<String> {
    let mut counts: BTreeMap<CaseKey, (usize, usize)> = BTreeMap::new();
    for c in &left.cases {
        counts.entry(c.key()).or_default().0 += 1;
    }
    for c in &right.cases {
        counts.entry(c.key()).or_default().1 += 1;
    }
    let mut only_left = Vec::new();
    let mut only_right = Vec::new();
    for (k, (l, r)) in &counts {
        for _ in *r..*l {
            only_left.push(k);
        }
        for _ in *l..*r {
            only_right.push(k);
        }
    }
    let lnames: Vec<&str> = left.suites.iter().map(|s| s.name.as_str()).collect();
    let rnames: Vec<&str> = right.suites.iter().map(|s| s.name.as_str()).collect();
    if only_left.is_empty() && only_right.is_empty() && lnames == rnames {
        return None;
    }
    let mut out = format!(
        "JUnit testcases differ ({left_label}: {} cases, {right_label}: {} cases)\n",
        left.cases.len(),
        right.cases.len()
    );
    if lnames != rnames {
        out.push_str(&format!(
            "  testsuite names: {left_label} {lnames:?} vs {right_label} {rnames:?}\n"
        ));
    }
    // Pair up same-named cases that differ only in details, so the diff reads as "changed".
    let mut changed = Vec::new();
    only_left.retain(|l| {
        if let Some(pos) = only_right
            .iter()
            .position(|r| r.classname == l.classname && r.name == l.name)
        {
            changed.push((*l, only_right.remove(pos)));
            false
        } else {
            true
        }
    });
    for (l, r) in &changed {
        out.push_str(&format!("  ~ {left_label}:  {l}\n    {right_label}: {r}\n"));
    }
    for k in &only_left {
        out.push_str(&format!("  - only in {left_label}:  {k}\n"));
    }
    for k in &only_right {
        out.push_str(&format!("  + only in {right_label}: {k}\n"));
    }
    Some(out)
}

/// Readable difference between two summaries; None when equal.
pub fn diff_summary(
    left_label: &str,
    left: &Summary,
    right_label: &str,
    right: &Summary,
) -> Option<String> {
    if left == right {
        return None;
    }
    let mut out = format!(
        "summary differs:\n  {left_label}: {}\n  {right_label}: {}\n",
        format_summary(left),
        format_summary(right)
    );
    let keys: std::collections::BTreeSet<&String> = left.keys().chain(right.keys()).collect();
    for k in keys {
        let (l, r) = (
            left.get(k).copied().unwrap_or(0),
            right.get(k).copied().unwrap_or(0),
        );
        if l != r {
            out.push_str(&format!("    {k}: {l} vs {r}\n"));
        }
    }
    Some(out)
}

/// Compare two runs: exit code, summary counts, JUnit testcases (multiset). Returns all differences.
pub fn compare_runs(expected: &RunOutput, actual: &RunOutput, root: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    if expected.code() != actual.code() {
        problems.push(format!(
            "exit code differs: {} {} vs {} {}",
            expected.label,
            describe_status(expected.status),
            actual.label,
            describe_status(actual.status)
        ));
    }
    match (
        parse_summary(&expected.stdout),
        parse_summary(&actual.stdout),
    ) {
        (Some(e), Some(a)) => {
            if let Some(d) = diff_summary(&expected.label, &e, &actual.label, &a) {
                problems.push(d);
            }
        }
        (e, a) => problems.push(format!(
            "summary line missing: {} {:?}, {} {:?}",
            expected.label,
            e.map(|s| format_summary(&s)),
            actual.label,
            a.map(|s| format_summary(&s))
        )),
    }
    let load = |r: &RunOutput| -> Result<JunitReport, String> {
        let p = r.junit_path.as_ref().ok_or("no JUnit path")?;
        let text = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
        let mut rep = parse_junit(&text).map_err(|e| format!("{}: {e}", p.display()))?;
        rep.normalize_paths(root);
        Ok(rep)
    };
    match (load(expected), load(actual)) {
        (Ok(e), Ok(a)) => {
            if let Some(d) = diff_junit(&expected.label, &e, &actual.label, &a) {
                problems.push(d);
            }
        }
        (e, a) => {
            if let Err(e) = e {
                problems.push(format!("{} JUnit: {e}", expected.label));
            }
            if let Err(a) = a {
                problems.push(format!("{} JUnit: {a}", actual.label));
            }
        }
    }
    problems
}

/// Panic with every difference (and both runs' output) unless the runs agree.
pub fn assert_same_results(context: &str, expected: &RunOutput, actual: &RunOutput, root: &Path) {
    let problems = compare_runs(expected, actual, root);
    if !problems.is_empty() {
        panic!(
            "{context}: {} and {} disagree\n{}\n{}\n{}",
            expected.label,
            actual.label,
            problems.join("\n"),
            expected.describe(),
            actual.describe()
        );
    }
}

// ------------------------------------------------------------------------------------------ processes

/// A live process that mentions a path in its cwd or command line.
#[derive(Debug, Clone)]
pub struct ProcInfo {
    pub pid: i32,
    pub cmdline: String,
    pub cwd: Option<PathBuf>,
}

fn proc_state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) S ..." — comm may contain spaces/parens: take what follows the last ')'
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// Whether `pid` is alive (exists and is not a zombie).
pub fn pid_alive(pid: i32) -> bool {
    matches!(proc_state(pid), Some(s) if s != 'Z' && s != 'X')
}

fn cmdline_of(pid: i32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            b.split(|&c| c == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

/// Live (non-zombie) processes other than this one whose cwd is inside `dir` or whose command
/// line mentions it.
pub fn processes_referencing(dir: &Path) -> Vec<ProcInfo> {
    let me = std::process::id() as i32;
    let needle = dir.to_string_lossy().into_owned();
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if pid == me || !pid_alive(pid) {
            continue;
        }
        let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).ok();
        let cmdline = cmdline_of(pid);
        let cwd_hit = cwd.as_ref().is_some_and(|c| c.starts_with(dir));
        if cwd_hit || cmdline.contains(&needle) {
            // re-check: it may have exited while we looked
            if pid_alive(pid) {
                found.push(ProcInfo { pid, cmdline, cwd });
            }
        }
    }
    found
}

/// SIGKILL every process [`processes_referencing`] finds; returns what it killed.
pub fn kill_processes_referencing(dir: &Path) -> Vec<ProcInfo> {
    let found = processes_referencing(dir);
    for p in &found {
        let _ = kill(Pid::from_raw(p.pid), Signal::SIGKILL);
    }
    found
}

/// Wait up to `grace` for processes referencing `dir` to disappear; if any remain, kill them
/// (so one failing test does not poison the machine) and return them.
pub fn survivors_after(dir: &Path, grace: Duration) -> Vec<ProcInfo> {
    let deadline = Instant::now() + grace;
    loop {
        let found = processes_referencing(dir);
        if found.is_empty() {
            return found;
        }
        if Instant::now() >= deadline {
            return kill_processes_referencing(dir);
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Panic if any process of the run (cwd or cmdline in `dir`) is still alive after a short grace.
pub fn assert_no_survivors(dir: &Path, run: &RunOutput) {
    let left = survivors_after(dir, Duration::from_secs(2));
    assert!(
        left.is_empty(),
        "processes of the run survived its exit (killed them now):\n{}\n{}",
        left.iter()
            .map(|p| format!("  pid {} cwd={:?} cmd={}", p.pid, p.cwd, p.cmdline))
            .collect::<Vec<_>>()
            .join("\n"),
        run.describe()
    );
    assert!(
        !run.pipes_held_open,
        "a leftover process kept the run's stdout/stderr open\n{}",
        run.describe()
    );
}

// ------------------------------------------------------------------------------------------ unit tests

const SQL_SCRIPT: &str = r#"
import os, sys
import psycopg
conn = psycopg.connect(
    host=os.environ.get("SHARDEX_PG_HOST", "127.0.0.1"),
    port=os.environ["SHARDEX_PG_PORT"],
    user=os.environ.get("SHARDEX_PG_USER", "shardex"),
    password=os.environ.get("SHARDEX_PG_PASSWORD", "shardex"),
    dbname="postgres",
    autocommit=True,
    connect_timeout=10,
)
for q in sys.argv[1:]:
    cur = conn.execute(q)
    if cur.description:
        for row in cur.fetchall():
            print("\t".join(str(x) for x in row))
"#;

/// Runs SQL statements against the private PostgreSQL's `postgres` DB as the app role
/// (`scripts/pg.sh`); returns the rows, columns split at tabs.
pub fn sql(queries: &[&str]) -> Vec<Vec<String>> {
    let mut cmd = Command::new(venv_python());
    cmd.arg("-c").arg(SQL_SCRIPT).args(queries);
    let out = start("psql (psycopg)", cmd, None).wait(default_timeout());
    assert_eq!(
        out.code(),
        Some(0),
        "SQL failed: {queries:?}\n{}",
        out.describe()
    );
    out.stdout
        .lines()
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_lines() {
        let s = parse_summary_line("=== 1 failed, 3 passed, 1 skipped in 0.52s ===").unwrap();
        assert_eq!(format_summary(&s), "1 failed, 3 passed, 1 skipped");
        let s = parse_summary_line("15 failed, 65 passed, 1 warning, 1 error in 0.19s").unwrap();
        assert_eq!(s["warnings"], 1);
        assert_eq!(s["errors"], 1);
        let s =
            parse_summary_line("= 2 rerun, 1 xfailed, 1 xpassed in 61.23s (0:01:01) =").unwrap();
        assert_eq!(s["rerun"], 2);
        assert!(parse_summary_line("==== no tests ran in 0.01s ====")
            .unwrap()
            .is_empty());
        assert!(parse_summary_line("collected 3 items").is_none());
        assert!(parse_summary_line("test_a.py::test_x in 3 parts").is_none());
        assert!(parse_summary_line("\u{1b}[31m=== 2 errors in 0.15s ===\u{1b}[0m").is_some());
        let out = "foo\n=== 1 passed in 0.1s ===\nbar baz\n";
        assert_eq!(parse_summary(out).unwrap()["passed"], 1);
    }

    #[test]
    fn junit_parse_and_diff() {
        let xml = r#"<?xml version="1.0" encoding="utf-8"?><testsuites name="pytest tests"><testsuite name="s" errors="1" failures="1" skipped="1" tests="4">
<testcase classname="test_a" name="test_ok" file="test_a.py" line="0" time="0.001"><properties><property name="k" value="v" /></properties></testcase>
<testcase classname="test_a" name="test_fail" file="test_a.py" line="3" time="0.1"><failure message="assert 1 == 2&#10;x">trace &lt;here&gt;</failure><system-out>out</system-out></testcase>
<testcase classname="test_a" name="test_skip" time="0"><skipped type="pytest.skip" message="why">test_a.py:5: why</skipped></testcase>
<testcase classname="test_a" name="test_err" time="0"><error message="failed on setup">E</error></testcase>
<testcase classname="" name="test_b" time="0" /></testsuite></testsuites>"#;
        let r = parse_junit(xml).unwrap();
        assert_eq!(r.suites[0].name, "s");
        assert_eq!(r.cases.len(), 5);
        assert_eq!(r.cases[0].properties, vec![("k".into(), "v".into())]);
        assert_eq!(r.cases[1].kind(), Kind::Failure);
        assert_eq!(r.cases[1].message.as_deref(), Some("assert 1 == 2\nx"));
        assert_eq!(r.cases[1].text, "trace <here>");
        assert_eq!(r.cases[1].system_out, "out");
        assert_eq!(r.cases[2].skip_type.as_deref(), Some("pytest.skip"));
        assert_eq!(r.cases[3].kind(), Kind::Error);
        assert_eq!(r.cases[4].kind(), Kind::Pass);
        assert!(diff_junit("a", &r, "b", &r).is_none());
        let mut r2 = r.clone();
        r2.cases[1].time = Some(9.0);
        r2.cases[1].text = "different traceback".into();
        assert!(
            diff_junit("a", &r, "b", &r2).is_none(),
            "time and text are ignored"
        );
        r2.cases[2].kind = Some(Kind::Pass);
        r2.cases.pop();
        let d = diff_junit("a", &r, "b", &r2).unwrap();
        assert!(d.contains("~ a:") && d.contains("only in a"), "{d}");
        assert!(parse_junit("<testsuites><testsuite>").is_err());
        let flaky = r#"<testsuites><testsuite name="s">
<testcase classname="t" name="a"><flakyFailure message="WorkerCrashed: exit code 3" type="WorkerCrashed"><stackTrace>tb</stackTrace><system-err>err</system-err></flakyFailure><flakyError message="failed on setup"/><system-out>final</system-out></testcase>
<testcase classname="t" name="b"><failure message="boom">x</failure><rerunFailure message="boom 1">y</rerunFailure></testcase>
</testsuite></testsuites>"#;
        let r = parse_junit(flaky).unwrap();
        assert_eq!(r.cases[0].kind(), Kind::Pass);
        assert_eq!(r.cases[0].reruns, 2);
        let c = &r.cases[0].rerun_children;
        assert_eq!(c[0].tag, "flakyFailure");
        assert_eq!(c[0].message.as_deref(), Some("WorkerCrashed: exit code 3"));
        assert_eq!(c[0].text, "tberr");
        assert_eq!(c[1].tag, "flakyError");
        assert_eq!(r.cases[0].system_out, "final");
        assert_eq!(r.cases[1].kind(), Kind::Failure);
        assert_eq!(r.cases[1].text, "x");
        assert_eq!(r.cases[1].rerun_children[0].text, "y");
        assert!(parse_junit("").is_err());
    }
}
