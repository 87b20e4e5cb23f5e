//! The splitter's tables: what passes through to pytest, what is consumed (as given), and
//! the errors of the command line's shape. Values are checked by `settings` (its tests).

use super::*;

fn split(argv: &[&str]) -> (ConsumedFlags, Vec<String>) {
    split_args(argv.iter().copied()).unwrap_or_else(|e| panic!("{argv:?}: {e}"))
}

fn rest(argv: &[&str]) -> Vec<String> {
    split(argv).1
}

fn error(argv: &[&str]) -> String {
    match split_args(argv.iter().copied()) {
        Ok(got) => panic!("{argv:?}: expected an error, got {got:?}"),
        Err(e) => e.to_string(),
    }
}

/// The consumed options as `(spelling that set it, slot, value)`.
fn consumed(argv: &[&str]) -> Vec<(String, Opt, String)> {
    split(argv)
        .0
        .given
        .iter()
        .map(|g| (g.def.display(), g.def.opt, g.value.clone()))
        .collect()
}

/// What passes through to pytest.
#[test]
fn passthrough_table() {
    let cases: &[(&[&str], &[&str])] = &[
        (&[], &[]),
        (&["tests"], &["tests"]),
        (&["tests/a.py::test_x", "-q"], &["tests/a.py::test_x", "-q"]),
        (&["-n", "4", "tests"], &["tests"]),
        (&["-n4", "tests"], &["tests"]),
        (&["-n=4"], &[]),
        (&["--numprocesses", "4"], &[]),
        (&["--numprocesses=auto", "-v"], &["-v"]),
        (&["-xvs"], &["-vs"]),
        (&["-vxs"], &["-vs"]),
        (&["-x"], &[]),
        (&["-vn4"], &["-v"]),
        (&["-vn", "4", "t"], &["-v", "t"]),
        (&["-xn", "2"], &[]),
        // -r takes the rest of its group: `fE` and `n4` are values, not flags.
        (&["-rfE"], &["-rfE"]),
        (&["-rn4"], &["-rn4"]),
        (&["-vrx"], &["-vrx"]),
        (&["-xrfE"], &["-rfE"]),
        // Value in the next argument: never scanned.
        (&["-k", "-x"], &["-k", "-x"]),
        (&["-k", "not slow", "-x"], &["-k", "not slow"]),
        (&["-xk", "test_a"], &["-k", "test_a"]),
        (&["-m", "-n"], &["-m", "-n"]),
        (&["-p", "no:cacheprovider"], &["-p", "no:cacheprovider"]),
        (&["-pno:randomly", "-x"], &["-pno:randomly"]),
        (&["-o", "xfail_strict=true"], &["-o", "xfail_strict=true"]),
        (&["-c", "ci.ini"], &["-c", "ci.ini"]),
        (&["-W", "error", "-x"], &["-W", "error"]),
        (&["--tb", "short", "-x"], &["--tb", "short"]),
        (&["--tb=short"], &["--tb=short"]),
        (&["--deselect", "-x"], &["--deselect", "-x"]),
        (
            &["--rootdir", "src", "--junit-prefix", "p"],
            &["--rootdir", "src", "--junit-prefix", "p"],
        ),
        // Unknown options and their values pass; shardex flags after them are still read.
        (
            &["--reuse-db", "-x", "--create-db"],
            &["--reuse-db", "--create-db"],
        ),
        (
            &["--cov=src", "--cov-report", "xml"],
            &["--cov=src", "--cov-report", "xml"],
        ),
        (&["-Z"], &["-Z"]),
        (&["-vZx"], &["-vZx"]),
        (&["-"], &["-"]),
        (&["-1"], &["-1"]),
        // A lone `--` ends option parsing: the rest is pytest's, `--` included.
        (&["-x", "--", "-n", "4"], &["--", "-n", "4"]),
        (&["--", "--junitxml=x.xml"], &["--", "--junitxml=x.xml"]),
        // Abbreviations are not options (pytest sets allow_abbrev=False).
        (&["--numproc", "4"], &["--numproc", "4"]),
        // pytest's own, not consumed.
        (
            &["-q", "-v", "-ra", "--lf", "-p", "xdist"],
            &["-q", "-v", "-ra", "--lf", "-p", "xdist"],
        ),
    ];
    for (argv, expected) in cases {
        assert_eq!(rest(argv), *expected, "{argv:?}");
    }
}

