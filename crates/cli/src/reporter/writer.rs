//! The output side: a port of pytest's `TerminalWriter` (markup, `sep`, width of the current
//! line) that, in live mode, keeps an indicatif status line under everything it writes.

use std::io::Write;

use indicatif::{ProgressBar, ProgressStyle};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Color {
    Red,
    Green,
    Yellow,
    Cyan,
}

impl Color {
    fn code(self) -> u8 {
        match self {
            Self::Red => 31,
            Self::Green => 32,
            Self::Yellow => 33,
            Self::Cyan => 36,
        }
    }
}

/// pytest's markup keywords as this reporter uses them: at most one colour, then bold (the
/// escape order pytest emits for `red=True, bold=True`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Style {
    pub color: Option<Color>,
    pub bold: bool,
}

impl Style {
    pub const PLAIN: Self = Self {
        color: None,
        bold: false,
    };
    pub const BOLD: Self = Self {
        color: None,
        bold: true,
    };

    pub fn fg(color: Color) -> Self {
        Self {
            color: Some(color),
            bold: false,
        }
    }

    pub fn bold(self) -> Self {
        Self { bold: true, ..self }
    }

    pub fn bold_if(self, on: bool) -> Self {
        Self { bold: on, ..self }
    }
}

/// Live mode: the partial last line and the status line live in an indicatif bar; complete
/// lines are printed above it.
pub(crate) struct Live {
    pub bar: ProgressBar,
    /// The current unfinished line, markup included.
    partial: String,
    status_only: ProgressStyle,
    with_partial: ProgressStyle,
    showing_partial: bool,
}

impl Live {
    pub fn new(bar: ProgressBar, status_only: ProgressStyle, with_partial: ProgressStyle) -> Self {
        bar.set_style(status_only.clone());
        Self {
            bar,
            partial: String::new(),
            status_only,
            with_partial,
            showing_partial: false,
        }
    }
}

pub(crate) struct Writer {
    out: Box<dyn Write + Send>,
    color: bool,
    pub width: usize,
    /// Plain text written since the last newline (pytest's `_current_line`).
    current_line: String,
    /// pytest's `currentfspath` after an xdist verbose line: the line is still open and the
    /// next `write_line`/`write_sep` ends it first (which leaves a blank line at the end).
    pub open_line: bool,
    live: Option<Live>,
    last_flush: std::time::Instant,
}

/// Progress output reaches the terminal or log at most this often: flushing every letter
/// costs a write system call per test.
const FLUSH_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

impl Writer {
    pub fn new(out: Box<dyn Write + Send>, color: bool, width: usize) -> Self {
        Self {
            last_flush: std::time::Instant::now(),
            out: Box::new(std::io::BufWriter::new(out)),
            color,
            width,
            current_line: String::new(),
            open_line: false,
            live: None,
        }
    }

    pub fn has_markup(&self) -> bool {
        self.color
    }

    pub fn start_live(&mut self, live: Live) {
        self.live = Some(live);
    }

    pub fn live_bar(&self) -> Option<&ProgressBar> {
        self.live.as_ref().map(|l| &l.bar)
    }

    /// Removes the status line and prints the partial line it carried; output is plain from
    /// here on.
    pub fn end_live(&mut self) {
        if let Some(live) = self.live.take() {
            live.bar.finish_and_clear();
            let _ = self.out.write_all(live.partial.as_bytes());
            let _ = self.out.flush();
        }
    }

    /// pytest's `TerminalWriter.markup`.
    pub fn markup(&self, text: &str, style: Style) -> String {
        if !self.color || style == Style::PLAIN {
            return text.to_owned();
        }
        let mut s = String::new();
        if let Some(color) = style.color {
            s.push_str(&format!("\x1b[{}m", color.code()));
        }
        if style.bold {
            s.push_str("\x1b[1m");
        }
        s.push_str(text);
        s.push_str("\x1b[0m");
        s
    }

    /// Display width of the current line (-1 if it holds control characters, as in pytest).
    pub fn current_width(&self) -> isize {
        super::text::wcswidth(&self.current_line)
    }

    pub fn write(&mut self, text: &str, style: Style) {
        if text.is_empty() {
            return;
        }
        match text.rfind('\n') {
            Some(i) => self.current_line = text[i + 1..].to_owned(),
            None => self.current_line.push_str(text),
        }
        let marked = self.markup(text, style);
        self.write_raw(&marked);
    }

    /// pytest's `TerminalWriter.line`.
    pub fn line(&mut self, text: &str, style: Style) {
        self.write(text, style);
        self.write("\n", Style::PLAIN);
    }

