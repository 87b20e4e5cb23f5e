//! One `<testcase>` per test across its attempts, in the layout Maven Surefire and nextest
//! write: earlier failures become `<flakyFailure>`/`<flakyError>` children when the test
//! passed in the end, later ones `<rerunFailure>`/`<rerunError>` when it never did.
//!
//! The attempts' XML is pytest's own (ElementTree output, see [`super::write`]); it is
//! spliced, not re-serialised, so every byte pytest wrote keeps its escaping. Only the `type`
//! attribute, which xunit1 lacks, is derived and escaped here.
//!
//! Decisions:
//! - Passed in the end: the final attempt's testcase and counters, plus a `flaky*` child per
//!   failed element of each earlier attempt.
//! - Never passed: the first failed attempt's first testcase (its `<failure>`/`<error>` is
//!   the test's failure), plus a `rerun*` child per failed element of later attempts.
//!   Counters: exactly one failure, or one error if that main element is an `<error>`, so
//!   the suite's `failures`/`errors` agree with what readers find in the testcases. They
//!   can disagree with the final attempt (first a call failure, then a setup error): the
//!   report shows the first one, as Surefire does.
//! - A call failure followed by a teardown error makes pytest write two testcases for one
//!   attempt. Only the first becomes the base; the second's `<error>` is another failed
//!   element of its attempt, so it becomes a `*Error` child (for the base attempt too: a
//!   `<rerunError>` whose message says "failed on teardown"), carrying that testcase's
//!   `<system-out>`/`<system-err>`.
//! - Each child sits before the base's own `<system-out>`/`<system-err>` (Surefire's order)
//!   and holds `<stackTrace>` (the element's text) and its testcase's captured output.
//! - An attempt that does not parse is left out of the history; if the base does not
//!   parse, the final attempt is returned as it is.

use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

use super::write::escape_attr;
use crate::protocol::JunitPart;

/// Merges the `JunitPart`s of one test's attempts (in order) into one testcase.
///
/// `final_passed`: the last attempt did not fail (it passed, or was skipped). One attempt is
/// returned unchanged, so a test that was not retried keeps pytest's exact output (two
/// testcases for a call failure plus a teardown error, as pytest writes them).
pub fn merge_attempts(attempts: &[JunitPart], final_passed: bool) -> JunitPart {
    let Some(last) = attempts.last() else {
        return JunitPart::default();
    };
    if attempts.len() == 1 {
        return last.clone();
    }
    let parsed: Vec<Option<Vec<Case<'_>>>> =
        attempts.iter().map(|part| parse_cases(&part.xml)).collect();
    let has_failed = |cases: &Option<Vec<Case<'_>>>| {
        cases
            .as_deref()
            .is_some_and(|cases| cases.iter().any(|case| case.failed().next().is_some()))
    };
    let base_index = if final_passed {
        attempts.len() - 1
    } else {
        parsed
            .iter()
            .position(has_failed)
            .unwrap_or(attempts.len() - 1)
    };
    let Some(base_cases) = parsed[base_index].as_deref().filter(|c| !c.is_empty()) else {
        return last.clone();
    };
    let base = &base_cases[0];

    let (failure_tag, error_tag) = if final_passed {
        ("flakyFailure", "flakyError")
    } else {
        ("rerunFailure", "rerunError")
    };
    let mut history = String::new();
    for (index, cases) in parsed.iter().enumerate() {
        let Some(cases) = cases else { continue };
        let cases = if index == base_index {
            &cases[1..]
        } else {
            &cases[..]
        };
        for case in cases {
            for failed in case.failed() {
                let tag = match failed.kind {
                    Kind::Failure => failure_tag,
                    Kind::Error => error_tag,
                };
                write_history_child(&mut history, tag, failed, case);
            }
        }
    }

    let xml = base.render_with(&history);
    let main_kind = base
        .failed()
        .next()
        .or_else(|| base_cases.iter().flat_map(Case::failed).next())
        .map(|failed| failed.kind);
    match main_kind {
        Some(kind) if !final_passed => JunitPart {
            xml,
            failures: u32::from(kind == Kind::Failure),
            errors: u32::from(kind == Kind::Error),
            ..JunitPart::default()
        },
        // Passed in the end, or no failed element anywhere: the final attempt's counters.
        _ => JunitPart {
            xml,
            ..last.clone()
        },
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Failure,
    Error,
}

