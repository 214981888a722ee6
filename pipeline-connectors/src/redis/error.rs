//! The connector's errors. Each names the connector and shows the server's URL with the
//! password redacted; none ever holds the password.

/// What went wrong talking to Redis.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectorError {
    /// The configuration is unusable (a bad URL, bad TLS roots). Permanent.
    #[error("{0}")]
    Config(String),
    /// The server refused the credentials (`WRONGPASS`, `NOAUTH`, `NOPERM`). Permanent
    /// until the configuration changes: the runtime keeps backing off, and every pull
    /// says so again.
    #[error(
        "redis {connector}: authentication failed at {target} (wrong password or ACL user; this does not fix itself): {detail}"
    )]
    Auth {
        /// `source `name`` or `sink `name``.
        connector: String,
        /// The server's URL, password redacted.
        target: String,
        /// The server's answer.
        detail: String,
    },
    /// A transient failure (connection refused or dropped, a timeout, `LOADING` while the
    /// server reads its AOF): the connection is dropped and made anew on the next call.
    #[error("redis {connector}: {op} at {target} failed: {detail}")]
    Transient {
        /// `source `name`` or `sink `name``.
        connector: String,
        /// The command or step that failed.
        op: &'static str,
        /// The server's URL, password redacted.
        target: String,
        /// What the client reported.
        detail: String,
        /// The server's error code, if it sent one (`LOADING`, `NOGROUP`, ...).
        code: Option<String>,
    },
    /// The server answered something this connector does not understand.
    #[error("redis {connector}: unexpected reply to {op}: {detail}")]
    Protocol {
        /// `source `name`` or `sink `name``.
        connector: String,
        /// The command.
        op: &'static str,
        /// What was unexpected.
        detail: String,
    },
}

impl ConnectorError {
    /// Whether retrying can help without a configuration change.
    pub fn is_transient(&self) -> bool {
        matches!(self, ConnectorError::Transient { .. })
    }

    /// The server's error code, if any.
    pub fn code(&self) -> Option<&str> {
        match self {
            ConnectorError::Transient { code, .. } => code.as_deref(),
            _ => None,
        }
    }

    /// Classifies a client error from `op` on `target`.
    pub(crate) fn from_redis(
        connector: &str,
        op: &'static str,
        target: &str,
        e: &redis::RedisError,
    ) -> Self {
        let auth = matches!(e.kind(), redis::ErrorKind::AuthenticationFailed)
            || matches!(e.code(), Some("WRONGPASS" | "NOAUTH" | "NOPERM"));
        if auth {
            ConnectorError::Auth {
                connector: connector.to_owned(),
                target: target.to_owned(),
                detail: e.to_string(),
            }
        } else {
            ConnectorError::Transient {
                connector: connector.to_owned(),
                op,
                target: target.to_owned(),
                detail: e.to_string(),
                code: e.code().map(str::to_owned),
            }
        }
    }

    pub(crate) fn protocol(connector: &str, op: &'static str, detail: impl Into<String>) -> Self {
        ConnectorError::Protocol {
            connector: connector.to_owned(),
            op,
            detail: detail.into(),
        }
    }
}

/// Whether the connection that returned `e` must be dropped (and made anew next time)
/// rather than reused. Server errors on a live connection (`LOADING`, `BUSYGROUP`) leave
/// the connection usable; anything else does not.
pub(crate) fn breaks_connection(e: &redis::RedisError) -> bool {
    e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_unrecoverable_error()
        || matches!(e.kind(), redis::ErrorKind::AuthenticationFailed)
}
