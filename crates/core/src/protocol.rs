//! Wire types between the agent and its Python processes (zygote and workers).
//!
//! Framing: one JSON object per line on a Unix stream socket (never stdout, which tests
//! print to). Every message carries a `t` tag. The Python side is the package
//! `crates/agent/src/plugin/shardex_plugin/` (PROTOCOL_VERSION in plugin.py, the run settings
//! in settings.py); keep both in step and bump `PROTOCOL_VERSION` on any incompatible change
//! (the hello check refuses a mismatch).

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::test_id::TestId;

/// 2: no per-test `start` (the agent infers the running test from queue order), no
/// `retract`/`retracted` (unused).
/// 3: `done` may hold a plain pass in the short form `pass`.
/// 4: the run's settings come in `configure`, the agent's first message on every
/// connection (no longer environment variables); `hello` may carry a `secret`.
/// 5: `session_exit` (a test ended the session), `note` (a line for the terminal),
/// `hard_failure` (a test's failure is final, sent before its `done`), `session_end` (the
/// zygote's exit status as xdist's controller), and `retract`/`retracted` again: the agent
/// takes back tests queued behind a test that runs far longer than its estimate while
/// another worker is idle.
pub const PROTOCOL_VERSION: u32 = 5;

/// The version of [`RunSettings`] (its `v`): bumped when a field changes meaning.
pub const SETTINGS_VERSION: u32 = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Collects once, then forks workers on request.
    Zygote,
    /// Runs tests it is sent.
    Worker,
}

/// Python -> agent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum FromPython {
    Hello {
        v: u32,
        role: Role,
        slot: Option<String>,
        pid: u32,
        /// What the launcher gave the process to prove it was started by this agent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        secret: Option<String>,
    },
    /// Effective pytest configuration (after ini files and `addopts`).
    Session(Box<SessionInfo>),
    /// A collect report that did not pass (error or module-level skip).
    CollectReport(CollectProblem),
    Collected(Collection),
    /// Zygote: a worker was forked for `slot`.
    Forked {
        slot: String,
        pid: u32,
    },
    /// Zygote: a forked worker ended (reaped with waitpid).
    Exited {
        slot: String,
        pid: u32,
        code: Option<i32>,
        signal: Option<i32>,
    },
    Done(TestDone),
    /// Worker, answering `retract`: the tests it removed from its queue (never started);
    /// possibly none. The others of the `retract` had started.
    Retracted {
        ids: Vec<TestId>,
    },
    Warning(WarningReport),
    /// Zygote, at its end: what plugins wrote in pytest's terminal summary there (e.g.
    /// pytest-cov's report, with the run's colour and width), and a plugin's verdict that
    /// fails the run although every test passed (`--cov-fail-under`).
    PluginSummary {
        text: String,
        #[serde(default)]
        failure: Option<String>,
    },
    /// Zygote playing xdist's controller (a plugin reads the workers' reports): its
    /// session's final exit status, after its plugins' sessionfinish (syrupy ORs 1 into it
    /// for unused snapshots).
    SessionEnd {
        exitstatus: i32,
    },
    /// One line for the user's terminal: a plugin that cannot work as it would under
    /// xdist, the zygote's warning about threads alive at a fork.
    Note {
        text: String,
    },
    /// The plugin hit an internal error; the text is a Python traceback.
    Fatal {
        message: String,
    },
    /// Worker: a test ended the session (`pytest.exit`, `KeyboardInterrupt`); the worker
    /// tears down and exits after it. The run ends as pytest's would.
    SessionExit(SessionExit),
    /// Worker: the test it runs failed in setup or call and is never retried: its `done`
    /// (rendered report, teardown) follows. Sent so `-x`/`--maxfail` stop sooner.
    HardFailure {
        id: TestId,
    },
}

/// How a test ended the session, in pytest's words.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionExit {
    /// pytest's exit status: `pytest.exit`'s `returncode`, else 2 (interrupted).
    pub returncode: i32,
    /// What pytest prints between `!` rules: `_pytest.outcomes.Exit: why`, `KeyboardInterrupt`.
    pub reason: String,
    /// What pytest prints under that rule, rendered (for `KeyboardInterrupt`: where it was
    /// raised and the `--full-trace` hint); may be empty.
    #[serde(default)]
    pub details: String,
}