/// A `<testcase>` of a fragment; slices point into the fragment's text.
struct Case<'a> {
    /// `<testcase attr="…"` without its `>` or ` />`.
    open: &'a str,
    children: Vec<Child<'a>>,
}

struct Child<'a> {
    name: String,
    /// The whole element, as written.
    raw: &'a str,
    failed: Option<Failed<'a>>,
}

/// A `<failure>` or `<error>` child.
struct Failed<'a> {
    kind: Kind,
    /// The `message` attribute as written (escaped), and unescaped.
    message_raw: Option<String>,
    message: Option<String>,
    /// The element's content as written (escaped).
    text_raw: &'a str,
}

impl<'a> Case<'a> {
    fn failed(&self) -> impl Iterator<Item = &Failed<'a>> {
        self.children.iter().filter_map(|c| c.failed.as_ref())
    }

    fn output(&self) -> impl Iterator<Item = &Child<'a>> {
        self.children
            .iter()
            .filter(|c| c.name == "system-out" || c.name == "system-err")
    }

    /// The testcase with `history` inserted before its captured output.
    fn render_with(&self, history: &str) -> String {
        let split = self
            .children
            .iter()
            .position(|c| c.name == "system-out" || c.name == "system-err")
            .unwrap_or(self.children.len());
        let (before, after) = self.children.split_at(split);
        let mut xml = String::with_capacity(self.open.len() + history.len() + 256);
        xml.push_str(self.open);
        xml.push('>');
        for child in before {
            xml.push_str(child.raw);
        }
        xml.push_str(history);
        for child in after {
            xml.push_str(child.raw);
        }
        xml.push_str("</testcase>");
        xml
    }
}

/// `<flakyFailure message="…" type="…"><stackTrace>…</stackTrace><system-out>…` for one
/// failed element of an attempt.
fn write_history_child(out: &mut String, tag: &str, failed: &Failed<'_>, case: &Case<'_>) {
    out.push('<');
    out.push_str(tag);
    if let Some(message) = &failed.message_raw {
        out.push_str(" message=\"");
        out.push_str(message);
        out.push('"');
    }
    if let Some(kind) = exception_type(failed.message.as_deref().unwrap_or(""), failed.text_raw) {
        out.push_str(" type=\"");
        out.push_str(&escape_attr(kind));
        out.push('"');
    }
    out.push('>');
    if !failed.text_raw.is_empty() {
        out.push_str("<stackTrace>");
        out.push_str(failed.text_raw);
        out.push_str("</stackTrace>");
    }
    for child in case.output() {
        out.push_str(child.raw);
    }
    out.push_str("</");
    out.push_str(tag);
    out.push('>');
}

/// The exception type for a `type` attribute, which pytest's xunit1 doesn't write.
///
/// From the message: its leading `Name:` (`AssertionError: …`), the quoted one of a setup
/// or teardown error (`failed on setup with "RuntimeError: …"`), or the whole message when
/// it is just a name (an exception without arguments: `KeyError`, `test_m.Custom`). Else
/// from the text's last line, which pytest's long and short tracebacks end with
/// `path:line: Name`. `None` when nothing looks like an exception name (`--tb=native`
/// with `assert x`).
fn exception_type<'m>(message: &'m str, text_raw: &'m str) -> Option<&'m str> {
    let first = message.lines().next().unwrap_or("");
    let head = ["failed on setup with \"", "failed on teardown with \""]
        .iter()
        .find_map(|prefix| first.strip_prefix(prefix))
        .map_or(first, |quoted| quoted.strip_suffix('"').unwrap_or(quoted));
    let name = head.split_once(": ").map_or(head, |(name, _)| name);
    if is_exception_name(name) {
        return Some(name);
    }
    let (location, name) = text_raw.trim_end().lines().last()?.rsplit_once(": ")?;
    let (_, line) = location.rsplit_once(':')?;
    let is_line = !line.is_empty() && line.bytes().all(|b| b.is_ascii_digit());
    (is_line && is_exception_name(name)).then_some(name)
}

/// A dotted Python name whose last part is capitalised: `ValueError`, `pkg.mod.Custom`.
fn is_exception_name(name: &str) -> bool {
    let is_identifier = |part: &str| {
        let mut chars = part.chars();
        chars.next().is_some_and(|c| c == '_' || c.is_alphabetic())
            && chars.all(|c| c == '_' || c.is_alphanumeric())
    };
    name.split('.').all(is_identifier)
        && name
            .rsplit('.')
            .next()
            .and_then(|last| last.chars().next())
            .is_some_and(char::is_uppercase)
}

