//! Reads JUnit XML for timings: the seconds each testcase took, filed under its pytest
//! nodeid (xunit1, which has `file`) or under its mangled `classname::name` (xunit2).

use std::collections::HashMap;

use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

use crate::errors::JunitReadError;
use crate::test_id::TestId;

/// Where a testcase's time is filed.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CaseKey {
    /// The nodeid, rebuilt from `file`, `classname` and `name` (xunit1).
    NodeId(TestId),
    /// `classname::name`, see [`mangled_key`]: the testcase had no `file` (xunit2), or its
    /// classname did not start with the module path of its file (a `--junit-prefix`).
    Mangled(String),
}

/// The summed `time` of the testcases that share a key.
#[derive(Clone, Debug, PartialEq)]
pub struct CaseTime {
    pub key: CaseKey,
    pub secs: f64,
}

/// The key a nodeid's time has in a report without `file` attributes: pytest's
/// `classname::name`. `sub/test_m.py::TestC::test_x[a::b]` -> `sub.test_m.TestC::test_x[a::b]`.
pub fn mangled_key(nodeid: &str) -> String {
    let (classname, name) = super::classname_and_name(nodeid, None);
    format!("{classname}::{name}")
}

/// Rebuilds a nodeid from xunit1 attributes: the classname minus the dotted module path of
/// `file` gives the class parts. `("sub/test_m.py", "sub.test_m.TestC", "test_x[a::b]")`
/// -> `sub/test_m.py::TestC::test_x[a::b]`.
pub fn case_key(file: Option<&str>, classname: &str, name: &str) -> CaseKey {
    let mangled = || CaseKey::Mangled(format!("{classname}::{name}"));
    let Some(file) = file.filter(|f| !f.is_empty()) else {
        return mangled();
    };
    // Windows pytest writes `file` with backslashes; nodeids always use `/`.
    let file = file.replace('\\', "/");
    // The module path as pytest's `mangle_test_address` derives it from the nodeid.
    let dotted = file.replace('/', ".");
    let module = dotted.strip_suffix(".py").unwrap_or(&dotted);
    let classes = if classname == module {
        ""
    } else if let Some(rest) = classname
        .strip_prefix(module)
        .and_then(|r| r.strip_prefix('.'))
    {
        rest
    } else {
        return mangled();
    };
    let mut nodeid = file.clone();
    for class in classes.split('.').filter(|c| !c.is_empty()) {
        nodeid.push_str("::");
        nodeid.push_str(class);
    }
    nodeid.push_str("::");
    nodeid.push_str(name);
    CaseKey::NodeId(TestId::new(nodeid))
}

