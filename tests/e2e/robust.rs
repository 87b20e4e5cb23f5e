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
