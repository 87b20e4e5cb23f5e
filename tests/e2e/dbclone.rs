//! pytest-django under `-n N`: one migration of a template test DB (`test_<db>`), cloned into
//! each slot's `test_<db>_gwK` (PostgreSQL `CREATE DATABASE … TEMPLATE`, SQLite file copy),
//! with pytest-django's names, `--reuse-db`/`--create-db` and teardown. Needs the server from
//! `scripts/pg.sh`. The suites here use their own database name (`SHARDEX_PG_DB`), so they never
//! touch the test DBs of `django.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use shardex_e2e::{copy_fixture, empty_suite, serial, shardex_cmd, sql, RunOutput, Suite};

use crate::shardex_bin;

/// The database name the copied Django fixture is pointed at (its test DBs: `test_<this>*`).
const PG_DB: &str = "shardex_dbclone_e2e";

/// A root conftest that logs every migration Django applies (`<db name> <app>.<migration>`),
/// and for each test that used a DB, the DB's name (its file name for SQLite) and the worker.
/// Each such test lasts 0.2 s at least: one worker cannot run them all before the other starts.
const COUNTING_CONFTEST: &str = r#"
import os
import re
import time

import pytest
from django.db.migrations.executor import MigrationExecutor

_apply = MigrationExecutor.apply_migration


def _counted(self, state, migration, *args, **kwargs):
    with open(os.environ["SHARDEX_MIGRATION_LOG"], "a") as log:
        log.write(f"{self.connection.settings_dict['NAME']} {migration.app_label}.{migration.name}\n")
    return _apply(self, state, migration, *args, **kwargs)


MigrationExecutor.apply_migration = _counted


@pytest.fixture(autouse=True)
def _record_db(request):
    yield
    from django.db import connection

    if "_django_db_helper" in request.fixturenames or request.node.get_closest_marker("django_db"):
        time.sleep(0.2)
        outdir = os.environ["SHARDEX_DBNAME_DIR"]
        os.makedirs(outdir, exist_ok=True)
        name = os.path.basename(str(connection.settings_dict["NAME"]))
        with open(os.path.join(outdir, re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.nodeid)), "w") as f:
            f.write(f"{name}\n{os.environ.get('PYTEST_XDIST_WORKER', 'master')}\n")
"#;

fn require_pg() {
    assert!(
        std::env::var_os("SHARDEX_PG_PORT").is_some(),
        "SHARDEX_PG_PORT is not set: run `eval \"$(bash scripts/pg.sh env)\"` first (scripts/test.sh does)"
    );
}

/// name -> oid of this module's test databases.
fn test_dbs() -> BTreeMap<String, String> {
    sql(&[&format!(
        "SELECT datname, oid FROM pg_database WHERE datname LIKE 'test_{PG_DB}%' ORDER BY datname"
    )])
    .into_iter()
    .map(|r| (r[0].clone(), r[1].clone()))
    .collect()
}

