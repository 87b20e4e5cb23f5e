//! Resolution of the settings from argv, env and `[tool.shardex]`: precedence, ranges,
//! errors that name their layer.

use std::collections::HashMap;

use super::*;
use crate::compat::split_args;

type Argv = &'static [&'static str];
type EnvPairs = &'static [(&'static str, &'static str)];

fn resolve(
    argv: &[&str],
    env: &[(&str, &str)],
    pyproject: Option<&str>,
) -> Result<Settings, UsageError> {
    let (flags, rest) = split_args(argv.iter().copied())?;
    let env: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let file = match pyproject {
        Some(text) => FileSettings::parse("/src/pyproject.toml".into(), text)?,
        None => None,
    };
    Settings::resolve(flags, rest, &|name| env.get(name).cloned(), file.as_ref())
}

fn ok(argv: &[&str], env: &[(&str, &str)], pyproject: Option<&str>) -> Settings {
    resolve(argv, env, pyproject).unwrap_or_else(|e| panic!("{argv:?} {env:?}: {e}"))
}

fn err(argv: &[&str], env: &[(&str, &str)], pyproject: Option<&str>) -> String {
    match resolve(argv, env, pyproject) {
        Ok(s) => panic!("{argv:?} {env:?}: expected an error, got {s:?}"),
        Err(e) => e.to_string(),
    }
}

const FILE: &str = r#"
[project]
name = "x"

[tool.shardex]
timeout = 60
numprocesses = 3
dist = "loadfile"
timings = ["ci/junit", "/abs/durations.json"]
python = ".venv/bin/python"
kill-grace = 1.5
spawn = true
color = "no"
queue = "local"
"#;

#[test]
fn defaults() {
    let s = ok(&["tests"], &[], None);
    assert_eq!(s.numprocesses, NumProcesses::Auto);
    assert_eq!(s.dist, DistMode::Load);
    assert_eq!(s.timeout, None);
    assert_eq!(s.kill_grace, shardex_agent::DEFAULT_KILL_GRACE);
    assert_eq!(s.stop_grace, shardex_agent::DEFAULT_STOP_GRACE);
    assert_eq!(s.node, None);
    assert_eq!(s.timing_store, TimingStoreChoice::Default);
    assert_eq!(s.color, ColorChoice::Auto);
    assert_eq!(s.maxfail, None);
    assert_eq!(s.retry, RetryFlags::default());
    assert_eq!(s.python, None);
    assert!(!s.spawn);
    assert!(s.notes.is_empty());
    assert_eq!(s.pytest_args, ["tests"]);
}

/// Explicit zeros stay explicit: they must win over pytest's `addopts` in the run.
#[test]
fn explicit_zero_is_not_unset() {
    let s = ok(
        &["--maxfail", "0", "--reruns", "0", "--reruns-delay", "0"],
        &[],
        None,
    );
    assert_eq!(s.maxfail, Some(0));
    assert_eq!(s.retry.reruns, Some(0));
    assert_eq!(s.retry.reruns_delay, Some(0.0));
    assert_eq!(ok(&["--maxfail=3", "-x"], &[], None).maxfail, Some(1));
    assert_eq!(ok(&["-x", "--maxfail=3"], &[], None).maxfail, Some(3));
    let s = ok(
        &[
            "--reruns",
            "3",
            "--reruns-delay=0.5",
            "--only-rerun",
            "AssertionError",
            "--only-rerun=Timeout.*",
            "--rerun-except",
            "KeyError",
            "--fail-on-flaky",
            "--max-suite-reruns",
            "10",
        ],
        &[],
        None,
    );
    assert_eq!(
        s.retry,
        RetryFlags {
            reruns: Some(3),
            reruns_delay: Some(0.5),
            only_rerun: vec!["AssertionError".into(), "Timeout.*".into()],
            rerun_except: vec!["KeyError".into()],
            fail_on_flaky: true,
            max_suite_reruns: Some(10),
        }
    );
}

#[test]
fn file_layer() {
    let s = ok(&[], &[], Some(FILE));
    assert_eq!(s.timeout, Some(Duration::from_secs(60)));
    assert_eq!(s.numprocesses, NumProcesses::Count(3));
    assert_eq!(s.dist, DistMode::LoadFile);
    assert_eq!(
        s.timings,
        [
            PathBuf::from("/src/ci/junit"),
            PathBuf::from("/abs/durations.json")
        ]
    );
    assert_eq!(
        s.python,
        Some(PythonChoice {
            path: "/src/.venv/bin/python".into(),
            origin: "python in /src/pyproject.toml".into()
        })
    );
    assert_eq!(s.kill_grace, Duration::from_millis(1500));
    assert!(s.spawn);
    assert_eq!(s.color, ColorChoice::No);
}

