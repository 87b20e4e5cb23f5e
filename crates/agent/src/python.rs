//! Finding the Python interpreter and checking that it can import pytest.
//!
//! Order: an explicit path (`--python`, `SHARDEX_PYTHON`, or the config file), else
//! `$VIRTUAL_ENV/bin/python`, else `python3` on `PATH`. Blocking `std::process` on purpose:
//! this runs once, before any async work starts.

use std::ffi::OsString;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use thiserror::Error;

/// Set by `python -m venv`'s activate scripts (and by uv, poetry, pipenv shells).
pub const VIRTUAL_ENV_VAR: &str = "VIRTUAL_ENV";
/// Searched for `python3` when neither an explicit interpreter nor a virtualenv is given.
pub const PATH_VAR: &str = "PATH";

/// How long the interpreter may take to start and import pytest.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(30);

/// Printed by the check; two words: Python's version and pytest's.
const CHECK_SCRIPT: &str = "import sys, pytest; print(sys.version.split()[0], pytest.__version__)";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PythonInfo {
    /// The interpreter as found (not resolved through symlinks: a venv's `bin/python` must stay
    /// the venv's).
    pub path: PathBuf,
    /// e.g. `3.12.4`.
    pub version: String,
    /// e.g. `8.3.2`.
    pub pytest_version: String,
}

/// How the interpreter was chosen; every error names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PythonOrigin {
    /// Given by the user; the label says where (`--python`, `SHARDEX_PYTHON`, a config file).
    Explicit(String),
    VirtualEnv,
    PathLookup,
}

impl fmt::Display for PythonOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Explicit(label) => write!(f, "from {label}"),
            Self::VirtualEnv => write!(f, "from ${VIRTUAL_ENV_VAR}"),
            Self::PathLookup => write!(f, "python3 on {PATH_VAR}"),
        }
    }
}

#[derive(Debug, Error)]
pub enum PythonError {
    #[error("no Python interpreter at {} ({origin}); pass --python or activate a virtualenv", path.display())]
    NotFound { path: PathBuf, origin: PythonOrigin },
    #[error(
        "no {name} on {PATH_VAR}{}; pass --python or activate a virtualenv",
        explicit_note(origin)
    )]
    NotOnPath { name: String, origin: PythonOrigin },
    #[error("cannot run {} ({origin}); pass --python with a working interpreter", path.display())]
    Spawn {
        path: PathBuf,
        origin: PythonOrigin,
        #[source]
        source: std::io::Error,
    },
    #[error("pytest is not installed for {} ({origin}); install it with: {} -m pip install pytest", path.display(), path.display())]
    PytestMissing { path: PathBuf, origin: PythonOrigin },
    #[error("{} ({origin}) did not start within {}s; check the interpreter or pass another with --python", path.display(), timeout.as_secs())]
    Timeout {
        path: PathBuf,
        origin: PythonOrigin,
        timeout: Duration,
    },
    #[error("{} ({origin}) failed to import pytest ({status}): {detail}", path.display())]
    CheckFailed {
        path: PathBuf,
        origin: PythonOrigin,
        status: ExitStatus,
        /// The last line of its stderr.
        detail: String,
    },
    #[error("{} ({origin}) printed {output:?} instead of its Python and pytest versions", path.display())]
    UnexpectedOutput {
        path: PathBuf,
        origin: PythonOrigin,
        output: String,
    },
}

/// ` (from --python)` for an explicit choice; nothing when the origin is the PATH lookup itself.
fn explicit_note(origin: &PythonOrigin) -> String {
    match origin {
        PythonOrigin::PathLookup => String::new(),
        PythonOrigin::Explicit(_) | PythonOrigin::VirtualEnv => format!(" ({origin})"),
    }
}

/// Finds the interpreter: `explicit` (labelled `--python` in errors), else `$VIRTUAL_ENV`,
/// else `python3` on `PATH`; then checks that it imports pytest.
pub fn find_python(explicit: Option<&Path>) -> Result<PythonInfo, PythonError> {
    find_python_from(explicit.map(|path| (path, "--python")))
}

