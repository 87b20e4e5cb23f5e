//! `--queue` URLs: `redis://[user:password@]host[:port][/db]` and `rediss://…` (TLS). Parsed here
//! rather than by the redis crate so that every message and `Display`/`Debug` can hide the
//! password, and so that a typo is one clear line instead of a client error.

use std::fmt;
use std::path::Path;

use redis::{Client, ConnectionAddr, ConnectionInfo, IntoConnectionInfo, RedisConnectionInfo};

const DEFAULT_PORT: u16 = 6379;
const EXPECTED: &str = "expected redis://[user:password@]host[:port][/db] or rediss://… (TLS)";

/// Where the shared queue lives. The password is kept but never shown.
#[derive(Clone, PartialEq, Eq)]
pub struct QueueUrl {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    pub user: Option<String>,
    password: Option<String>,
    pub db: i64,
}

impl QueueUrl {
    pub fn parse(s: &str) -> Result<QueueUrl, String> {
        let bad = |why: &str| format!("invalid queue URL `{}`: {why}; {EXPECTED}", redact_raw(s));
        let (tls, rest) = if let Some(r) = s.strip_prefix("redis://") {
            (false, r)
        } else if let Some(r) = s.strip_prefix("rediss://") {
            (true, r)
        } else {
            return Err(bad("unsupported scheme"));
        };
        if rest.contains(['?', '#']) {
            return Err(bad("query strings and fragments are not supported"));
        }
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let (user, password) = match userinfo {
            None => (None, None),
            Some(u) => {
                let (user, pass) = u.split_once(':').unwrap_or((u, ""));
                let user = percent_decode(user).ok_or_else(|| bad("bad %-escape in the user"))?;
                let pass =
                    percent_decode(pass).ok_or_else(|| bad("bad %-escape in the password"))?;
                (
                    (!user.is_empty()).then_some(user),
                    (!pass.is_empty()).then_some(pass),
                )
            }
        };
        let (host, port) = split_host_port(hostport).ok_or_else(|| bad("bad host or port"))?;
        let db = match path {
            "" => 0,
            p => p
                .parse::<i64>()
                .ok()
                .filter(|d| *d >= 0)
                .ok_or_else(|| bad("bad database number"))?,
        };
        Ok(QueueUrl {
            tls,
            host,
            port,
            user,
            password,
            db,
        })
    }

    pub fn has_password(&self) -> bool {
        self.password.is_some()
    }

    /// Removes the password from a message that might quote it (a server's or a library's).
    pub fn scrub(&self, msg: &str) -> String {
        match &self.password {
            Some(p) if p.len() >= 3 => msg.replace(p.as_str(), "***"),
            _ => msg.to_string(),
        }
    }

    /// A client for this URL; `ca_pem` replaces the system store for `rediss://`.
    pub(crate) fn client(&self, ca: Option<&Path>) -> Result<Client, String> {
        let addr = if self.tls {
            ConnectionAddr::TcpTls {
                host: self.host.clone(),
                port: self.port,
                insecure: false,
                tls_params: None,
            }
        } else {
            ConnectionAddr::Tcp(self.host.clone(), self.port)
        };
        let mut redis = RedisConnectionInfo::default().set_db(self.db);
        if let Some(u) = &self.user {
            redis = redis.set_username(u);
        }
        if let Some(p) = &self.password {
            redis = redis.set_password(p);
        }
        let info: ConnectionInfo = addr
            .into_connection_info()
            .map_err(|e| self.scrub(&e.to_string()))?
            .set_redis_settings(redis);
        match ca.filter(|_| self.tls) {
            None => Client::open(info).map_err(|e| self.scrub(&e.to_string())),
            Some(path) => {
                let pem = std::fs::read(path)
                    .map_err(|e| format!("cannot read the CA file {}: {e}", path.display()))?;
                let certs = redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem),
                };
                Client::build_with_tls(info, certs).map_err(|e| {
                    format!(
                        "bad CA file {}: {}",
                        path.display(),
                        self.scrub(&e.to_string())
                    )
                })
            }
        }
    }
}

