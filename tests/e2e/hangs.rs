//! Hangs without `--timeout`: no test waits behind a running one while another worker is
//! idle, and a CI cancel (SIGTERM) reports every test, the hanging one as interrupted.

use std::time::Duration;

use nix::sys::signal::Signal;
use shardex_e2e::{assert_no_survivors, copy_fixture, default_timeout, serial, shardex_cmd, Kind};

use crate::shardex_bin;

/// fixtures/hang_queue with -n 2: every test is estimated at 0.3 s, so the worker that
/// gets `test_hangs` gets `test_queued_behind_the_hang` as its nextitem, while the other
/// runs the three `test_other` and is then idle. 1 s into the hang (its threshold:
/// max(2 x 0.3 s, 1 s)) the queued test is taken back and runs on the idle worker. SIGTERM
/// at 5 s: exit 2, every test in the JUnit report, the hang a failure that says it was
/// interrupted after about 5 s.
#[test]
fn a_test_queued_behind_a_hang_runs_on_the_idle_worker_and_sigterm_reports_all() {
    let _guard = serial();
    let suite = copy_fixture("hang_queue");
    let junit_path = suite.scratch.join("junit.xml");
    let args = ["-n", "2", "--timings", ".test_durations"];
    let running = shardex_cmd(shardex_bin(), &suite.dir, &args, Some(&junit_path)).start();
    let running = running.assert_still_running_after(Duration::from_secs(5));
    running.signal(Signal::SIGTERM);
    let run = running.wait(default_timeout());
    assert_no_survivors(&suite.dir, &run);
    run.assert_code(2);
    let report = run.junit();
    let outcome = |classname: &str, name: &str| {
        let found = report.find(classname, name);
        assert_eq!(found.len(), 1, "{classname}::{name}\n{}", run.describe());
        found[0].clone()
    };
    let queued = outcome("test_a", "test_queued_behind_the_hang");
    assert_eq!(queued.kind(), Kind::Pass, "{}", run.describe());
    for i in 0..3 {
        let other = outcome("test_b", &format!("test_other[{i}]"));
        assert_eq!(other.kind(), Kind::Pass, "{}", run.describe());
    }
    let hang = outcome("test_a", "test_hangs");
    assert_eq!(hang.kind(), Kind::Failure, "{}", run.describe());
    let text = hang.all_text();
    assert!(
        text.contains("Interrupted: test_a.py::test_hangs was running for")
            && text.contains("s when the run was stopped by SIGTERM"),
        "{text}\n{}",
        run.describe()
    );
    assert_eq!(report.cases.len(), 5, "{}", run.describe());
}