/// Agent -> Python.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum ToPython {
    /// The run's settings: the first message on every connection, right after the hello
    /// (the Python side waits for it before anything else).
    Configure(RunSettings),
    /// Zygote: fork a worker for this slot.
    Fork { slot: String },
    /// Worker: append these to the local queue. `slow`: positions in `ids` of tests that
    /// may take a while (estimated at 10 ms or more, or of unknown length): the worker
    /// sends the results it holds back before it starts one, so they are not late by it.
    Run {
        ids: Vec<TestId>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        slow: Vec<u32>,
    },
    /// Worker: nothing more for now; run the last queued test with `nextitem=None`.
    Flush,
    /// Worker: remove those of `ids` not started yet from the local queue and answer
    /// `retracted` at once, even while a test runs (a reader thread handles it).
    Retract { ids: Vec<TestId> },
    /// Zygote, before `exit`: the final outcome of each test that ran, for what its own
    /// session keeps across runs (pytest's cache: `--lf`, `--ff`).
    Results {
        failed: Vec<TestId>,
        passed: Vec<TestId>,
    },
    /// Worker: the hard failure it announced does not stop the run; start the next test
    /// (a worker starts none while an announcement is unanswered; `Exit` also answers).
    Proceed,
    /// Finish the running test, tear down fixtures, exit.
    Exit,
}

/// Settings of the whole run, for the zygote and every worker.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunSettings {
    /// [`SETTINGS_VERSION`].
    pub v: u32,
    /// Workers in the run (`PYTEST_XDIST_WORKER_COUNT`, `config.workerinput`).
    pub worker_count: u32,
    /// The run's id (`PYTEST_XDIST_TESTRUNUID`): one value for every worker.
    pub testrunuid: String,
    /// Render tracebacks and plugin summaries with colour.
    pub color: bool,
    /// Terminal width for rendered tracebacks.
    pub width: u32,
    /// pytest-rerunfailures' flags as given to shardex; they join pytest's own (addopts).
    pub retry: RetryFlags,
    /// Whether a JUnit report is written (workers build testcases only then).
    pub junit: bool,
    /// `--dist loadgroup`: items carry their `xdist_group`.
    pub loadgroup: bool,
    /// The run folder: per-worker stderr, capture and result-spool files go there.
    pub rundir: String,
    /// shardex's `--timeout`, seconds: pytest-timeout's precedence (marker > command line >
    /// its own setting) is applied on the Python side for each test.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<f64>,
}

/// `--reruns`, `--reruns-delay`, `--only-rerun`, `--rerun-except`, `--fail-on-flaky`,
/// `--max-suite-reruns` as given on shardex's command line: the one type for them from the
/// CLI to the Python side, which also sees `addopts`, the ini keys and `flaky` markers.
/// `None`/empty: not given; `Some(0)` given explicitly wins over `addopts`, as in pytest.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RetryFlags {
    pub reruns: Option<u32>,
    pub reruns_delay: Option<f64>,
    pub only_rerun: Vec<String>,
    pub rerun_except: Vec<String>,
    pub fail_on_flaky: bool,
    pub max_suite_reruns: Option<u32>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SessionInfo {
    pub rootdir: String,
    /// Lines pytest prints under the session-start separator (platform, rootdir, plugins...).
    pub header: Vec<String>,
    pub suite_name: String,
    pub hostname: String,
    /// ISO 8601 with offset, as pytest's junitxml writes it.
    pub timestamp: String,
    pub tbstyle: String,
    /// pytest's resolved `-r` chars (e.g. "fE").
    pub reportchars: String,
    pub verbosity: i32,
    pub maxfail: u32,
    pub continue_on_collection_errors: bool,
    pub collectonly: bool,
    /// The run's retry rules (CLI, else `addopts`, else ini), for failures with no Python
    /// exception (crash, timeout). Tests with a `flaky` marker carry their own.
    #[serde(default)]
    pub retry: RetryRules,
    #[serde(default)]
    pub fail_on_flaky: bool,
    #[serde(default)]
    pub max_suite_reruns: Option<u32>,
    /// pytest-rerunfailures is installed (and disabled: shardex owns retries).
    #[serde(default)]
    pub rerunfailures_installed: bool,
    /// `--durations N` (0: all) and `--durations-min`, as given.
    #[serde(default)]
    pub durations: Option<u32>,
    #[serde(default)]
    pub durations_min: Option<f64>,
    /// What pytest itself read (from `addopts` or `PYTEST_ADDOPTS`) for options shardex
    /// consumes from its own command line: `-n` as given (`4`, `auto`), `--dist`, and
    /// `--junitxml` as an absolute path.
    #[serde(default)]
    pub numprocesses: Option<String>,
    #[serde(default)]
    pub dist: Option<String>,
    #[serde(default)]
    pub xmlpath: Option<String>,
    /// pytest-timeout is loaded: each item carries its own timeout (`ItemInfo::timeout`).
    #[serde(default)]
    pub item_timeouts: bool,
}

