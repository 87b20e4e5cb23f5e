//! One connection to Redis with the rules every call follows: a deadline on each call (a CI
//! job must never hang on a dead Redis), errors without the password, a reconnect on the next
//! call after the connection broke, and a count of round trips.

use std::path::PathBuf;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{
    AsyncConnectionConfig, Client, Cmd, FromRedisValue, Pipeline, RedisError, ScriptInvocation,
};

use super::{QueueUrl, RemoteError};

pub(crate) struct Conn {
    url: QueueUrl,
    client: Client,
    conn: Option<MultiplexedConnection>,
    call_timeout: Duration,
    connect_timeout: Duration,
    round_trips: u64,
}

/// What one call sends.
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
            conn: None,
            call_timeout,
            connect_timeout,
            round_trips: 0,
        })
    }

    pub(crate) fn round_trips(&self) -> u64 {
        self.round_trips
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

    async fn ensure(&mut self) -> Result<&mut MultiplexedConnection, RemoteError> {
        if self.conn.is_none() {
            // Our own deadline is the one that counts (tokio::time::timeout around every call);
            // the crate's default response timeout (500 ms) would cut a large seed short.
            let cfg = AsyncConnectionConfig::new()
                .set_connection_timeout(Some(self.connect_timeout))
                .set_response_timeout(None);
            let c = self
                .client
                .get_multiplexed_async_connection_with_config(&cfg)
                .await
                .map_err(|e| self.unreachable(&e))?;
            self.conn = Some(c);
        }
        Ok(self.conn.as_mut().expect("connected above"))
    }

    /// Sends one request (one round trip) under the call timeout.
    pub(crate) async fn call<T: FromRedisValue>(
        &mut self,
        what: &'static str,
        req: Request<'_>,
    ) -> Result<T, RemoteError> {
        self.round_trips += 1;
        let limit = self.call_timeout;
        let fut = async {
            let c = self.ensure().await?;
            let r = match req {
                Request::Cmd(cmd) => cmd.query_async(c).await,
                Request::Pipe(p) => p.query_async(c).await,
                Request::Script(s) => s.invoke_async(c).await,
            };
            r.map_err(|e| self.classify(&e))
        };
        match tokio::time::timeout(limit, fut).await {
            Ok(r) => r,
            Err(_) => {
                // A late reply must not be read as the answer to the next call.
                self.conn = None;
                Err(RemoteError::Timeout(what))
            }
        }
    }

    fn classify(&mut self, e: &RedisError) -> RemoteError {
        if e.is_io_error()
            || e.is_connection_dropped()
            || e.is_connection_refusal()
            || e.is_timeout()
        {
            self.conn = None;
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
