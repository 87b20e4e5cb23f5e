//! Text helpers ported from pytest's terminal reporter: display widths, durations, trimming.

use std::time::Duration;

/// pytest's `wcwidth` for one character: -1 for control characters, 0 for combining
/// marks and zero-width formatting, 2 for East Asian wide/full-width, else 1.
///
/// pytest asks `unicodedata`; this covers the same ranges closely enough for test ids and
/// messages without a Unicode table.
fn char_width(c: char) -> isize {
    let o = c as u32;
    if (0x20..0x7f).contains(&o) {
        return 1;
    }
    if o == 0
        || (0x200b..=0x200f).contains(&o)
        || (0x2028..=0x202e).contains(&o)
        || (0x2060..=0x2063).contains(&o)
    {
        return 0;
    }
    if o < 0x20 || (0x7f..0xa0).contains(&o) {
        return -1;
    }
    const COMBINING: [(u32, u32); 6] = [
        (0x0300, 0x036f),
        (0x0483, 0x0489),
        (0x1ab0, 0x1aff),
        (0x1dc0, 0x1dff),
        (0x20d0, 0x20ff),
        (0xfe20, 0xfe2f),
    ];
    if COMBINING.iter().any(|&(lo, hi)| (lo..=hi).contains(&o)) {
        return 0;
    }
    const WIDE: [(u32, u32); 14] = [
        (0x1100, 0x115f),
        (0x2e80, 0x303e),
        (0x3041, 0x33ff),
        (0x3400, 0x4dbf),
        (0x4e00, 0x9fff),
        (0xa000, 0xa4cf),
        (0xac00, 0xd7a3),
        (0xf900, 0xfaff),
        (0xfe30, 0xfe4f),
        (0xff00, 0xff60),
        (0xffe0, 0xffe6),
        (0x1f300, 0x1f64f),
        (0x1f900, 0x1f9ff),
        (0x20000, 0x3fffd),
    ];
    if WIDE.iter().any(|&(lo, hi)| (lo..=hi).contains(&o)) {
        return 2;
    }
    1
}

/// pytest's `wcswidth`: the display width of `s`, or -1 if it holds a control character
/// (an ANSI escape included, which pytest relies on in places).
pub(crate) fn wcswidth(s: &str) -> isize {
    let mut width = 0;
    for c in s.chars() {
        let w = char_width(c);
        if w < 0 {
            return -1;
        }
        width += w;
    }
    width
}

/// pytest's `format_session_duration`: `0.52s`, or `65.00s (0:01:05)` from a minute on.
pub(crate) fn session_duration(wall: Duration) -> String {
    let seconds = wall.as_secs_f64();
    if seconds < 60.0 {
        format!("{seconds:.2}s")
    } else {
        format!("{seconds:.2}s ({})", timedelta(wall.as_secs()))
    }
}

/// Python's `str(datetime.timedelta(seconds=n))` for whole seconds.
fn timedelta(total: u64) -> String {
    let (days, rest) = (total / 86_400, total % 86_400);
    let hms = format!("{}:{:02}:{:02}", rest / 3600, rest % 3600 / 60, rest % 60);
    match days {
        0 => hms,
        1 => format!("1 day, {hms}"),
        n => format!("{n} days, {hms}"),
    }
}

/// A duration for the live status line: `0:07`, `12:34`, `1:02:03`.
pub(crate) fn clock(seconds: f64) -> String {
    let total = seconds.max(0.0).round() as u64;
    let (h, m, s) = (total / 3600, total % 3600 / 60, total % 60);
    if h > 0 {
        format!("{h}:{m:02}:{s:02}")
    } else {
        format!("{m}:{s:02}")
    }
}

/// pytest's `_format_trimmed`: `format` (holding one `{}`) filled with the first line of
/// `msg`, ellipsized to fit `available` columns; `None` when not even the ellipsis fits.
pub(crate) fn format_trimmed(format: &str, msg: &str, available: isize) -> Option<String> {
    let msg = msg.split('\n').next().unwrap_or("");
    let ellipsis = "...";
    let format_width = wcswidth(&format.replace("{}", ""));
    if format_width + ellipsis.len() as isize > available {
        return None;
    }
    let mut msg = msg.to_owned();
    if format_width + wcswidth(&msg) > available {
        let available = available - ellipsis.len() as isize;
        msg = msg.chars().take(available.max(0) as usize).collect();
        while format_width + wcswidth(&msg) > available {
            msg.pop();
        }
        msg.push_str(ellipsis);
    }
    Some(format.replace("{}", &msg))
}

/// pytest's `head_line` for a test: the location's domain, e.g. `TestC.test_m[1]` for
/// `t.py::TestC::test_m[1]`. Used when the worker did not send one.
pub(crate) fn head_line_from_nodeid(nodeid: &str) -> String {
    let Some((_, rest)) = nodeid.split_once("::") else {
        return nodeid.to_owned();
    };
    match rest.find('[') {
        Some(i) => format!("{}{}", rest[..i].replace("::", "."), &rest[i..]),
        None => rest.replace("::", "."),
    }
}