/// As [`find_python`], with the label of where the explicit path came from (`SHARDEX_PYTHON`,
/// `python in pyproject.toml`...), for the error messages.
pub fn find_python_from(explicit: Option<(&Path, &str)>) -> Result<PythonInfo, PythonError> {
    let (path, origin) = locate(
        explicit,
        std::env::var_os(VIRTUAL_ENV_VAR),
        std::env::var_os(PATH_VAR),
    )?;
    check(&path, &origin, CHECK_TIMEOUT)
}

/// The interpreter `find_python_from` would check, without running it: for a run that a
/// daemon serves (its warm process already runs pytest with it; a check would cost a
/// Python start, the largest part of a warm run).
pub fn locate_python(explicit: Option<(&Path, &str)>) -> Result<PathBuf, PythonError> {
    locate(
        explicit,
        std::env::var_os(VIRTUAL_ENV_VAR),
        std::env::var_os(PATH_VAR),
    )
    .map(|(path, _)| path)
}

/// Picks the interpreter path without running it.
fn locate(
    explicit: Option<(&Path, &str)>,
    virtual_env: Option<OsString>,
    path_var: Option<OsString>,
) -> Result<(PathBuf, PythonOrigin), PythonError> {
    if let Some((path, label)) = explicit {
        let origin = PythonOrigin::Explicit(label.to_owned());
        // A bare name (`python3.12`) is looked up on PATH, as a shell would.
        if path.components().count() == 1 && !path.is_absolute() {
            return match search_path(path.as_os_str(), path_var.as_deref()) {
                Some(found) => Ok((found, origin)),
                None => Err(PythonError::NotOnPath {
                    name: path.display().to_string(),
                    origin,
                }),
            };
        }
        if !path.exists() {
            return Err(PythonError::NotFound {
                path: path.to_owned(),
                origin,
            });
        }
        return Ok((path.to_owned(), origin));
    }
    if let Some(venv) = virtual_env.filter(|v| !v.is_empty()) {
        let path = PathBuf::from(venv).join("bin").join("python");
        // A stale $VIRTUAL_ENV is an error rather than a silent fall back to another Python.
        if !path.exists() {
            return Err(PythonError::NotFound {
                path,
                origin: PythonOrigin::VirtualEnv,
            });
        }
        return Ok((path, PythonOrigin::VirtualEnv));
    }
    match search_path("python3".as_ref(), path_var.as_deref()) {
        Some(found) => Ok((found, PythonOrigin::PathLookup)),
        None => Err(PythonError::NotOnPath {
            name: "python3".into(),
            origin: PythonOrigin::PathLookup,
        }),
    }
}

/// The first executable file called `name` in the directories of `path_var`.
fn search_path(name: &std::ffi::OsStr, path_var: Option<&std::ffi::OsStr>) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let dirs = path_var?;
    std::env::split_paths(dirs)
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| dir.join(name))
        .find(|candidate| {
            candidate
                .metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Runs the interpreter once to read its Python and pytest versions.
fn check(path: &Path, origin: &PythonOrigin, timeout: Duration) -> Result<PythonInfo, PythonError> {
    let spawn = || {
        Command::new(path)
            .args(["-c", CHECK_SCRIPT])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
    };
    // ETXTBSY: the interpreter file is still open for writing somewhere (just installed,
    // or a concurrent fork holds the writer's descriptor for a moment); it clears quickly.
    let mut spawned = spawn();
    for _ in 0..20 {
        match &spawned {
            Err(err) if err.raw_os_error() == Some(nix::libc::ETXTBSY) => {
                std::thread::sleep(Duration::from_millis(25));
                spawned = spawn();
            }
            _ => break,
        }
    }
    let mut child = spawned.map_err(|source| PythonError::Spawn {
        path: path.to_owned(),
        origin: origin.clone(),
        source,
    })?;
    // Read both pipes on their own threads so a chatty interpreter cannot fill a pipe and
    // stall while we wait for it to exit.
    let stdout = child.stdout.take().map(read_all_thread);
    let stderr = child.stderr.take().map(read_all_thread);
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                // Best effort: the process may have exited just now.
                let _ = child.kill();
                let _ = child.wait();
                return Err(PythonError::Timeout {
                    path: path.to_owned(),
                    origin: origin.clone(),
                    timeout,
                });
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(source) => {
                return Err(PythonError::Spawn {
                    path: path.to_owned(),
                    origin: origin.clone(),
                    source,
                })
            }
        }
    };
    let stdout = stdout.map(join_output).unwrap_or_default();
    let stderr = stderr.map(join_output).unwrap_or_default();
    interpret(path, origin, status, &stdout, &stderr)
}

