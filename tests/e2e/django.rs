//! pytest-django on PostgreSQL: each worker slot gets its own test DB (`test_<db>_gwN`), and
//! `--reuse-db` keeps them across runs. Needs the server from `scripts/pg.sh` (run via scripts/test.sh).

use std::collections::BTreeMap;

use shardex_e2e::{copy_fixture, serial, shardex_cmd, sql, Kind, RunOutput};

use crate::shardex_bin;

fn require_pg() {
    if std::env::var_os("SHARDEX_PG_PORT").is_none() {
        panic!(
            "SHARDEX_PG_PORT is not set: the Django e2e test needs the private PostgreSQL. \
             Run the tests via scripts/test.sh (or `bash scripts/pg.sh start && eval \"$(bash scripts/pg.sh env)\"` first)."
        );
    }
}

fn test_db_prefix() -> String {
    format!(
        "test_{}_gw",
        std::env::var("SHARDEX_PG_DB").unwrap_or_else(|_| "shardex_app".into())
    )
}

/// name -> oid of the per-worker test databases.
fn worker_dbs() -> BTreeMap<String, String> {
    let prefix = test_db_prefix();
    sql(&[&format!(
        "SELECT datname, oid FROM pg_database WHERE datname LIKE '{prefix}%' ORDER BY datname"
    )])
    .into_iter()
    .map(|r| (r[0].clone(), r[1].clone()))
    .collect()
}

/// What the database server looked like: for failure messages (e.g. someone else using the same
/// test DBs concurrently, or two workers sharing one DB).
fn diagnostics(names_dir: &std::path::Path) -> String {
    let dbs = sql(&["SELECT datname, oid FROM pg_database WHERE datname LIKE 'test_%' ORDER BY 1"]);
    let activity = sql(&[
        "SELECT pid, datname, usename, client_port, state, left(query, 80) \
         FROM pg_stat_activity WHERE datname IS NOT NULL AND pid <> pg_backend_pid()",
    ]);
    let mut recorded = Vec::new();
    if let Ok(entries) = std::fs::read_dir(names_dir) {
        for e in entries.flatten() {
            let text = std::fs::read_to_string(e.path()).unwrap_or_default();
            recorded.push(format!(
                "{}: {}",
                e.file_name().to_string_lossy(),
                text.split_whitespace().collect::<Vec<_>>().join(" ")
            ));
        }
    }
    recorded.sort();
    format!(
        "--- test databases now: {dbs:?}\n--- other sessions: {activity:?}\n--- DB names recorded by tests (file: db worker pid):\n  {}",
        recorded.join("\n  ")
    )
}

fn assert_all_passed(run: &RunOutput) {
    run.assert_code(0);
    let summary = run.summary();
    let junit = run.junit();
    assert!(
        junit.cases.len() >= 20,
        "expected ~22 tests\n{}",
        run.describe()
    );
    for tc in &junit.cases {
        assert_eq!(
            tc.kind(),
            Kind::Pass,
            "{}::{} did not pass\n{}",
            tc.classname,
            tc.name,
            run.describe()
        );
    }
    assert_eq!(
        summary.get("passed").copied(),
        Some(junit.cases.len() as u64),
        "{summary:?}\n{}",
        run.describe()
    );
}

/// DB names the tests recorded through the `record_dbname` fixture.
fn recorded_dbnames(dir: &std::path::Path) -> Vec<String> {
    let mut names = Vec::new();
    for e in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let text = std::fs::read_to_string(e.unwrap().path()).unwrap();
        names.push(text.lines().next().unwrap_or("").to_string());
    }
    names
}

#[test]
fn reuse_db_per_worker_databases() {
    let _guard = serial();
    require_pg();
    let prefix = test_db_prefix();

    // start from nothing
    for name in worker_dbs().keys() {
        sql(&[&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")]);
    }
    assert!(worker_dbs().is_empty());

    let suite = copy_fixture("django");
    let mut runs = Vec::new();
    let mut oids = Vec::new();
    for round in 1..=2 {
        let names_dir = suite.scratch.join(format!("dbnames{round}"));
        let run = shardex_cmd(
            shardex_bin(),
            &suite.dir,
            &["-n", "2", "--reuse-db"],
            Some(&suite.scratch.join(format!("junit{round}.xml"))),
        )
        .env("SHARDEX_DBNAME_DIR", &names_dir)
        .run();
        if run.code() != Some(0) {
            panic!(
                "django run {round} failed\n{}\n{}",
                diagnostics(&names_dir),
                run.describe()
            );
        }
        assert_all_passed(&run);
        let dbs = worker_dbs();
        let expected: Vec<String> = vec![format!("{prefix}0"), format!("{prefix}1")];
        assert_eq!(
            dbs.keys().cloned().collect::<Vec<_>>(),
            expected,
            "after run {round}: per-worker test DBs\n{}",
            run.describe()
        );
        let recorded = recorded_dbnames(&names_dir);
        assert!(
            !recorded.is_empty(),
            "no test recorded its DB name in {}",
            names_dir.display()
        );
        for name in &recorded {
            assert!(
                expected.contains(name),
                "a test ran against {name:?}, expected one of {expected:?}"
            );
        }
        eprintln!(
            "django run {round}: {:.2?} (test DBs {dbs:?}, used {:?})",
            run.elapsed,
            {
                let mut u = recorded.clone();
                u.sort();
                u.dedup();
                u
            }
        );
        oids.push(dbs);
        runs.push(run);
    }
    assert_eq!(
        oids[0], oids[1],
        "--reuse-db: the second run must reuse the first run's databases (same OIDs)"
    );
    eprintln!(
        "django wall times: first run (creates DBs) {:.2?}, second run (reuses) {:.2?}",
        runs[0].elapsed, runs[1].elapsed
    );
}
