//! `[tool.shardex]` in the nearest `pyproject.toml`: keys are the long option names
//! (`options::file_keys`); relative paths are relative to the file's folder.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::errors::UsageError;
use crate::options::file_keys;

/// The config file looked for in the current directory and its ancestors.
pub const PYPROJECT: &str = "pyproject.toml";

/// The part of a `pyproject.toml` shardex reads.
#[derive(Deserialize)]
struct Pyproject {
    #[serde(default)]
    tool: Tool,
}

#[derive(Default, Deserialize)]
struct Tool {
    shardex: Option<toml::Value>,
}

/// `[tool.shardex]` from a `pyproject.toml`.
#[derive(Clone, Debug, PartialEq)]
pub struct FileSettings {
    /// The `pyproject.toml` it came from.
    pub path: PathBuf,
    pub table: toml::Table,
    /// One line per key shardex does not know (a typo should not pass silently, nor stop a
    /// run that an older shardex would not understand).
    pub warnings: Vec<String>,
}

impl FileSettings {
    /// The `pyproject.toml` of `dir` or its nearest ancestor that has one; `None` when there
    /// is none, or it has no `[tool.shardex]`.
    pub fn discover(dir: &Path) -> Result<Option<Self>, UsageError> {
        let Some(path) = dir
            .ancestors()
            .map(|d| d.join(PYPROJECT))
            .find(|p| p.is_file())
        else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(&path)
            .map_err(|err| UsageError::new(format!("cannot read {}: {err}", path.display())))?;
        Self::parse(path, &text)
    }

    /// Parses a `pyproject.toml`'s text.
    pub fn parse(path: PathBuf, text: &str) -> Result<Option<Self>, UsageError> {
        let doc: Pyproject = toml::from_str(text).map_err(|err| {
            UsageError::new(format!(
                "{} is not valid TOML: {}",
                path.display(),
                err.message()
            ))
        })?;
        let table = match doc.tool.shardex {
            None => return Ok(None),
            Some(toml::Value::Table(table)) => table,
            Some(_) => {
                return Err(UsageError::new(format!(
                    "{}: [tool.shardex] must be a table",
                    path.display()
                )))
            }
        };
        let warnings = table
            .keys()
            .filter(|key| !file_keys().any(|k| k == key.as_str()))
            .map(|key| unknown_key(&path, key))
            .collect();
        Ok(Some(Self {
            path,
            table,
            warnings,
        }))
    }

    pub fn place(&self, key: &str) -> String {
        format!("{}: [tool.shardex] {key}", self.path.display())
    }

    /// A string, number or boolean value as text.
    pub fn scalar(&self, key: &str) -> Result<Option<String>, UsageError> {
        match self.table.get(key) {
            None => Ok(None),
            Some(toml::Value::String(s)) => Ok(Some(s.clone())),
            Some(toml::Value::Integer(i)) => Ok(Some(i.to_string())),
            Some(toml::Value::Float(f)) => Ok(Some(f.to_string())),
            Some(toml::Value::Boolean(b)) => Ok(Some(b.to_string())),
            Some(_) => Err(UsageError::new(format!(
                "{}: expected a string, number or boolean",
                self.place(key)
            ))),
        }
    }

    /// `timings = ["a.xml", "junit/"]` (or one string), relative to the file.
    pub fn paths(&self, key: &str) -> Result<Option<Vec<PathBuf>>, UsageError> {
        let not_paths = || {
            UsageError::new(format!(
                "{}: expected a path or an array of paths",
                self.place(key)
            ))
        };
        match self.table.get(key) {
            None => Ok(None),
            Some(toml::Value::String(s)) if !s.is_empty() => Ok(Some(vec![self.relative(s)])),
            Some(toml::Value::Array(items)) => items
                .iter()
                .map(|item| match item {
                    toml::Value::String(s) if !s.is_empty() => Ok(self.relative(s)),
                    _ => Err(not_paths()),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(_) => Err(not_paths()),
        }
    }

    /// A path from the file: relative to its folder. A bare name (`python3.12`) stays bare
    /// so that it is looked up on PATH.
    pub fn relative(&self, raw: &str) -> PathBuf {
        let path = Path::new(raw);
        if path.is_absolute() || !raw.contains('/') {
            return path.to_owned();
        }
        self.path
            .parent()
            .map_or_else(|| path.to_owned(), |dir| dir.join(path))
    }
}

/// `/src/pyproject.toml: unknown key 'kill_grace' in [tool.shardex], ignored; did you mean
/// 'kill-grace'?`
fn unknown_key(path: &Path, key: &str) -> String {
    let nearest = file_keys()
        .map(|known| (edit_distance(&key.replace('_', "-"), known), known))
        .min()
        .filter(|(distance, _)| *distance <= 2);
    let hint = match nearest {
        Some((_, known)) => format!("; did you mean '{known}'?"),
        None => format!(
            "; known keys: {}",
            file_keys().collect::<Vec<_>>().join(", ")
        ),
    };
    format!(
        "{}: unknown key '{key}' in [tool.shardex], ignored{hint}",
        path.display()
    )
}

/// Levenshtein distance, for "did you mean".
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Option<FileSettings>, String> {
        FileSettings::parse("/src/pyproject.toml".into(), text).map_err(|e| e.to_string())
    }

    #[test]
    fn unknown_keys_are_warnings() {
        let file = parse("[tool.shardex]\nkill_grace = 2\ntimout = 3\nworkers = 2\n")
            .expect("ok")
            .expect("table");
        assert_eq!(
            file.warnings,
            [
                "/src/pyproject.toml: unknown key 'kill_grace' in [tool.shardex], ignored; did you mean 'kill-grace'?",
                "/src/pyproject.toml: unknown key 'timout' in [tool.shardex], ignored; did you mean 'timeout'?",
                "/src/pyproject.toml: unknown key 'workers' in [tool.shardex], ignored; known keys: numprocesses, maxprocesses, dist, color, timings, timing-store, no-timing-store, queue, build-id, queue-lease, node-index, node-total, timeout, timeline, python, spawn, daemon, no-daemon, kill-grace, stop-grace",
            ]
        );
    }

    #[test]
    fn shapes() {
        assert!(parse("[tool.shardex\n")
            .unwrap_err()
            .starts_with("/src/pyproject.toml is not valid TOML: "));
        assert_eq!(
            parse("[tool]\nshardex = 3\n").unwrap_err(),
            "/src/pyproject.toml: [tool.shardex] must be a table"
        );
        assert_eq!(parse("[tool.pytest.ini_options]\n"), Ok(None));
        assert_eq!(parse("[project]\nname = 'x'\n"), Ok(None));
    }

    #[test]
    fn distances() {
        assert_eq!(edit_distance("timeout", "timeout"), 0);
        assert_eq!(edit_distance("timout", "timeout"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("spwan", "spawn"), 2);
    }
}
