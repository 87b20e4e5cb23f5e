//! Robustness: nothing aborts the run but the user (a result that cannot be encoded fails
//! that test), fork hazards are named, and `pytest.exit`/`KeyboardInterrupt` in a test end
//! the run as in pytest.

use shardex_e2e::{
    assert_no_survivors, copy_fixture, pytest_cmd, serial, shardex_cmd, Kind, RunOutput, TestCase,
};

use crate::shardex_bin;

fn case<'a>(run: &RunOutput, cases: &'a [TestCase], classname: &str, name: &str) -> &'a TestCase {
    let found: Vec<&TestCase> = cases
        .iter()
        .filter(|c| c.classname == classname && c.name == name)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected exactly one JUnit testcase {classname}::{name}, found {}\n{}",
        found.len(),
        run.describe()
    );
    found[0]
}

/// `fixtures/encoding`: lone surrogates, bytes that are not UTF-8 and a 50 MB repr in
/// failures fail their own test with pytest's message (`test_encoding.py`, compared with
/// plain pytest); results the agent cannot read at all (made so on purpose,
/// `test_unreadable.py`) fail their own test naming the problem. The run goes on and the
/// JUnit file has every test.
#[test]
fn unencodable_results_fail_their_own_test() {
    let _guard = serial();
    let suite = copy_fixture("encoding");
    let pytest_junit = suite.scratch.join("pytest.xml");
    let expected = pytest_cmd(&suite.dir, &["test_encoding.py"], Some(&pytest_junit)).run();
    expected.assert_code(1);
    let junit = suite.scratch.join("shardex.xml");
    let run = shardex_cmd(shardex_bin(), &suite.dir, &["-n", "2"], Some(&junit)).run();
    assert_no_survivors(&suite.dir, &run);
    run.assert_code(1);
    let cases = run.junit().cases;
    assert_eq!(
        cases.len(),
        11,
        "every test in the JUnit file\n{}",
        run.describe()
    );
    for want in expected.junit().cases {
        let got = case(&run, &cases, &want.classname, &want.name);
        assert_eq!(got.kind(), want.kind(), "{}\n{}", want.name, run.describe());
        if want.name != "test_huge_repr" {
            // pytest's junitxml writes a surrogate as `#xDCFF`, in both runs.
            assert_eq!(got.message, want.message, "{}", want.name);
        }
    }
    let file = "test_encoding";
    for shown in [
        "AssertionError: bad byte \\udcff in a message",
        "ValueError: file-\\udcff.txt",
    ] {
        assert!(
            run.stdout.contains(shown),
            "pytest's own failure, the surrogate escaped: `{shown}`\n{}",
            run.describe()
        );
    }
    let output = case(&run, &cases, file, "test_invalid_utf8_output").all_text();
    assert!(
        output.contains("raw bytes") && output.contains("see the output"),
        "{output}"
    );
    let huge = case(&run, &cases, file, "test_huge_repr").all_text();
    assert!(
        huge.contains("characters cut here: too large to send")
            && huge.contains("output of the huge test")
            && huge.len() < 20 << 20,
        "the huge failure is cut, its captured output kept ({} bytes)",
        huge.len()
    );
    for (name, problem) in [
        ("test_invalid_utf8_result", "invalid UTF-8"),
        ("test_oversized_result", "over the limit of 67108864 bytes"),
    ] {
        let tc = case(&run, &cases, "test_unreadable", name);
        let text = tc.all_text();
        assert!(
            tc.kind() == Kind::Failure
                && text.contains("WorkerCrashed")
                && text.contains("cannot read")
                && text.contains(problem),
            "{name} fails naming the protocol problem:\n{text}\n{}",
            run.describe()
        );
    }
    for name in ["test_unreadable_warning", "test_after_them"] {
        let tc = case(&run, &cases, "test_unreadable", name);
        assert_eq!(tc.kind(), Kind::Pass, "{name}\n{}", run.describe());
    }
    assert!(
        run.stdout
            .contains("sent a message the agent cannot read (invalid UTF-8"),
        "the skipped message is reported\n{}",
        run.describe()
    );
}

/// One line of `fixtures/fork_hazards`' `$RANDOM_LOG`: worker, nodeid, the stdlib's draw,
/// numpy's draw; in the order the tests ran.
struct Draw {
    worker: String,
    nodeid: String,
    values: (String, String),
}

fn draws(path: &std::path::Path) -> Vec<Draw> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let mut it = line.split(' ');
            Some(Draw {
                worker: it.next()?.to_owned(),
                nodeid: it.next()?.to_owned(),
                values: (it.next()?.to_owned(), it.next()?.to_owned()),
            })
        })
        .collect()
}

