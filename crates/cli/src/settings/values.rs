//! The value types of shardex's settings and their parsers. A parser's error is what was
//! expected; the caller names where the bad value came from.

use std::path::PathBuf;
use std::str::FromStr;

use shardex_core::schedule::DistMode;

use crate::options::MAX_WORKERS;

/// `-n`: a count, or `auto`/`logical`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum NumProcesses {
    /// CPUs available to this process (affinity mask and cgroup quota).
    #[default]
    Auto,
    /// Logical CPUs in the affinity mask.
    Logical,
    /// `0` runs one worker (xdist runs in-process with 0; shardex always uses workers, and
    /// says so).
    Count(u32),
}

impl FromStr for NumProcesses {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "logical" => Ok(Self::Logical),
            _ => match parse_count(s, 0, MAX_WORKERS) {
                Ok(n) => Ok(Self::Count(n)),
                Err(_) => Err(format!(
                    "expected auto, logical or a number of workers up to {MAX_WORKERS}"
                )),
            },
        }
    }
}

/// `--dist`, with xdist's other modes mapped to what shardex does.
pub fn parse_dist(s: &str) -> Result<(DistMode, Option<String>), String> {
    match s {
        "load" | "no" => Ok((DistMode::Load, None)),
        "loadscope" => Ok((DistMode::LoadScope, None)),
        "loadfile" => Ok((DistMode::LoadFile, None)),
        "worksteal" => Ok((
            DistMode::Load,
            Some("--dist worksteal: shardex's load mode already steals work; using load".into()),
        )),
        "loadgroup" => Ok((DistMode::LoadGroup, None)),
        "each" => Err("each runs every test on every worker; not supported".into()),
        _ => Err("expected load, loadscope, loadfile or loadgroup".into()),
    }
}

/// `--color`. `Auto` is decided by the reporter, as pytest does (terminal, `PY_COLORS`,
/// `NO_COLOR`, `FORCE_COLOR`, `TERM=dumb`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ColorChoice {
    #[default]
    Auto,
    Yes,
    No,
}

impl FromStr for ColorChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "yes" => Ok(Self::Yes),
            "no" => Ok(Self::No),
            _ => Err("expected auto, yes or no".into()),
        }
    }
}

/// `--queue`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum QueueSpec {
    /// In-process work-stealing queue (one machine).
    #[default]
    Local,
    Redis(RedisUrl),
}

impl FromStr for QueueSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "local" {
            return Ok(Self::Local);
        }
        RedisUrl::parse(s).map(Self::Redis)
    }
}

/// A checked `redis://` or `rediss://` URL. Debug and Display hide the password.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl {
    /// As given (with the password: only for connecting).
    pub url: String,
    pub tls: bool,
    pub host: String,
    pub port: u16,
    pub db: u32,
}

const REDIS_URL_SHAPE: &str =
    "expected local, redis://[USER:PASSWORD@]HOST[:PORT][/DB] or rediss://…";

impl RedisUrl {
    pub fn parse(s: &str) -> Result<Self, String> {
        let (tls, rest) = if let Some(rest) = s.strip_prefix("rediss://") {
            (true, rest)
        } else if let Some(rest) = s.strip_prefix("redis://") {
            (false, rest)
        } else {
            return Err(REDIS_URL_SHAPE.into());
        };
        let rest = rest.split_once('?').map_or(rest, |(before, _)| before);
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or("unclosed '[' in the host of the URL")?;
            (host, after.strip_prefix(':'))
        } else {
            match hostport.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (hostport, None),
            }
        };
        if host.is_empty() {
            return Err(format!("no host in the URL; {REDIS_URL_SHAPE}"));
        }
        let port = match port {
            None | Some("") => 6379,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|&p| p != 0)
                .ok_or_else(|| format!("port '{p}' is not a number from 1 to 65535"))?,
        };
        let db = match path {
            "" => 0,
            p => p
                .parse()
                .map_err(|_| format!("database '{p}' is not a number"))?,
        };
        Ok(Self {
            url: s.to_owned(),
            tls,
            host: host.to_owned(),
            port,
            db,
        })
    }
}

impl std::fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&redact_url(&self.url))
    }
}

impl std::fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RedisUrl({})", redact_url(&self.url))
    }
}

/// `redis://user:secret@host` -> `redis://user:***@host`, for messages and logs.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            let hidden = if userinfo.contains(':') {
                format!("{user}:***")
            } else {
                "***".to_owned()
            };
            format!("{scheme}://{hidden}@{host}{tail}")
        }
        None => url.to_owned(),
    }
}

/// `1/true/yes/on` or `0/false/no/off`, for env and file switches.
pub fn parse_bool(s: &str) -> Result<bool, String> {
    match s.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err("expected true or false".into()),
    }
}

/// Seconds for `--timeout`, `--kill-grace`...: finite, in `0..=max` (a larger value would
/// not fit a `Duration`, or is a typo).
pub fn parse_secs(s: &str, max: f64) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && (0.0..=max).contains(&v) => Ok(v),
        Ok(v) if v.is_finite() && v > max => Err(format!("expected at most {max} seconds")),
        _ => Err("expected a number of seconds, e.g. 30 or 2.5".into()),
    }
}

/// A whole number in `min..=max`.
pub fn parse_count(s: &str, min: u32, max: u32) -> Result<u32, String> {
    let expected = || match (min, max) {
        (0, u32::MAX) => "expected a whole number ≥ 0".to_owned(),
        (min, u32::MAX) => format!("expected a whole number ≥ {min}"),
        (min, max) => format!("expected a whole number from {min} to {max}"),
    };
    match s.parse::<u64>() {
        Ok(n) if (u64::from(min)..=u64::from(max)).contains(&n) => Ok(n as u32),
        _ => Err(expected()),
    }
}

/// Where the timings of previous runs are kept.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum TimingStoreChoice {
    /// `<rootdir>/.shardex/timings.json`, once pytest told us its rootdir.
    #[default]
    Default,
    Path(PathBuf),
    /// `--no-timing-store`: neither read nor write it.
    Disabled,
}

/// The explicit interpreter and where it came from (named in error messages).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PythonChoice {
    pub path: PathBuf,
    /// `--python`, `SHARDEX_PYTHON`, or `python in /src/pyproject.toml`.
    pub origin: String,
}
