//! One authenticated AMQP connection to the IoT Hub service endpoint, and the C2D sender (plus
//! the feedback receiver) on it.
//!
//! Authentication is CBS by default: SASL ANONYMOUS, then an IoT Hub service SAS token (`sr` =
//! HostName, HMAC keyed with the base64-decoded policy key) put on `$cbs` by [`CbsClient`] (any
//! 2xx accepted) and put again at 80% of its lifetime on the same links, so the sender never
//! detaches for a renewal. With [`AuthMethod::SaslPlain`] (what the Java service SDK did) the token
//! is the SASL PLAIN password of `<policy>@sas.root.<hub>`; it cannot be renewed on a connection,
//! so the driver reconnects before it expires.
//!
//! Every step is bounded by `operation_timeout`; a failure closes what was opened. Errors carry the
//! address dialled but never a token or key.

use super::transport::{self, BoxIo, Proxy, WS_PATH};
use super::{AuthMethod, C2dMetrics, C2dOptions};
use crate::config::connector::TransportType;
use crate::config::Secret;
use crate::iothub::cbs::{CbsClient, CbsError, SAS_TOKEN_TYPE};
use crate::iothub::feedback::{run_feedback, FeedbackBatch, FeedbackExit, FEEDBACK_ADDRESS};
use crate::iothub::sas::SasError;
use fe2o3_amqp::connection::ConnectionHandle;
use fe2o3_amqp::link::{Receiver, Sender};
use fe2o3_amqp::sasl_profile::SaslProfile;
use fe2o3_amqp::session::SessionHandle;
use fe2o3_amqp::{Connection, Session};
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Target address of the C2D sender link.
pub const DEVICEBOUND_ADDRESS: &str = "/messages/devicebound";

/// Why connecting failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("invalid endpoint {0:?}: expected amqp://host:port, amqps://host[:port], ws://host:port[/path] or wss://host[:port][/path]")]
    BadEndpoint(String),
    #[error("invalid proxy URL: expected http://[user:password@]host[:port]")]
    BadProxy,
    #[error("the proxy refused the tunnel: {0}")]
    ProxyRefused(String),
    #[error("TCP connect to {addr} failed: {msg}")]
    Io { addr: String, msg: String },
    #[error("TLS setup failed: {0}")]
    Tls(String),
    #[error("WebSocket upgrade failed: {0}")]
    WebSocket(String),
    #[error("AMQP {stage} failed: {msg}")]
    Amqp { stage: &'static str, msg: String },
    #[error("IoT Hub refused the SAS token: {0}")]
    Auth(CbsError),
    #[error("IoT Hub refused the SASL PLAIN credentials (SASL outcome {0})")]
    SaslRefused(String),
    #[error("could not create the SAS token: {0}")]
    Token(SasError),
    #[error("timed out after {1:?} while {0}")]
    Timeout(&'static str, Duration),
}

impl ConnectError {
    /// Credentials problem (as opposed to network trouble).
    pub fn is_auth(&self) -> bool {
        matches!(self, ConnectError::Auth(e) if e.is_refused())
            || matches!(self, ConnectError::Token(_) | ConnectError::SaslRefused(_))
    }

    /// The error class: refused credentials and impossible settings are fatal, the rest
    /// (network, TLS handshake, timeouts, proxy) is retried.
    pub fn class(&self) -> super::ErrorClass {
        match self {
            e if e.is_auth() => super::ErrorClass::Fatal,
            ConnectError::BadEndpoint(_) | ConnectError::BadProxy => super::ErrorClass::Fatal,
            _ => super::ErrorClass::Retriable,
        }
    }
}

/// Where and how to dial.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// `Some(path)`: AMQP over WebSockets to that path.
    pub websocket: Option<String>,
}

