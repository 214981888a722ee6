//! One lazily made connection: opened on first use, dropped when an error shows it is
//! broken, and opened anew on the next call. Nothing is ever replayed: a command whose
//! connection broke fails, and the caller decides (a source pulls again, a sink fails
//! the batch, the acker retries its idempotent `XACK`).

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{Client, FromRedisValue};

use super::config::RedisConfig;
use super::error::{ConnectorError, breaks_connection};

pub(crate) struct Conn {
    config: RedisConfig,
    client: Client,
    conn: Option<MultiplexedConnection>,
    response_timeout: Duration,
    /// `source `name`` or `sink `name``, for errors.
    connector: String,
    target: String,
    /// Set when a connection was (re)made since the last `take_reconnected`.
    reconnected: bool,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("target", &self.target)
            .field("connected", &self.conn.is_some())
            .finish()
    }
}

impl Conn {
    pub(crate) fn new(
        config: &RedisConfig,
        connector: String,
        response_timeout: Duration,
    ) -> Result<Self, ConnectorError> {
        Ok(Conn {
            client: config.client()?,
            config: config.clone(),
            conn: None,
            response_timeout,
            target: config.to_string(),
            connector,
            reconnected: false,
        })
    }

    pub(crate) fn connector(&self) -> &str {
        &self.connector
    }

    /// Whether a new connection was made since the last call.
    pub(crate) fn take_reconnected(&mut self) -> bool {
        std::mem::take(&mut self.reconnected)
    }

    /// The live connection, made if needed.
    pub(crate) async fn get(&mut self) -> Result<MultiplexedConnection, ConnectorError> {
        if let Some(c) = &self.conn {
            return Ok(c.clone());
        }
        match self
            .config
            .connect(&self.client, self.response_timeout)
            .await
        {
            Ok(c) => {
                self.conn = Some(c.clone());
                self.reconnected = true;
                Ok(c)
            }
            Err(e) => Err(ConnectorError::from_redis(
                &self.connector,
                "connect",
                &self.target,
                &e,
            )),
        }
    }

    /// Classifies `e` from `op`, dropping the connection when `e` broke it.
    pub(crate) fn failed(&mut self, op: &'static str, e: &redis::RedisError) -> ConnectorError {
        if breaks_connection(e) {
            self.conn = None;
        }
        ConnectorError::from_redis(&self.connector, op, &self.target, e)
    }

    pub(crate) async fn cmd<T: FromRedisValue>(
        &mut self,
        op: &'static str,
        cmd: &redis::Cmd,
    ) -> Result<T, ConnectorError> {
        let mut c = self.get().await?;
        match cmd.query_async(&mut c).await {
            Ok(v) => Ok(v),
            Err(e) => Err(self.failed(op, &e)),
        }
    }

    pub(crate) async fn pipe<T: FromRedisValue>(
        &mut self,
        op: &'static str,
        pipe: &redis::Pipeline,
    ) -> Result<T, ConnectorError> {
        let mut c = self.get().await?;
        match pipe.query_async(&mut c).await {
            Ok(v) => Ok(v),
            Err(e) => Err(self.failed(op, &e)),
        }
    }
}