/// The `<testcase>` times of a JUnit report, summed per key (pytest writes two testcases
/// for a call failure followed by a teardown error), in order of first appearance.
///
/// Children of a testcase (`<properties>`, `<failure>`, `<system-out>`, `<flakyFailure>`,
/// `<rerunFailure>`, ...) are ignored. A root other than `<testsuites>`/`<testsuite>` is
/// [`JunitReadError::NotJunit`].
pub fn read_case_times(xml: &str) -> Result<Vec<CaseTime>, JunitReadError> {
    let xml = xml.strip_prefix('\u{feff}').unwrap_or(xml);
    let mut reader = Reader::from_str(xml);
    let mut path = ElementPath::default();
    let mut out: Vec<CaseTime> = Vec::new();
    let mut index: HashMap<CaseKey, usize> = HashMap::new();
    // Depth of the enclosing `<testcase>`, to skip everything inside it.
    let mut in_case: Option<usize> = None;
    let mut saw_root = false;
    loop {
        let start = position(reader.buffer_position());
        let event = reader.read_event().map_err(|e| JunitReadError::Invalid {
            element: path.render(),
            reason: format!(
                "line {}: {e}",
                line_of(xml, position(reader.error_position()))
            ),
        })?;
        let (element, empty) = match event {
            Event::Start(e) => (e, false),
            Event::Empty(e) => (e, true),
            Event::End(_) => {
                path.pop();
                if in_case.is_some_and(|depth| path.depth() < depth) {
                    in_case = None;
                }
                continue;
            }
            Event::Eof => break,
            Event::Text(_)
            | Event::CData(_)
            | Event::Comment(_)
            | Event::Decl(_)
            | Event::PI(_)
            | Event::DocType(_) => continue,
        };
        let name = String::from_utf8_lossy(element.local_name().as_ref()).into_owned();
        if !saw_root {
            saw_root = true;
            if name != "testsuites" && name != "testsuite" {
                return Err(JunitReadError::NotJunit { root: name });
            }
        }
        path.push(&name);
        if in_case.is_none() && name == "testcase" {
            let line = line_of(xml, start);
            let case = read_case(&element).map_err(|reason| JunitReadError::Invalid {
                element: path.render(),
                reason: format!("line {line}: {reason}"),
            })?;
            if let Some((key, secs)) = case {
                match index.get(&key) {
                    Some(&i) => out[i].secs += secs,
                    None => {
                        index.insert(key.clone(), out.len());
                        out.push(CaseTime { key, secs });
                    }
                }
            }
            if !empty {
                in_case = Some(path.depth());
            }
        }
        if empty {
            path.pop();
        }
    }
    if !saw_root {
        return Err(JunitReadError::Invalid {
            element: "document".to_owned(),
            reason: "no root element".to_owned(),
        });
    }
    if path.depth() > 0 {
        return Err(JunitReadError::Invalid {
            element: path.render(),
            reason: "the file ends before this element is closed".to_owned(),
        });
    }
    Ok(out)
}

/// One testcase's key and time; `None` for a testcase without `time` (nothing to learn).
fn read_case(element: &BytesStart<'_>) -> Result<Option<(CaseKey, f64)>, String> {
    let (mut file, mut classname, mut name, mut time) = (None, None, None, None);
    for attr in element.attributes() {
        let attr = attr.map_err(|e| e.to_string())?;
        let value = || {
            attr.unescape_value().map(|v| v.into_owned()).map_err(|e| {
                format!(
                    "attribute {}: {e}",
                    String::from_utf8_lossy(attr.key.as_ref())
                )
            })
        };
        match attr.key.as_ref() {
            b"file" => file = Some(value()?),
            b"classname" => classname = Some(value()?),
            b"name" => name = Some(value()?),
            b"time" => time = Some(value()?),
            _ => {}
        }
    }
    let name = name.ok_or("testcase has no name attribute")?;
    let classname =
        classname.ok_or_else(|| format!("testcase {name:?} has no classname attribute"))?;
    let Some(time) = time else {
        return Ok(None);
    };
    let secs: f64 = time
        .trim()
        .parse()
        .ok()
        .filter(|s: &f64| s.is_finite() && *s >= 0.0)
        .ok_or_else(|| format!("time={time:?} is not a number of seconds"))?;
    Ok(Some((case_key(file.as_deref(), &classname, &name), secs)))
}

/// `testsuites/testsuite[1]/testcase[3]`: names with 1-based positions among same-named
/// siblings, for error messages.
#[derive(Default)]
struct ElementPath {
    frames: Vec<Frame>,
    root_children: Vec<(String, usize)>,
}

/// An open element: its name, its position, and the counts of its children by name.
struct Frame {
    name: String,
    nth: usize,
    children: Vec<(String, usize)>,
}

impl ElementPath {
    fn push(&mut self, name: &str) {
        let siblings = match self.frames.last_mut() {
            Some(frame) => &mut frame.children,
            None => &mut self.root_children,
        };
        let nth = match siblings.iter_mut().find(|(n, _)| n == name) {
            Some((_, count)) => {
                *count += 1;
                *count
            }
            None => {
                siblings.push((name.to_owned(), 1));
                1
            }
        };
        self.frames.push(Frame {
            name: name.to_owned(),
            nth,
            children: Vec::new(),
        });
    }

