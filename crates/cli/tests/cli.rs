//! The `shardex` binary's help and its error lines, snapshotted. Every case runs in a fresh
//! temp folder with a cleared environment, and exits before a test could run.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

type Args = &'static [&'static str];
type EnvPairs = &'static [(&'static str, &'static str)];

struct Output {
    code: i32,
    stdout: String,
    stderr: String,
}

/// A temp working folder for one invocation.
struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path().join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(&path, text).expect("write");
        path
    }

    /// An executable shell script standing in for Python.
    fn fake_python(&self, name: &str, body: &str) -> PathBuf {
        let path = self.write(name, &format!("#!/bin/sh\n{body}\n"));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        path
    }

    fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let out = Command::new(env!("CARGO_BIN_EXE_shardex"))
            .args(args)
            .current_dir(self.path())
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", self.path())
            // clap wraps help at this width: stable snapshots.
            .env("COLUMNS", "100")
            .envs(env.iter().copied())
            .output()
            .expect("run shardex");
        let root = self.path().display().to_string();
        let clean = |bytes: &[u8]| String::from_utf8_lossy(bytes).replace(&root, "[TMP]");
        Output {
            code: out.status.code().expect("exit code"),
            stdout: clean(&out.stdout),
            stderr: clean(&out.stderr),
        }
    }

    /// Runs a case expected to fail with one error line; returns that line.
    fn error_line(&self, args: &[&str], env: &[(&str, &str)], code: i32) -> String {
        let out = self.run(args, env);
        assert_eq!(
            out.code, code,
            "{args:?}\nstdout:\n{}\nstderr:\n{}",
            out.stdout, out.stderr
        );
        assert_eq!(out.stdout, "", "{args:?}");
        let lines: Vec<&str> = out.stderr.lines().collect();
        assert_eq!(
            lines.len(),
            1,
            "{args:?}: expected one line:\n{}",
            out.stderr
        );
        lines[0].to_owned()
    }
}

#[test]
fn top_level_help() {
    let out = Sandbox::new().run(&["--help"], &[]);
    assert_eq!(out.code, 0);
    insta::assert_snapshot!("help", out.stdout);
}