/// pytest-rerunfailures' rules for one test (its `flaky` marker) or the whole run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RetryRules {
    pub reruns: u32,
    pub delay: f64,
    /// `only_rerun` regexes, and exception class names given in a marker.
    pub only_rerun: Vec<String>,
    pub only_rerun_classes: Vec<String>,
    pub rerun_except: Vec<String>,
    pub rerun_except_classes: Vec<String>,
    /// The marker's `condition`, evaluated without an exception (true when absent).
    pub condition: bool,
}

/// The worker's judgement of a failed attempt, made where the exception object is.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RetryVerdict {
    /// Not an xfail, the condition holds, and the exception filter lets it be retried.
    pub eligible: bool,
    /// This test's rerun count (marker beats CLI beats ini).
    pub reruns: u32,
    /// Seconds to wait before the retry.
    pub delay: f64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CollectProblem {
    pub nodeid: String,
    /// "failed" or "skipped".
    pub outcome: String,
    /// Rendered as pytest's terminal shows it.
    pub longrepr: String,
    /// Skip reason (`path:line: reason`) or the error's last line.
    pub message: String,
    pub junit: JunitPart,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Collection {
    pub items: Vec<ItemInfo>,
    pub deselected: u32,
    /// Collection errors (failed collect reports).
    pub errors: u32,
    /// What plugins print after the "collected" line (`pytest_report_collectionfinish`,
    /// e.g. `run-last-failure: ...`), in pytest's order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub report_lines: Vec<String>,
    /// Collected tests that failed in the previous run (pytest's cache), in collection
    /// order: scheduled first under `-x`/`--maxfail`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_before: Vec<TestId>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ItemInfo {
    pub id: TestId,
    /// `item.location[0]`: path relative to rootdir, with `/`.
    pub file: String,
    /// `item.location[1]`: 0-based line.
    pub line: Option<u32>,
    /// The test's `flaky` marker rules, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryRules>,
    /// Its `xdist_group` name, sent under `--dist loadgroup` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// With pytest-timeout loaded (`SessionInfo::item_timeouts`): the test's timeout in
    /// seconds by pytest-timeout's precedence; `None`: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<f64>,
    /// pytest-timeout enforces that timeout in the worker itself (a marker, or its own
    /// setting): the agent's kill is only the backstop.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub timeout_in_worker: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TestDone {
    pub id: TestId,
    /// Sum of the phases' durations (setup + call + teardown), seconds.
    pub duration: f64,
    #[serde(default)]
    pub reports: Vec<PhaseReport>,
    /// The short form of the most common result, a plain pass: only the setup, call and
    /// teardown durations; `reports` is then empty until `expand` fills it in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pass: Option<[f64; 3]>,
    /// Absent when no JUnit report is written.
    #[serde(default)]
    pub junit: JunitPart,
    /// Present when the test failed.
    #[serde(default)]
    pub retry: Option<RetryVerdict>,
}

impl TestDone {
    /// Turns the short form of a pass into the three reports pytest makes for one.
    pub fn expand(mut self) -> Self {
        if let Some([setup, call, teardown]) = self.pass.take() {
            let phase = |when: &'static str, duration: f64| PhaseReport {
                when: when.into(),
                outcome: "passed".into(),
                duration,
                ..PhaseReport::default()
            };
            self.reports = vec![
                phase("setup", setup),
                PhaseReport {
                    category: "passed".into(),
                    letter: ".".into(),
                    word: "PASSED".into(),
                    ..phase("call", call)
                },
                phase("teardown", teardown),
            ];
        }
        self
    }
}

/// One `TestReport` (setup, call or teardown) as the terminal and summary need it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PhaseReport {
    // Short words, static for the reports the agent makes itself (`TestDone::expand`):
    // no allocation per test for a plain pass.
    pub when: Cow<'static, str>,
    /// pytest's report outcome: passed, failed, skipped.
    pub outcome: Cow<'static, str>,
    /// `pytest_report_teststatus` result: category (empty when not counted), letter, word.
    pub category: Cow<'static, str>,
    pub letter: Cow<'static, str>,
    pub word: Cow<'static, str>,
    pub duration: f64,
    /// The FAILURES/ERRORS section body, rendered in the worker with the run's `--tb`
    /// style, captured output sections included.
    pub longrepr: Option<String>,
    /// `head_line` for the section header.
    pub head_line: Option<String>,
    /// `reprcrash.message` (first line used in `-r` short summary).
    pub crash_message: Option<String>,
    /// `--tb=line` form (`path:line: message`).
    pub crash_line: Option<String>,
    /// Skip location and reason: (path, 1-based line, reason).
    pub skip: Option<(String, u32, String)>,
    pub wasxfail: Option<String>,
}