const THREAD_WARNING: &str = "other thread running in the pytest process that forks the workers";

/// `fixtures/fork_hazards`: a conftest starts a thread at import that holds a lock. The
/// zygote names it (and where it was started) in one line before it forks, and says what
/// to do; `--spawn` has nothing to warn about. Each forked worker draws its own random
/// numbers from the stdlib's and numpy's global generators (the fixture seeds numpy's at
/// import, and nothing but shardex reseeds it at a fork: without that both workers draw
/// the same).
#[test]
fn threads_at_the_fork_are_named_and_workers_draw_their_own_numbers() {
    let _guard = serial();
    let suite = copy_fixture("fork_hazards");
    let log = suite.scratch.join("random.log");
    let args = ["-n", "2", "-p", "no:randomly"];
    let run = shardex_cmd(shardex_bin(), &suite.dir, &args, None)
        .env("RANDOM_LOG", &log)
        .run();
    assert_no_survivors(&suite.dir, &run);
    run.assert_code(0);
    let warnings: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| l.contains(THREAD_WARNING))
        .collect();
    assert_eq!(warnings.len(), 1, "one warning line\n{}", run.describe());
    for needle in [
        "1 other thread",
        "'lock-holder' (started at conftest.py:15 in <module>)",
        "--spawn",
    ] {
        assert!(
            warnings[0].contains(needle),
            "`{needle}` in: {}",
            warnings[0]
        );
    }
    let draws = draws(&log);
    assert_eq!(draws.len(), 8, "{}", run.describe());
    for worker in ["gw0", "gw1"] {
        assert!(
            draws.iter().any(|d| d.worker == worker),
            "{worker} ran a test\n{}",
            run.describe()
        );
    }
    let first = |worker: &str| &draws.iter().find(|d| d.worker == worker).unwrap().values;
    let (a, b) = (first("gw0"), first("gw1"));
    assert_ne!(a.0, b.0, "the stdlib's generator differs between workers");
    assert_ne!(a.1, b.1, "numpy's generator differs between workers");

    let spawned = shardex_cmd(
        shardex_bin(),
        &suite.dir,
        &["--spawn", "-n", "2", "-p", "no:randomly"],
        None,
    )
    .run();
    spawned.assert_code(0);
    assert!(
        !spawned.stdout.contains(THREAD_WARNING),
        "no fork, no warning\n{}",
        spawned.describe()
    );
}

/// Under pytest-randomly with a fixed seed each test draws what it draws under plain
/// pytest: it reseeds before each test (`-n 2`, per test id), and with
/// `--randomly-dont-reset-seed` the stream its session seeded goes on (`-n 1`, in the
/// order the tests ran: shardex keeps the zygote's state in the worker where CPython
/// would reseed it).
#[test]
fn pytest_randomly_seeding_stays_reproducible() {
    let _guard = serial();
    let suite = copy_fixture("fork_hazards");
    for (workers, extra) in [("2", None), ("1", Some("--randomly-dont-reset-seed"))] {
        let mut args = vec!["-p", "randomly", "--randomly-seed=1234"];
        args.extend(extra);
        let pytest_log = suite.scratch.join(format!("pytest-{workers}.log"));
        let expected = pytest_cmd(&suite.dir, &args, None)
            .env("RANDOM_LOG", &pytest_log)
            .run();
        expected.assert_code(0);
        assert!(
            expected.stdout.contains("Using --randomly-seed=1234"),
            "pytest-randomly must be installed (requirements-dev.txt)\n{}",
            expected.describe()
        );
        let log = suite.scratch.join(format!("shardex-{workers}.log"));
        let mut shardex_args = vec!["-n", workers];
        shardex_args.extend(&args);
        let run = shardex_cmd(shardex_bin(), &suite.dir, &shardex_args, None)
            .env("RANDOM_LOG", &log)
            .run();
        run.assert_code(0);
        let (want, got) = (draws(&pytest_log), draws(&log));
        assert_eq!(got.len(), 8, "{}", run.describe());
        if extra.is_none() {
            let by_id = |d: &[Draw]| -> std::collections::BTreeMap<String, (String, String)> {
                d.iter()
                    .map(|d| (d.nodeid.clone(), d.values.clone()))
                    .collect()
            };
            assert_eq!(by_id(&got), by_id(&want), "per-test draws, -n 2");
        } else {
            let in_order = |d: &[Draw]| d.iter().map(|d| d.values.clone()).collect::<Vec<_>>();
            assert_eq!(in_order(&got), in_order(&want), "the seeded stream, -n 1");
        }
    }
}

