//! Connecting to NATS: servers, credentials, TLS. Secrets never leave this module in
//! readable form: [`Secret`]'s `Debug` prints `***`, server URLs have their user info
//! redacted, and connect errors name the connector and the servers, never a credential.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use async_nats::{ConnectErrorKind, ConnectOptions};

/// A password or token. `Debug` and `Display` print `***`; read it with
/// [`expose`](Secret::expose) where it is handed to the client.
///
/// ```
/// use pipeline_connectors::nats::Secret;
/// let s = Secret::new("hunter2");
/// assert_eq!(format!("{s:?} {s}"), "*** ***");
/// assert_eq!(s.expose(), "hunter2");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// How the client authenticates.
#[derive(Debug, Clone, Default)]
pub enum Auth {
    /// No credentials.
    #[default]
    None,
    /// A user and password (`--user` / `--pass` on the server).
    UserPassword {
        /// The user name (not secret).
        user: String,
        /// The password.
        password: Secret,
    },
    /// A token (`--auth` on the server).
    Token(Secret),
    /// A `.creds` file (a user JWT and its NKey seed), read at connect time.
    CredentialsFile(PathBuf),
}

/// TLS through rustls (no OpenSSL). The server's certificate is checked against the
/// system roots plus `root_certificates`.
#[derive(Debug, Clone, Default)]
pub struct Tls {
    /// Extra root certificates (PEM files), e.g. a private CA.
    pub root_certificates: Vec<PathBuf>,
    /// A client certificate and its key (PEM files), for mutual TLS.
    pub client_certificate: Option<(PathBuf, PathBuf)>,
}

/// Where and how to connect.
///
/// ```
/// use pipeline_connectors::nats::{Auth, NatsConfig, Secret};
/// let config = NatsConfig::new("nats://app:hunter2@127.0.0.1:4222")
///     .with_auth(Auth::Token(Secret::new("s3cr3t")));
/// let shown = format!("{config:?}");
/// assert!(!shown.contains("hunter2") && !shown.contains("s3cr3t"));
/// ```
#[derive(Clone)]
pub struct NatsConfig {
    /// Server addresses (`nats://host:port`, `tls://host:port` or `host:port`).
    pub servers: Vec<String>,
    /// Credentials.
    pub auth: Auth,
    /// TLS, if required.
    pub tls: Option<Tls>,
    /// The connection name the server shows (not secret).
    pub client_name: Option<String>,
    /// Bound on the initial connect (also per reconnect attempt). Default 5 s.
    pub connect_timeout: Duration,
    /// Bound on JetStream API requests (stream and consumer info, publish acks).
    /// Default 5 s.
    pub request_timeout: Duration,
    /// The longest wait between reconnect attempts (they start at once and double).
    /// Default 2 s, as the other NATS clients.
    pub reconnect_max_delay: Duration,
}

impl fmt::Debug for NatsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsConfig")
            .field("servers", &redacted_servers(&self.servers))
            .field("auth", &self.auth)
            .field("tls", &self.tls)
            .field("client_name", &self.client_name)
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("reconnect_max_delay", &self.reconnect_max_delay)
            .finish()
    }
}

impl NatsConfig {
    /// One server, no credentials, no TLS.
    pub fn new(server: impl Into<String>) -> Self {
        NatsConfig {
            servers: vec![server.into()],
            auth: Auth::None,
            tls: None,
            client_name: None,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
            reconnect_max_delay: Duration::from_secs(2),
        }
    }

    /// Adds a server to try.
    pub fn with_server(mut self, server: impl Into<String>) -> Self {
        self.servers.push(server.into());
        self
    }

    /// Sets the credentials.
    pub fn with_auth(mut self, auth: Auth) -> Self {
        self.auth = auth;
        self
    }