impl fmt::Display for QueueUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.tls { "rediss://" } else { "redis://" })?;
        match (&self.user, &self.password) {
            (Some(u), Some(_)) => write!(f, "{u}:***@")?,
            (Some(u), None) => write!(f, "{u}@")?,
            (None, Some(_)) => f.write_str(":***@")?,
            (None, None) => {}
        }
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)?;
        } else {
            write!(f, "{}:{}", self.host, self.port)?;
        }
        if self.db != 0 {
            write!(f, "/{}", self.db)?;
        }
        Ok(())
    }
}

impl fmt::Debug for QueueUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "QueueUrl({self})")
    }
}

/// `host`, `host:port`, `[v6]`, `[v6]:port`.
fn split_host_port(s: &str) -> Option<(String, u16)> {
    let (host, port) = if let Some(r) = s.strip_prefix('[') {
        let (h, after) = r.split_once(']')?;
        (h, after.strip_prefix(':'))
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') => (h, Some(p)),
            Some(_) => return None,
            None => (s, None),
        }
    };
    if host.is_empty() || host.contains(['/', '@', ' ']) {
        return None;
    }
    let port = match port {
        None => DEFAULT_PORT,
        Some(p) => p.parse().ok().filter(|p| *p != 0)?,
    };
    Some((host.to_string(), port))
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let (mut out, mut i) = (Vec::with_capacity(b.len()), 0);
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A URL we could not parse, for its error message: whatever sits between `://` and the last
/// `@` may hold a password.
fn redact_raw(s: &str) -> String {
    let Some((scheme, rest)) = s.split_once("://") else {
        return match s.rsplit_once('@') {
            Some((_, host)) => format!("***@{host}"),
            None => s.to_string(),
        };
    };
    match rest.rsplit_once('@') {
        Some((_, host)) => format!("{scheme}://***@{host}"),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_forms() {
        let u = QueueUrl::parse("redis://127.0.0.1:6390").unwrap();
        assert_eq!(
            (u.tls, u.host.as_str(), u.port, u.db, u.user.clone()),
            (false, "127.0.0.1", 6390, 0, None)
        );
        assert_eq!(u.to_string(), "redis://127.0.0.1:6390");
        let u = QueueUrl::parse("rediss://ci:s%40cret@redis.example:6380/3").unwrap();
        assert!(u.tls && u.has_password());
        assert_eq!(
            (u.user.as_deref(), u.password.as_deref(), u.db),
            (Some("ci"), Some("s@cret"), 3)
        );
        assert_eq!(u.to_string(), "rediss://ci:***@redis.example:6380/3");
        let u = QueueUrl::parse("redis://:pw@host").unwrap();
        assert_eq!(
            (u.user.clone(), u.port, u.to_string()),
            (None, 6379, "redis://:***@host:6379".into())
        );
        let u = QueueUrl::parse("redis://[::1]:7000").unwrap();
        assert_eq!(
            (u.host.as_str(), u.to_string()),
            ("::1", "redis://[::1]:7000".into())
        );
    }

    #[test]
    fn display_debug_and_errors_never_show_the_password() {
        let u = QueueUrl::parse("redis://user:hunter22@h:1/2").unwrap();
        assert!(!u.to_string().contains("hunter22"));
        assert!(!format!("{u:?}").contains("hunter22"));
        assert_eq!(u.scrub("WRONGPASS hunter22"), "WRONGPASS ***");
        for bad in [
            "http://user:hunter22@h",
            "redis://user:hunter22@h:port",
            "redis://user:hunter22@h/x",
        ] {
            let e = QueueUrl::parse(bad).unwrap_err();
            assert!(!e.contains("hunter22"), "{e}");
            assert!(e.contains("expected redis://"), "{e}");
        }
    }

    #[test]
    fn refuses_what_it_does_not_understand() {
        for bad in [
            "",
            "redis://",
            "redis://h:0",
            "redis://h:99999",
            "redis://h/-1",
            "redis://h?db=1",
            "valkey://h",
            "redis://a:b:c",
        ] {
            assert!(QueueUrl::parse(bad).is_err(), "{bad}");
        }
    }
}
