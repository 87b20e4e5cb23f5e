//! Retries: the rerunfailures filter for failures the agent judges itself (a worker crash or
//! a `--timeout` kill has no Python exception), and the per-run count of retries granted.
//!
//! Ordinary failures are judged in the worker, which has the exception chain; it sends
//! `eligible`, `reruns` and `delay` per failed attempt, and [`RetryBook::grant`] takes it from
//! there. A crash or timeout reaches the same filter as one synthetic `"Type: message"`
//! string (`"WorkerCrashed: worker gw1 was killed by signal 11 (SIGSEGV) while running
//! t.py::x"`), matched with Python `re.search` semantics by [`RetryFilter`].

use std::collections::HashMap;

use regex::Regex;

use crate::protocol::RetryRules;
use crate::test_id::TestId;

/// A pattern that can't be matched in Rust as Python's `re.search` would match it.
#[derive(Debug, thiserror::Error)]
pub enum RetryPatternError {
    #[error("{option} pattern {pattern:?} can't be used for crash/timeout matching: {reason}")]
    Unsupported {
        option: &'static str,
        pattern: String,
        reason: &'static str,
    },
    #[error("{option} pattern {pattern:?} can't be used for crash/timeout matching")]
    Regex {
        option: &'static str,
        pattern: String,
        #[source]
        source: regex::Error,
    },
}

/// The filter of a test's resolved rules (marker beats CLI beats ini), for the failures the
/// agent judges itself.
impl RetryRules {
    /// Checks that every pattern can be matched here; the agent reports the first one that
    /// can't (look-around, backreferences, possessive quantifiers, verbose mode).
    pub fn validate(&self) -> Result<(), RetryPatternError> {
        self.compile().map(drop)
    }

    /// The filter with its patterns compiled, for matching many synthetic failures.
    pub fn compile(&self) -> Result<RetryFilter, RetryPatternError> {
        Ok(RetryFilter {
            only: ErrorMatcher::new("only_rerun", &self.only_rerun, &self.only_rerun_classes)?,
            except: ErrorMatcher::new(
                "rerun_except",
                &self.rerun_except,
                &self.rerun_except_classes,
            )?,
            condition: self.condition,
        })
    }

    /// rerunfailures' `_should_hard_fail_on_error`, negated, on one `"Type: message"` string.
    ///
    /// Rules that do not [`validate`](Self::validate) gives `false`: an unusable filter
    /// makes a crash or timeout a hard failure rather than a guess.
    pub fn synthetic_failure_is_retryable(&self, text: &str) -> bool {
        self.compile().is_ok_and(|filter| filter.is_retryable(text))
    }
}

/// A [`RetryRules`]' filter, compiled.
#[derive(Clone, Debug)]
pub struct RetryFilter {
    only: ErrorMatcher,
    except: ErrorMatcher,
    condition: bool,
}

impl RetryFilter {
    /// See [`RetryRules::synthetic_failure_is_retryable`].
    pub fn is_retryable(&self, text: &str) -> bool {
        if !self.condition {
            return false;
        }
        match (self.only.is_empty(), self.except.is_empty()) {
            (true, true) => true,
            (false, true) => self.only.matches(text),
            (true, false) => !self.except.matches(text),
            (false, false) => self.only.matches(text) && !self.except.matches(text),
        }
    }
}

/// One of rerunfailures' two lists: patterns and (from a marker) exception classes.
#[derive(Clone, Debug)]
struct ErrorMatcher {
    patterns: Vec<Regex>,
    classes: Vec<String>,
}