fn drop_test_dbs() {
    for name in test_dbs().keys() {
        sql(&[&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")]);
    }
    assert!(test_dbs().is_empty());
}

fn template() -> String {
    format!("test_{PG_DB}")
}

fn slot(k: usize) -> String {
    format!("test_{PG_DB}_gw{k}")
}

/// The Django fixture (93 migrations of its own) with the migration-counting conftest.
fn django_suite() -> Suite {
    let suite = copy_fixture("django");
    std::fs::write(suite.path("conftest.py"), COUNTING_CONFTEST).unwrap();
    suite
}

/// One run; `round` names its migration log, JUnit file and DB-name dir.
fn run(suite: &Suite, round: &str, args: &[&str]) -> (RunOutput, Vec<String>) {
    let log = suite.scratch.join(format!("migrations-{round}.log"));
    let run = shardex_cmd(
        shardex_bin(),
        &suite.dir,
        args,
        Some(&suite.scratch.join(format!("junit-{round}.xml"))),
    )
    .env("SHARDEX_PG_DB", PG_DB)
    .env("SHARDEX_MIGRATION_LOG", &log)
    .env(
        "SHARDEX_DBNAME_DIR",
        suite.scratch.join(format!("dbnames-{round}")),
    )
    .run();
    let applied = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect();
    (run, applied)
}

fn assert_passed(run: &RunOutput) {
    run.assert_code(0);
    let summary = run.summary();
    let junit = run.junit();
    assert!(junit.cases.len() >= 4, "too few tests\n{}", run.describe());
    assert_eq!(
        summary.get("passed").copied(),
        Some(junit.cases.len() as u64),
        "{summary:?}\n{}",
        run.describe()
    );
}

/// Every migration was applied once, to `db`; returns how many.
fn assert_migrated_once_on(applied: &[String], db: &str, run: &RunOutput) -> usize {
    let mut seen = BTreeSet::new();
    for line in applied {
        let (name, migration) = line.split_once(' ').unwrap();
        assert_eq!(
            name,
            db,
            "a migration ran on another DB: {line}\n{}",
            run.describe()
        );
        assert!(
            seen.insert(migration),
            "{migration} applied twice\n{}",
            run.describe()
        );
    }
    seen.len()
}

/// (DB name, worker) that each test that records it ran against.
fn recorded(dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        let mut lines = text.lines();
        let name = lines.next().unwrap_or("").to_string();
        out.push((name, lines.next().unwrap_or("").to_string()));
    }
    out
}

/// Each test ran against its own slot's clone, and both slots ran tests.
fn assert_slots_used(suite: &Suite, round: &str, run: &RunOutput) {
    let used = recorded(&suite.scratch.join(format!("dbnames-{round}")));
    let mut workers = BTreeSet::new();
    for (name, worker) in &used {
        assert_eq!(
            name,
            &format!("test_{PG_DB}_{worker}"),
            "a test on {worker} used another DB\n{}",
            run.describe()
        );
        workers.insert(worker.clone());
    }
    assert_eq!(
        workers.len(),
        2,
        "tests ran on {workers:?}, expected gw0 and gw1\n{}",
        run.describe()
    );
}

/// First run migrates the template once and clones it; a `--reuse-db` run migrates nothing and
/// keeps every DB; a new migration is applied once, to the template, and the slots are cloned
/// again (mutation: without the fingerprint check the slots keep their OIDs).
#[test]
fn one_migration_then_clones_reused() {
    let _guard = serial();
    require_pg();
    drop_test_dbs();
    let suite = django_suite();

    let (first, applied) = run(&suite, "1", &["-n", "2", "--reuse-db", "--create-db"]);
    assert_passed(&first);
    let count = assert_migrated_once_on(&applied, &template(), &first);
    assert!(
        count >= 93,
        "{count} migrations applied\n{}",
        first.describe()
    );
    assert_slots_used(&suite, "1", &first);
    let dbs = test_dbs();
    let names: Vec<&String> = dbs.keys().collect();
    assert_eq!(
        names,
        [&template(), &slot(0), &slot(1)],
        "{}",
        first.describe()
    );

    let (second, applied) = run(&suite, "2", &["-n", "2", "--reuse-db"]);
    assert_passed(&second);
    assert!(
        applied.is_empty(),
        "--reuse-db migrated: {applied:?}\n{}",
        second.describe()
    );
    assert_slots_used(&suite, "2", &second);
    assert_eq!(
        test_dbs(),
        dbs,
        "--reuse-db must keep the same DBs (OIDs)\n{}",
        second.describe()
    );

    std::fs::write(
        suite.path("blog/migrations/0032_extra.py"),
        "from django.db import migrations\n\n\nclass Migration(migrations.Migration):\n    \
         dependencies = [('blog', '0031_step_31')]\n    operations = [migrations.RunSQL('SELECT 1', migrations.RunSQL.noop)]\n",
    )
    .unwrap();
    let (third, applied) = run(&suite, "3", &["-n", "2", "--reuse-db"]);
    assert_passed(&third);
    assert_eq!(
        applied,
        [format!("{} blog.0032_extra", template())],
        "{}",
        third.describe()
    );
    let after = test_dbs();
    assert_eq!(
        after[&template()],
        dbs[&template()],
        "the template is kept\n{}",
        third.describe()
    );
    for k in 0..2 {
        assert_ne!(
            after[&slot(k)],
            dbs[&slot(k)],
            "{} was not cloned again\n{}",
            slot(k),
            third.describe()
        );
    }
    drop_test_dbs();
}

/// Without `--reuse-db` the template and the clones are dropped at the end.
#[test]
fn without_reuse_db_no_test_db_is_left() {
    let _guard = serial();
    require_pg();
    drop_test_dbs();
    let suite = django_suite();
    let (run, applied) = run(&suite, "1", &["-n", "2", "--create-db"]);
    assert_passed(&run);
    assert!(assert_migrated_once_on(&applied, &template(), &run) >= 93);
    assert_slots_used(&suite, "1", &run);
    assert!(
        test_dbs().is_empty(),
        "left behind: {:?}\n{}",
        test_dbs(),
        run.describe()
    );
}

/// A conftest that overrides `django_db_setup` keeps pytest-django's per-worker setup (each
/// worker migrates its own DB) and the run says so in one note.
#[test]
fn user_django_db_setup_keeps_per_worker_setup() {
    let _guard = serial();
    require_pg();
    drop_test_dbs();
    let suite = django_suite();
    let conftest = suite.path("tests/conftest.py");
    let mut text = std::fs::read_to_string(&conftest).unwrap();
    text.push_str(
        "\n\n@pytest.fixture(scope=\"session\")\ndef django_db_setup(django_db_setup):\n    yield\n",
    );
    std::fs::write(&conftest, text).unwrap();
    let (run, applied) = run(&suite, "1", &["-n", "2", "--create-db"]);
    assert_passed(&run);
    let output = format!("{}{}", run.stdout, run.stderr);
    assert_eq!(
        output
            .matches("django_db_setup is overridden in tests/conftest.py")
            .count(),
        1,
        "one note\n{}",
        run.describe()
    );
    let per_db: BTreeSet<&str> = applied
        .iter()
        .map(|l| l.split(' ').next().unwrap())
        .collect();
    let expected: BTreeSet<String> = [slot(0), slot(1)].into();
    assert_eq!(
        per_db,
        expected.iter().map(String::as_str).collect(),
        "each worker migrates its own DB\n{}",
        run.describe()
    );
    assert!(
        test_dbs().is_empty(),
        "left behind: {:?}\n{}",
        test_dbs(),
        run.describe()
    );
}

const SQLITE_SETTINGS: &str = r#"
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent
SECRET_KEY = "not-secret"
USE_TZ = True
INSTALLED_APPS = ["notes"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": str(BASE_DIR / "app.sqlite3"),
        "TEST": {"NAME": str(BASE_DIR / "test_app.sqlite3")},
    }
}
"#;