/// What is consumed, with its value as given.
#[test]
fn consumed_table() {
    type Consumed = &'static [(&'static str, Opt, &'static str)];
    let cases: &[(&[&str], Consumed)] = &[
        (
            &["-n", "auto"],
            &[("-n/--numprocesses", Opt::NumProcesses, "auto")],
        ),
        (
            &["-nlogical"],
            &[("-n/--numprocesses", Opt::NumProcesses, "logical")],
        ),
        (&["-n=4"], &[("-n/--numprocesses", Opt::NumProcesses, "4")]),
        (
            &["--maxprocesses=3"],
            &[("--maxprocesses", Opt::MaxProcesses, "3")],
        ),
        (
            &["--dist", "loadscope"],
            &[("--dist", Opt::Dist, "loadscope")],
        ),
        (&["-d"], &[("-d", Opt::Dist, "load")]),
        (&["-x"], &[("-x/--exitfirst", Opt::MaxFail, "1")]),
        (&["--exitfirst"], &[("-x/--exitfirst", Opt::MaxFail, "1")]),
        (
            &["--maxfail=3", "-x"],
            &[
                ("--maxfail", Opt::MaxFail, "3"),
                ("-x/--exitfirst", Opt::MaxFail, "1"),
            ],
        ),
        (&["--maxfail", "0"], &[("--maxfail", Opt::MaxFail, "0")]),
        (
            &["--junit-xml=r/j.xml"],
            &[("--junitxml/--junit-xml", Opt::JunitXml, "r/j.xml")],
        ),
        (
            &[
                "--reruns",
                "0",
                "--only-rerun",
                "(unclosed",
                "--fail-on-flaky",
            ],
            &[
                ("--reruns", Opt::Reruns, "0"),
                ("--only-rerun", Opt::OnlyRerun, "(unclosed"),
                ("--fail-on-flaky", Opt::FailOnFlaky, "true"),
            ],
        ),
        (
            &["--timing-store", "t.json", "--no-timing-store"],
            &[
                ("--timing-store", Opt::TimingStore, "t.json"),
                ("--no-timing-store", Opt::NoTimingStore, "true"),
            ],
        ),
        // Values are kept as given: `settings` checks them and names the option.
        (
            &["--timeout", "1e20"],
            &[("--timeout", Opt::Timeout, "1e20")],
        ),
        (
            &["--node-index=-1"],
            &[("--node-index", Opt::NodeIndex, "-1")],
        ),
        (
            &["--junitxml="],
            &[("--junitxml/--junit-xml", Opt::JunitXml, "")],
        ),
    ];
    for (argv, expected) in cases {
        let expected: Vec<(String, Opt, String)> = expected
            .iter()
            .map(|(name, opt, value)| ((*name).to_owned(), *opt, (*value).to_owned()))
            .collect();
        assert_eq!(consumed(argv), expected, "{argv:?}");
    }
}

#[test]
fn help_and_junit_prefix() {
    for argv in [&["-h"][..], &["-vh"], &["tests", "--help"]] {
        let (flags, _) = split(argv);
        assert!(flags.help, "{argv:?}");
        assert!(flags.given.is_empty(), "{argv:?}");
    }
    assert_eq!(
        split(&["--junit-prefix=ci"]).0.junit_prefix.as_deref(),
        Some("ci")
    );
    assert_eq!(
        split(&["--junit-prefix", "ci"]).0.junit_prefix.as_deref(),
        Some("ci")
    );
}

#[test]
fn error_table() {
    let cases: &[(&[&str], &str)] = &[
        (&["-n"], "argument -n/--numprocesses: expected one argument"),
        (&["-n", "-x"], "argument -n/--numprocesses: expected one argument"),
        (&["--numprocesses"], "argument -n/--numprocesses: expected one argument"),
        (&["--exitfirst=1"], "argument -x/--exitfirst: ignored explicit argument '1'"),
        (&["-x=1"], "argument -x/--exitfirst: ignored explicit argument '1'"),
        (&["--spawn=yes"], "argument --spawn: ignored explicit argument 'yes'"),
        (&["--junitxml"], "argument --junitxml/--junit-xml: expected one argument"),
        (&["--pdb"], "--pdb is incompatible with distributing tests (as with pytest-xdist); run pytest directly to debug"),
        (&["--tx", "ssh=host"], "--tx remote and custom execution environments are not supported"),
    ];
    for (argv, expected) in cases {
        assert_eq!(error(argv), *expected, "{argv:?}");
    }
}

#[test]
fn names() {
    assert!(is_consumed("--timings"));
    assert!(is_consumed("--junit-xml"));
    assert!(is_consumed("-n"));
    assert!(is_consumed("-d"));
    assert!(!is_consumed("-k"));
    assert!(!is_consumed("--tb"));
}