fn read_all_thread<R: Read + Send + 'static>(mut pipe: R) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        // A read error leaves what was read so far; the exit status tells the rest.
        let _ = pipe.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

fn join_output(handle: std::thread::JoinHandle<String>) -> String {
    handle.join().unwrap_or_default()
}

/// Turns the check's result into a `PythonInfo` or the error that says what to do.
fn interpret(
    path: &Path,
    origin: &PythonOrigin,
    status: ExitStatus,
    stdout: &str,
    stderr: &str,
) -> Result<PythonInfo, PythonError> {
    if !status.success() {
        if pytest_missing(stderr) {
            return Err(PythonError::PytestMissing {
                path: path.to_owned(),
                origin: origin.clone(),
            });
        }
        return Err(PythonError::CheckFailed {
            path: path.to_owned(),
            origin: origin.clone(),
            status,
            detail: last_line(stderr).unwrap_or("no output").to_owned(),
        });
    }
    parse_versions(stdout)
        .map(|(version, pytest_version)| PythonInfo {
            path: path.to_owned(),
            version,
            pytest_version,
        })
        .ok_or_else(|| PythonError::UnexpectedOutput {
            path: path.to_owned(),
            origin: origin.clone(),
            output: stdout.trim().to_owned(),
        })
}

fn pytest_missing(stderr: &str) -> bool {
    stderr.lines().any(|line| {
        let line = line.trim();
        line == "ModuleNotFoundError: No module named 'pytest'"
            || line == "ImportError: No module named pytest"
    })
}

/// `"3.12.4 8.3.2\n"` -> `("3.12.4", "8.3.2")`. The last non-empty line counts: a
/// `sitecustomize` may print before.
fn parse_versions(stdout: &str) -> Option<(String, String)> {
    let line = last_line(stdout)?;
    let mut words = line.split_whitespace();
    let (python, pytest) = (words.next()?, words.next()?);
    if words.next().is_some() || !python.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    Some((python.to_owned(), pytest.to_owned()))
}