    pub fn ensure_newline(&mut self) {
        if self.open_line {
            self.line("", Style::PLAIN);
            self.open_line = false;
        }
    }

    /// pytest's `TerminalReporter.write_line`.
    pub fn write_line(&mut self, text: &str, style: Style) {
        self.ensure_newline();
        self.line(text, style);
    }

    /// Ends the current line if anything is on it (before a note, so it does not run on
    /// after progress letters).
    pub fn close_line(&mut self) {
        if !self.current_line.is_empty() {
            self.line("", Style::PLAIN);
        }
        self.open_line = false;
    }

    /// pytest's `TerminalReporter.write_sep`: `===== title =====` as wide as allowed.
    pub fn write_sep(&mut self, sep: char, title: Option<&str>, style: Style) {
        self.write_sep_width(sep, title, self.width, style);
    }

    /// `write_sep` with an explicit full width (the summary line widens it by the length of
    /// the escapes inside its title).
    pub fn write_sep_width(
        &mut self,
        sep: char,
        title: Option<&str>,
        fullwidth: usize,
        style: Style,
    ) {
        self.ensure_newline();
        let line = sep_line(sep, title, fullwidth);
        self.line(&line, style);
    }

    /// Writes a block of text already rendered by pytest (a longrepr): as is, ending with
    /// exactly one newline.
    pub fn block(&mut self, text: &str) {
        let text = text.strip_suffix('\n').unwrap_or(text);
        self.line(text, Style::PLAIN);
    }

    /// Flushes progress, at most every `FLUSH_EVERY`.
    pub fn flush(&mut self) {
        if self.live.is_none() && self.last_flush.elapsed() >= FLUSH_EVERY {
            self.flush_now();
        }
    }

    pub fn flush_now(&mut self) {
        let _ = self.out.flush();
        self.last_flush = std::time::Instant::now();
    }

    fn write_raw(&mut self, text: &str) {
        let Some(live) = self.live.as_mut() else {
            // A closed pipe must not take the run down; pytest would die here, shardex keeps
            // going so the JUnit report and the exit code still come out.
            let _ = self.out.write_all(text.as_bytes());
            return;
        };
        live.partial.push_str(text);
        if let Some(i) = live.partial.rfind('\n') {
            let done: String = live.partial.drain(..=i).collect();
            let out = &mut self.out;
            live.bar.suspend(|| {
                let _ = out.write_all(done.as_bytes());
                let _ = out.flush();
            });
        }
        let show = !live.partial.is_empty();
        if show != live.showing_partial {
            live.showing_partial = show;
            let style = if show {
                live.with_partial.clone()
            } else {
                live.status_only.clone()
            };
            live.bar.set_style(style);
        }
        live.bar.set_prefix(live.partial.clone());
    }
}

/// The text of a separator line, as pytest's `TerminalWriter.sep` builds it (non-Windows).
pub(crate) fn sep_line(sep: char, title: Option<&str>, fullwidth: usize) -> String {
    let mut line = match title {
        Some(title) => {
            let n = (fullwidth as isize - title.chars().count() as isize - 2) / 2;
            let fill = sep.to_string().repeat(n.max(1) as usize);
            format!("{fill} {title} {fill}")
        }
        None => sep.to_string().repeat(fullwidth),
    };
    // Room for one more separator char on the right (when the title length is odd).
    if sep != ' ' && line.chars().count() < fullwidth {
        line.push(sep);
    }
    line
}

impl Drop for Writer {
    /// A run that ended without `finish` (an error) still leaves the terminal tidy: the
    /// status line gone and the progress line ended.
    fn drop(&mut self) {
        self.end_live();
        if !self.current_line.is_empty() {
            let _ = self.out.write_all(b"\n");
        }
        let _ = self.out.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separators_like_pytest() {
        // From `pytest` output at 80 columns.
        assert_eq!(
            sep_line('=', Some("test session starts"), 80),
            "============================= test session starts =============================="
        );
        assert_eq!(
            sep_line('_', Some("test_fail_print"), 80),
            "_______________________________ test_fail_print ________________________________"
        );
        assert_eq!(
            sep_line('=', Some("ERRORS"), 80),
            "==================================== ERRORS ===================================="
        );
        assert_eq!(sep_line('-', None, 10), "----------");
        assert_eq!(
            sep_line('!', Some(&"x".repeat(100)), 80),
            format!("! {} !", "x".repeat(100))
        );
    }
}
