use std::collections::{BTreeMap, BTreeSet};

use super::*;
use crate::protocol::CollectProblem;
use crate::{Outcome, TestResult, WorkerId};

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn ids(items: &[&str]) -> Vec<TestId> {
    items.iter().map(|s| TestId::new(*s)).collect()
}

fn state(known: &[&str], failing: &[&str]) -> WatchState {
    WatchState {
        known: ids(known),
        failing: ids(failing).into_iter().collect(),
        broken_files: BTreeSet::new(),
    }
}

const KNOWN: &[&str] = &[
    "tests/test_a.py::test_a1",
    "tests/test_a.py::test_a2",
    "tests/test_b.py::test_b1",
    "tests/test_b.py::test_b2",
    "tests/test_c.py::test_c1",
];

fn everything() -> Vec<ScopeEntry> {
    vec![ScopeEntry::Path(String::new())]
}

struct Case<'a> {
    changed: &'a [&'a str],
    removed: &'a [&'a str],
    failing: &'a [&'a str],
    dependents: &'a [&'a str],
    scope: Vec<ScopeEntry>,
    all: bool,
}

impl Default for Case<'_> {
    fn default() -> Self {
        Self {
            changed: &[],
            removed: &[],
            failing: &[],
            dependents: &[],
            scope: everything(),
            all: false,
        }
    }
}

fn run_plan(case: Case) -> Plan {
    let state = state(KNOWN, case.failing);
    plan(&PlanInput {
        changed: &set(case.changed),
        removed: &set(case.removed),
        state: &state,
        dependents: &set(case.dependents),
        scope: &case.scope,
        all: case.all,
    })
}

fn args(plan: &Plan) -> Vec<&str> {
    match plan {
        Plan::Whole => vec!["<whole>"],
        Plan::Select { args, .. } => args.iter().map(String::as_str).collect(),
    }
}

#[test]
fn changed_test_files_first_then_failures_then_dependents() {
    let plan = run_plan(Case {
        changed: &["tests/test_c.py", "app/core.py"],
        failing: &["tests/test_a.py::test_a2"],
        dependents: &["tests/test_b.py", "tests/test_c.py"],
        ..Case::default()
    });
    assert_eq!(
        args(&plan),
        [
            "tests/test_c.py",
            "tests/test_a.py::test_a2",
            "tests/test_b.py"
        ]
    );
    let Plan::Select {
        whole_files,
        counts,
        ..
    } = plan
    else {
        panic!("a selection")
    };
    assert_eq!(whole_files, ["tests/test_c.py", "tests/test_b.py"]);
    assert_eq!(
        counts,
        PlanCounts {
            changed_files: 1,
            failed: 1,
            dependent_files: 1,
            rest: 0
        }
    );
}

#[test]
fn a_failure_in_a_changed_file_is_not_given_twice() {
    let plan = run_plan(Case {
        changed: &["tests/test_a.py"],
        failing: &["tests/test_a.py::test_a2", "tests/test_b.py::test_b2"],
        ..Case::default()
    });
    assert_eq!(args(&plan), ["tests/test_a.py", "tests/test_b.py::test_b2"]);
}

#[test]
fn a_dependent_file_with_a_failure_goes_by_ids_after_the_failure() {
    // `tests/test_a.py` whole after `tests/test_a.py::test_a2` would be merged by pytest
    // into collection order: test_a1 would run first.
    let plan = run_plan(Case {
        changed: &["app/core.py"],
        failing: &["tests/test_a.py::test_a2"],
        dependents: &["tests/test_a.py"],
        ..Case::default()
    });
    assert_eq!(
        args(&plan),
        ["tests/test_a.py::test_a2", "tests/test_a.py::test_a1"]
    );
    let Plan::Select { whole_files, .. } = plan else {
        panic!("a selection")
    };
    assert!(whole_files.is_empty());
}

#[test]
fn nothing_affected_is_the_whole_selection() {
    // A module nothing imports, no failures.
    assert_eq!(
        run_plan(Case {
            changed: &["app/unused.py"],
            ..Case::default()
        }),
        Plan::Whole
    );
    // A configuration file: whatever else changed.
    assert_eq!(
        run_plan(Case {
            changed: &["tests/test_a.py", "pytest.ini"],
            ..Case::default()
        }),
        Plan::Whole
    );
    assert_eq!(
        run_plan(Case {
            removed: &["sub/pyproject.toml"],
            failing: &["tests/test_a.py::test_a1"],
            ..Case::default()
        }),
        Plan::Whole
    );
}

#[test]
fn failures_alone_are_rerun_when_an_unrelated_file_changed() {
    let plan = run_plan(Case {
        changed: &["app/unused.py"],
        failing: &["tests/test_b.py::test_b2"],
        ..Case::default()
    });
    assert_eq!(args(&plan), ["tests/test_b.py::test_b2"]);
}