    /// Requires TLS.
    pub fn with_tls(mut self, tls: Tls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Sets the connection name.
    pub fn with_client_name(mut self, name: impl Into<String>) -> Self {
        self.client_name = Some(name.into());
        self
    }

    /// Sets the connect timeout.
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets the JetStream request timeout.
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Sets the longest wait between reconnect attempts.
    pub fn with_reconnect_max_delay(mut self, delay: Duration) -> Self {
        self.reconnect_max_delay = delay;
        self
    }

    /// The servers with any `user:password@` replaced by `***@`, for messages.
    pub fn redacted_servers(&self) -> String {
        redacted_servers(&self.servers)
    }

    /// Connects, failing within about `connect_timeout` (no retry loop on the first
    /// connect: a wrong password fails at once). After that the client reconnects by
    /// itself, with backoff.
    ///
    /// # Errors
    ///
    /// [`NatsError::Connect`], naming `connector` and the (redacted) servers.
    pub async fn connect(&self, connector: &str) -> Result<async_nats::Client, NatsError> {
        let fail = |kind: ConnectFailure, reason: String| NatsError::Connect {
            connector: connector.to_owned(),
            servers: self.redacted_servers(),
            kind,
            reason,
        };
        let mut options = match &self.auth {
            Auth::None => ConnectOptions::new(),
            Auth::UserPassword { user, password } => {
                ConnectOptions::with_user_and_password(user.clone(), password.expose().to_owned())
            }
            Auth::Token(token) => ConnectOptions::with_token(token.expose().to_owned()),
            Auth::CredentialsFile(path) => ConnectOptions::with_credentials_file(path)
                .await
                // The io error names the file, never its contents.
                .map_err(|e| {
                    fail(
                        ConnectFailure::Credentials,
                        format!("cannot read credentials file {}: {e}", path.display()),
                    )
                })?,
        };
        let max_delay = self.reconnect_max_delay;
        options = options
            .connection_timeout(self.connect_timeout)
            .request_timeout(Some(self.request_timeout))
            .reconnect_delay_callback(move |attempts| {
                let doublings = attempts.saturating_sub(1).min(20) as u32;
                Duration::from_millis(1 << doublings).min(max_delay)
            });
        if let Some(name) = &self.client_name {
            options = options.name(name);
        }
        if let Some(tls) = &self.tls {
            options = options.require_tls(true);
            for root in &tls.root_certificates {
                options = options.add_root_certificates(root.clone());
            }
            if let Some((cert, key)) = &tls.client_certificate {
                options = options.add_client_certificate(cert.clone(), key.clone());
            }
        }
        let servers: Vec<async_nats::ServerAddr> = self
            .servers
            .iter()
            .map(|s| s.parse())
            .collect::<Result<_, _>>()
            .map_err(|e: std::io::Error| {
                fail(ConnectFailure::Address, format!("bad server address: {e}"))
            })?;
        // The client bounds each attempt by `connection_timeout`; this bounds the whole
        // initial connect over every server.
        let total = self.connect_timeout * (servers.len() as u32).max(1) + Duration::from_secs(1);
        match tokio::time::timeout(total, options.connect(servers)).await {
            Err(_) => Err(fail(
                ConnectFailure::TimedOut,
                format!("no connection within {total:?}"),
            )),
            Ok(Err(e)) => {
                let kind = match e.kind() {
                    ConnectErrorKind::AuthorizationViolation | ConnectErrorKind::Authentication => {
                        ConnectFailure::Unauthorized
                    }
                    ConnectErrorKind::TimedOut => ConnectFailure::TimedOut,
                    ConnectErrorKind::Tls => ConnectFailure::Tls,
                    // rustls' verdict on the server's certificate arrives as an I/O error.
                    ConnectErrorKind::Io if e.to_string().contains("certificate") => {
                        ConnectFailure::Tls
                    }
                    ConnectErrorKind::ServerParse | ConnectErrorKind::Dns => {
                        ConnectFailure::Address
                    }
                    _ => ConnectFailure::Io,
                };
                Err(fail(kind, e.to_string()))
            }
            Ok(Ok(client)) => Ok(client),
        }
    }
}

fn redacted_servers(servers: &[String]) -> String {
    servers
        .iter()
        .map(|s| redact_url(s))
        .collect::<Vec<_>>()
        .join(",")
}

/// `scheme://user:pass@host` -> `scheme://***@host`.
fn redact_url(url: &str) -> String {
    let start = url.find("://").map_or(0, |i| i + 3);
    match url[start..].rfind('@') {
        Some(at) => format!("{}***{}", &url[..start], &url[start + at..]),
        None => url.to_owned(),
    }
}

/// Why a connect failed, for callers that match on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectFailure {
    /// The server rejected the credentials (wrong password, token or creds).
    Unauthorized,
    /// The credentials file could not be read or parsed.
    Credentials,
    /// No connection within the timeout.
    TimedOut,
    /// The TLS handshake or configuration failed.
    Tls,
    /// A server address could not be parsed or resolved.
    Address,
    /// Any other I/O failure (connection refused, reset).
    Io,
}

/// Errors of the NATS connectors. Messages name the connector and never carry a secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NatsError {
    /// The connection could not be made.
    #[error("nats connector `{connector}`: cannot connect to {servers} ({kind:?}): {reason}")]
    Connect {
        /// The connector's name.
        connector: String,
        /// The servers tried, user info redacted.
        servers: String,
        /// What kind of failure.
        kind: ConnectFailure,
        /// The client's message.
        reason: String,
    },
    /// Creating or binding the stream or consumer failed.
    #[error("nats connector `{connector}`: {what}: {reason}")]
    Setup {
        /// The connector's name.
        connector: String,
        /// What was being set up.
        what: String,
        /// The server's or client's message.
        reason: String,
    },
}

impl NatsError {
    /// The connect failure's kind, if this is one.
    pub fn connect_failure(&self) -> Option<ConnectFailure> {
        match self {
            NatsError::Connect { kind, .. } => Some(*kind),
            NatsError::Setup { .. } => None,
        }
    }

    pub(crate) fn setup(
        connector: &str,
        what: impl Into<String>,
        reason: impl fmt::Display,
    ) -> Self {
        NatsError::Setup {
            connector: connector.to_owned(),
            what: what.into(),
            reason: reason.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_user_info() {
        assert_eq!(redact_url("nats://a:b@h:4222"), "nats://***@h:4222");
        assert_eq!(redact_url("a:b@h:4222"), "***@h:4222");
        assert_eq!(redact_url("nats://h:4222"), "nats://h:4222");
    }

    #[test]
    fn debug_hides_secrets() {
        let c = NatsConfig::new("nats://u:pw1@h").with_auth(Auth::UserPassword {
            user: "u".into(),
            password: Secret::new("pw2"),
        });
        let shown = format!("{c:?}");
        assert!(!shown.contains("pw1") && !shown.contains("pw2"), "{shown}");
    }
}