/// A child of the current testcase whose end tag is still to come.
struct OpenChild<'a> {
    /// Where its start tag begins and its content begins.
    start: usize,
    content: usize,
    name: String,
    failed: Option<Failed<'a>>,
}

/// The `<testcase>` elements of a fragment; `None` when it is not well-formed or holds
/// something else at the top level.
fn parse_cases(xml: &str) -> Option<Vec<Case<'_>>> {
    let mut reader = Reader::from_str(xml);
    let mut cases = Vec::new();
    let mut current: Option<Case<'_>> = None;
    let mut open_child: Option<OpenChild<'_>> = None;
    let mut depth = 0usize;
    loop {
        let start = usize::try_from(reader.buffer_position()).ok()?;
        let event = reader.read_event().ok()?;
        let end = usize::try_from(reader.buffer_position()).ok()?;
        match event {
            Event::Start(tag) => {
                depth += 1;
                match depth {
                    1 => {
                        is_testcase(&tag)?;
                        current = Some(Case {
                            open: xml[start..end].strip_suffix('>')?,
                            children: Vec::new(),
                        });
                    }
                    2 => {
                        open_child = Some(OpenChild {
                            start,
                            content: end,
                            name: local_name(&tag),
                            failed: failed_element(&tag)?,
                        });
                    }
                    _ => {}
                }
            }
            Event::Empty(tag) => match depth {
                0 => {
                    is_testcase(&tag)?;
                    cases.push(Case {
                        open: xml[start..end].strip_suffix("/>")?.trim_end(),
                        children: Vec::new(),
                    });
                }
                1 => current.as_mut()?.children.push(Child {
                    name: local_name(&tag),
                    raw: &xml[start..end],
                    failed: failed_element(&tag)?,
                }),
                _ => {}
            },
            Event::End(_) => {
                match depth {
                    1 => cases.push(current.take()?),
                    2 => current.as_mut()?.children.push(close_child(
                        xml,
                        open_child.take()?,
                        start,
                        end,
                    )),
                    _ => {}
                }
                depth = depth.checked_sub(1)?;
            }
            Event::Text(text) if depth == 0 => {
                if !text.iter().all(u8::is_ascii_whitespace) {
                    return None;
                }
            }
            Event::CData(_) if depth == 0 => return None,
            Event::Eof => break,
            Event::Text(_)
            | Event::CData(_)
            | Event::Comment(_)
            | Event::Decl(_)
            | Event::PI(_)
            | Event::DocType(_) => {}
        }
    }
    (depth == 0).then_some(cases)
}

/// A `<testcase>` child whose end tag spans `start..end`.
fn close_child<'a>(xml: &'a str, child: OpenChild<'a>, start: usize, end: usize) -> Child<'a> {
    let failed = child.failed.map(|failed| Failed {
        text_raw: &xml[child.content..start],
        ..failed
    });
    Child {
        name: child.name,
        raw: &xml[child.start..end],
        failed,
    }
}

fn is_testcase(tag: &BytesStart<'_>) -> Option<()> {
    (tag.local_name().as_ref() == b"testcase").then_some(())
}

fn local_name(tag: &BytesStart<'_>) -> String {
    String::from_utf8_lossy(tag.local_name().as_ref()).into_owned()
}