#[test]
fn watch_all_runs_the_rest_after_the_affected_tests() {
    let plan = run_plan(Case {
        changed: &["tests/test_b.py"],
        failing: &["tests/test_a.py::test_a2"],
        all: true,
        ..Case::default()
    });
    // test_a.py is partly taken (its failure): its other test goes by id; test_c.py whole.
    assert_eq!(
        args(&plan),
        [
            "tests/test_b.py",
            "tests/test_a.py::test_a2",
            "tests/test_a.py::test_a1",
            "tests/test_c.py"
        ]
    );
}

#[test]
fn a_selection_by_node_ids_is_kept_to_those_tests() {
    let scope = vec![
        ScopeEntry::Node("tests/test_a.py::test_a1".into()),
        ScopeEntry::Path("tests/test_c.py".into()),
    ];
    let state = state(
        &["tests/test_a.py::test_a1", "tests/test_c.py::test_c1"],
        &[],
    );
    let plan = plan(&PlanInput {
        changed: &set(&["tests/test_a.py", "tests/test_c.py", "tests/test_new.py"]),
        removed: &BTreeSet::new(),
        state: &state,
        dependents: &BTreeSet::new(),
        scope: &scope,
        all: false,
    });
    // test_a.py only by its selected test; a new test file outside the selection is not run.
    assert_eq!(args(&plan), ["tests/test_a.py::test_a1", "tests/test_c.py"]);
}

#[test]
fn new_test_files_in_scope_run_and_removed_ones_do_not() {
    let plan = run_plan(Case {
        changed: &["tests/test_new.py", "tests/helper.py"],
        removed: &["tests/test_c.py"],
        dependents: &["tests/test_c.py"],
        ..Case::default()
    });
    assert_eq!(args(&plan), ["tests/test_new.py"]);
    let scoped = run_plan(Case {
        changed: &["other/test_new.py"],
        scope: vec![ScopeEntry::Path("tests".into())],
        ..Case::default()
    });
    assert_eq!(scoped, Plan::Whole);
}

fn result(id: &str, outcome: Outcome) -> TestResult {
    TestResult {
        id: TestId::new(id),
        worker: WorkerId(0),
        outcome,
        duration: 0.0,
        reports: Vec::new(),
        attempt: 0,
        will_retry: false,
    }
}

#[test]
fn absorb_keeps_collection_order_and_failures_across_runs() {
    let mut st = WatchState::default();
    let mut first = RunSummary {
        results: vec![
            result("tests/test_a.py::test_a1", Outcome::Passed),
            result("tests/test_a.py::test_a2", Outcome::Failed),
            result("tests/test_b.py::test_b1", Outcome::Crashed),
        ],
        ..RunSummary::default()
    };
    first.collect_problems.push(CollectProblem {
        nodeid: "tests/test_broken.py".into(),
        outcome: "failed".into(),
        ..CollectProblem::default()
    });
    st.absorb(&first, &Plan::Whole);
    assert_eq!(st.known, ids(&KNOWN[..3]));
    assert_eq!(
        st.failing,
        ids(&["tests/test_a.py::test_a2", "tests/test_b.py::test_b1"])
            .into_iter()
            .collect()
    );
    assert_eq!(st.broken_files, set(&["tests/test_broken.py"]));

    // test_a.py was edited: a test renamed, the failure fixed; the broken file now collects.
    let second = RunSummary {
        results: vec![
            result("tests/test_a.py::test_a1", Outcome::Passed),
            result("tests/test_a.py::test_a3", Outcome::Passed),
            result("tests/test_broken.py::test_x", Outcome::Passed),
        ],
        ..RunSummary::default()
    };
    let plan = Plan::Select {
        args: vec!["tests/test_a.py".into(), "tests/test_broken.py".into()],
        whole_files: vec!["tests/test_a.py".into(), "tests/test_broken.py".into()],
        counts: PlanCounts::default(),
    };
    st.absorb(&second, &plan);
    assert_eq!(
        st.known,
        ids(&[
            "tests/test_a.py::test_a1",
            "tests/test_a.py::test_a3",
            "tests/test_b.py::test_b1",
            "tests/test_broken.py::test_x",
        ])
    );
    // test_a2 is gone (no longer failing); test_b1 did not run, so it still fails.
    assert_eq!(
        st.failing,
        ids(&["tests/test_b.py::test_b1"]).into_iter().collect()
    );
    assert!(st.broken_files.is_empty());
}

#[test]
fn parses_import_statements() {
    let source = "\
import os, app.core as core  # comment
from . import sibling
from ..pkg.mod import (a,
    b as bee,  # why
    c)
from app import *
  import indented.mod; from x.y import z
from \\
    cont import q
x = 'import not_at_start'
from 1bad import x
";
    assert_eq!(
        parse_imports(source),
        vec![
            Import::Module("os".into()),
            Import::Module("app.core".into()),
            Import::From {
                level: 1,
                module: String::new(),
                names: vec!["sibling".into()]
            },
            Import::From {
                level: 2,
                module: "pkg.mod".into(),
                names: vec!["a".into(), "b".into(), "c".into()]
            },
            Import::From {
                level: 0,
                module: "app".into(),
                names: Vec::new()
            },
            Import::Module("indented.mod".into()),
            Import::From {
                level: 0,
                module: "x.y".into(),
                names: vec!["z".into()]
            },
            Import::From {
                level: 0,
                module: "cont".into(),
                names: vec!["q".into()]
            },
        ]
    );
}

