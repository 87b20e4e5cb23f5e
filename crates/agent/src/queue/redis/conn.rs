//! One connection to Redis with the rules every call follows: a deadline on each call (a CI
//! job must never hang on a dead Redis), errors without the password, a reconnect on the next
//! call after the connection broke, and a count of round trips.
//!
//! A Redis Cluster needs no configuration: the first connection asks `INFO cluster`, and a
//! cluster node switches the link to the crate's cluster client, seeded with the URL's node
//! (same user, password and TLS). Should that probe be refused (an ACL without `INFO`), the
//! first `MOVED` answer does the same. The calls are unchanged: every key of a build shares
//! one hash tag, so each command, pipeline and script (routed by its KEYS[1]) goes to one
//! master; the timings hash is its own slot and only plain commands touch it.

use std::path::PathBuf;
use std::time::Duration;

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::{
    AsyncConnectionConfig, Client, Cmd, ErrorKind, FromRedisValue, Pipeline, RedisError,
    RedisResult, ScriptInvocation, ServerErrorKind,
};

use super::{QueueUrl, RemoteError};

pub(crate) struct Conn {
    url: QueueUrl,
    client: Client,
    ca: Option<PathBuf>,
    /// Set once the server showed it is a cluster node.
    cluster: Option<ClusterClient>,
    /// Whether `INFO cluster` answered (asked once, on the first connection).
    probed: bool,
    link: Option<Link>,
    call_timeout: Duration,
    connect_timeout: Duration,
    round_trips: u64,
}

enum Link {
    Plain(MultiplexedConnection),
    Cluster(ClusterConnection),
}