/// For a `<failure>`/`<error>` tag, its kind and `message` (text still empty); `Some(None)`
/// for other tags; `None` when an attribute is malformed.
fn failed_element(tag: &BytesStart<'_>) -> Option<Option<Failed<'static>>> {
    let kind = match tag.local_name().as_ref() {
        b"failure" => Kind::Failure,
        b"error" => Kind::Error,
        _ => return Some(None),
    };
    let mut failed = Failed {
        kind,
        message_raw: None,
        message: None,
        text_raw: "",
    };
    for attr in tag.attributes() {
        let attr = attr.ok()?;
        if attr.key.local_name().as_ref() == b"message" {
            failed.message_raw = Some(String::from_utf8_lossy(&attr.value).into_owned());
            failed.message = Some(attr.unescape_value().ok()?.into_owned());
        }
    }
    Some(Some(failed))
}

#[cfg(test)]
mod tests {
    use quick_xml::events::Event;
    use quick_xml::Reader;

    use super::*;
    use crate::junit::read::read_case_times;
    use crate::junit::write::{JunitReport, SuiteInfo, SyntheticCase};

    // Real pytest 8 output (`-o junit_family=xunit1`), one attempt per constant; `OUT_` ones
    // with `-o junit_logging=all`. DOUBLE*_1: a call failure plus a teardown error, which
    // pytest writes as two testcases.
    const FLAKY_1: &str = "<testcase classname=\"test_f\" name=\"test_flaky\" file=\"test_f.py\" line=\"3\" time=\"0.001\"><failure message=\"AssertionError: first &lt;try&gt; &amp; fails&#10;assert 1 &gt; 1\">def test_flaky():\n        print(\"attempt\", ATTEMPT)\n&gt;       assert ATTEMPT &gt; 1, \"first &lt;try&gt; &amp; fails\"\nE       AssertionError: first &lt;try&gt; &amp; fails\nE       assert 1 &gt; 1\n\ntest_f.py:6: AssertionError</failure></testcase>";
    const FLAKY_2: &str = "<testcase classname=\"test_f\" name=\"test_flaky\" file=\"test_f.py\" line=\"3\" time=\"0.001\" />";
    const BROKEN_1: &str = "<testcase classname=\"test_f\" name=\"test_broken\" file=\"test_f.py\" line=\"12\" time=\"0.001\"><failure message=\"ValueError: bad value&#10;second line\">setup_on_2 = None\n\n    def test_broken(setup_on_2):\n        x = 2\n        if ATTEMPT == 1:\n&gt;           raise ValueError(\"bad value\\nsecond line\")\nE           ValueError: bad value\nE           second line\n\ntest_f.py:16: ValueError</failure></testcase>";
    const BROKEN_2: &str = "<testcase classname=\"test_f\" name=\"test_broken\" file=\"test_f.py\" line=\"12\" time=\"0.001\"><error message=\"failed on setup with &quot;RuntimeError: db down&quot;\">@pytest.fixture\n    def setup_on_2():\n        if ATTEMPT == 2:\n&gt;           raise RuntimeError(\"db down\")\nE           RuntimeError: db down\n\ntest_f.py:11: RuntimeError</error></testcase>";
    const BROKEN_3: &str = "<testcase classname=\"test_f\" name=\"test_broken\" file=\"test_f.py\" line=\"12\" time=\"0.001\"><failure message=\"assert 2 == 1\">setup_on_2 = None\n\n    def test_broken(setup_on_2):\n        x = 2\n        if ATTEMPT == 1:\n            raise ValueError(\"bad value\\nsecond line\")\n&gt;       assert x == 1\nE       assert 2 == 1\n\ntest_f.py:17: AssertionError</failure></testcase>";
    const DOUBLE_1: &str = "<testcase classname=\"test_f\" name=\"test_double\" file=\"test_f.py\" line=\"24\" time=\"0.001\"><failure message=\"assert 1 &gt; 1\">teardown_fails = None\n\n    def test_double(teardown_fails):\n&gt;       assert ATTEMPT &gt; 1\nE       assert 1 &gt; 1\n\ntest_f.py:26: AssertionError</failure></testcase><testcase classname=\"test_f\" name=\"test_double\" file=\"test_f.py\" line=\"24\" time=\"0.000\"><error message=\"failed on teardown with &quot;OSError: teardown boom&quot;\">@pytest.fixture\n    def teardown_fails():\n        yield\n        if ATTEMPT == 1:\n&gt;           raise OSError(\"teardown boom\")\nE           OSError: teardown boom\n\ntest_f.py:23: OSError</error></testcase>";
    const DOUBLE_2: &str = "<testcase classname=\"test_f\" name=\"test_double\" file=\"test_f.py\" line=\"24\" time=\"0.001\" />";
    const DOUBLE_ALWAYS_1: &str = "<testcase classname=\"test_f\" name=\"test_double_always\" file=\"test_f.py\" line=\"32\" time=\"0.001\"><failure message=\"assert False\">teardown_always = None\n\n    def test_double_always(teardown_always):\n&gt;       assert False\nE       assert False\n\ntest_f.py:34: AssertionError</failure></testcase><testcase classname=\"test_f\" name=\"test_double_always\" file=\"test_f.py\" line=\"32\" time=\"0.000\"><error message=\"failed on teardown with &quot;OSError: teardown boom&quot;\">@pytest.fixture\n    def teardown_always():\n        yield\n&gt;       raise OSError(\"teardown boom\")\nE       OSError: teardown boom\n\ntest_f.py:31: OSError</error></testcase>";
    const DOUBLE_ALWAYS_2: &str = "<testcase classname=\"test_f\" name=\"test_double_always\" file=\"test_f.py\" line=\"32\" time=\"0.001\"><failure message=\"assert False\">teardown_always = None\n\n    def test_double_always(teardown_always):\n&gt;       assert False\nE       assert False\n\ntest_f.py:34: AssertionError</failure></testcase><testcase classname=\"test_f\" name=\"test_double_always\" file=\"test_f.py\" line=\"32\" time=\"0.000\"><error message=\"failed on teardown with &quot;OSError: teardown boom&quot;\">@pytest.fixture\n    def teardown_always():\n        yield\n&gt;       raise OSError(\"teardown boom\")\nE       OSError: teardown boom\n\ntest_f.py:31: OSError</error></testcase>";
    const FLAKY_OUT_1: &str = "<testcase classname=\"test_f\" name=\"test_flaky\" file=\"test_f.py\" line=\"3\" time=\"0.001\"><failure message=\"AssertionError: first &lt;try&gt; &amp; fails&#10;assert 1 &gt; 1\">def test_flaky():\n        print(\"attempt\", ATTEMPT)\n&gt;       assert ATTEMPT &gt; 1, \"first &lt;try&gt; &amp; fails\"\nE       AssertionError: first &lt;try&gt; &amp; fails\nE       assert 1 &gt; 1\n\ntest_f.py:6: AssertionError</failure><system-out>--------------------------------- Captured Log ---------------------------------\n\n--------------------------------- Captured Out ---------------------------------\nattempt 1\n\n</system-out><system-err>--------------------------------- Captured Err ---------------------------------\n\n</system-err></testcase>";
    const FLAKY_OUT_2: &str = "<testcase classname=\"test_f\" name=\"test_flaky\" file=\"test_f.py\" line=\"3\" time=\"0.001\"><system-out>--------------------------------- Captured Log ---------------------------------\n\n--------------------------------- Captured Out ---------------------------------\nattempt 2\n\n</system-out><system-err>--------------------------------- Captured Err ---------------------------------\n\n</system-err></testcase>";
    const PROPS_OUT_1: &str = "<testcase classname=\"test_f\" name=\"test_props\" file=\"test_f.py\" line=\"35\" time=\"0.001\"><properties><property name=\"attempt\" value=\"1\" /></properties><failure message=\"assert 1 &gt; 1\">record_property = &lt;function record_property.&lt;locals&gt;.append_property at 0x7fc45cc60040&gt;\n\n    def test_props(record_property):\n        record_property(\"attempt\", str(ATTEMPT))\n        sys.stderr.write(\"to stderr\\n\")\n        print(\"to stdout \\x01\")\n&gt;       assert ATTEMPT &gt; 1\nE       assert 1 &gt; 1\n\ntest_f.py:40: AssertionError</failure><system-out>--------------------------------- Captured Log ---------------------------------\n\n--------------------------------- Captured Out ---------------------------------\nto stdout #x01\n\n</system-out><system-err>--------------------------------- Captured Err ---------------------------------\nto stderr\n\n</system-err></testcase>";
    const PROPS_OUT_2: &str = "<testcase classname=\"test_f\" name=\"test_props\" file=\"test_f.py\" line=\"35\" time=\"0.001\"><properties><property name=\"attempt\" value=\"2\" /></properties><system-out>--------------------------------- Captured Log ---------------------------------\n\n--------------------------------- Captured Out ---------------------------------\nto stdout #x01\n\n</system-out><system-err>--------------------------------- Captured Err ---------------------------------\nto stderr\n\n</system-err></testcase>";

    fn part(xml: &str, passed: u32, failures: u32, errors: u32, double: u32) -> JunitPart {
        JunitPart {
            xml: xml.to_owned(),
            passed,
            failures,
            errors,
            skipped: 0,
            double,
        }
    }

    fn passed(xml: &str) -> JunitPart {
        part(xml, 1, 0, 0, 0)
    }

    fn failed(xml: &str) -> JunitPart {
        part(xml, 0, 1, 0, 0)
    }

    fn errored(xml: &str) -> JunitPart {
        part(xml, 0, 0, 1, 0)
    }

    fn double(xml: &str) -> JunitPart {
        part(xml, 0, 1, 1, 1)
    }

    /// The text between `after` and the next `before` in `s`.
    fn between<'s>(s: &'s str, after: &str, before: &str) -> &'s str {
        let start = s.find(after).unwrap() + after.len();
        let len = s[start..].find(before).unwrap();
        &s[start..start + len]
    }

    /// Element names in document order, with their depth, checking well-formedness.
    fn elements(xml: &str) -> Vec<(usize, String)> {
        let mut reader = Reader::from_str(xml);
        let (mut depth, mut out) = (0, Vec::new());
        loop {
            match reader.read_event().unwrap() {
                Event::Start(e) => {
                    out.push((
                        depth,
                        String::from_utf8(e.name().as_ref().to_vec()).unwrap(),
                    ));
                    depth += 1;
                }
                Event::Empty(e) => out.push((
                    depth,
                    String::from_utf8(e.name().as_ref().to_vec()).unwrap(),
                )),
                Event::End(_) => depth -= 1,
                Event::Eof => break,
                _ => {}
            }
        }
        assert_eq!(depth, 0);
        out
    }

    fn top_level(xml: &str) -> Vec<String> {
        elements(xml)
            .into_iter()
            .filter(|(depth, _)| *depth == 1)
            .map(|(_, name)| name)
            .collect()
    }

    /// passed, failures, errors, skipped, double.
    fn counts(part: &JunitPart) -> (u32, u32, u32, u32, u32) {
        (
            part.passed,
            part.failures,
            part.errors,
            part.skipped,
            part.double,
        )
    }

    fn assert_one_testcase(part: &JunitPart) {
        let roots: Vec<_> = elements(&part.xml)
            .into_iter()
            .filter(|(depth, _)| *depth == 0)
            .collect();
        assert_eq!(roots, [(0, "testcase".to_owned())], "{}", part.xml);
    }

    #[test]
    fn flaky_failure_then_pass() {
        let merged = merge_attempts(&[failed(FLAKY_1), passed(FLAKY_2)], true);
        let stack = between(FLAKY_1, "assert 1 &gt; 1\">", "</failure>");
        assert!(stack.starts_with("def test_flaky():\n"), "{stack}");
        let want = format!(
            r#"<testcase classname="test_f" name="test_flaky" file="test_f.py" line="3" time="0.001"><flakyFailure message="AssertionError: first &lt;try&gt; &amp; fails&#10;assert 1 &gt; 1" type="AssertionError"><stackTrace>{stack}</stackTrace></flakyFailure></testcase>"#
        );
        assert_eq!(merged.xml, want);
        assert_eq!(
            merged,
            JunitPart {
                xml: want,
                ..passed("")
            }
        );
    }

    #[test]
    fn never_passed_keeps_the_first_failure() {
        let attempts = [failed(BROKEN_1), errored(BROKEN_2), failed(BROKEN_3)];
        let merged = merge_attempts(&attempts, false);
        assert_one_testcase(&merged);
        let first = BROKEN_1.strip_suffix("</testcase>").unwrap();
        assert!(merged.xml.starts_with(first), "{}", merged.xml);
        assert_eq!(
            top_level(&merged.xml),
            ["failure", "rerunError", "rerunFailure"]
        );
        assert!(merged.xml.contains(r#"<rerunError message="failed on setup with &quot;RuntimeError: db down&quot;" type="RuntimeError"><stackTrace>@pytest.fixture"#));
        assert!(merged.xml.contains(r#"<rerunFailure message="assert 2 == 1" type="AssertionError"><stackTrace>setup_on_2 = None"#));
        assert_eq!(counts(&merged), (0, 1, 0, 0, 0));

        // The first failure was a setup error: the test counts as one error.
        let merged = merge_attempts(&[errored(BROKEN_2), failed(BROKEN_3)], false);
        assert_eq!(top_level(&merged.xml), ["error", "rerunFailure"]);
        assert_eq!((merged.failures, merged.errors), (0, 1));
    }

    #[test]
    fn call_failure_plus_teardown_error() {
        // Flaky: both failed elements of the first attempt become history.
        let merged = merge_attempts(&[double(DOUBLE_1), passed(DOUBLE_2)], true);
        assert_one_testcase(&merged);
        assert_eq!(top_level(&merged.xml), ["flakyFailure", "flakyError"]);
        // `assert 1 > 1` has no type in its message: the traceback's last line names it.
        assert!(merged
            .xml
            .contains(r#"<flakyFailure message="assert 1 &gt; 1" type="AssertionError">"#));
        assert!(merged.xml.contains(r#"<flakyError message="failed on teardown with &quot;OSError: teardown boom&quot;" type="OSError">"#));
        assert_eq!(merged.passed, 1);
        assert_eq!(merged.double, 0);

        // Never passed: the first testcase is the base; the same attempt's teardown error
        // comes first in the history.
        let merged = merge_attempts(&[double(DOUBLE_ALWAYS_1), double(DOUBLE_ALWAYS_2)], false);
        assert_one_testcase(&merged);
        assert_eq!(
            top_level(&merged.xml),
            ["failure", "rerunError", "rerunFailure", "rerunError"]
        );
        assert!(merged.xml.starts_with(r#"<testcase classname="test_f" name="test_double_always" file="test_f.py" line="32" time="0.001"><failure message="assert False">"#));
        assert_eq!(counts(&merged), (0, 1, 0, 0, 0));
    }

    #[test]
    fn captured_output_and_properties() {
        let merged = merge_attempts(&[failed(FLAKY_OUT_1), passed(FLAKY_OUT_2)], true);
        assert_one_testcase(&merged);
        assert_eq!(
            top_level(&merged.xml),
            ["flakyFailure", "system-out", "system-err"]
        );
        let history = between(&merged.xml, "<flakyFailure ", "</flakyFailure>");
        assert!(history.contains("<system-out>") && history.contains("attempt 1\n"));
        assert!(history.contains("<system-err>"));
        let own_out = between(&merged.xml, "</flakyFailure><system-out>", "</system-out>");
        assert!(own_out.contains("attempt 2\n"), "{own_out}");

        let merged = merge_attempts(&[failed(PROPS_OUT_1), passed(PROPS_OUT_2)], true);
        assert_eq!(
            top_level(&merged.xml),
            ["properties", "flakyFailure", "system-out", "system-err"]
        );
        assert!(merged.xml.contains(r#"<properties><property name="attempt" value="2" /></properties><flakyFailure message="assert 1 &gt; 1" type="AssertionError">"#));
        assert_eq!(merged.xml.matches("<properties>").count(), 1);
        let history = between(&merged.xml, "<flakyFailure ", "</flakyFailure>");
        // pytest's escaping of the earlier attempt survives: `\x01` is `#x01`.
        assert!(history.contains("to stdout #x01\n"), "{history}");
        assert!(history.contains("to stderr\n"), "{history}");
    }

    #[test]
    fn synthetic_crash_attempt() {
        let crash = SyntheticCase {
            nodeid: "test_f.py::test_flaky",
            file: "test_f.py",
            line: Some(3),
            time: 0.5,
            element: "failure",
            message: "WorkerCrashed: worker gw1 was killed by signal 11 (SIGSEGV) while running test_f.py::test_flaky",
            text: "Fatal Python error: Segmentation fault\n<stack>",
        }
        .to_part();
        let merged = merge_attempts(&[failed(FLAKY_1), crash, passed(FLAKY_2)], true);
        assert_one_testcase(&merged);
        assert_eq!(top_level(&merged.xml), ["flakyFailure", "flakyFailure"]);
        assert!(
            merged.xml.contains(
                "type=\"WorkerCrashed\"><stackTrace>Fatal Python error: Segmentation fault\n&lt;stack&gt;</stackTrace>"
            ),
            "{}",
            merged.xml
        );
    }

    #[test]
    fn one_attempt_or_none() {
        // Not retried: pytest's exact output, two testcases included.
        let single = double(DOUBLE_ALWAYS_1);
        assert_eq!(merge_attempts(std::slice::from_ref(&single), false), single);
        assert_eq!(merge_attempts(&[], true), JunitPart::default());
    }

    #[test]
    fn unparseable_attempts() {
        // History that does not parse is left out.
        for bad in [
            "<testcase",
            "<bogus />",
            "text",
            "<testcase><failure></testcase>",
        ] {
            let merged = merge_attempts(&[failed(bad), passed(FLAKY_2)], true);
            assert_one_testcase(&merged);
            assert_eq!(top_level(&merged.xml), Vec::<String>::new(), "{bad}");
            let merged = merge_attempts(&[failed(bad), failed(FLAKY_1)], false);
            assert_eq!(top_level(&merged.xml), ["failure"], "{bad}");
        }
        // A base that does not parse: the final attempt as it is.
        let last = passed("<testcase");
        assert_eq!(merge_attempts(&[failed(FLAKY_1), last.clone()], true), last);
        // Whitespace between testcases is fine.
        let spaced = format!(
            "\n{}\n",
            DOUBLE_1.replace("</testcase><", "</testcase>\n  <")
        );
        let merged = merge_attempts(&[double(&spaced), passed(DOUBLE_2)], true);
        assert_eq!(top_level(&merged.xml), ["flakyFailure", "flakyError"]);
    }

    #[test]
    fn exception_types() {
        let tb = "def test():\n&gt;  assert x\n\ntest_m.py:17: AssertionError";
        let cases = [
            (
                "AssertionError: x\nassert 1 == 2",
                "",
                Some("AssertionError"),
            ),
            ("Failed: boom &lt;", "", Some("Failed")),
            (
                r#"failed on setup with "RuntimeError: db down""#,
                "",
                Some("RuntimeError"),
            ),
            (
                r#"failed on teardown with "test_m.Custom""#,
                "",
                Some("test_m.Custom"),
            ),
            ("KeyError", "", Some("KeyError")),
            (
                "requests.exceptions.ConnectionError: refused",
                "",
                Some("requests.exceptions.ConnectionError"),
            ),
            (
                "Timeout: t.py::x ran longer than --timeout 2s",
                "",
                Some("Timeout"),
            ),
            ("assert 2 == 1", tb, Some("AssertionError")),
            ("assert {'a': 1} == {}", tb, Some("AssertionError")),
            (
                "assert x",
                r"C:\src\test_m.py:3: ValueError",
                Some("ValueError"),
            ),
            // --tb=native ends with the exception line, not a location.
            ("assert x", "Traceback:\nAssertionError: assert x", None),
            ("note: lowercase", "", None),
            ("assert x", "", None),
            ("", "", None),
        ];
        for (message, text, want) in cases {
            assert_eq!(exception_type(message, text), want, "{message:?} {text:?}");
        }
    }

    /// A whole report as CircleCI-style readers see it: one testcase per test, and the
    /// suite's counters agree with the testcases.
    #[test]
    fn report_has_one_testcase_per_test() {
        let renamed = |xml: &str| xml.replace("test_broken", "test_broken_again");
        let tests: Vec<(Vec<JunitPart>, bool)> = vec![
            (vec![failed(FLAKY_1), passed(FLAKY_2)], true),
            (
                vec![failed(BROKEN_1), errored(BROKEN_2), failed(BROKEN_3)],
                false,
            ),
            (vec![double(DOUBLE_1), passed(DOUBLE_2)], true),
            (
                vec![double(DOUBLE_ALWAYS_1), double(DOUBLE_ALWAYS_2)],
                false,
            ),
            (vec![failed(PROPS_OUT_1), passed(PROPS_OUT_2)], true),
            (
                vec![errored(&renamed(BROKEN_2)), failed(&renamed(BROKEN_3))],
                false,
            ),
        ];
        let report = JunitReport {
            suite: SuiteInfo {
                name: "pytest".into(),
                ..SuiteInfo::default()
            },
            cases: tests
                .iter()
                .map(|(attempts, final_passed)| merge_attempts(attempts, *final_passed))
                .collect(),
        };
        let mut out = Vec::new();
        report.write_to(&mut out).unwrap();
        let xml = String::from_utf8(out).unwrap();

        let cases: Vec<_> = elements(&xml)
            .into_iter()
            .filter(|(_, name)| name == "testcase")
            .collect();
        assert_eq!(cases.len(), tests.len());
        assert!(cases.iter().all(|(depth, _)| *depth == 2));
        assert_eq!(read_case_times(&xml).unwrap().len(), tests.len());

        // failures/errors as a reader counts them: testcases with a direct child.
        let (mut failures, mut errors) = (0, 0);
        let mut in_case = false;
        for (depth, name) in elements(&xml) {
            in_case = match depth {
                2 => name == "testcase",
                _ => in_case,
            };
            if depth == 3 && in_case {
                failures += usize::from(name == "failure");
                errors += usize::from(name == "error");
            }
        }
        assert_eq!((failures, errors), (2, 1));
        assert!(
            xml.contains(r#"errors="1" failures="2" skipped="0" tests="6""#),
            "{xml}"
        );
    }
}