#[test]
fn env_beats_file_and_cli_beats_env() {
    let env = [
        ("SHARDEX_TIMEOUT", "30"),
        ("SHARDEX_NUMPROCESSES", "logical"),
        ("SHARDEX_TIMINGS", "a.xml:b.json"),
        ("SHARDEX_PYTHON", "/usr/bin/python3.12"),
        ("SHARDEX_SPAWN", "0"),
        ("SHARDEX_COLOR", "yes"),
    ];
    let s = ok(&[], &env, Some(FILE));
    assert_eq!(s.timeout, Some(Duration::from_secs(30)));
    assert_eq!(s.numprocesses, NumProcesses::Logical);
    assert_eq!(s.timings, [PathBuf::from("a.xml"), PathBuf::from("b.json")]);
    assert_eq!(
        s.python.as_ref().map(|p| p.origin.as_str()),
        Some("SHARDEX_PYTHON")
    );
    assert!(!s.spawn, "SHARDEX_SPAWN=0 beats spawn = true in the file");
    assert_eq!(s.color, ColorChoice::Yes);
    // Still from the file.
    assert_eq!(s.dist, DistMode::LoadFile);

    let argv = [
        "--timeout=5",
        "-n",
        "2",
        "--timings",
        "c.xml",
        "--python",
        "py",
        "--color",
        "auto",
        "--dist",
        "loadscope",
    ];
    let s = ok(&argv, &env, Some(FILE));
    assert_eq!(s.timeout, Some(Duration::from_secs(5)));
    assert_eq!(s.numprocesses, NumProcesses::Count(2));
    assert_eq!(s.timings, [PathBuf::from("c.xml")]);
    assert_eq!(
        s.python,
        Some(PythonChoice {
            path: "py".into(),
            origin: "--python".into()
        })
    );
    assert_eq!(s.color, ColorChoice::Auto);
    assert_eq!(s.dist, DistMode::LoadScope);
    // --timeout 0 turns an env/file timeout off, as pytest-timeout's 0 does.
    assert_eq!(ok(&["--timeout", "0"], &env, Some(FILE)).timeout, None);
    // An empty variable is unset.
    assert_eq!(
        ok(&[], &[("SHARDEX_TIMEOUT", "")], Some(FILE)).timeout,
        Some(Duration::from_secs(60))
    );
}

#[test]
fn only_the_winning_layer_is_parsed() {
    let s = ok(&["--timeout", "5"], &[("SHARDEX_TIMEOUT", "soon")], None);
    assert_eq!(s.timeout, Some(Duration::from_secs(5)));
    assert_eq!(
        err(&[], &[("SHARDEX_TIMEOUT", "soon")], None),
        "SHARDEX_TIMEOUT: invalid value 'soon' (expected a number of seconds, e.g. 30 or 2.5)"
    );
}

#[test]
fn node_shares() {
    let share = |argv: Argv, env: EnvPairs| {
        ok(argv, env, None)
            .node
            .map(|n| (n.index, n.total, n.source))
    };
    let circle: EnvPairs = &[("CIRCLE_NODE_INDEX", "2"), ("CIRCLE_NODE_TOTAL", "4")];
    assert_eq!(share(&[], &[]), None);
    assert_eq!(share(&[], circle), Some((2, 4, "CircleCI".into())));
    assert_eq!(
        share(&[], &[("CI_NODE_INDEX", "2"), ("CI_NODE_TOTAL", "3")]),
        Some((1, 3, "GitLab".into()))
    );
    // Explicit values override the CI's, field by field.
    assert_eq!(
        share(&["--node-total", "3"], circle),
        Some((2, 3, "--node-total".into()))
    );
    assert_eq!(
        share(&["--node-index", "0"], &[("SHARDEX_NODE_TOTAL", "2")]),
        Some((0, 2, "SHARDEX_NODE_TOTAL".into()))
    );
    assert_eq!(
        share(
            &["--node-index", "1", "--node-total", "2"],
            &[("CIRCLE_NODE_INDEX", "x")]
        ),
        Some((1, 2, "--node-total".into())),
        "a CI variable is not read when both values are explicit"
    );
    assert_eq!(
        err(&["--node-index", "3", "--node-total", "3"], &[], None),
        "node index 3 (argument --node-index) must be below the node total 3 (argument --node-total); indexes start at 0"
    );
    assert_eq!(
        err(&["--node-index", "4"], &[("CIRCLE_NODE_TOTAL", "4")], None),
        "node index 4 (argument --node-index) must be below the node total 4 (CircleCI); indexes start at 0"
    );
}