impl Endpoint {
    /// Parses `amqp://host:port`, `amqps://host[:port]` (a trailing path is ignored), or
    /// `ws://host:port[/path]`, `wss://host[:port][/path]` (path default `/$iothub/websocket`).
    pub fn parse(url: &str) -> Result<Endpoint, ConnectError> {
        let bad = || ConnectError::BadEndpoint(url.to_string());
        let (scheme, rest) = url.split_once("://").ok_or_else(bad)?;
        let (tls, ws) = match scheme.to_ascii_lowercase().as_str() {
            "amqp" => (false, false),
            "amqps" => (true, false),
            "ws" => (false, true),
            "wss" => (true, true),
            _ => return Err(bad()),
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let (host, port) = if let Some(stripped) = authority.strip_prefix('[') {
            let (h, p) = stripped.split_once(']').ok_or_else(bad)?;
            (h.to_string(), p.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (authority.to_string(), None),
            }
        };
        if host.is_empty() {
            return Err(bad());
        }
        let port = match port {
            Some(p) => p.parse().map_err(|_| bad())?,
            None if ws && tls => 443,
            None if ws => 80,
            None if tls => 5671,
            None => 5672,
        };
        let websocket = ws.then(|| match path.trim_end_matches('/') {
            "" => WS_PATH.to_string(),
            p => p.to_string(),
        });
        Ok(Endpoint {
            tls,
            host,
            port,
            websocket,
        })
    }

    /// The endpoint for these options: the custom one or `amqps://<HostName>:5671`; with
    /// `AmqpWebSockets`, `wss://<HostName>:443/$iothub/websocket` (an `amqp(s)://` custom
    /// endpoint then means WebSockets to that host and port).
    pub fn for_options(opts: &C2dOptions) -> Result<Endpoint, ConnectError> {
        let ws = opts.transport == TransportType::AmqpWebSockets;
        let mut ep = match &opts.endpoint {
            Some(e) => Endpoint::parse(e)?,
            None => Endpoint {
                tls: true,
                host: opts.connection.host().to_string(),
                port: opts
                    .connection
                    .port()
                    .unwrap_or(if ws { 443 } else { 5671 }),
                websocket: None,
            },
        };
        if ws && ep.websocket.is_none() {
            ep.websocket = Some(WS_PATH.to_string());
        }
        Ok(ep)
    }

    /// What is dialled, for logs and errors (`amqps://h:5671`, `wss://h:443/$iothub/websocket`).
    pub fn url(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        match &self.websocket {
            Some(path) => format!(
                "{}://{host}:{}{path}",
                if self.tls { "wss" } else { "ws" },
                self.port
            ),
            None => format!(
                "{}://{host}:{}",
                if self.tls { "amqps" } else { "amqp" },
                self.port
            ),
        }
    }
}

pub(crate) async fn with_timeout<T>(
    what: &'static str,
    d: Duration,
    f: impl Future<Output = T>,
) -> Result<T, ConnectError> {
    tokio::time::timeout(d, f)
        .await
        .map_err(|_| ConnectError::Timeout(what, d))
}

/// Dials the endpoint: TCP (through the proxy for WebSockets when one is set), TLS, WebSocket.
async fn dial(opts: &C2dOptions, ep: &Endpoint) -> Result<BoxIo, ConnectError> {
    let t = opts.operation_timeout;
    let proxy = match &ep.websocket {
        Some(_) => Proxy::resolve(opts.proxy.as_deref(), &ep.host)?,
        None => None,
    };
    let tcp = match &proxy {
        Some(p) => {
            with_timeout("opening the proxy tunnel", t, p.tunnel(&ep.host, ep.port)).await??
        }
        None => {
            let addr = format!("{}:{}", ep.host, ep.port);
            with_timeout("connecting", t, tokio::net::TcpStream::connect(&addr))
                .await?
                .map_err(|e| ConnectError::Io {
                    addr: ep.url(),
                    msg: e.to_string(),
                })?
        }
    };
    let _ = tcp.set_nodelay(true);
    let mut io: BoxIo = Box::new(tcp);
    if ep.tls {
        io = with_timeout(
            "the TLS handshake",
            t,
            transport::start_tls(io, &ep.host, opts.ca_pem.as_deref()),
        )
        .await??;
    }
    if ep.websocket.is_some() {
        io = with_timeout(
            "the WebSocket upgrade",
            t,
            transport::websocket(io, &ep.url()),
        )
        .await??;
    }
    Ok(io)
}

/// An authenticated connection with its session and `$cbs` links.
pub struct AmqpLink {
    pub connection: ConnectionHandle<()>,
    pub session: SessionHandle<()>,
    /// `None` with SASL PLAIN (the token went in the SASL exchange).
    pub cbs: Option<CbsClient>,
    /// Token expiry (epoch seconds).
    pub token_expiry: u64,
}

impl std::fmt::Debug for AmqpLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpLink")
            .field("token_expiry", &self.token_expiry)
            .finish()
    }
}