/// What pytest's own junitxml produced for one test: `<testcase>` element(s) as XML text,
/// and the counters `LogXML.stats` moved by.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct JunitPart {
    pub xml: String,
    pub passed: u32,
    pub failures: u32,
    pub errors: u32,
    pub skipped: u32,
    /// Tests reported twice (call failure + teardown error): `tests` subtracts these.
    pub double: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WarningReport {
    pub nodeid: String,
    /// As pytest's warnings summary prints it (`path:line: Category: message`).
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_on_the_wire() {
        let msg = ToPython::Run {
            ids: vec![TestId::new("t.py::a")],
            slow: vec![],
        };
        assert_eq!(
            serde_json::to_string(&msg).unwrap(),
            r#"{"t":"run","ids":["t.py::a"]}"#
        );
        let msg = ToPython::Run {
            ids: vec![TestId::new("t.py::a"), TestId::new("t.py::b")],
            slow: vec![1],
        };
        assert_eq!(
            serde_json::to_string(&msg).unwrap(),
            r#"{"t":"run","ids":["t.py::a","t.py::b"],"slow":[1]}"#
        );
        assert_eq!(
            serde_json::to_string(&ToPython::Flush).unwrap(),
            r#"{"t":"flush"}"#
        );
        let msg = ToPython::Retract {
            ids: vec![TestId::new("t.py::b")],
        };
        assert_eq!(
            serde_json::to_string(&msg).unwrap(),
            r#"{"t":"retract","ids":["t.py::b"]}"#
        );
        let back: FromPython = serde_json::from_str(r#"{"t":"retracted","ids":[]}"#).unwrap();
        assert_eq!(back, FromPython::Retracted { ids: vec![] });
        let hello: FromPython =
            serde_json::from_str(r#"{"t":"hello","v":1,"role":"worker","slot":"gw0","pid":7}"#)
                .unwrap();
        assert_eq!(
            hello,
            FromPython::Hello {
                v: 1,
                role: Role::Worker,
                slot: Some("gw0".into()),
                pid: 7,
                secret: None,
            }
        );
        let hello: FromPython = serde_json::from_str(
            r#"{"t":"hello","v":4,"role":"zygote","slot":null,"pid":7,"secret":"s3"}"#,
        )
        .unwrap();
        assert!(matches!(hello, FromPython::Hello { secret: Some(s), .. } if s == "s3"));
    }

    #[test]
    fn configure_is_flat_with_its_tag() {
        let settings = RunSettings {
            v: SETTINGS_VERSION,
            worker_count: 2,
            testrunuid: "abc".into(),
            color: true,
            width: 100,
            retry: RetryFlags {
                reruns: Some(2),
                only_rerun: vec!["Conn".into()],
                ..RetryFlags::default()
            },
            junit: false,
            loadgroup: true,
            rundir: "/tmp/r".into(),
            timeout: None,
        };
        let line = serde_json::to_string(&ToPython::Configure(settings.clone())).unwrap();
        assert_eq!(
            line,
            r#"{"t":"configure","v":1,"worker_count":2,"testrunuid":"abc","color":true,"width":100,"retry":{"reruns":2,"reruns_delay":null,"only_rerun":["Conn"],"rerun_except":[],"fail_on_flaky":false,"max_suite_reruns":null},"junit":false,"loadgroup":true,"rundir":"/tmp/r"}"#
        );
        assert_eq!(
            serde_json::from_str::<ToPython>(&line).unwrap(),
            ToPython::Configure(settings)
        );
    }

    #[test]
    fn done_round_trip_with_missing_optionals() {
        let line = r#"{"t":"done","id":"t.py::a","duration":0.5,"reports":[{"when":"call","outcome":"passed","category":"passed","letter":".","word":"PASSED","duration":0.5}],"junit":{"xml":"<testcase/>","passed":1,"failures":0,"errors":0,"skipped":0,"double":0}}"#;
        let FromPython::Done(done) = serde_json::from_str(line).unwrap() else {
            panic!("not done")
        };
        assert_eq!(done.reports[0].longrepr, None);
        assert_eq!(done.junit.passed, 1);
    }
}