#[test]
fn timing_store_choices() {
    let cases: &[(Argv, EnvPairs, Option<&str>, TimingStoreChoice)] = &[
        (&[], &[], None, TimingStoreChoice::Default),
        (
            &["--no-timing-store"],
            &[],
            None,
            TimingStoreChoice::Disabled,
        ),
        (
            &["--no-timing-store", "--timing-store", "t.json"],
            &[],
            None,
            TimingStoreChoice::Path("t.json".into()),
        ),
        (
            &["--timing-store", "t.json", "--no-timing-store"],
            &[],
            None,
            TimingStoreChoice::Disabled,
        ),
        (
            &[],
            &[
                ("SHARDEX_NO_TIMING_STORE", "1"),
                ("SHARDEX_TIMING_STORE", "t.json"),
            ],
            None,
            TimingStoreChoice::Disabled,
        ),
        (
            &[],
            &[("SHARDEX_TIMING_STORE", "t.json")],
            Some("[tool.shardex]\nno-timing-store = true\n"),
            TimingStoreChoice::Path("t.json".into()),
        ),
        (
            &[],
            &[],
            Some("[tool.shardex]\ntiming-store = \"ci/t.json\"\n"),
            TimingStoreChoice::Path("/src/ci/t.json".into()),
        ),
    ];
    for (argv, env, file, expected) in cases {
        assert_eq!(
            &ok(argv, env, *file).timing_store,
            expected,
            "{argv:?} {env:?}"
        );
    }
}

#[test]
fn workers() {
    let cases: &[(Argv, EnvPairs, usize)] = &[
        (&[], &[], 6),
        (&["-n", "logical"], &[], 8),
        (&["-n", "0"], &[], 1),
        (&["-n", "12"], &[], 12),
        (&["-n", "12", "--maxprocesses", "4"], &[], 4),
        (&["--maxprocesses=2"], &[], 2),
        (&["--maxprocesses=0"], &[], 6),
        (&[], &[(env::PYTEST_XDIST_AUTO_NUM_WORKERS, "3")], 3),
        (
            &["-n", "2"],
            &[(env::PYTEST_XDIST_AUTO_NUM_WORKERS, "3")],
            2,
        ),
        (&[], &[("SHARDEX_MAXPROCESSES", "5")], 5),
    ];
    for (argv, env, expected) in cases {
        assert_eq!(
            ok(argv, env, None).workers(6, 8),
            *expected,
            "{argv:?} {env:?}"
        );
    }
    let s = ok(&[], &[(env::PYTEST_XDIST_AUTO_NUM_WORKERS, "many")], None);
    assert_eq!(s.workers(6, 8), 6);
    assert_eq!(s.notes.len(), 1);
    // -n 0 is xdist's "no workers": shardex runs one and says so.
    assert_eq!(
        ok(&["-n", "0"], &[], None).notes,
        ["-n 0: shardex always runs tests in worker processes; using 1 worker"]
    );
}

#[test]
fn notes() {
    let s = ok(&["--dist", "worksteal"], &[], None);
    assert_eq!(s.dist, DistMode::Load);
    assert_eq!(
        s.notes,
        ["--dist worksteal: shardex's load mode already steals work; using load"]
    );
    let s = ok(&["--dist=loadgroup"], &[], None);
    assert_eq!(s.dist, DistMode::LoadGroup);
    assert!(s.notes.is_empty());
    let s = ok(&["--max-worker-restart", "3", "-d"], &[], None);
    assert_eq!(s.notes.len(), 1);
    assert_eq!(s.dist, DistMode::Load);
    assert!(s.pytest_args.is_empty());
    // An unknown key in the file is a warning (printed by `run`), not an error.
    assert_eq!(
        ok(&[], &[], Some("[tool.shardex]\ntimout = 3\n")).timeout,
        None
    );
}