impl AmqpLink {
    /// Dials, opens connection and session, and authenticates: a service token put on `$cbs`, or
    /// given as the SASL PLAIN password.
    pub async fn open(opts: &C2dOptions) -> Result<AmqpLink, ConnectError> {
        let ep = Endpoint::for_options(opts)?;
        let (profile, plain_expiry) = match opts.auth {
            AuthMethod::Cbs => (SaslProfile::Anonymous, None),
            AuthMethod::SaslPlain => {
                let (token, expiry) = opts
                    .connection
                    .token(opts.token_ttl)
                    .map_err(ConnectError::Token)?;
                let hub = opts
                    .hub_name
                    .clone()
                    .unwrap_or_else(|| opts.connection.hub_name().to_string());
                let profile = SaslProfile::Plain {
                    username: format!("{}@sas.root.{hub}", opts.connection.key_name),
                    password: token.expose().to_string(),
                };
                (profile, Some(expiry))
            }
        };
        let t = opts.operation_timeout;
        let io = dial(opts, &ep).await?;
        let builder = Connection::builder()
            .container_id(opts.container_id.clone())
            .hostname(opts.connection.host())
            .scheme("amqp")
            .sasl_profile(profile);
        let mut connection = with_timeout(
            "opening the AMQP connection",
            t,
            builder.open_with_stream(io),
        )
        .await?
        .map_err(|e| match e {
            fe2o3_amqp::connection::OpenError::SaslError { code, .. } => {
                ConnectError::SaslRefused(format!("{code:?}"))
            }
            e => ConnectError::Amqp {
                stage: "open",
                msg: e.to_string(),
            },
        })?;
        let mut session =
            match with_timeout("beginning the session", t, Session::begin(&mut connection)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    let _ = tokio::time::timeout(Duration::from_secs(2), connection.close()).await;
                    return Err(ConnectError::Amqp {
                        stage: "begin session",
                        msg: e.to_string(),
                    });
                }
                Err(e) => return Err(e),
            };
        if let Some(expiry) = plain_expiry {
            return Ok(AmqpLink {
                connection,
                session,
                cbs: None,
                token_expiry: expiry,
            });
        }
        let tag = uuid::Uuid::new_v4().simple().to_string();
        let cbs =
            match with_timeout("attaching $cbs", t, CbsClient::attach(&mut session, &tag)).await {
                Ok(Ok(cbs)) => cbs,
                Ok(Err(e)) => {
                    let _ = tokio::time::timeout(Duration::from_secs(2), connection.close()).await;
                    return Err(ConnectError::Auth(e));
                }
                Err(e) => return Err(e),
            };
        let mut link = AmqpLink {
            connection,
            session,
            cbs: Some(cbs),
            token_expiry: 0,
        };
        if let Err(e) = link.put_token(opts).await {
            link.close().await;
            return Err(e);
        }
        Ok(link)
    }

    /// Puts a fresh token (or the fixed one) on `$cbs`.
    pub async fn put_token(&mut self, opts: &C2dOptions) -> Result<(), ConnectError> {
        let (token, expiry): (Secret, u64) = opts
            .connection
            .token(opts.token_ttl)
            .map_err(ConnectError::Token)?;
        let cbs = self.cbs.as_mut().ok_or(ConnectError::Amqp {
            stage: "put-token",
            msg: "no $cbs links on a SASL PLAIN connection".into(),
        })?;
        cbs.put_token(
            opts.connection.audience(),
            &token,
            SAS_TOKEN_TYPE,
            opts.operation_timeout,
        )
        .await
        .map_err(ConnectError::Auth)?;
        self.token_expiry = expiry;
        Ok(())
    }

    /// Attaches a sender to `address`.
    pub async fn sender(
        &mut self,
        name: &str,
        address: &str,
        t: Duration,
    ) -> Result<Sender, ConnectError> {
        with_timeout(
            "attaching the sender",
            t,
            Sender::attach(&mut self.session, name, address),
        )
        .await?
        .map_err(|e| ConnectError::Amqp {
            stage: "attach sender",
            msg: e.to_string(),
        })
    }

    /// Closes everything, best effort, without waiting long for a dead peer.
    pub async fn close(self) {
        let AmqpLink {
            mut connection,
            mut session,
            cbs,
            ..
        } = self;
        let d = Duration::from_secs(2);
        if let Some(cbs) = cbs {
            let _ = tokio::time::timeout(d, cbs.close()).await;
        }
        let _ = tokio::time::timeout(d, session.end()).await;
        let _ = tokio::time::timeout(d, connection.close()).await;
    }
}

/// When to put a fresh token: at 80% of the remaining lifetime of the one just put (computed from
/// its real expiry, which is whole seconds). A fixed token cannot be renewed: far future.
pub(crate) fn renew_deadline(opts: &C2dOptions, expiry_epoch: u64) -> Instant {
    if !opts.connection.can_renew() {
        return Instant::now() + Duration::from_secs(86400 * 365);
    }
    let remaining = (UNIX_EPOCH + Duration::from_secs(expiry_epoch))
        .duration_since(SystemTime::now())
        .unwrap_or(Duration::ZERO);
    Instant::now() + remaining.mul_f64(0.8).max(Duration::from_millis(500))
}

/// A connected link with its C2D sender (and the feedback task).
pub(crate) struct Connected {
    pub link: AmqpLink,
    pub sender: Sender,
    pub feedback_task: Option<JoinHandle<FeedbackExit>>,
    pub renew_at: Instant,
}