/// The lines from the first `!` rule on, without the stats line's time.
fn closing_lines(stdout: &str) -> Vec<String> {
    let lines: Vec<&str> = stdout.lines().collect();
    let start = lines
        .iter()
        .position(|l| l.starts_with("!!!"))
        .unwrap_or(lines.len());
    lines[start..]
        .iter()
        .filter(|l| !l.contains(" not run "))
        .map(|l| match l.find(" passed in ") {
            // The counts differ (other workers ran other tests): the line's shape stays.
            Some(_) => "<stats>".to_owned(),
            None => (*l).to_owned(),
        })
        .collect()
}

/// `fixtures/session_exit`: `pytest.exit("…", returncode=3)`, `pytest.exit("…")` and
/// `KeyboardInterrupt` in a test end the whole run with pytest's exit code and closing
/// lines (the `!` rule with pytest's words, before or after the stats line as pytest
/// puts it). The other worker is stopped, what did not run is not run, the test that
/// ended the session has no result (as in pytest), no worker is replaced.
#[test]
fn a_test_that_ends_the_session_ends_the_run_as_in_pytest() {
    let _guard = serial();
    let suite = copy_fixture("session_exit");
    for (how, code) in [("exit3", 3), ("exit", 2), ("interrupt", 2)] {
        let expected = pytest_cmd(&suite.dir, &[], None)
            .env("SESSION_EXIT", how)
            .run();
        expected.assert_code(code);
        let junit = suite.scratch.join(format!("{how}.xml"));
        let run = shardex_cmd(shardex_bin(), &suite.dir, &["-n", "2"], Some(&junit))
            .env("SESSION_EXIT", how)
            .run();
        assert_no_survivors(&suite.dir, &run);
        run.assert_code(code);
        assert_eq!(
            closing_lines(&run.stdout),
            closing_lines(&expected.stdout),
            "{how}: pytest's closing lines\n{}\n{}",
            expected.describe(),
            run.describe()
        );
        assert!(
            !run.stdout.contains("WorkerCrashed") && !run.stdout.contains("replacing worker"),
            "{how}\n{}",
            run.describe()
        );
        let summary = run.summary();
        let passed = summary.get("passed").copied().unwrap_or(0) as usize;
        assert!(
            passed < 23 && !summary.contains_key("failed"),
            "{how}: the run stopped, nothing failed\n{}",
            run.describe()
        );
        let cases = run.junit().cases;
        assert_eq!(
            cases.len(),
            passed,
            "{how}: JUnit holds what ran\n{}",
            run.describe()
        );
        assert!(cases
            .iter()
            .all(|c| c.kind() == Kind::Pass && c.name != "test_b"));
    }
}

/// `fixtures/early_stop`: `-x` with 4 workers on 200 tests of 10 ms, the failing test's
/// teardown taking 300 ms. The worker announces the failure when the call phase raises,
/// before pytest renders the traceback and tears down: at most 4 tests start after the
/// failing assertion (timestamps taken in the tests), in each of three runs. Without the
/// announcement the others go on for the whole teardown (7 to 12 tests here).
#[test]
fn exitfirst_stops_the_other_workers_before_the_report_is_rendered() {
    let _guard = serial();
    let suite = copy_fixture("early_stop");
    let expected = pytest_cmd(&suite.dir, &["-x"], None).run();
    expected.assert_code(1);
    for attempt in 0..3 {
        let log = suite.scratch.join(format!("stop-{attempt}.log"));
        let _ = std::fs::remove_dir_all(suite.dir.join(".shardex"));
        let run = shardex_cmd(shardex_bin(), &suite.dir, &["-n", "4", "-x"], None)
            .env("STOP_LOG", &log)
            .run();
        assert_no_survivors(&suite.dir, &run);
        run.assert_code(1);
        assert!(
            run.stdout.contains("stopping after 1 failures"),
            "{}",
            run.describe()
        );
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let entries: Vec<(&str, f64)> = text
            .lines()
            .filter_map(|line| {
                let mut it = line.split(' ');
                let kind = it.next()?;
                let _nodeid = it.next()?;
                Some((kind, it.next()?.parse().ok()?))
            })
            .collect();
        let failed_at = entries
            .iter()
            .filter(|(kind, _)| *kind == "fail")
            .map(|&(_, at)| at)
            .fold(f64::INFINITY, f64::min);
        let late: Vec<f64> = entries
            .iter()
            .filter(|&&(kind, at)| kind == "start" && at > failed_at)
            .map(|&(_, at)| (at - failed_at) * 1000.0)
            .collect();
        eprintln!(
            "run {attempt}: {} tests started after the failure: {late:.1?} ms",
            late.len()
        );
        assert!(
            late.len() <= 4,
            "{} tests started after the failing assertion (at most 4): {late:.1?} ms later\n{}",
            late.len(),
            run.describe()
        );
    }
}