/// Bad values from every layer: one line that names the layer and what is expected.
#[test]
fn error_table() {
    let cases: &[(Argv, EnvPairs, Option<&str>, &str)] = &[
        (&["-n", "many"], &[], None, "argument -n/--numprocesses: invalid value 'many' (expected auto, logical or a number of workers up to 1024)"),
        (&["-n-1"], &[], None, "argument -n/--numprocesses: invalid value '-1' (expected auto, logical or a number of workers up to 1024)"),
        (&["-n", "100000"], &[], None, "argument -n/--numprocesses: invalid value '100000' (expected auto, logical or a number of workers up to 1024)"),
        (&["-n4x"], &[], None, "argument -n/--numprocesses: invalid value '4x' (expected auto, logical or a number of workers up to 1024)"),
        (&["--maxprocesses", "5000"], &[], None, "argument --maxprocesses: invalid value '5000' (expected a whole number from 0 to 1024)"),
        (&["--dist", "each"], &[], None, "argument --dist: invalid value 'each' (each runs every test on every worker; not supported)"),
        (&["--dist=random"], &[], None, "argument --dist: invalid value 'random' (expected load, loadscope, loadfile or loadgroup)"),
        (&["--maxfail", "x"], &[], None, "argument --maxfail: invalid value 'x' (expected a whole number ≥ 0)"),
        (&["--maxfail=-1"], &[], None, "argument --maxfail: invalid value '-1' (expected a whole number ≥ 0)"),
        (&["--maxfail", "99999999999"], &[], None, "argument --maxfail: invalid value '99999999999' (expected a whole number ≥ 0)"),
        (&["--junitxml="], &[], None, "argument --junitxml/--junit-xml: invalid value '' (expected a path)"),
        (&["--reruns", "two"], &[], None, "argument --reruns: invalid value 'two' (expected a whole number from 0 to 1000)"),
        (&["--reruns", "1001"], &[], None, "argument --reruns: invalid value '1001' (expected a whole number from 0 to 1000)"),
        (&["--reruns-delay", "-1"], &[], None, "argument --reruns-delay: invalid value '-1' (expected a number of seconds, e.g. 30 or 2.5)"),
        (&["--reruns-delay", "1e300"], &[], None, "argument --reruns-delay: invalid value '1e300' (expected at most 3600 seconds)"),
        (&["--timeout", "inf"], &[], None, "argument --timeout: invalid value 'inf' (expected a number of seconds, e.g. 30 or 2.5)"),
        (&["--timeout", "1e20"], &[], None, "argument --timeout: invalid value '1e20' (expected at most 604800 seconds)"),
        (&["--timeout", "1m"], &[], None, "argument --timeout: invalid value '1m' (expected a number of seconds, e.g. 30 or 2.5)"),
        (&["--kill-grace", "NaN"], &[], None, "argument --kill-grace: invalid value 'NaN' (expected a number of seconds, e.g. 30 or 2.5)"),
        (&["--kill-grace", "1e20"], &[], None, "argument --kill-grace: invalid value '1e20' (expected at most 600 seconds)"),
        (&["--stop-grace", "-0.5"], &[], None, "argument --stop-grace: invalid value '-0.5' (expected a number of seconds, e.g. 30 or 2.5)"),
        (&["--color", "always"], &[], None, "argument --color: invalid value 'always' (expected auto, yes or no)"),
        (&["--node-index", "-2"], &[], None, "argument --node-index: invalid value '-2' (expected a whole number from 0 to 9999)"),
        (&["--node-total", "0"], &[], None, "argument --node-total: invalid value '0' (expected a whole number from 1 to 10000)"),
        (&["--queue", "memcached://x"], &[], None, "argument --queue: invalid value 'memcached://x' (expected local, redis://[USER:PASSWORD@]HOST[:PORT][/DB] or rediss://…)"),
        (&["--queue=redis://u:pw@h:x"], &[], None, "argument --queue: invalid value 'redis://u:***@h:x' (port 'x' is not a number from 1 to 65535)"),
        (&["--queue=redis://u:pw@h"], &[], None, "--queue redis://u:***@h needs a build id that every node of the job shares and a rerun does not: give --build-id (or SHARDEX_BUILD_ID); on CircleCI, GitLab and Buildkite it is found by itself"),
        (&["--queue=redis://h/1?timeout=3", "--build-id=b"], &[], None, "argument --queue: invalid value 'redis://h/1?timeout=3' (invalid queue URL `redis://h/1?timeout=3`: query strings and fragments are not supported; expected redis://[user:password@]host[:port][/db] or rediss://… (TLS))"),
        (&["--queue=redis://h", "--build-id=b"], &[("SHARDEX_REDIS_CA", "/nonexistent/ca.pem")], None, "SHARDEX_REDIS_CA: /nonexistent/ca.pem is not a file; give the PEM file of the CA that signed the Redis server's certificate"),
        (&["--queue=redis://h", "--build-id=b", "--queue-lease=-1"], &[], None, "argument --queue-lease: invalid value '-1' (expected a number of seconds, e.g. 30 or 2.5)"),
        (&[], &[("SHARDEX_QUEUE", "redis://u:hunter2@h:99999")], None, "SHARDEX_QUEUE: invalid value 'redis://u:***@h:99999' (port '99999' is not a number from 1 to 65535)"),
        (&[], &[("SHARDEX_TIMEOUT", "abc")], None, "SHARDEX_TIMEOUT: invalid value 'abc' (expected a number of seconds, e.g. 30 or 2.5)"),
        (&[], &[("SHARDEX_NUMPROCESSES", "0x10")], None, "SHARDEX_NUMPROCESSES: invalid value '0x10' (expected auto, logical or a number of workers up to 1024)"),
        (&[], &[("SHARDEX_SPAWN", "maybe")], None, "SHARDEX_SPAWN: invalid value 'maybe' (expected true or false)"),
        (&[], &[("SHARDEX_TIMELINE", "t.png")], None, "SHARDEX_TIMELINE: invalid value 't.png' (expected a file name ending in .html or .svg)"),
        (&["--timeline", "run"], &[], None, "argument --timeline: invalid value 'run' (expected a file name ending in .html or .svg)"),
        (&[], &[("CIRCLE_NODE_INDEX", "x")], None, "CIRCLE_NODE_INDEX: invalid value 'x' (expected a job index from 0 to 0 with CIRCLE_NODE_TOTAL = 1)"),
        (&[], &[], Some("[tool.shardex]\ntimeout = \"soon\"\n"), "/src/pyproject.toml: [tool.shardex] timeout: invalid value 'soon' (expected a number of seconds, e.g. 30 or 2.5)"),
        (&[], &[], Some("[tool.shardex]\ntimeout = 1e20\n"), "/src/pyproject.toml: [tool.shardex] timeout: invalid value '100000000000000000000' (expected at most 604800 seconds)"),
        (&[], &[], Some("[tool.shardex]\nnumprocesses = -3\n"), "/src/pyproject.toml: [tool.shardex] numprocesses: invalid value '-3' (expected auto, logical or a number of workers up to 1024)"),
        (&[], &[], Some("[tool.shardex]\nkill-grace = nan\n"), "/src/pyproject.toml: [tool.shardex] kill-grace: invalid value 'NaN' (expected a number of seconds, e.g. 30 or 2.5)"),
        (&[], &[], Some("[tool.shardex]\ntimings = [1]\n"), "/src/pyproject.toml: [tool.shardex] timings: expected a path or an array of paths"),
        (&[], &[], Some("[tool.shardex]\ndist = \"each\"\n"), "/src/pyproject.toml: [tool.shardex] dist: invalid value 'each' (each runs every test on every worker; not supported)"),
        (&[], &[], Some("[tool.shardex]\ntimeline = \"t.pdf\"\n"), "/src/pyproject.toml: [tool.shardex] timeline: invalid value 't.pdf' (expected a file name ending in .html or .svg)"),
        (&[], &[], Some("[tool.shardex]\nspawn = [true]\n"), "/src/pyproject.toml: [tool.shardex] spawn: expected a string, number or boolean"),
    ];
    for (argv, env, file, expected) in cases {
        assert_eq!(
            err(argv, env, *file),
            *expected,
            "{argv:?} {env:?} {file:?}"
        );
    }
}

