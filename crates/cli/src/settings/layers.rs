//! The layers a setting is looked up in, first to last: the command line, the environment,
//! `[tool.shardex]`, the option's default (see `options::OPTIONS`). Only the winning layer's
//! value is parsed; its errors name the layer.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::compat::ConsumedFlags;
use crate::errors::UsageError;
use crate::options::{main_def, Kind, Opt};
use crate::settings::file::FileSettings;
use crate::settings::values::{parse_bool, parse_count, parse_secs, redact_url};

/// Where a value came from.
#[derive(Clone, Debug, PartialEq)]
pub enum Layer {
    Cli,
    Env,
    File,
    Default,
}

/// A value as written in its layer.
#[derive(Clone, Debug)]
pub struct Raw {
    pub text: String,
    /// `argument --timeout`, `SHARDEX_TIMEOUT`, `/src/pyproject.toml: [tool.shardex] timeout`.
    pub place: String,
    pub layer: Layer,
}

pub struct Layers<'a> {
    pub cli: &'a ConsumedFlags,
    pub env: &'a dyn Fn(&str) -> Option<String>,
    pub file: Option<&'a FileSettings>,
}

/// An environment variable, with empty meaning unset.
pub fn lookup(env: &dyn Fn(&str) -> Option<String>, name: &str) -> Option<String> {
    env(name).filter(|v| !v.is_empty())
}

impl Layers<'_> {
    /// The first layer that gives `opt`, its default included.
    pub fn raw(&self, opt: Opt) -> Result<Option<Raw>, UsageError> {
        if let Some((_, given)) = self.cli.last(opt) {
            return Ok(Some(Raw {
                text: given.value.clone(),
                place: format!("argument {}", given.def.display()),
                layer: Layer::Cli,
            }));
        }
        if let Some(raw) = self.raw_outside_cli(opt)? {
            return Ok(Some(raw));
        }
        Ok(main_def(opt).default.map(|text| Raw {
            text: text.to_owned(),
            place: "the default".to_owned(),
            layer: Layer::Default,
        }))
    }

    /// The environment's or the file's value of `opt`.
    pub fn raw_outside_cli(&self, opt: Opt) -> Result<Option<Raw>, UsageError> {
        let def = main_def(opt);
        if let Some(var) = def.env_var() {
            if let Some(text) = lookup(self.env, &var) {
                return Ok(Some(Raw {
                    text: text.trim().to_owned(),
                    place: var,
                    layer: Layer::Env,
                }));
            }
        }
        let (Some(file), Some(key)) = (self.file, def.file_key()) else {
            return Ok(None);
        };
        Ok(file.scalar(key)?.map(|text| Raw {
            text,
            place: file.place(key),
            layer: Layer::File,
        }))
    }

    /// The winning value of `opt`, parsed; the error names its layer.
    pub fn parse<T>(
        &self,
        opt: Opt,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Option<T>, UsageError> {
        let Some(raw) = self.raw(opt)? else {
            return Ok(None);
        };
        parse(&raw.text).map(Some).map_err(|expected| {
            UsageError::invalid_value(&raw.place, &redact_url(&raw.text), &expected)
        })
    }

    /// A `Kind::Count` option, in its range.
    pub fn count(&self, opt: Opt) -> Result<Option<u32>, UsageError> {
        let (min, max) = match main_def(opt).kind {
            Kind::Count { min, max } => (min, max),
            _ => (0, u32::MAX),
        };
        self.parse(opt, |s| parse_count(s, min, max))
    }

    /// A `Kind::Secs` option, in its range.
    pub fn secs(&self, opt: Opt) -> Result<Option<Duration>, UsageError> {
        let max = match main_def(opt).kind {
            Kind::Secs { max } => max,
            _ => f64::from(u32::MAX),
        };
        Ok(self
            .parse(opt, |s| parse_secs(s, max))?
            .map(Duration::from_secs_f64))
    }

    /// A `Kind::Flag` option: given on the command line, or true in env or file.
    pub fn flag(&self, opt: Opt) -> Result<bool, UsageError> {
        Ok(self.parse(opt, parse_bool)?.unwrap_or(false))
    }

    /// A `Kind::Path` option and where it came from (`--python`, `SHARDEX_PYTHON`,
    /// `python in /src/pyproject.toml`). A file's relative path is relative to its folder.
    pub fn path(&self, opt: Opt) -> Result<Option<(PathBuf, String)>, UsageError> {
        let Some(raw) = self.raw(opt)? else {
            return Ok(None);
        };
        if raw.text.is_empty() {
            return Err(UsageError::invalid_value(&raw.place, "", "expected a path"));
        }
        let def = main_def(opt);
        Ok(Some(match (raw.layer, self.file) {
            (Layer::File, Some(file)) => (
                file.relative(&raw.text),
                format!(
                    "{} in {}",
                    def.long.unwrap_or_default(),
                    file.path.display()
                ),
            ),
            (Layer::Env, _) => (PathBuf::from(raw.text), raw.place),
            _ => (
                PathBuf::from(raw.text),
                format!("--{}", def.long.unwrap_or_default()),
            ),
        }))
    }

    /// A repeatable path option: every command-line value, else the env's (separated by
    /// `:`), else the file's (one string or an array).
    pub fn paths(&self, opt: Opt) -> Result<Vec<PathBuf>, UsageError> {
        let given: Vec<_> = self.cli.all(opt).collect();
        if !given.is_empty() {
            return given
                .into_iter()
                .map(|g| match g.value.as_str() {
                    "" => Err(UsageError::invalid_value(
                        &format!("argument {}", g.def.display()),
                        "",
                        "expected a path",
                    )),
                    text => Ok(PathBuf::from(text)),
                })
                .collect();
        }
        let def = main_def(opt);
        if let Some(raw) = def.env_var().and_then(|var| lookup(self.env, &var)) {
            return Ok(std::env::split_paths(&raw)
                .filter(|p| !p.as_os_str().is_empty())
                .collect());
        }
        match (self.file, def.file_key()) {
            (Some(file), Some(key)) => Ok(file.paths(key)?.unwrap_or_default()),
            _ => Ok(Vec::new()),
        }
    }

    /// Every value of a repeatable text option (command line only).
    pub fn texts(&self, opt: Opt) -> Vec<String> {
        self.cli.all(opt).map(|g| g.value.clone()).collect()
    }
}

/// `~/x` -> `$HOME/x`, as pytest does for `--junitxml`.
pub fn expand_tilde(path: PathBuf, env: &dyn Fn(&str) -> Option<String>) -> PathBuf {
    match (path.strip_prefix("~"), lookup(env, "HOME")) {
        (Ok(rest), Some(home)) => Path::new(&home).join(rest),
        _ => path,
    }
}