    fn pop(&mut self) {
        self.frames.pop();
    }

    fn depth(&self) -> usize {
        self.frames.len()
    }

    fn render(&self) -> String {
        if self.frames.is_empty() {
            return "document".to_owned();
        }
        let mut out = String::new();
        for (i, frame) in self.frames.iter().enumerate() {
            if i > 0 {
                out.push_str(&format!("/{}[{}]", frame.name, frame.nth));
            } else {
                out.push_str(&frame.name);
            }
        }
        out
    }
}

fn position(pos: u64) -> usize {
    usize::try_from(pos).unwrap_or(usize::MAX)
}

/// 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Real pytest 9.2 output with `-o junit_family=xunit1`.
    const PYTEST_XUNIT1: &str = r#"<?xml version="1.0" encoding="utf-8"?><testsuites name="pytest tests"><testsuite name="pytest" errors="0" failures="1" skipped="1" tests="3" time="0.050" timestamp="2026-11-26T06:50:00.123456+00:00" hostname="h"><testcase classname="test_mod" name="test_pass" file="test_mod.py" line="2" time="0.001" /><testcase classname="sub.test_deep.TestCls" name="test_p[x::y]" file="sub/test_deep.py" line="10" time="1.250"><failure message="assert 1 == 2">long text</failure></testcase><testcase classname="test_mod" name="test_skip" file="test_mod.py" line="5" time="0.000"><skipped type="pytest.skip" message="nope">/abs/test_mod.py:6: nope</skipped></testcase></testsuite></testsuites>"#;

    fn node(s: &str) -> CaseKey {
        CaseKey::NodeId(TestId::new(s))
    }

    #[test]
    fn reads_pytest_xunit1() {
        let times = read_case_times(PYTEST_XUNIT1).unwrap();
        assert_eq!(
            times,
            vec![
                CaseTime {
                    key: node("test_mod.py::test_pass"),
                    secs: 0.001
                },
                CaseTime {
                    key: node("sub/test_deep.py::TestCls::test_p[x::y]"),
                    secs: 1.25
                },
                CaseTime {
                    key: node("test_mod.py::test_skip"),
                    secs: 0.0
                },
            ]
        );
    }

    #[test]
    fn case_keys() {
        let cases = [
            (
                Some("test_mod.py"),
                "test_mod",
                "test_a",
                node("test_mod.py::test_a"),
            ),
            (
                Some("sub/test_m.py"),
                "sub.test_m.TestC",
                "test_x[a::b]",
                node("sub/test_m.py::TestC::test_x[a::b]"),
            ),
            (
                Some("sub/test_m.py"),
                "sub.test_m.TestC.TestN",
                "test_y[1.5]",
                node("sub/test_m.py::TestC::TestN::test_y[1.5]"),
            ),
            (
                Some("sub\\test_m.py"),
                "sub.test_m",
                "test_w",
                node("sub/test_m.py::test_w"),
            ),
            // Doctests: the name is dotted, the classname is the module.
            (
                Some("pkg/mod.py"),
                "pkg.mod",
                "pkg.mod.f",
                node("pkg/mod.py::pkg.mod.f"),
            ),
            (
                Some("README.txt"),
                "README.txt",
                "README.txt",
                node("README.txt::README.txt"),
            ),
            // xunit2: no file.
            (
                None,
                "sub.test_m.TestC",
                "test_x",
                CaseKey::Mangled("sub.test_m.TestC::test_x".to_owned()),
            ),
            // A --junit-prefix: the classname does not start with the module path.
            (
                Some("test_m.py"),
                "pre.test_m",
                "test_x",
                CaseKey::Mangled("pre.test_m::test_x".to_owned()),
            ),
            // Not fooled by a module that is a prefix of another name.
            (
                Some("test_m.py"),
                "test_mod",
                "test_x",
                CaseKey::Mangled("test_mod::test_x".to_owned()),
            ),
        ];
        for (file, classname, name, want) in cases {
            assert_eq!(
                case_key(file, classname, name),
                want,
                "{file:?} {classname} {name}"
            );
        }
    }

    #[test]
    fn mangled_key_matches_xunit2_attributes() {
        for nodeid in [
            "sub/test_m.py::TestC::test_x[a::b]",
            "test_mod.py::test_pass",
            "a/b/test_c.py::TestA::TestB::test_d[1-2]",
        ] {
            let (classname, name) = crate::junit::classname_and_name(nodeid, None);
            assert_eq!(
                case_key(None, &classname, &name),
                CaseKey::Mangled(mangled_key(nodeid))
            );
            // And with `file`, the nodeid comes back exactly.
            let file = TestId::new(nodeid).file().to_owned();
            assert_eq!(case_key(Some(&file), &classname, &name), node(nodeid));
        }
    }

    #[test]
    fn sums_repeated_cases_and_ignores_children() {
        let xml = r#"<testsuite name="pytest">
  <testcase classname="t" name="test_a" file="t.py" time="1.5"><failure message="x">boom</failure></testcase>
  <testcase classname="t" name="test_b" file="t.py" time="0.25"><properties><property name="k" value="v"/></properties><system-out>hi</system-out></testcase>
  <testcase classname="t" name="test_a" file="t.py" time="0.5"><error message="teardown">boom</error></testcase>
  <testcase classname="t" name="test_c" file="t.py" time="2"><flakyFailure message="m"><stackTrace>s</stackTrace></flakyFailure><rerunFailure message="m"/></testcase>
  <testcase classname="t" name="test_d" file="t.py"/>
</testsuite>"#;
        let times = read_case_times(xml).unwrap();
        assert_eq!(
            times,
            vec![
                CaseTime {
                    key: node("t.py::test_a"),
                    secs: 2.0
                },
                CaseTime {
                    key: node("t.py::test_b"),
                    secs: 0.25
                },
                CaseTime {
                    key: node("t.py::test_c"),
                    secs: 2.0
                },
            ]
        );
    }

    #[test]
    fn errors_name_the_element() {
        let cases = [
            (
                "<testsuites><testsuite><testcase classname=\"t\" name=\"a\" time=\"1\"/>\n<testcase classname=\"t\" name=\"b\" time=\"abc\"/></testsuite></testsuites>",
                "invalid JUnit XML at testsuites/testsuite[1]/testcase[2]: line 2: time=\"abc\" is not a number of seconds",
            ),
            (
                "<testsuite><testcase name=\"a\" time=\"1\"/></testsuite>",
                "invalid JUnit XML at testsuite/testcase[1]: line 1: testcase \"a\" has no classname attribute",
            ),
            (
                "<testsuite><testcase classname=\"t\" time=\"-1\"/></testsuite>",
                "invalid JUnit XML at testsuite/testcase[1]: line 1: testcase has no name attribute",
            ),
            (
                "<testsuite><testcase classname=\"t\" name=\"a\" time=\"1\"></testsuite>",
                "invalid JUnit XML at testsuite/testcase[1]: line 1: ill-formed document: expected `</testcase>`, but `</testsuite>` was found",
            ),
            (
                "<testsuites><testsuite>",
                "invalid JUnit XML at testsuites/testsuite[1]: the file ends before this element is closed",
            ),
            ("", "invalid JUnit XML at document: no root element"),
            (
                "<coverage version=\"7\"/>",
                "the root element is <coverage>, not <testsuites> or <testsuite>",
            ),
        ];
        for (xml, want) in cases {
            let err = read_case_times(xml).unwrap_err();
            assert_eq!(err.to_string(), want, "{xml}");
        }
    }
}