#[test]
fn discovery_walks_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    let nested = root.join("pkg/tests");
    std::fs::create_dir_all(&nested).expect("mkdir");
    assert_eq!(FileSettings::discover(&nested), Ok(None));
    std::fs::write(root.join(PYPROJECT), "[tool.shardex]\ntimeout = 1\n").expect("write");
    let found = FileSettings::discover(&nested).expect("ok").expect("found");
    assert_eq!(found.path, root.join(PYPROJECT));
    // The nearest pyproject.toml counts even without [tool.shardex].
    std::fs::write(root.join("pkg").join(PYPROJECT), "[project]\nname = 'p'\n").expect("write");
    assert_eq!(FileSettings::discover(&nested), Ok(None));
}

#[test]
fn redis_urls() {
    let cases = [
        ("redis://localhost", Ok(("localhost", 6379, 0, false))),
        (
            "rediss://u:p@cache.example:6380/3",
            Ok(("cache.example", 6380, 3, true)),
        ),
        ("redis://[::1]:7000", Ok(("::1", 7000, 0, false))),
        ("redis://:secret@h/1?timeout=3", Ok(("h", 6379, 1, false))),
        ("redis://", Err("no host")),
        ("redis://h:0", Err("port '0'")),
        ("redis://h:port", Err("port 'port'")),
        ("redis://h/db", Err("database 'db'")),
        ("http://h", Err("expected local")),
        ("redis:/h", Err("expected local")),
    ];
    for (raw, expected) in cases {
        match (RedisUrl::parse(raw), expected) {
            (Ok(url), Ok((host, port, db, tls))) => {
                assert_eq!(
                    (url.host.as_str(), url.port, url.db, url.tls),
                    (host, port, db, tls),
                    "{raw}"
                );
            }
            (Err(e), Err(part)) => assert!(e.contains(part), "{raw}: {e}"),
            (got, want) => panic!("{raw}: got {got:?}, want {want:?}"),
        }
    }
    assert_eq!(redact_url("rediss://u:p@h:1/2"), "rediss://u:***@h:1/2");
    assert_eq!(redact_url("redis://token@h"), "redis://***@h");
    assert_eq!(redact_url("redis://h"), "redis://h");
}

