//! Where the server is and how to reach it: the URL (with its credentials), TLS roots and
//! timeouts. The password never leaves this module in any printed form.

use std::fmt;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, ConnectionAddr, ConnectionInfo, IntoConnectionInfo};

use super::error::ConnectorError;

/// How to connect to one Redis server.
///
/// The URL takes the usual forms: `redis://host:port/db`, `redis://:password@host`,
/// `redis://user:password@host` (an ACL user), `rediss://...` for TLS (rustls; the
/// system's roots unless [`with_root_cert_pem`](Self::with_root_cert_pem) names a CA).
///
/// `Debug` and `Display` show the URL with the password replaced by `***`; the password
/// is kept only inside the client and never appears in logs, spans, errors or dead
/// letters.
///
/// ```
/// use pipeline_connectors::redis::RedisConfig;
///
/// let config = RedisConfig::new("redis://app:s3cret@127.0.0.1:6379/0").unwrap();
/// assert_eq!(config.to_string(), "redis://app:***@127.0.0.1:6379/0");
/// assert!(!format!("{config:?}").contains("s3cret"));
/// ```
#[derive(Clone)]
pub struct RedisConfig {
    info: ConnectionInfo,
    root_cert_pem: Option<Vec<u8>>,
    connect_timeout: Duration,
    response_timeout: Duration,
}

impl RedisConfig {
    /// Parses a `redis://` or `rediss://` URL.
    ///
    /// # Errors
    ///
    /// [`ConnectorError::Config`] if the URL cannot be parsed; the message never contains the
    /// URL itself (it may hold a password).
    pub fn new(url: &str) -> Result<Self, ConnectorError> {
        let info = url
            .into_connection_info()
            .map_err(|e| ConnectorError::Config(format!("invalid redis URL: {}", e.kind_name())))?;
        Ok(RedisConfig {
            info,
            root_cert_pem: None,
            connect_timeout: Duration::from_secs(2),
            response_timeout: Duration::from_secs(2),
        })
    }

    /// Trusts this CA (PEM) for `rediss://` instead of the system's roots.
    pub fn with_root_cert_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.root_cert_pem = Some(pem.into());
        self
    }

    /// How long establishing a connection (TCP, TLS, AUTH) may take. Default 2 s.
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long a non-blocking command may wait for its reply. Default 2 s. Blocking
    /// reads get their own connection whose timeout is the block time plus this.
    pub fn with_response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout;
        self
    }

    /// The response timeout of non-blocking commands.
    pub fn response_timeout(&self) -> Duration {
        self.response_timeout
    }

    /// Whether the connection uses TLS.
    pub fn is_tls(&self) -> bool {
        matches!(self.info.addr(), ConnectionAddr::TcpTls { .. })
    }

    pub(crate) fn client(&self) -> Result<Client, ConnectorError> {
        let result = if self.is_tls() {
            // redis enables no rustls provider of its own; ours is ring. Installing fails
            // harmlessly when the host installed one already.
            let _ = rustls::crypto::ring::default_provider().install_default();
            Client::build_with_tls(
                self.info.clone(),
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: self.root_cert_pem.clone(),
                },
            )
        } else {
            Client::open(self.info.clone())
        };
        result.map_err(|e| ConnectorError::Config(format!("redis client for {self}: {e}")))
    }

    /// Opens a multiplexed connection whose commands time out after `response_timeout`.
    pub(crate) async fn connect(
        &self,
        client: &Client,
        response_timeout: Duration,
    ) -> Result<MultiplexedConnection, redis::RedisError> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(response_timeout));
        client
            .get_multiplexed_async_connection_with_config(&config)
            .await
    }
}

/// A short name for an error kind, for messages that must not echo the input.
trait KindName {
    fn kind_name(&self) -> String;
}

impl KindName for redis::RedisError {
    fn kind_name(&self) -> String {
        format!("{:?}", self.kind())
    }
}

impl fmt::Display for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let settings = self.info.redis_settings();
        let scheme = match self.info.addr() {
            ConnectionAddr::Tcp(..) => "redis",
            ConnectionAddr::TcpTls { .. } => "rediss",
            _ => "redis+unix",
        };
        write!(f, "{scheme}://")?;
        match (settings.username(), settings.password()) {
            (Some(user), Some(_)) => write!(f, "{user}:***@")?,
            (Some(user), None) => write!(f, "{user}@")?,
            (None, Some(_)) => f.write_str(":***@")?,
            (None, None) => {}
        }
        write!(f, "{}/{}", self.info.addr(), settings.db())
    }
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &format_args!("{self}"))
            .field(
                "root_cert_pem",
                &self.root_cert_pem.as_ref().map(|_| "<set>"),
            )
            .field("connect_timeout", &self.connect_timeout)
            .field("response_timeout", &self.response_timeout)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_is_redacted_everywhere() -> Result<(), ConnectorError> {
        for (url, shown) in [
            ("redis://127.0.0.1:6379", "redis://127.0.0.1:6379/0"),
            (
                "redis://:hunter2@127.0.0.1:6379/3",
                "redis://:***@127.0.0.1:6379/3",
            ),
            (
                "redis://bob:hunter2@localhost:1/0",
                "redis://bob:***@localhost:1/0",
            ),
            (
                "rediss://bob:hunter2@localhost:1/0",
                "rediss://bob:***@localhost:1/0",
            ),
        ] {
            let config = RedisConfig::new(url)?;
            assert_eq!(config.to_string(), shown);
            assert!(!format!("{config:?}").contains("hunter2"));
        }
        Ok(())
    }

    #[test]
    fn bad_url_error_does_not_echo_it() {
        let err = RedisConfig::new("http://bob:hunter2@x")
            .err()
            .map(|e| e.to_string());
        assert!(
            err.as_deref().is_some_and(|e| !e.contains("hunter2")),
            "{err:?}"
        );
    }
}