impl ErrorMatcher {
    fn new(
        option: &'static str,
        patterns: &[String],
        classes: &[String],
    ) -> Result<Self, RetryPatternError> {
        let patterns = patterns
            .iter()
            .map(|pattern| {
                let translated =
                    translate(pattern).map_err(|reason| RetryPatternError::Unsupported {
                        option,
                        pattern: pattern.clone(),
                        reason,
                    })?;
                Regex::new(&translated).map_err(|source| RetryPatternError::Regex {
                    option,
                    pattern: pattern.clone(),
                    source,
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            patterns,
            classes: classes.to_vec(),
        })
    }

    fn is_empty(&self) -> bool {
        self.patterns.is_empty() && self.classes.is_empty()
    }

    /// `re.search` of any pattern, or `isinstance` of any class. The synthetic types have no
    /// Python class: only their own name and the roots `Exception`/`BaseException` match.
    fn matches(&self, text: &str) -> bool {
        let type_name = text.split_once(": ").map_or(text, |(name, _)| name);
        self.classes.iter().any(|class| {
            let class = class.rsplit('.').next().unwrap_or(class);
            class == type_name || class == "Exception" || class == "BaseException"
        }) || self.patterns.iter().any(|re| re.is_match(text))
    }
}

/// Rewrites a Python `re` pattern so the `regex` crate matches what `re.search` matches, or
/// says why it can't.
///
/// Rewritten: `\Z` (Rust `\z`); `\<` `\>` (literals in Python, word boundaries in Rust); a
/// `{` that Python reads as a literal, `{,n}` (Rust needs `{0,n}`); `(?#...)` comments; in
/// a class, `[`, `&`, `~` (nested classes and set operators in Rust) and a literal `-`,
/// `\b` (backspace). Refused: possessive quantifiers and verbose mode. Left to Rust's own
/// errors: look-around, backreferences, atomic groups, conditionals.
///
/// Not rewritten, as the synthetic texts are one line without a trailing newline: Python's
/// `$` also matches before a final `\n`.
fn translate(py: &str) -> Result<String, &'static str> {
    let chars: Vec<char> = py.chars().collect();
    let mut out = String::with_capacity(py.len() + 8);
    let mut i = 0;
    // The last token was a quantifier: a `+` now would make it possessive.
    let mut after_repeat = false;
    while i < chars.len() {
        let was_repeat = std::mem::take(&mut after_repeat);
        match chars[i] {
            '\\' => {
                match chars.get(i + 1) {
                    Some('Z') => out.push_str(r"\z"),
                    Some(&c @ ('<' | '>')) => out.push(c),
                    Some(&c) => {
                        out.push('\\');
                        out.push(c);
                    }
                    None => out.push('\\'),
                }
                i += 2;
            }
            '[' => i = translate_class(&chars, i, &mut out),
            '{' => match python_repeat(&chars, i) {
                Some((repeat, end)) => {
                    out.push_str(&repeat);
                    after_repeat = true;
                    i = end;
                }
                None => {
                    out.push_str(r"\{");
                    i += 1;
                }
            },
            c @ ('*' | '+' | '?') => {
                if was_repeat && c == '+' {
                    return Err("possessive quantifiers are not supported");
                }
                out.push(c);
                // `*?` is lazy; a quantifier can't follow it.
                after_repeat = !(was_repeat && c == '?');
                i += 1;
            }
            '(' if chars.get(i + 1) == Some(&'?') => {
                if chars.get(i + 2) == Some(&'#') {
                    // A comment group ends at the first `)`, escapes included.
                    match chars[i..].iter().position(|&c| c == ')') {
                        Some(len) => i += len + 1,
                        None => return Err("unterminated comment"),
                    }
                    continue;
                }
                let flags: String = chars[i + 2..]
                    .iter()
                    .take_while(|c| c.is_ascii_alphabetic() || **c == '-')
                    .collect();
                if flags.split('-').next().is_some_and(|on| on.contains('x')) {
                    return Err("verbose mode (?x) is not supported");
                }
                out.push_str("(?");
                i += 2;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    Ok(out)
}

/// Python's repeat `{m}`, `{m,}`, `{,n}`, `{m,n}` or `{,}` at `start`, in Rust's form, and
/// the index after it; `None` when Python reads the `{` as a literal.
fn python_repeat(chars: &[char], start: usize) -> Option<(String, usize)> {
    let digits = |from: usize| -> String {
        chars[from..]
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .collect()
    };
    let lo = digits(start + 1);
    let mut i = start + 1 + lo.len();
    let hi = if chars.get(i) == Some(&',') {
        let hi = digits(i + 1);
        i += 1 + hi.len();
        Some(hi)
    } else {
        None
    };
    if chars.get(i) != Some(&'}') || (lo.is_empty() && hi.is_none()) {
        return None;
    }
    let lo = if lo.is_empty() { "0".to_owned() } else { lo };
    let repeat = match hi {
        None => format!("{{{lo}}}"),
        Some(hi) => format!("{{{lo},{hi}}}"),
    };
    Some((repeat, i + 1))
}

/// A Python character class starting at `start` (`[`), written for Rust; returns the
/// index after its `]` (or the end, leaving an unclosed class for Rust to reject).
fn translate_class(chars: &[char], start: usize, out: &mut String) -> usize {
    out.push('[');
    let mut i = start + 1;
    if chars.get(i) == Some(&'^') {
        out.push('^');
        i += 1;
    }
    let mut first = true;
    while i < chars.len() {
        if chars[i] == ']' && !first {
            out.push(']');
            return i + 1;
        }
        first = false;
        let (item, next) = class_item(chars, i);
        i = next;
        // Python: `a-b` is a range unless the `-` is last (`[a-]`).
        if chars.get(i) == Some(&'-') && chars.get(i + 1).is_some_and(|&c| c != ']') {
            let (high, next) = class_item(chars, i + 1);
            out.push_str(&item);
            out.push('-');
            out.push_str(&high);
            i = next;
        } else {
            out.push_str(&item);
        }
    }
    i
}

/// One class member (a character or an escape) at `i`, in Rust's form.
fn class_item(chars: &[char], i: usize) -> (String, usize) {
    match chars[i] {
        '\\' => {
            let Some(&c) = chars.get(i + 1) else {
                return (r"\".to_owned(), i + 1);
            };
            let arg_len = match c {
                'x' => 2,
                'u' => 4,
                'U' => 8,
                '0'..='7' => chars[i + 2..]
                    .iter()
                    .take(2)
                    .take_while(|c| ('0'..='7').contains(*c))
                    .count(),
                _ => 0,
            };
            let end = (i + 2 + arg_len).min(chars.len());
            let item = match c {
                '<' | '>' => c.to_string(),
                'b' => r"\x08".to_owned(),
                _ => chars[i..end].iter().collect(),
            };
            (item, end)
        }
        c @ ('[' | '&' | '~' | '-') => (format!("\\{c}"), i + 1),
        c => (c.to_string(), i + 1),
    }
}

/// Retry bookkeeping for one run: pure, owned by whoever dispatches.
#[derive(Clone, Debug, Default)]
pub struct RetryBook {
    max_suite_reruns: Option<u32>,
    granted: u32,
    attempts: HashMap<TestId, u32>,
}

impl RetryBook {
    /// `max_suite_reruns`: rerunfailures' `--max-suite-reruns`, the retries granted over the
    /// whole run.
    pub fn new(max_suite_reruns: Option<u32>) -> Self {
        Self {
            max_suite_reruns,
            ..Self::default()
        }
    }

    /// Failed attempts of `id` so far that were retried.
    pub fn attempts(&self, id: &TestId) -> u32 {
        self.attempts.get(id).copied().unwrap_or(0)
    }

    /// A failed attempt of `id`: retry it? True iff `eligible`, `id` has had fewer than
    /// `reruns` retries, and the suite-wide cap allows another; a granted retry is recorded.
    pub fn grant(&mut self, id: &TestId, eligible: bool, reruns: u32) -> bool {
        // Not `is_none_or`: the workspace's rust-version is 1.80.
        let under_cap = match self.max_suite_reruns {
            Some(max) => self.granted < max,
            None => true,
        };
        if !eligible || self.attempts(id) >= reruns || !under_cap {
            return false;
        }
        *self.attempts.entry(id.clone()).or_insert(0) += 1;
        self.granted += 1;
        true
    }

    /// Retries granted over the run, all tests together.
    pub fn retries_granted(&self) -> u32 {
        self.granted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CRASH: &str =
        "WorkerCrashed: worker gw1 was killed by signal 11 (SIGSEGV) while running t.py::x";
    const TIMEOUT: &str =
        "Timeout: t.py::x ran longer than --timeout 2s; the worker was killed (SIGKILL)";
    const ODD: &str = "WorkerCrashed: worker gw0 was killed by signal 9 (SIGKILL) while running \
                       t.py::test_p[a-b&&c~~d{1}<e>]";

    fn spec(only: &[&str], except: &[&str]) -> RetryRules {
        RetryRules {
            reruns: 2,
            only_rerun: only.iter().map(|s| s.to_string()).collect(),
            rerun_except: except.iter().map(|s| s.to_string()).collect(),
            condition: true,
            ..RetryRules::default()
        }
    }

    #[test]
    fn filter_semantics_like_rerunfailures() {
        // (only_rerun, rerun_except, text, retryable)
        let cases: &[(&[&str], &[&str], &str, bool)] = &[
            (&[], &[], CRASH, true),
            (&[], &[], TIMEOUT, true),
            // rerunfailures' README examples.
            (&["AssertionError"], &[], CRASH, false),
            (&["AssertionError", "ValueError"], &[], CRASH, false),
            (&["ValueError: .*"], &[], CRASH, false),
            (&["^Timeout"], &[], TIMEOUT, true),
            (&["^Timeout"], &[], CRASH, false),
            (&["AssertionError", "^Timeout"], &[], TIMEOUT, true),
            // Case-sensitive, as `re.search`: the text says "WorkerCrashed", not "crash".
            (&["Worker.*crash"], &[], CRASH, false),
            (&["Worker.*Crash"], &[], CRASH, true),
            (&["(?i)worker.*crash"], &[], CRASH, true),
            (&["SIGSEGV"], &[], CRASH, true),
            (&[], &["AssertionError"], CRASH, true),
            (&[], &["^Timeout"], TIMEOUT, false),
            (&[], &["^Timeout"], CRASH, true),
            (&[], &["SIGKILL", "SIGSEGV"], CRASH, false),
            // Both lists: matches only_rerun and not rerun_except.
            (&["Worker"], &["SIGSEGV"], CRASH, false),
            (&["Worker"], &["SIGKILL"], CRASH, true),
            (&["Worker"], &["SIGKILL"], TIMEOUT, false),
            (&["^Timeout"], &["--timeout 2s"], TIMEOUT, false),
        ];
        for (only, except, text, want) in cases {
            let spec = spec(only, except);
            spec.validate().unwrap();
            assert_eq!(
                spec.synthetic_failure_is_retryable(text),
                *want,
                "only={only:?} except={except:?} text={text:?}"
            );
        }
    }

    #[test]
    fn condition_false_never_retries() {
        for (only, except) in [(&[][..], &[][..]), (&["Worker"][..], &[][..])] {
            let spec = RetryRules {
                condition: false,
                ..spec(only, except)
            };
            assert!(!spec.synthetic_failure_is_retryable(CRASH));
        }
    }

    #[test]
    fn marker_classes() {
        let classes = |only: &[&str], except: &[&str]| RetryRules {
            only_rerun_classes: only.iter().map(|s| s.to_string()).collect(),
            rerun_except_classes: except.iter().map(|s| s.to_string()).collect(),
            ..spec(&[], &[])
        };
        let cases: &[(&[&str], &[&str], &str, bool)] = &[
            (&["ConnectionError"], &[], CRASH, false),
            (&["WorkerCrashed"], &[], CRASH, true),
            (&["Exception"], &[], TIMEOUT, true),
            (&["builtins.BaseException"], &[], CRASH, true),
            // Not a subclass of Python's TimeoutError.
            (&["TimeoutError"], &[], TIMEOUT, false),
            (&[], &["Timeout"], TIMEOUT, false),
            (&[], &["Timeout"], CRASH, true),
            (&["Exception"], &["WorkerCrashed"], CRASH, false),
        ];
        for (only, except, text, want) in cases {
            assert_eq!(
                classes(only, except).synthetic_failure_is_retryable(text),
                *want,
                "only={only:?} except={except:?} text={text:?}"
            );
        }
        // Classes and patterns in one list: either matches.
        let mixed = RetryRules {
            only_rerun_classes: vec!["ConnectionError".into()],
            ..spec(&["^Timeout"], &[])
        };
        assert!(mixed.synthetic_failure_is_retryable(TIMEOUT));
        assert!(!mixed.synthetic_failure_is_retryable(CRASH));
    }

    /// Expected values from CPython 3.11 `bool(re.search(pattern, text))`.
    #[test]
    fn python_re_search_parity() {
        let cases: &[(&str, &str, bool)] = &[
            (r"\<gw1\>", CRASH, false),
            (r"<e>", ODD, true),
            (r"\<e\>", ODD, true),
            (r"t\.py::x\Z", CRASH, true),
            (r"t\.py::x\Z", TIMEOUT, false),
            (r"t\.py::x$", CRASH, true),
            (r"d{1", ODD, true),
            (r"d{1}}", ODD, false),
            (r"d\{1\}", ODD, true),
            (r"~~d{1}<", ODD, false),
            (r"[[:alpha:]]", ODD, false),
            (r"p\[[a-b]-b", ODD, true),
            (r"~~d{,1}\{", ODD, true),
            (r"gw{,}0", ODD, true),
            (r"[{]1}", ODD, true),
            (r"x{}", ODD, false),
            (r"\[a-b&&c", ODD, true),
            (r"[&&]{2}c", ODD, true),
            (r"[~~]{2}", ODD, true),
            (r"[[]a", ODD, true),
            (r"[a-]b", ODD, true),
            (r"[+--]b&", ODD, true),
            (r"[\<\>]", ODD, true),
            (r"[\<\>]", CRASH, false),
            (r"[]x]$", CRASH, true),
            (r"[^]]$", ODD, false),
            (r"[^]]$", CRASH, true),
            (r"(?#a comment)^Timeout", TIMEOUT, true),
            (r"signal \d+ \(SIG(KILL|SEGV)\)", CRASH, true),
            (r"(?P<sig>SIG\w+)\)", CRASH, true),
            (r"\bgw\d\b", CRASH, true),
            (r"\x54imeout", TIMEOUT, true),
            (r"[\x54]imeout", TIMEOUT, true),
            (r"[\u0054]imeout", TIMEOUT, true),
            (r"(?s)Worker.*x", CRASH, true),
            (r"^(?:Timeout|WorkerCrashed):", CRASH, true),
            (r"\d+s;", TIMEOUT, true),
        ];
        for (pattern, text, want) in cases {
            let spec = spec(&[pattern], &[]);
            spec.validate()
                .unwrap_or_else(|e| panic!("{pattern:?}: {e}"));
            assert_eq!(
                spec.synthetic_failure_is_retryable(text),
                *want,
                "{pattern:?} on {text:?}"
            );
        }
    }

    #[test]
    fn unusable_patterns_are_errors() {
        let cases = [
            r"(?<=signal )11",
            r"(?=Worker)",
            r"(?!Timeout)",
            r"(SIG)\1",
            r"(?P<s>SIG)(?P=s)",
            r"SIG\w++",
            r"Time{1,2}+out",
            r"(?x) Timeout  # verbose",
            r"(?>Timeout)",
            r"(S)?(?(1)IG|x)",
        ];
        for pattern in cases {
            for spec in [spec(&[pattern], &[]), spec(&[], &[pattern])] {
                let err = spec.validate().expect_err(pattern);
                assert!(
                    err.to_string().contains("can't be used"),
                    "{pattern:?}: {err}"
                );
                // An unusable filter is a hard failure, not a panic.
                assert!(!spec.synthetic_failure_is_retryable(CRASH));
            }
        }
        let err = spec(&["ok", r"(?<=x)y"], &[]).validate().unwrap_err();
        assert!(
            err.to_string()
                .starts_with(r#"only_rerun pattern "(?<=x)y""#),
            "{err}"
        );
    }

    #[test]
    fn book_counts_per_test_and_reruns() {
        let (a, b) = (TestId::new("t.py::a"), TestId::new("t.py::b"));
        let mut book = RetryBook::new(None);
        assert!(book.grant(&a, true, 2));
        assert!(book.grant(&a, true, 2));
        assert!(!book.grant(&a, true, 2), "reruns exhausted");
        assert_eq!(book.attempts(&a), 2);
        assert!(!book.grant(&b, false, 2), "not eligible");
        assert!(!book.grant(&b, true, 0), "no reruns");
        assert_eq!(book.attempts(&b), 0);
        assert_eq!(book.retries_granted(), 2);
    }

    #[test]
    fn book_suite_cap() {
        let ids: Vec<TestId> = (0..4).map(|i| TestId::new(format!("t.py::{i}"))).collect();
        let mut book = RetryBook::new(Some(3));
        let granted: Vec<bool> = ids.iter().map(|id| book.grant(id, true, 5)).collect();
        assert_eq!(granted, [true, true, true, false]);
        assert!(!book.grant(&ids[0], true, 5), "cap reached");
        assert_eq!(book.retries_granted(), 3);
        assert_eq!(book.attempts(&ids[0]), 1);
        assert_eq!(book.attempts(&ids[3]), 0);

        let mut none = RetryBook::new(Some(0));
        assert!(!none.grant(&ids[0], true, 5));
    }
}