#[test]
fn timeline_from_every_layer() {
    let s = ok(&["--timeline=~/t.html"], &[("HOME", "/home/u")], None);
    assert_eq!(s.timeline, Some(PathBuf::from("/home/u/t.html")));
    let s = ok(&[], &[("SHARDEX_TIMELINE", "out/t.SVG")], None);
    assert_eq!(s.timeline, Some(PathBuf::from("out/t.SVG")));
    let s = ok(&[], &[], Some("[tool.shardex]\ntimeline = \"r/t.htm\"\n"));
    assert_eq!(s.timeline, Some(PathBuf::from("/src/r/t.htm")));
    assert_eq!(ok(&[], &[], None).timeline, None);
}

#[test]
fn junitxml_tilde() {
    let s = ok(&["--junitxml=~/r/junit.xml"], &[("HOME", "/home/u")], None);
    assert_eq!(s.junitxml, Some(PathBuf::from("/home/u/r/junit.xml")));
}

#[test]
fn shared_queue_and_its_build_id() {
    let circle = [
        ("CIRCLE_WORKFLOW_JOB_ID", "job-7"),
        ("CIRCLE_NODE_INDEX", "1"),
        ("CIRCLE_NODE_TOTAL", "4"),
        ("CIRCLE_PROJECT_USERNAME", "acme"),
        ("CIRCLE_PROJECT_REPONAME", "shop"),
    ];
    let s = resolve(&["--queue", "redis://u:pw@cache:6390/2"], &circle, None).unwrap();
    let q = s.shared_queue.expect("a shared queue");
    assert_eq!(q.url, "redis://u:pw@cache:6390/2");
    assert_eq!(q.shown, "redis://u:***@cache:6390/2");
    assert_eq!(
        (q.build.as_str(), q.build_source.as_str()),
        ("job-7", "CircleCI")
    );
    assert_eq!(q.project.as_deref(), Some("acme/shop"));
    assert_eq!(q.lease_floor, Duration::from_secs(10));
    assert!(!format!("{q:?}").contains("pw"));
    // --build-id and SHARDEX_QUEUE win over the CI's; the lease comes from its option.
    let s = resolve(
        &["--build-id", "b-2", "--queue-lease", "2.5"],
        &[("SHARDEX_QUEUE", "rediss://h"), circle[0]],
        None,
    )
    .unwrap();
    let q = s.shared_queue.unwrap();
    assert_eq!(
        (q.build.as_str(), q.build_source.as_str()),
        ("b-2", "--build-id")
    );
    assert_eq!(q.lease_floor, Duration::from_millis(2500));
    // The local queue takes no build id: it says so.
    let local = resolve(&["--build-id", "b"], &[("SHARDEX_QUEUE_LEASE", "3")], None).unwrap();
    assert!(local.shared_queue.is_none());
    assert_eq!(
        local.notes,
        [
            "--build-id: ignored without a shared queue (--queue redis://…)",
            "SHARDEX_QUEUE_LEASE: ignored without a shared queue (--queue redis://…)"
        ]
    );
}