fn last_line(text: &str) -> Option<&str> {
    text.lines().map(str::trim).rfind(|l| !l.is_empty())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write script");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        path
    }

    #[test]
    fn parses_versions() {
        let cases = [
            ("3.12.4 8.3.2\n", Some(("3.12.4", "8.3.2"))),
            (
                "hello from sitecustomize\n3.8.10 7.4.0\n",
                Some(("3.8.10", "7.4.0")),
            ),
            ("", None),
            ("3.12.4\n", None),
            ("Python 3.12 8.3\n", None),
            ("3.12.4 8.3.2 extra\n", None),
        ];
        for (stdout, expected) in cases {
            let expected = expected.map(|(a, b): (&str, &str)| (a.to_owned(), b.to_owned()));
            assert_eq!(parse_versions(stdout), expected, "{stdout:?}");
        }
    }

    #[test]
    fn recognises_missing_pytest() {
        let stderr = "Traceback (most recent call last):\n  File \"<string>\", line 1, in <module>\nModuleNotFoundError: No module named 'pytest'\n";
        assert!(pytest_missing(stderr));
        assert!(!pytest_missing(
            "ModuleNotFoundError: No module named 'pytest_django'"
        ));
    }

    #[test]
    fn explicit_path_wins_and_must_exist() {
        let dir = tempfile::tempdir().expect("tempdir");
        let python = script(dir.path(), "python", "exit 0");
        let venv = Some(OsString::from("/nonexistent-venv"));
        let (found, origin) =
            locate(Some((&python, "--python")), venv.clone(), None).expect("explicit");
        assert_eq!(found, python);
        assert_eq!(origin, PythonOrigin::Explicit("--python".into()));

        let missing = dir.path().join("nope/python");
        let err = locate(Some((&missing, "--python")), venv, None).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "no Python interpreter at {} (from --python); pass --python or activate a virtualenv",
                missing.display()
            )
        );
    }

    #[test]
    fn virtualenv_then_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let venv = dir.path().join("venv");
        std::fs::create_dir_all(venv.join("bin")).expect("mkdir");
        let venv_python = script(&venv.join("bin"), "python", "exit 0");
        let bin = dir.path().join("bin");
        std::fs::create_dir_all(&bin).expect("mkdir");
        let path_python = script(&bin, "python3", "exit 0");
        let path_var = Some(OsString::from(format!("/nonexistent:{}", bin.display())));

        let (found, origin) =
            locate(None, Some(venv.clone().into_os_string()), path_var.clone()).expect("venv");
        assert_eq!((found, origin), (venv_python, PythonOrigin::VirtualEnv));

        let (found, origin) = locate(None, Some(OsString::new()), path_var.clone()).expect("path");
        assert_eq!(
            (found, origin),
            (path_python.clone(), PythonOrigin::PathLookup)
        );

        // A bare explicit name is looked up on PATH too.
        let (found, _) = locate(
            Some((Path::new("python3"), "SHARDEX_PYTHON")),
            None,
            path_var,
        )
        .expect("bare");
        assert_eq!(found, path_python);

        let err = locate(None, None, Some(OsString::from("/nonexistent"))).unwrap_err();
        assert_eq!(
            err.to_string(),
            "no python3 on PATH; pass --python or activate a virtualenv"
        );
        let err = locate(None, Some(dir.path().join("stale").into_os_string()), None).unwrap_err();
        assert!(
            err.to_string()
                .contains("stale/bin/python (from $VIRTUAL_ENV)"),
            "{err}"
        );
    }

    #[test]
    fn check_runs_the_interpreter() {
        let dir = tempfile::tempdir().expect("tempdir");
        let origin = PythonOrigin::Explicit("--python".into());
        let good = script(dir.path(), "good", "echo 3.12.1 8.3.0");
        let info = check(&good, &origin, CHECK_TIMEOUT).expect("good python");
        assert_eq!(info.version, "3.12.1");
        assert_eq!(info.pytest_version, "8.3.0");

        let no_pytest = script(
            dir.path(),
            "no_pytest",
            "echo \"ModuleNotFoundError: No module named 'pytest'\" >&2; exit 1",
        );
        let err = check(&no_pytest, &PythonOrigin::PathLookup, CHECK_TIMEOUT).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "pytest is not installed for {p} (python3 on PATH); install it with: {p} -m pip install pytest",
                p = no_pytest.display()
            )
        );

        let broken = script(dir.path(), "broken", "echo 'SyntaxError: oops' >&2; exit 2");
        let err = check(&broken, &origin, CHECK_TIMEOUT).unwrap_err();
        assert!(err.to_string().ends_with("SyntaxError: oops"), "{err}");

        let slow = script(dir.path(), "slow", "exec sleep 5");
        let err = check(&slow, &origin, Duration::from_millis(100)).unwrap_err();
        assert!(matches!(err, PythonError::Timeout { .. }), "{err}");
    }
}