const SQLITE_MIGRATION: &str = r#"
from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True
    dependencies = []
    operations = [
        migrations.CreateModel(
            name="Note",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                ("text", models.CharField(max_length=50)),
            ],
        ),
    ]
"#;

const SQLITE_TESTS: &str = r#"
import time

import pytest

from notes.models import Note


@pytest.mark.parametrize("n", range(8))
@pytest.mark.django_db(transaction=True)
def test_note(n):
    # Committed rows (transaction=True): a DB shared by two workers would see the other's.
    Note.objects.create(text=str(n))
    time.sleep(0.1)  # the row stays while the other worker's tests run
    assert Note.objects.count() == 1
"#;

/// A SQLite project (a TEST NAME file): one migration, file copies named as pytest-django names
/// them (`<test name>_gwK`), removed at the end without `--reuse-db`.
#[test]
fn sqlite_file_is_copied() {
    let _guard = serial();
    let suite = empty_suite("dbclone-sqlite");
    let files: [(&str, &str); 7] = [
        ("pytest.ini", "[pytest]\nDJANGO_SETTINGS_MODULE = settings\naddopts = -p no:cacheprovider -p no:randomly\n"),
        ("settings.py", SQLITE_SETTINGS),
        ("conftest.py", COUNTING_CONFTEST),
        ("notes/__init__.py", ""),
        ("notes/models.py", "from django.db import models\n\n\nclass Note(models.Model):\n    text = models.CharField(max_length=50)\n"),
        ("notes/migrations/__init__.py", ""),
        ("notes/migrations/0001_initial.py", SQLITE_MIGRATION),
    ];
    for (path, text) in files {
        let path = suite.path(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    std::fs::write(suite.path("test_notes.py"), SQLITE_TESTS).unwrap();
    let db = suite.path("test_app.sqlite3");
    let db = db.to_str().unwrap();
    for (round, args) in [
        ("1", &["-n", "2", "--reuse-db"][..]),
        ("2", &["-n", "2", "--reuse-db"]),
        ("3", &["-n", "2"]),
    ] {
        let (run, applied) = run(&suite, round, args);
        assert_passed(&run);
        let used = recorded(&suite.scratch.join(format!("dbnames-{round}")));
        let workers: BTreeSet<&str> = used.iter().map(|(_, w)| w.as_str()).collect();
        assert_eq!(workers.len(), 2, "{used:?}\n{}", run.describe());
        for (name, worker) in &used {
            assert_eq!(
                name,
                &format!("test_app.sqlite3_{worker}"),
                "{}",
                run.describe()
            );
        }
        // The first run creates the template, the second reuses it (nothing to migrate), the
        // third (no --reuse-db) creates it again and removes every file at the end.
        let migrated = if round == "2" { 0 } else { 1 };
        assert_eq!(
            applied,
            vec![format!("{db} notes.0001_initial"); migrated],
            "round {round}\n{}",
            run.describe()
        );
        let left: Vec<bool> = [
            "test_app.sqlite3",
            "test_app.sqlite3_gw0",
            "test_app.sqlite3_gw1",
        ]
        .iter()
        .map(|f| suite.path(f).exists())
        .collect();
        let kept = round != "3";
        assert_eq!(
            left,
            [kept, kept, kept],
            "round {round}: files kept\n{}",
            run.describe()
        );
    }
}
