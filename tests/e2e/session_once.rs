//! A session fixture is set up once per worker process, as under xdist: a worker told there
//! is nothing more for now keeps its session (and module) fixtures until it gets another
//! test or exits. (Tearing the session down and setting it up again made pytest-django
//! name a worker's test database `test_<db>_gw0_gw0`.)

use std::collections::BTreeMap;

use shardex_e2e::{copy_fixture, serial, shardex_cmd};

use crate::shardex_bin;

#[test]
fn a_worker_that_gets_a_test_after_a_flush_keeps_its_session_fixtures() {
    let _guard = serial();
    let suite = copy_fixture("session_once");
    let log = suite.scratch.join("session.log");
    let out = shardex_cmd(
        shardex_bin(),
        &suite.dir,
        &["-n", "2", "--reruns", "1"],
        None,
    )
    .env("SESSION_LOG", &log)
    .env("SESSION_STATE", &suite.scratch)
    .run();
    out.assert_code(0);
    assert!(out.stdout.contains("1 rerun"), "{}", out.describe());
    let text = std::fs::read_to_string(&log).unwrap();
    let mut setups: BTreeMap<&str, usize> = BTreeMap::new();
    for line in text.lines() {
        *setups.entry(line).or_default() += 1;
    }
    assert!(
        setups.values().all(|&n| n == 1),
        "a worker set its session fixture up more than once: {setups:?}\n{}",
        out.describe()
    );
}
