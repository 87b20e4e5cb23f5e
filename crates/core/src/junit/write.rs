//! Writes the report: pytest's envelope around `<testcase>` elements. Most testcases are
//! produced by pytest's own junitxml code inside the workers (exact parity by
//! construction); the ones shardex makes itself (crash, timeout) are built here with the
//! same escaping as Python's ElementTree.

use std::io::{self, Write};

use crate::protocol::JunitPart;

#[derive(Clone, Debug, Default)]
pub struct SuiteInfo {
    pub name: String,
    pub hostname: String,
    pub timestamp: String,
    /// Wall time of the session, seconds.
    pub time: f64,
}

#[derive(Clone, Debug, Default)]
pub struct JunitReport {
    pub suite: SuiteInfo,
    /// Testcases in report order.
    pub cases: Vec<JunitPart>,
}

impl JunitReport {
    pub fn write_to(&self, out: &mut impl Write) -> io::Result<()> {
        let (mut passed, mut failures, mut errors, mut skipped, mut double) = (0, 0, 0, 0, 0);
        for case in &self.cases {
            passed += case.passed;
            failures += case.failures;
            errors += case.errors;
            skipped += case.skipped;
            double += case.double;
        }
        let tests = (passed + failures + skipped + errors).saturating_sub(double);
        out.write_all(br#"<?xml version="1.0" encoding="utf-8"?>"#)?;
        write!(
            out,
            r#"<testsuites name="pytest tests"><testsuite name="{}" errors="{errors}" failures="{failures}" skipped="{skipped}" tests="{tests}" time="{:.3}" timestamp="{}" hostname="{}">"#,
            escape_attr(&self.suite.name),
            self.suite.time,
            escape_attr(&self.suite.timestamp),
            escape_attr(&self.suite.hostname),
        )?;
        for case in &self.cases {
            out.write_all(case.xml.as_bytes())?;
        }
        out.write_all(b"</testsuite></testsuites>")
    }
}

/// A `<testcase>` with one `<failure>` or `<error>` child, for results shardex makes
/// itself (worker crash, timeout).
pub struct SyntheticCase<'a> {
    pub nodeid: &'a str,
    pub file: &'a str,
    pub line: Option<u32>,
    pub time: f64,
    /// "failure" or "error".
    pub element: &'a str,
    pub message: &'a str,
    pub text: &'a str,
}

impl SyntheticCase<'_> {
    pub fn to_part(&self) -> JunitPart {
        let (classname, name) = super::classname_and_name(self.nodeid, None);
        let mut xml = format!(
            r#"<testcase classname="{}" name="{}" file="{}""#,
            escape_attr(&classname),
            escape_attr(&name),
            escape_attr(self.file)
        );
        if let Some(line) = self.line {
            xml.push_str(&format!(r#" line="{line}""#));
        }
        xml.push_str(&format!(
            r#" time="{:.3}"><{el} message="{}">{}</{el}></testcase>"#,
            self.time,
            escape_attr(self.message),
            escape_text(self.text),
            el = self.element,
        ));
        let is_failure = self.element == "failure";
        JunitPart {
            xml,
            failures: u32::from(is_failure),
            errors: u32::from(!is_failure),
            ..JunitPart::default()
        }
    }
}

/// Attribute escaping as ElementTree's `_escape_attrib` does it.
pub fn escape_attr(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\r' => out.push_str("&#13;"),
            '\n' => out.push_str("&#10;"),
            '\t' => out.push_str("&#09;"),
            c if is_illegal_xml_char(c) => out.push_str(&format!("#x{:02X}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// Text escaping as ElementTree's `_escape_cdata` does it, after pytest's `bin_xml_escape`.
pub fn escape_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c if is_illegal_xml_char(c) => out.push_str(&format!("#x{:02X}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// Characters pytest's `bin_xml_escape` replaces with `#xNN`.
fn is_illegal_xml_char(c: char) -> bool {
    let c = c as u32;
    !(c == 0x09
        || c == 0x0A
        || c == 0x0D
        || (0x20..=0x7E).contains(&c)
        || c == 0x85
        || (0xA0..=0xD7FF).contains(&c)
        || (0xE000..=0xFFFD).contains(&c)
        || (0x10000..=0x10FFFF).contains(&c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_counts_like_pytest() {
        let report = JunitReport {
            suite: SuiteInfo {
                name: "pytest".into(),
                hostname: "h".into(),
                timestamp: "t".into(),
                time: 1.5,
            },
            cases: vec![
                JunitPart {
                    xml: "<testcase/>".into(),
                    passed: 1,
                    ..Default::default()
                },
                JunitPart {
                    xml: "<a/><b/>".into(),
                    failures: 1,
                    errors: 1,
                    double: 1,
                    ..Default::default()
                },
            ],
        };
        let mut out = Vec::new();
        report.write_to(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains(r#"errors="1" failures="1" skipped="0" tests="2" time="1.500""#),
            "{text}"
        );
    }

    #[test]
    fn synthetic_case_escapes() {
        let part = SyntheticCase {
            nodeid: "t.py::test_a[<x>]",
            file: "t.py",
            line: Some(3),
            time: 0.25,
            element: "failure",
            message: "WorkerCrashed: \"gw0\"\nline2",
            text: "a < b & c",
        }
        .to_part();
        assert_eq!(
            part.xml,
            r#"<testcase classname="t" name="test_a[&lt;x&gt;]" file="t.py" line="3" time="0.250"><failure message="WorkerCrashed: &quot;gw0&quot;&#10;line2">a &lt; b &amp; c</failure></testcase>"#
        );
        assert_eq!(part.failures, 1);
    }
}