/// What one call sends.
#[derive(Clone, Copy)]
pub(crate) enum Request<'a> {
    Cmd(&'a Cmd),
    Pipe(&'a Pipeline),
    Script(&'a ScriptInvocation<'a>),
}

impl Conn {
    pub(crate) fn new(
        url: &QueueUrl,
        ca: Option<PathBuf>,
        call_timeout: Duration,
        connect_timeout: Duration,
    ) -> Result<Conn, RemoteError> {
        let client = url
            .client(ca.as_deref())
            .map_err(RemoteError::Unreachable)?;
        Ok(Conn {
            url: url.clone(),
            client,
            ca,
            cluster: None,
            probed: false,
            link: None,
            call_timeout,
            connect_timeout,
            round_trips: 0,
        })
    }

    pub(crate) fn round_trips(&self) -> u64 {
        self.round_trips
    }

    /// Whether calls go through the cluster client.
    pub(crate) fn is_cluster(&self) -> bool {
        self.cluster.is_some()
    }

    /// Connects now (the first call would otherwise), so that `connect` reports an unreachable
    /// server or a refused password at once.
    pub(crate) async fn open(&mut self) -> Result<(), RemoteError> {
        match tokio::time::timeout(self.call_timeout.max(self.connect_timeout), self.ensure()).await
        {
            Ok(r) => r.map(|_| ()),
            Err(_) => Err(RemoteError::Timeout("connect")),
        }
    }

    async fn ensure(&mut self) -> Result<&mut Link, RemoteError> {
        if self.link.is_none() {
            let link = match self.cluster.clone() {
                Some(cc) => Link::Cluster(self.connect_cluster(&cc).await?),
                None => {
                    let mut c = self.connect_plain().await?;
                    if !self.probed && self.probe_cluster(&mut c).await? {
                        let cc = self.cluster_client()?;
                        let link = Link::Cluster(self.connect_cluster(&cc).await?);
                        self.cluster = Some(cc);
                        link
                    } else {
                        Link::Plain(c)
                    }
                }
            };
            self.link = Some(link);
        }
        Ok(self.link.as_mut().expect("connected above"))
    }

    async fn connect_plain(&self) -> Result<MultiplexedConnection, RemoteError> {
        // Our own deadline is the one that counts (tokio::time::timeout around every call);
        // the crate's default response timeout (500 ms) would cut a large seed short.
        let cfg = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(None);
        self.client
            .get_multiplexed_async_connection_with_config(&cfg)
            .await
            .map_err(|e| self.unreachable(&e))
    }

    /// True when the server is a cluster node. A refused `INFO` (an ACL, a renamed command)
    /// leaves the answer to the first `MOVED`.
    async fn probe_cluster(&mut self, c: &mut MultiplexedConnection) -> Result<bool, RemoteError> {
        let info: RedisResult<String> = redis::cmd("INFO").arg("cluster").query_async(c).await;
        match info {
            Ok(text) => {
                self.probed = true;
                Ok(text.lines().any(|l| l.trim() == "cluster_enabled:1"))
            }
            Err(e) if matches!(e.kind(), ErrorKind::Server(_)) => {
                self.probed = true;
                Ok(false)
            }
            Err(e) => Err(self.unreachable(&e)),
        }
    }

    /// The cluster client, seeded with the URL's node: user, password and TLS come from the
    /// plain client's connection info, the CA (for the nodes it discovers) from the same file.
    fn cluster_client(&self) -> Result<ClusterClient, RemoteError> {
        if self.url.db != 0 {
            return Err(RemoteError::Protocol(format!(
                "{} is a Redis Cluster node, which has database 0 only: drop /{} from the \
                 queue URL",
                self.url, self.url.db
            )));
        }
        let info = self.client.get_connection_info().clone();
        let mut b = ClusterClientBuilder::new([info])
            .connection_timeout(self.connect_timeout)
            // Per attempt and overall (redirections included); our call timeout is the same.
            .response_timeout(self.call_timeout);
        if let Some(path) = self.ca.as_ref().filter(|_| self.url.tls) {
            let pem = std::fs::read(path).map_err(|e| {
                RemoteError::Unreachable(format!("cannot read the CA file {}: {e}", path.display()))
            })?;
            b = b.certs(redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(pem),
            });
        }
        b.build().map_err(|e| self.unreachable(&e))
    }

    async fn connect_cluster(&self, cc: &ClusterClient) -> Result<ClusterConnection, RemoteError> {
        cc.get_async_connection()
            .await
            .map_err(|e| self.unreachable(&e))
    }

    /// Sends one request (one round trip) under the call timeout.
    pub(crate) async fn call<T: FromRedisValue>(
        &mut self,
        what: &'static str,
        req: Request<'_>,
    ) -> Result<T, RemoteError> {
        self.round_trips += 1;
        let limit = self.call_timeout;
        match tokio::time::timeout(limit, self.attempt(req)).await {
            Ok(r) => r,
            Err(_) => {
                // A late reply must not be read as the answer to the next call.
                self.link = None;
                Err(RemoteError::Timeout(what))
            }
        }
    }

    async fn attempt<T: FromRedisValue>(&mut self, req: Request<'_>) -> Result<T, RemoteError> {
        let link = self.ensure().await?;
        match dispatch(link, req).await {
            Ok(v) => Ok(v),
            // A cluster node that the probe missed: the command did not run (MOVED says so),
            // so it is sent again through the cluster client.
            Err(e) if is_moved(&e) && self.cluster.is_none() => {
                self.cluster = Some(self.cluster_client()?);
                self.link = None;
                let link = self.ensure().await?;
                dispatch(link, req).await.map_err(|e| self.classify(&e))
            }
            Err(e) => Err(self.classify(&e)),
        }
    }

    fn classify(&mut self, e: &RedisError) -> RemoteError {
        if e.is_io_error()
            || e.is_connection_dropped()
            || e.is_connection_refusal()
            || e.is_timeout()
            || e.is_cluster_error()
            || e.kind() == ErrorKind::ClusterConnectionNotFound
        {
            self.link = None;
            return self.unreachable(e);
        }
        RemoteError::Protocol(self.url.scrub(&e.to_string()))
    }

    fn unreachable(&self, e: &RedisError) -> RemoteError {
        let mut msg = self.url.scrub(&e.to_string());
        if e.kind() == redis::ErrorKind::AuthenticationFailed || msg.contains("WRONGPASS") {
            msg = format!(
                "authentication failed for {}: {msg}",
                self.url.user.as_deref().unwrap_or("default")
            );
        } else if self.url.tls && msg.to_ascii_lowercase().contains("certificate") {
            msg.push_str(" (for a private CA, set SHARDEX_REDIS_CA to its PEM file)");
        }
        RemoteError::Unreachable(msg)
    }
}

fn is_moved(e: &RedisError) -> bool {
    e.kind() == ErrorKind::Server(ServerErrorKind::Moved)
}

async fn dispatch<T: FromRedisValue>(link: &mut Link, req: Request<'_>) -> RedisResult<T> {
    match link {
        Link::Plain(c) => send(c, req).await,
        Link::Cluster(c) => send(c, req).await,
    }
}

async fn send<T: FromRedisValue, C: ConnectionLike + Send>(
    c: &mut C,
    req: Request<'_>,
) -> RedisResult<T> {
    match req {
        Request::Cmd(cmd) => cmd.query_async(c).await,
        Request::Pipe(p) => p.query_async(c).await,
        Request::Script(s) => s.invoke_async(c).await,
    }
}
