use super::*;

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn positionals_are_told_from_options_and_their_values() {
    let dir = tempfile::tempdir().expect("tempdir");
    for path in ["tests/test_a.py", "tests/slow/test_s.py", "k"] {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, "").expect("write");
    }
    let args = strings(&[
        "-v",
        "tests/test_a.py::test_x[1]",
        "--ignore",
        "tests/slow",
        "-k",
        "k",
        "-rfE",
        "--tb=short",
        "-p",
        "no:randomly",
        "tests",
        "not_a_path",
        "--",
        "anything",
    ]);
    let (options, positionals) = split_positionals(&args, dir.path());
    assert_eq!(
        options,
        strings(&[
            "-v",
            "--ignore",
            "tests/slow",
            "-k",
            "k",
            "-rfE",
            "--tb=short",
            "-p",
            "no:randomly",
            "not_a_path"
        ])
    );
    assert_eq!(
        positionals,
        strings(&["tests/test_a.py::test_x[1]", "tests", "anything"])
    );
    assert!(takes_separate_value("-vk"));
    assert!(!takes_separate_value("-kfoo"));
    assert!(!takes_separate_value("--tb=line"));
    assert!(!takes_separate_value("--lf"));
}

#[test]
fn the_scope_and_plan_arguments_are_relative_to_the_rootdir_and_cwd() {
    let root = Path::new("/src/proj");
    let cwd = Path::new("/src/proj/tests");
    assert_eq!(scope(&[], cwd, root), [ScopeEntry::Path("tests".into())]);
    assert_eq!(
        scope(
            &strings(&["unit/../test_a.py::T::test_x", "./unit", "/elsewhere/t.py"]),
            cwd,
            root
        ),
        [
            ScopeEntry::Node("tests/test_a.py::T::test_x".into()),
            ScopeEntry::Path("tests/unit".into()),
        ]
    );
    assert_eq!(scope(&[], root, root), [ScopeEntry::Path(String::new())]);
    assert_eq!(
        arg_from_cwd("tests/unit/test_b.py::test_y", cwd, root),
        "unit/test_b.py::test_y"
    );
    assert_eq!(
        arg_from_cwd("other/test_c.py", cwd, root),
        "/src/proj/other/test_c.py"
    );
}

#[test]
fn polling_sees_edits_new_and_removed_files_but_not_skipped_folders() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    let write = |rel: &str, text: &str| {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, text).expect("write");
    };
    write("app/mod.py", "x = 1\n");
    write("pytest.ini", "[pytest]\n");
    write("notes.txt", "not watched\n");
    write(".venv/lib/site.py", "");
    write("env/pyvenv.cfg", "");
    write("env/lib/thing.py", "");
    write("app/__pycache__/mod.cpython-311.py", "");
    let mut tree = Tree::new(root);
    let watched: Vec<&Path> = tree.files.keys().map(PathBuf::as_path).collect();
    assert_eq!(watched, [root.join("app/mod.py"), root.join("pytest.ini")]);
    assert!(tree.poll().is_empty());

    // Same size, same second: the nanoseconds, ctime or inode tell the edit.
    write("app/mod.py", "x = 2\n");
    write("tests/test_new.py", "");
    std::fs::remove_file(root.join("pytest.ini")).expect("rm");
    write("notes.txt", "still not watched\n");
    let changed = tree.poll();
    assert_eq!(
        changed,
        BTreeSet::from([
            root.join("app/mod.py"),
            root.join("pytest.ini"),
            root.join("tests/test_new.py")
        ])
    );
    assert!(tree.poll().is_empty());
    assert_eq!(tree.files.len(), 2);
}

#[test]
fn a_changed_modules_bytecode_is_removed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = dir.path().join("__pycache__");
    std::fs::create_dir_all(&cache).expect("mkdir");
    for name in [
        "mod.cpython-311.pyc",
        "mod.cpython-311.opt-1.pyc",
        "mod_other.cpython-311.pyc",
        "modx.cpython-311.pyc",
    ] {
        std::fs::write(cache.join(name), "").expect("write");
    }
    remove_bytecode(&dir.path().join("mod.py"));
    let mut left: Vec<String> = std::fs::read_dir(&cache)
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["mod_other.cpython-311.pyc", "modx.cpython-311.pyc"]);
}

fn settings(argv: &[&str], env: &[(&str, &str)]) -> Result<Settings, UsageError> {
    let (flags, pytest_args) = crate::compat::split_args(argv.iter().copied())?;
    let lookup = |name: &str| {
        env.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| (*v).to_owned())
    };
    Settings::resolve(flags, pytest_args, &lookup, None)
}

#[test]
fn watch_is_refused_where_it_makes_no_sense() {
    let (flags, _) = crate::compat::split_args(["--watch-all", "-v"]).expect("split");
    assert_eq!(requested(&flags), Some(WatchMode { all: true }));
    let (flags, _) = crate::compat::split_args(["--watch"]).expect("split");
    assert_eq!(requested(&flags), Some(WatchMode { all: false }));
    let (flags, _) = crate::compat::split_args(["-v"]).expect("split");
    assert_eq!(requested(&flags), None);

    let refused = |argv: &[&str], env: &[(&str, &str)]| {
        refuse_combinations(&settings(argv, env).expect("settings"))
            .map_err(|e| e.0)
            .unwrap_err()
    };
    assert_eq!(
        refused(&["--watch", "--queue", "redis://h", "--build-id", "b"], &[]),
        "--watch cannot be used with a shared queue (--queue): it is for the nodes of a CI job"
    );
    assert!(refused(&["--watch", "--node-total", "2"], &[]).contains("CI nodes"));
    assert!(refused(
        &["--watch"],
        &[("CIRCLE_NODE_TOTAL", "3"), ("CIRCLE_NODE_INDEX", "1")]
    )
    .contains("CI nodes"));
    assert!(refused(&["--watch", "--co"], &[]).contains("--collect-only"));
    let fine = settings(&["--watch", "--node-total", "1", "--", "--co"], &[]).expect("settings");
    refuse_combinations(&fine).expect("one node, and --co after -- is a path");
}

#[test]
fn the_status_line_counts_in_pytests_words() {
    let summary = RunSummary {
        wall: Duration::from_millis(820),
        ..RunSummary::default()
    };
    assert_eq!(last_run(&summary), "no tests ran in 0.82s");
    let plan = Plan::Select {
        args: Vec::new(),
        whole_files: Vec::new(),
        counts: PlanCounts {
            changed_files: 1,
            failed: 2,
            dependent_files: 0,
            rest: 3,
        },
    };
    assert_eq!(
        announce(&strings(&["a.py", "b.py", "c.py", "d.py", "e.py"]), &plan),
        "shardex: changed: a.py, b.py, c.py, and 2 more; running 1 changed test file, then \
         2 earlier failures, then the rest"
    );
}