/// Splits a skip message of the form `path:line: reason` (how a collection skip arrives).
pub(crate) fn split_skip_location(message: &str) -> Option<(&str, u32, &str)> {
    let mut search = 0;
    while let Some(i) = message[search..].find(':') {
        let colon = search + i;
        let after = &message[colon + 1..];
        let digits = after.chars().take_while(char::is_ascii_digit).count();
        if digits > 0 && after[digits..].starts_with(": ") {
            let line = after[..digits].parse().ok()?;
            return Some((&message[..colon], line, &after[digits + 2..]));
        }
        search = colon + 1;
    }
    None
}

/// `1 error` / `2 errors`: the noun pluralized the way pytest's `pluralize` does.
pub(crate) fn plural(count: usize, noun: &str) -> String {
    if count == 1 {
        format!("{count} {noun}")
    } else {
        format!("{count} {noun}s")
    }
}

/// Python's `format(x, "g")`: 6 significant digits, no trailing zeros, exponent form
/// outside 1e-4..1e6.
pub(crate) fn python_g(x: f64) -> String {
    if x == 0.0 || !x.is_finite() {
        return format!("{x}");
    }
    let exp = x.abs().log10().floor() as i32;
    if !(-4..6).contains(&exp) {
        let text = format!("{:.5e}", x);
        let (mantissa, exponent) = text.split_once('e').expect("exponent form");
        let mantissa = mantissa.trim_end_matches('0').trim_end_matches('.');
        let exponent: i32 = exponent.parse().expect("integer exponent");
        let sign = if exponent < 0 { '-' } else { '+' };
        return format!("{mantissa}e{sign}{:02}", exponent.abs());
    }
    let decimals = (5 - exp).max(0) as usize;
    let text = format!("{x:.decimals$}");
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_g_like_python() {
        for (x, want) in [
            (0.005, "0.005"),
            (0.1, "0.1"),
            (1.0, "1"),
            (2.5, "2.5"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1234567.0, "1.23457e+06"),
            (0.0, "0"),
        ] {
            assert_eq!(python_g(x), want, "{x}");
        }
    }

    #[test]
    fn durations_like_pytest() {
        let cases = [
            (0.5234, "0.52s"),
            (0.0, "0.00s"),
            (59.994, "59.99s"),
            (65.0, "65.00s (0:01:05)"),
            (3725.5, "3725.50s (1:02:05)"),
            (90_000.0, "90000.00s (1 day, 1:00:00)"),
        ];
        for (secs, want) in cases {
            assert_eq!(session_duration(Duration::from_secs_f64(secs)), want);
        }
    }

    #[test]
    fn trimmed_like_pytest() {
        // Values checked against `_pytest.terminal._format_trimmed`.
        assert_eq!(
            format_trimmed(" - {}", "short", 20).as_deref(),
            Some(" - short")
        );
        assert_eq!(
            format_trimmed(" - {}", "a long message here", 12).as_deref(),
            Some(" - a long...")
        );
        assert_eq!(format_trimmed(" - {}", "x", 5), None);
        assert_eq!(
            format_trimmed(" - {}", "first\nsecond", 80).as_deref(),
            Some(" - first")
        );
        assert_eq!(
            format_trimmed(" ({})", "日本語の理由", 10).as_deref(),
            Some(" (日本...)")
        );
    }

    #[test]
    fn widths() {
        assert_eq!(wcswidth("abc"), 3);
        assert_eq!(wcswidth("日本"), 4);
        assert_eq!(wcswidth("e\u{301}"), 1);
        assert_eq!(wcswidth("\x1b[31mF"), -1);
        assert_eq!(wcswidth("a\tb"), -1);
    }

    #[test]
    fn head_lines() {
        assert_eq!(head_line_from_nodeid("t.py::test_x"), "test_x");
        assert_eq!(head_line_from_nodeid("t.py::TestC::test_m"), "TestC.test_m");
        assert_eq!(
            head_line_from_nodeid("t.py::TestC::test_m[a::b.c]"),
            "TestC.test_m[a::b.c]"
        );
        assert_eq!(head_line_from_nodeid("t.py"), "t.py");
    }

    #[test]
    fn skip_locations() {
        assert_eq!(
            split_skip_location("test_m.py:2: whole module"),
            Some(("test_m.py", 2, "whole module"))
        );
        assert_eq!(
            split_skip_location("C:/x/t.py:12: reason: with colon"),
            Some(("C:/x/t.py", 12, "reason: with colon"))
        );
        assert_eq!(split_skip_location("no location"), None);
    }

    #[test]
    fn clocks() {
        assert_eq!(clock(7.4), "0:07");
        assert_eq!(clock(754.0), "12:34");
        assert_eq!(clock(3723.0), "1:02:03");
    }
}