#[test]
fn run_help() {
    let sandbox = Sandbox::new();
    // Secrets in the environment stay out of the help.
    let out = sandbox.run(
        &["run", "--help"],
        &[("SHARDEX_QUEUE", "redis://u:hunter2@h")],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(!out.stdout.contains("hunter2"));
    insta::assert_snapshot!("run_help", out.stdout);
    // The same text from every spelling.
    for args in [
        &["run", "-h"][..],
        &["help", "run"],
        &["run", "tests", "-vh"],
    ] {
        let other = sandbox.run(args, &[]);
        assert_eq!((other.code, &other.stdout), (0, &out.stdout), "{args:?}");
    }
}

#[test]
fn version() {
    let out = Sandbox::new().run(&["--version"], &[]);
    assert_eq!(out.code, 0);
    assert_eq!(
        out.stdout,
        format!("shardex {}\n", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn no_arguments_prints_help_as_a_usage_error() {
    let out = Sandbox::new().run(&[], &[]);
    assert_eq!(out.code, 4);
    assert!(
        out.stderr.contains("Usage: shardex <COMMAND>"),
        "{}",
        out.stderr
    );
}

#[test]
fn usage_errors() {
    let sandbox = Sandbox::new();
    let cases: &[(&str, Args, EnvPairs)] = &[
        ("unknown_subcommand", &["frobnicate"], &[]),
        ("bad_numprocesses", &["run", "-n", "many"], &[]),
        ("missing_value", &["run", "tests", "--maxfail"], &[]),
        ("dist_each", &["run", "--dist=each"], &[]),
        ("pdb", &["run", "--pdb"], &[]),
        ("bad_env_timeout", &["run"], &[("SHARDEX_TIMEOUT", "soon")]),
        (
            "bad_circle_index",
            &["run"],
            &[("CIRCLE_NODE_INDEX", "first")],
        ),
        (
            "node_index_out_of_range",
            &["run", "--node-index", "4"],
            &[("CIRCLE_NODE_TOTAL", "4")],
        ),
        (
            "redis_without_build_id",
            &["run", "--queue", "rediss://user:hunter2@cache:6380/1"],
            &[],
        ),
        ("bad_queue", &["run", "--queue", "memcached://cache"], &[]),
        (
            "missing_timings",
            &["run", "--timings", "nope/junit.xml"],
            &[],
        ),
        ("junitxml_is_a_folder", &["run", "--junitxml", "."], &[]),
        (
            "python_missing",
            &["run", "--python", "/nonexistent/python"],
            &[],
        ),
        (
            "python_missing_env",
            &["run"],
            &[("SHARDEX_PYTHON", "/nonexistent/python")],
        ),
        (
            "stale_virtualenv",
            &["run"],
            &[("VIRTUAL_ENV", "/nonexistent/venv")],
        ),
    ];
    for (name, args, env) in cases {
        let line = sandbox.error_line(args, env, 4);
        assert!(line.starts_with("shardex: error: "), "{name}: {line}");
        assert!(!line.contains("hunter2"), "{name}: {line}");
        insta::assert_snapshot!(*name, line);
    }
}

#[test]
fn unwritable_junitxml() {
    let sandbox = Sandbox::new();
    sandbox.write("blocker", "");
    let line = sandbox.error_line(&["run", "--junitxml", "blocker/junit.xml"], &[], 4);
    insta::assert_snapshot!(line, @"shardex: error: cannot write --junitxml blocker/junit.xml: blocker is a file, not a folder");
}

#[test]
fn malformed_timings() {
    let sandbox = Sandbox::new();
    sandbox.write("durations.json", "{ not json");
    let line = sandbox.error_line(&["run", "--timings", "durations.json"], &[], 4);
    assert!(line.starts_with("shardex: error: "), "{line}");
    assert!(line.contains("durations.json"), "{line}");
}

#[test]
fn config_file_errors() {
    let sandbox = Sandbox::new();
    sandbox.write("pyproject.toml", "[tool.shardex]\nkill_grace = 2\n");
    // Found from a subfolder too.
    std::fs::create_dir_all(sandbox.path().join("tests")).expect("mkdir");
    let out = Command::new(env!("CARGO_BIN_EXE_shardex"))
        .arg("run")
        .current_dir(sandbox.path().join("tests"))
        .env_clear()
        .output()
        .expect("run shardex");
    let stderr = String::from_utf8_lossy(&out.stderr)
        .replace(&sandbox.path().display().to_string(), "[TMP]");
    // An unknown key is a warning naming the nearest known key; the run goes on (here to
    // the next error: no Python in the empty environment).
    assert_eq!(out.status.code(), Some(4));
    let first = stderr.lines().next().unwrap_or_default();
    insta::assert_snapshot!(first, @"shardex: warning: [TMP]/pyproject.toml: unknown key 'kill_grace' in [tool.shardex], ignored; did you mean 'kill-grace'?");
    assert!(
        stderr.lines().nth(1).unwrap_or_default().contains("python"),
        "{stderr}"
    );

    sandbox.write("pyproject.toml", "[tool.shardex]\ntimeout = \"soon\"\n");
    let line = sandbox.error_line(&["run"], &[], 4);
    insta::assert_snapshot!(line, @"shardex: error: [TMP]/pyproject.toml: [tool.shardex] timeout: invalid value 'soon' (expected a number of seconds, e.g. 30 or 2.5)");
    // The command line wins; the file's bad value is not even read.
    let line = sandbox.error_line(&["run", "--timeout", "5", "-n", "x"], &[], 4);
    assert!(line.contains("-n/--numprocesses"), "{line}");
}

#[test]
fn python_without_pytest() {
    let sandbox = Sandbox::new();
    sandbox.fake_python(
        "venv/bin/python",
        "echo \"ModuleNotFoundError: No module named 'pytest'\" >&2; exit 1",
    );
    let line = sandbox.error_line(&["run"], &[("VIRTUAL_ENV", "venv")], 4);
    insta::assert_snapshot!(line, @"shardex: error: pytest is not installed for venv/bin/python (from $VIRTUAL_ENV); install it with: venv/bin/python -m pip install pytest");

    let python = sandbox.fake_python(
        "bin/python3",
        "echo 'SyntaxError: bad sitecustomize' >&2; exit 1",
    );
    let path_var = format!("{}:/usr/bin:/bin", python.parent().expect("bin").display());
    let out = sandbox.run(&["run"], &[("PATH", &path_var)]);
    assert_eq!(out.code, 4);
    insta::assert_snapshot!(out.stderr.trim_end(), @"shardex: error: [TMP]/bin/python3 (python3 on PATH) failed to import pytest (exit status: 1): SyntaxError: bad sitecustomize");
}

/// argv after `run --junitxml report.xml`, env, `[tool.shardex]` lines, and what the error
/// line must name.
type BadInput = (Args, EnvPairs, Option<&'static str>, &'static str);

const BAD_INPUTS: &[BadInput] = &[
    (&["--timeout", "1e20"], &[], None, "--timeout"),
    (&["--kill-grace", "1e20"], &[], None, "--kill-grace"),
    (&["--stop-grace", "inf"], &[], None, "--stop-grace"),
    (&["--reruns-delay", "1e300"], &[], None, "--reruns-delay"),
    (&["--timeout", "NaN"], &[], None, "--timeout"),
    (&["--timeout", "-1"], &[], None, "--timeout"),
    (&["-n", "-1"], &[], None, "-n/--numprocesses"),
    (&["-n", "99999999999"], &[], None, "-n/--numprocesses"),
    (&["-n", "2000"], &[], None, "-n/--numprocesses"),
    (&["--maxprocesses", "-3"], &[], None, "--maxprocesses"),
    (&["--maxfail", "-1"], &[], None, "--maxfail"),
    (&["--reruns", "1e3"], &[], None, "--reruns"),
    (
        &["--max-suite-reruns", "x"],
        &[],
        None,
        "--max-suite-reruns",
    ),
    (
        &["--node-index", "2", "--node-total", "2"],
        &[],
        None,
        "node index 2",
    ),
    (&["--node-total", "0"], &[], None, "--node-total"),
    (&["--color", "sometimes"], &[], None, "--color"),
    (
        &["--timeline", "t.png"],
        &[],
        None,
        "argument --timeline: invalid value 't.png'",
    ),
    (&["--queue", "redis://h"], &[], None, "needs a build id"),
    (&["--junitxml="], &[], None, "--junitxml"),
    (&[], &[("SHARDEX_TIMEOUT", "abc")], None, "SHARDEX_TIMEOUT"),
    (
        &[],
        &[("SHARDEX_KILL_GRACE", "1e20")],
        None,
        "SHARDEX_KILL_GRACE",
    ),
    (
        &[],
        &[("SHARDEX_NUMPROCESSES", "0.5")],
        None,
        "SHARDEX_NUMPROCESSES",
    ),
    (
        &[],
        &[("SHARDEX_TIMELINE", "t.txt")],
        None,
        "SHARDEX_TIMELINE",
    ),
    (
        &[],
        &[("CI_NODE_INDEX", "0"), ("CI_NODE_TOTAL", "2")],
        None,
        "CI_NODE_INDEX",
    ),
    (
        &[],
        &[("BUILDKITE_PARALLEL_JOB_COUNT", "0")],
        None,
        "BUILDKITE_PARALLEL_JOB_COUNT",
    ),
    (&[], &[], Some("timeout = 1e20"), "[tool.shardex] timeout"),
    (
        &[],
        &[],
        Some("kill-grace = -1"),
        "[tool.shardex] kill-grace",
    ),
    (
        &[],
        &[],
        Some("numprocesses = nan"),
        "[tool.shardex] numprocesses",
    ),
    (
        &[],
        &[],
        Some("node-total = 0"),
        "[tool.shardex] node-total",
    ),
    (
        &[],
        &[],
        Some("timeline = \"t.htmlx\""),
        "[tool.shardex] timeline",
    ),
    (
        &[],
        &[],
        Some("spawn = \"perhaps\""),
        "[tool.shardex] spawn",
    ),
    // Input that is fine up to finding Python: still no report file.
    (
        &["--python", "/nonexistent/python"],
        &[],
        None,
        "/nonexistent/python",
    ),
];

/// Bad input from every source: exit 4 with one `shardex: error:` line, never a panic, and
/// no report file (each case asks for `--junitxml report.xml`). The sandbox holds only the
/// case's `pyproject.toml` afterwards.
#[test]
fn bad_input_table() {
    for (args, env, pyproject, names) in BAD_INPUTS {
        let sandbox = Sandbox::new();
        if let Some(keys) = pyproject {
            sandbox.write("pyproject.toml", &format!("[tool.shardex]\n{keys}\n"));
        }
        let mut argv = vec!["run", "--junitxml", "report.xml"];
        argv.extend_from_slice(args);
        let line = sandbox.error_line(&argv, env, 4);
        assert!(line.starts_with("shardex: error: "), "{args:?}: {line}");
        assert!(
            line.contains(names),
            "{args:?} {env:?}: {line} should name {names}"
        );
        let left: Vec<_> = std::fs::read_dir(sandbox.path())
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name())
            .filter(|name| name != "pyproject.toml")
            .collect();
        assert!(left.is_empty(), "{args:?} {env:?}: left {left:?}");
    }
}

/// A report path in folders that do not exist yet passes the check without them being
/// made: a later usage error leaves neither the file nor its folders.
#[test]
fn report_path_check_leaves_nothing() {
    let sandbox = Sandbox::new();
    let line = sandbox.error_line(
        &[
            "run",
            "--junitxml",
            "new/dir/report.xml",
            "--python",
            "/nonexistent/python",
        ],
        &[],
        4,
    );
    assert!(line.contains("/nonexistent/python"), "{line}");
    assert!(!sandbox.path().join("new").exists());
}

/// `shardex report`'s bad input: one line, exit 4, the password never shown.
#[test]
fn report_refuses_bad_input() {
    let sandbox = Sandbox::new();
    let cases: &[(&[&str], &str)] = &[
        (
            &["report", "--queue", "memcached://h", "--build-id", "b"],
            "argument --queue: invalid value 'memcached://h'",
        ),
        (
            &[
                "report",
                "--queue",
                "redis://u:hunter2@h:99999",
                "--build-id",
                "b",
            ],
            "redis://u:***@h:99999",
        ),
        (
            &["report", "--queue", "redis://h"],
            "needs the job's build id: give --build-id",
        ),
        (
            &[
                "report",
                "--queue",
                "redis://h",
                "--build-id",
                "b",
                "--wait",
                "soon",
            ],
            "argument --wait: invalid value 'soon'",
        ),
    ];
    for (argv, expected) in cases {
        let line = sandbox.error_line(argv, &[], 4);
        assert!(line.contains(expected), "{argv:?}: {line}");
        assert!(!line.contains("hunter2"), "{argv:?}: {line}");
    }
}

/// `shardex report` against a Redis that never answers: it asks again until `--wait` is
/// over, then says so in one line and exits 3 (the job's result is unknown).
#[test]
fn report_gives_up_on_an_unreachable_queue_after_its_wait() {
    let sandbox = Sandbox::new();
    // A port nobody listens on (the kernel's pick, released at once).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("redis://u:hunter2@127.0.0.1:{port}");
    let started = std::time::Instant::now();
    let line = sandbox.error_line(
        &[
            "report",
            "--queue",
            &url,
            "--build-id",
            "b",
            "--wait",
            "1.5",
        ],
        &[],
        3,
    );
    let took = started.elapsed();
    assert!(
        line.starts_with(&format!(
            "shardex: error: redis://u:***@127.0.0.1:{port} (build b): "
        )),
        "{line}"
    );
    assert!(!line.contains("hunter2"), "{line}");
    assert!(
        took >= std::time::Duration::from_millis(1500),
        "gave up after {took:?}"
    );
}