impl Connected {
    pub async fn open(
        opts: &C2dOptions,
        metrics: &Arc<C2dMetrics>,
        feedback_tx: Option<&mpsc::Sender<FeedbackBatch>>,
    ) -> Result<Connected, ConnectError> {
        let mut link = AmqpLink::open(opts).await?;
        let tag = uuid::Uuid::new_v4().simple().to_string();
        let sender = match link
            .sender(
                &format!("c2d-sender-{tag}"),
                DEVICEBOUND_ADDRESS,
                opts.operation_timeout,
            )
            .await
        {
            Ok(s) => s,
            Err(e) => {
                link.close().await;
                return Err(e);
            }
        };
        let feedback_task = match feedback_tx {
            Some(out) => {
                let r = with_timeout(
                    "attaching the feedback receiver",
                    opts.operation_timeout,
                    Receiver::attach(
                        &mut link.session,
                        format!("feedback-{tag}"),
                        FEEDBACK_ADDRESS,
                    ),
                )
                .await;
                match r {
                    Ok(Ok(receiver)) => {
                        let out = out.clone();
                        let m = metrics.feedback.clone();
                        Some(tokio::spawn(run_feedback(receiver, out, m)))
                    }
                    Ok(Err(e)) => {
                        link.close().await;
                        return Err(ConnectError::Amqp {
                            stage: "attach feedback receiver",
                            msg: e.to_string(),
                        });
                    }
                    Err(e) => {
                        link.close().await;
                        return Err(e);
                    }
                }
            }
            None => None,
        };
        let renew_at = renew_deadline(opts, link.token_expiry);
        metrics.connects.fetch_add(1, Ordering::Relaxed);
        metrics.connected.store(true, Ordering::Relaxed);
        if let Ok(ep) = Endpoint::for_options(opts) {
            tracing::info!(
                endpoint = %ep.url(),
                feedback = feedback_tx.is_some(),
                "C2D sender attached to {DEVICEBOUND_ADDRESS}"
            );
        }
        Ok(Connected {
            link,
            sender,
            feedback_task,
            renew_at,
        })
    }

    pub async fn close(self) {
        if let Some(t) = self.feedback_task {
            t.abort();
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), self.sender.close()).await;
        self.link.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iothub::connstr::IotHubConnectionString;

    fn opts() -> C2dOptions {
        let cs = IotHubConnectionString::parse(&Secret::new(
            "HostName=h.azure-devices.net;SharedAccessKeyName=service;SharedAccessKey=c2VjcmV0LWtleS1ieXRlcw==",
        ))
        .unwrap();
        C2dOptions::new(cs)
    }

    #[test]
    fn options_debug_hides_the_key() {
        let o = opts();
        let d = format!("{o:?}");
        assert!(!d.contains("c2VjcmV0LWtleS1ieXRlcw=="), "{d}");
        assert!(d.contains("h.azure-devices.net"));
        assert_eq!(
            Endpoint::for_options(&o).unwrap().url(),
            "amqps://h.azure-devices.net:5671"
        );
    }

    #[test]
    fn websocket_endpoints() {
        let mut o = opts();
        o.transport = TransportType::AmqpWebSockets;
        assert_eq!(
            Endpoint::for_options(&o).unwrap().url(),
            "wss://h.azure-devices.net:443/$iothub/websocket"
        );
        o.endpoint = Some("amqp://127.0.0.1:5000".into());
        assert_eq!(
            Endpoint::for_options(&o).unwrap().url(),
            "ws://127.0.0.1:5000/$iothub/websocket"
        );
        o.transport = TransportType::Amqp;
        o.endpoint = Some("wss://127.0.0.1:5000/$servicebus/websocket/".into());
        let ep = Endpoint::for_options(&o).unwrap();
        assert_eq!(ep.url(), "wss://127.0.0.1:5000/$servicebus/websocket");
        assert_eq!(Endpoint::parse("ws://h").unwrap().port, 80);
        assert_eq!(Endpoint::parse("wss://h").unwrap().port, 443);
    }

    #[test]
    fn endpoints() {
        assert_eq!(
            Endpoint::parse("amqp://127.0.0.1:5672").unwrap(),
            Endpoint {
                tls: false,
                host: "127.0.0.1".into(),
                port: 5672,
                websocket: None,
            }
        );
        assert_eq!(
            Endpoint::parse("amqps://myhub.azure-devices.net").unwrap(),
            Endpoint {
                tls: true,
                host: "myhub.azure-devices.net".into(),
                port: 5671,
                websocket: None,
            }
        );
        assert_eq!(Endpoint::parse("AMQPS://h:1/x").unwrap().port, 1);
        assert!(Endpoint::parse("http://h").is_err());
        assert!(Endpoint::parse("amqp://:5").is_err());
        assert!(Endpoint::parse("amqp://h:notaport").is_err());
        assert_eq!(
            Endpoint::parse("amqp://[::1]:7").unwrap().url(),
            "amqp://[::1]:7"
        );
    }
}