const FILES: &[&str] = &[
    "conftest.py",
    "src/app/__init__.py",
    "src/app/core.py",
    "src/app/util.py",
    "src/app/models/__init__.py",
    "src/app/models/user.py",
    "ns/plugin.py",
    "tests/__init__.py",
    "tests/helpers.py",
    "tests/test_core.py",
    "tests/unit/test_util.py",
    "tests/unit/helpers_local.py",
];

#[test]
fn resolves_absolute_relative_and_submodule_imports() {
    let files = set(FILES);
    let roots = vec![String::new(), "src".to_owned()];
    let resolve = |import: Import, importer: &str| -> Vec<String> {
        resolve_import(&import, importer, &roots, &files)
            .into_iter()
            .collect()
    };
    assert_eq!(
        resolve(
            Import::Module("app.models.user".into()),
            "tests/test_core.py"
        ),
        [
            "src/app/__init__.py",
            "src/app/models/__init__.py",
            "src/app/models/user.py"
        ]
    );
    assert_eq!(
        resolve(
            Import::From {
                level: 0,
                module: "app".into(),
                names: vec!["util".into(), "not_a_module".into()]
            },
            "tests/test_core.py"
        ),
        ["src/app/__init__.py", "src/app/util.py"]
    );
    assert_eq!(
        resolve(
            Import::From {
                level: 1,
                module: String::new(),
                names: vec!["helpers".into()]
            },
            "tests/test_core.py"
        ),
        ["tests/helpers.py"]
    );
    assert_eq!(
        resolve(
            Import::From {
                level: 2,
                module: "models".into(),
                names: vec!["user".into()]
            },
            "src/app/sub/x.py"
        ),
        ["src/app/models/__init__.py", "src/app/models/user.py"]
    );
    // A namespace folder (no __init__.py), the standard library, beyond the rootdir.
    assert_eq!(
        resolve(Import::Module("ns.plugin".into()), "x.py"),
        ["ns/plugin.py"]
    );
    assert!(resolve(Import::Module("os.path".into()), "x.py").is_empty());
    let beyond = Import::From {
        level: 3,
        module: "x".into(),
        names: Vec::new(),
    };
    assert!(resolve(beyond, "tests/test_core.py").is_empty());
}

#[test]
fn basedir_is_the_first_folder_up_that_is_not_a_package() {
    let files = set(FILES);
    assert_eq!(basedir("tests/test_core.py", &files), "");
    assert_eq!(basedir("tests/unit/test_util.py", &files), "tests/unit");
    assert_eq!(
        import_roots(
            &[
                "tests/test_core.py".into(),
                "tests/unit/test_util.py".into()
            ],
            &files
        ),
        ["", "src", "tests/unit"]
    );
}

#[test]
fn dependents_are_found_transitively_through_project_files() {
    let files = set(FILES);
    let sources: BTreeMap<&str, &str> = BTreeMap::from([
        (
            "tests/test_core.py",
            "from app import core\nimport tests.helpers\n",
        ),
        // Imported through the test file's basedir (prepend mode): `import helpers_local`.
        ("tests/unit/test_util.py", "import helpers_local\n"),
        (
            "tests/unit/helpers_local.py",
            "from app.util import thing\n",
        ),
        ("src/app/core.py", "from .models import user\n"),
        ("src/app/models/user.py", "import json\n"),
        ("conftest.py", "import ns.plugin\n"),
    ]);
    let mut read = |path: &str| sources.get(path).map(|s| (*s).to_owned());
    let tests = vec![
        "tests/test_core.py".to_owned(),
        "tests/unit/test_util.py".to_owned(),
    ];
    let mut dependents =
        |changed: &[&str]| dependent_test_files(&tests, &set(changed), &files, &mut read);
    assert_eq!(
        dependents(&["src/app/models/user.py"]),
        set(&["tests/test_core.py"])
    );
    assert_eq!(
        dependents(&["src/app/util.py"]),
        set(&["tests/unit/test_util.py"])
    );
    assert_eq!(
        dependents(&["tests/helpers.py"]),
        set(&["tests/test_core.py"])
    );
    // Every test depends on the root conftest and what it imports; app/__init__.py is
    // run by any import of the package.
    assert_eq!(
        dependents(&["ns/plugin.py"]),
        set(&["tests/test_core.py", "tests/unit/test_util.py"])
    );
    assert_eq!(
        dependents(&["src/app/__init__.py"]),
        set(&["tests/test_core.py", "tests/unit/test_util.py"])
    );
    assert!(dependents(&["src/app/unknown.py"]).is_empty());
}
