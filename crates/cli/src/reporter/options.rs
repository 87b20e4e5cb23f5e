//! `ReporterOptions`: where the report goes and how (colour, live status line, width).

use std::io::{IsTerminal, Write};

/// pytest's switches for colour (`_pytest/_io/terminalwriter.py: should_do_markup`).
const PY_COLORS: &str = "PY_COLORS";
const NO_COLOR: &str = "NO_COLOR";
const FORCE_COLOR: &str = "FORCE_COLOR";
const TERM: &str = "TERM";
/// Read by Python's `shutil.get_terminal_size`, which pytest uses for the width.
const COLUMNS: &str = "COLUMNS";
/// pytest's `running_on_ci()`: either set and non-empty means CI.
pub(crate) const CI_VARS: [&str; 2] = ["CI", "BUILD_NUMBER"];

const DEFAULT_WIDTH: usize = 80;

pub struct ReporterOptions {
    /// ANSI colours, as pytest's markup.
    pub color: bool,
    /// A redrawn status line at the bottom (a terminal, not CI).
    pub live: bool,
    /// Columns, for separators, progress wrapping and short-summary trimming.
    pub width: usize,
    pub out: Box<dyn Write + Send>,
}

impl ReporterOptions {
    /// Options for stdout, decided the way pytest decides them from the environment.
    pub fn detect() -> Self {
        let stdout = std::io::stdout();
        let is_tty = stdout.is_terminal();
        let columns = || {
            is_tty
                .then(|| console::Term::stdout().size_checked())
                .flatten()
                .map(|(_rows, cols)| usize::from(cols))
        };
        Self::from_env(
            |name| std::env::var(name).ok(),
            columns,
            is_tty,
            Box::new(stdout),
        )
    }

    /// `terminal_columns`: the terminal's width when stdout is one (asked only when
    /// `COLUMNS` does not say).
    pub(crate) fn from_env(
        env: impl Fn(&str) -> Option<String>,
        terminal_columns: impl FnOnce() -> Option<usize>,
        is_tty: bool,
        out: Box<dyn Write + Send>,
    ) -> Self {
        let set = |name: &str| env(name).is_some_and(|v| !v.is_empty());
        let dumb = env(TERM).as_deref() == Some("dumb");
        let color = match env(PY_COLORS).as_deref() {
            Some("1") => true,
            Some("0") => false,
            _ if set(NO_COLOR) => false,
            _ if set(FORCE_COLOR) => true,
            _ => is_tty && !dumb,
        };
        let on_ci = CI_VARS.iter().any(|name| set(name));
        let live = is_tty && !dumb && !on_ci;
        // Python's get_terminal_size takes COLUMNS when positive, else asks the terminal
        // (stdout), else 80; pytest then replaces anything under 40 with 80.
        let width = env(COLUMNS)
            .and_then(|v| v.trim().parse::<usize>().ok())
            .filter(|&w| w > 0)
            .or_else(terminal_columns)
            .filter(|&w| w >= 40)
            .unwrap_or(DEFAULT_WIDTH);
        Self {
            color,
            live,
            width,
            out,
        }
    }
}

impl std::fmt::Debug for ReporterOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReporterOptions")
            .field("color", &self.color)
            .field("live", &self.live)
            .field("width", &self.width)
            .finish_non_exhaustive()
    }
}

/// pytest's `running_on_ci()`, read once when a reporter is made.
pub(crate) fn running_on_ci() -> bool {
    CI_VARS
        .iter()
        .any(|name| std::env::var(name).is_ok_and(|v| !v.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn detect(vars: &[(&str, &str)], tty: bool) -> ReporterOptions {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        with_terminal(&vars, tty, None)
    }

    fn with_terminal(vars: &[(String, String)], tty: bool, cols: Option<usize>) -> ReporterOptions {
        ReporterOptions::from_env(
            |name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()),
            || cols,
            tty,
            Box::new(std::io::sink()),
        )
    }

    #[test]
    fn width_from_columns_else_the_terminal() {
        type Vars = &'static [(&'static str, &'static str)];
        let cases: &[(Vars, Option<usize>, usize)] = &[
            (&[], Some(132), 132),
            (&[("COLUMNS", "120")], Some(132), 120),
            (&[("COLUMNS", "0")], Some(132), 132),
            (&[], Some(30), 80),
            (&[], None, 80),
        ];
        for (vars, cols, want) in cases {
            let vars: Vec<(String, String)> = vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            assert_eq!(
                with_terminal(&vars, true, *cols).width,
                *want,
                "{vars:?} {cols:?}"
            );
        }
    }

    #[test]
    fn environment_decides_like_pytest() {
        type Vars = &'static [(&'static str, &'static str)];
        let cases: &[(Vars, bool, bool, bool, usize)] = &[
            // vars, tty => color, live, width
            (&[], true, true, true, 80),
            (&[], false, false, false, 80),
            (&[("CI", "true")], true, true, false, 80),
            (&[("CI", "")], true, true, true, 80),
            (&[("BUILD_NUMBER", "7")], true, true, false, 80),
            (&[("NO_COLOR", "1")], true, false, true, 80),
            (&[("NO_COLOR", "")], true, true, true, 80),
            (&[("FORCE_COLOR", "1")], false, true, false, 80),
            (
                &[("NO_COLOR", "1"), ("FORCE_COLOR", "1")],
                false,
                false,
                false,
                80,
            ),
            (
                &[("PY_COLORS", "1"), ("NO_COLOR", "1")],
                false,
                true,
                false,
                80,
            ),
            (
                &[("PY_COLORS", "0"), ("FORCE_COLOR", "1")],
                true,
                false,
                true,
                80,
            ),
            (&[("TERM", "dumb")], true, false, false, 80),
            (&[("COLUMNS", "120")], false, false, false, 120),
            (&[("COLUMNS", "30")], false, false, false, 80),
            (&[("COLUMNS", "wide")], false, false, false, 80),
        ];
        for (vars, tty, color, live, width) in cases {
            let opts = detect(vars, *tty);
            assert_eq!(
                (opts.color, opts.live, opts.width),
                (*color, *live, *width),
                "{vars:?} tty={tty}"
            );
        }
    }
}
