//! `CliError`: everything that ends a shardex invocation without a run summary, with its exit
//! code and its one-line rendering (`shardex: error: …`).

use std::path::PathBuf;

use shardex_agent::python::PythonError;
use shardex_agent::AgentError;
use shardex_core::TimingError;
use thiserror::Error;

use crate::exit_code;

/// A bad command line, environment variable or config value: pytest's "usage error".
/// The message says where the bad value came from (`argument --timeout`, `SHARDEX_TIMEOUT`,
/// `pyproject.toml: [tool.shardex] timeout`).
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[error("{0}")]
pub struct UsageError(pub String);

impl UsageError {
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }

    /// `{place}: invalid value '{raw}' ({expected})`.
    pub fn invalid_value(place: &str, raw: &str, expected: &str) -> Self {
        Self(format!("{place}: invalid value '{raw}' ({expected})"))
    }
}

#[derive(Debug, Error)]
pub enum CliError {
    #[error(transparent)]
    Usage(#[from] UsageError),
    #[error(transparent)]
    Python(#[from] PythonError),
    /// A `--timings` source is missing or malformed.
    #[error(transparent)]
    Timing(#[from] TimingError),
    /// A report path (`--junitxml`, `--timeline`) cannot be written.
    #[error("cannot write {flag} {}", path.display())]
    ReportPath {
        flag: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Agent(#[from] AgentError),
    #[error("cannot start the async runtime")]
    Runtime(#[source] std::io::Error),
    /// A bug in shardex (a task panicked...).
    #[error("internal error: {0}")]
    Internal(String),
}

impl CliError {
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Usage(_) | Self::Python(_) | Self::Timing(_) | Self::ReportPath { .. } => {
                exit_code::USAGE_ERROR
            }
            Self::Agent(err) => agent_exit_code(err),
            Self::Runtime(_) | Self::Internal(_) => exit_code::INTERNAL_ERROR,
        }
    }

    /// What main prints on stderr: one `shardex: error: …` line (the source chain joined with
    /// ": "), then, only for errors that carry a multi-line text (a pytest traceback, a
    /// collection diff), that text indented.
    pub fn render(&self) -> String {
        if let Self::Agent(AgentError::EarlyExit {
            status,
            stderr_tail,
            ..
        }) = self
        {
            return render_early_exit(status, stderr_tail);
        }
        let message = chain_message(self);
        let mut lines = message.lines();
        let mut out = format!("shardex: error: {}", lines.next().unwrap_or_default());
        for line in lines {
            out.push_str("\n  ");
            out.push_str(line);
        }
        out
    }
}

/// Joins an error and its sources with ": ", skipping a source whose text its parent already
/// ends with (many errors print their source inline as well as returning it).
fn chain_message(err: &(dyn std::error::Error + 'static)) -> String {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !text.is_empty() && !message.ends_with(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

fn agent_exit_code(err: &AgentError) -> i32 {
    match err {
        AgentError::Timing(_) | AgentError::Report { .. } => exit_code::USAGE_ERROR,
        // pytest's own code when it refused to start (4 for a bad argument or a conftest that
        // does not import), so `shardex run` exits as `pytest` would have.
        AgentError::EarlyExit { code, .. } => match code {
            Some(code @ 1..=5) => *code,
            _ => exit_code::INTERNAL_ERROR,
        },
        AgentError::Spawn { .. }
        | AgentError::Protocol { .. }
        | AgentError::CollectionMismatch { .. }
        | AgentError::SharedQueue(_)
        | AgentError::Io { .. } => exit_code::INTERNAL_ERROR,
    }
}

/// pytest refused to start. If it printed a usage-style line (argparse's `pytest: error: …`
/// or pytest's `ERROR: …`), that line is the whole message; otherwise the first line names
/// the status and the tail (a traceback) follows, indented.
fn render_early_exit(status: &str, stderr_tail: &str) -> String {
    if let Some(line) = pytest_usage_line(stderr_tail) {
        return format!("shardex: error: pytest: {line}");
    }
    let mut out = format!("shardex: error: pytest {status} before collecting tests");
    let tail: Vec<&str> = stderr_tail
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    if let Some(last) = tail.last() {
        out.push_str(": ");
        out.push_str(last.trim());
    }
    if tail.len() > 1 {
        for line in &tail {
            out.push_str("\n  ");
            out.push_str(line);
        }
    }
    out
}

/// `pytest: error: unrecognized arguments: --foo` -> `unrecognized arguments: --foo`;
/// `ERROR: file or directory not found: x` -> `file or directory not found: x`.
fn pytest_usage_line(stderr: &str) -> Option<&str> {
    let lines: Vec<&str> = stderr.lines().map(str::trim_end).collect();
    // argparse's `{prog}: error: {message}`; prog is `pytest`, `python -m pytest`, ...
    let argparse = lines.iter().rev().find_map(|line| {
        let (prog, message) = line.split_once(": error: ")?;
        let is_prog = !prog.is_empty()
            && !prog.starts_with(char::is_whitespace)
            && (prog.ends_with("pytest") || !prog.contains(' '));
        is_prog.then_some(message)
    });
    argparse.or_else(|| {
        lines.iter().rev().find_map(|line| {
            line.strip_prefix("ERROR: ")
                .filter(|message| !message.starts_with("usage:"))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_is_one_line_without_repeats() {
        let io = std::io::Error::new(std::io::ErrorKind::PermissionDenied, "permission denied");
        let err = CliError::ReportPath {
            flag: "--junitxml",
            path: "/x/junit.xml".into(),
            source: io,
        };
        assert_eq!(
            err.render(),
            "shardex: error: cannot write --junitxml /x/junit.xml: permission denied"
        );
        assert_eq!(err.exit_code(), exit_code::USAGE_ERROR);

        // AgentError::Spawn prints its source inline and returns it: printed once.
        let err = CliError::Agent(AgentError::Spawn {
            python: "/usr/bin/python3".into(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "not found"),
        });
        assert_eq!(
            err.render(),
            "shardex: error: cannot start /usr/bin/python3: not found"
        );
        assert_eq!(err.exit_code(), exit_code::INTERNAL_ERROR);
    }

    #[test]
    fn early_exit_reports_pytests_line_and_code() {
        let argparse = "rootdir: /src\n\
                        ERROR: usage: python -m pytest [options] [file_or_dir] [file_or_dir] [...]\n\
                        python -m pytest: error: unrecognized arguments: --frobnicate\n  inifile: None\n  rootdir: /src\n";
        let err = CliError::Agent(AgentError::EarlyExit {
            code: Some(4),
            status: "exited with code 4".into(),
            stderr_tail: argparse.into(),
        });
        assert_eq!(
            err.render(),
            "shardex: error: pytest: unrecognized arguments: --frobnicate"
        );
        assert_eq!(err.exit_code(), exit_code::USAGE_ERROR);

        let not_found = CliError::Agent(AgentError::EarlyExit {
            code: Some(4),
            status: "exited with code 4".into(),
            stderr_tail: "ERROR: file or directory not found: tests/nope.py\n\n".into(),
        });
        assert_eq!(
            not_found.render(),
            "shardex: error: pytest: file or directory not found: tests/nope.py"
        );

        let traceback = CliError::Agent(AgentError::EarlyExit {
            code: None,
            status: "was killed by signal 11 (SIGSEGV)".into(),
            stderr_tail: "Fatal Python error: Segmentation fault\n\nCurrent thread:\n".into(),
        });
        assert_eq!(
            traceback.render(),
            "shardex: error: pytest was killed by signal 11 (SIGSEGV) before collecting tests: Current thread:\n  \
             Fatal Python error: Segmentation fault\n  Current thread:"
        );
        assert_eq!(traceback.exit_code(), exit_code::INTERNAL_ERROR);
    }
}
