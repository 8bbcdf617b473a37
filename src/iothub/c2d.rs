//! Cloud-to-device (C2D) client: one AMQP connection, one pipelined sender link.
//!
//! # Wire protocol
//! One connection (`amqps://<HostName>:5671`, TLS started directly without the AMQP TLS header as
//! Azure does, or a custom `amqp://`/`amqps://` endpoint with an optional CA), SASL ANONYMOUS, one
//! session. Authentication is CBS: an IoT Hub service SAS token (`sr` = HostName, HMAC keyed with
//! the base64-decoded policy key) put on `$cbs` by [`CbsClient`] (any 2xx accepted) and put again
//! at 80% of its lifetime on the same links, so the sender never detaches for a renewal.
//! Alternatively ([`AuthMethod::SaslPlain`], what the Java service SDK did) the token is the SASL
//! PLAIN password of `<policy>@sas.root.<hub>`; it cannot be renewed on a connection, so before it
//! expires the client stops sending, lets in-flight messages settle and reconnects.
//! One sender link targets `/messages/devicebound`; each message carries `to =
//! /devices/{id}/messages/devicebound`, `message-id`, optional `correlation-id` and
//! `absolute-expiry-time`, application property `iothub-ack` and a single `data` body section.
//! With feedback enabled a receiver on `/messages/servicebound/feedback` shares the connection.
//!
//! # Pipelining and ordering rule
//! Up to `max_in_flight` messages are unsettled at once (fe2o3 `send_batchable`: the transfer is
//! written, its settlement is awaited separately). **At most one message per device is unsettled
//! at any time**: a device's next message is sent only after the previous one was settled (accepted
//! or finally failed). So every retry (throttling, queue full, unknown error, reconnection) resends
//! the device's oldest message first and per-device order always holds; different devices are
//! interleaved round-robin. A device whose queue is full (403004) waits out its own backoff
//! without holding back other devices.
//!
//! # Outcome classification (AMQP error condition → [`Outcome`])
//! From the Azure IoT SDKs' AMQP error mapping (azure-iot-sdk-csharp `AmqpClientHelper.ToIotHubClientContract`
//! and `IotHubAmqpErrorCode`, azure-iot-sdk-node `amqp_common_errors_requirements.md` /
//! `amqp_service_errors_requirements.md`, azure-iot-sdk-java service `AmqpSendHandler`):
//!
//! | condition | IoT Hub error | Outcome | handling |
//! |---|---|---|---|
//! | `amqp:not-found` | 404001 DeviceNotFound | `DeviceNotFound` | final (record error) |
//! | `amqp:resource-limit-exceeded` | 403004 DeviceMaximumQueueDepthExceeded | `DeviceQueueFull` | device retried with backoff |
//! | `com.microsoft:device-container-throttled` | 429 ThrottlingException | `Throttled` | AIMD slow-down, retried |
//! | `amqp:link:message-size-exceeded` | 413 MessageTooLarge | `TooLarge` | final (record error) |
//! | `amqp:unauthorized-access` | 401 IotHubUnauthorizedAccess | `Unauthorized` | reconnect (re-authenticate), retried |
//! | `com.microsoft:argument-error`, `com.microsoft:argument-out-of-range`, `amqp:decode-error`, `amqp:invalid-field` | 400 | `Malformed` | final (record error) |
//! | anything else (`com.microsoft:timeout`, `amqp:internal-error`, `com.microsoft:quota-exceeded`, …) | | `Unknown` | logged, retried with backoff |
//!
//! When the condition is not one of these, the description is searched for the IoT Hub numeric
//! codes (404001, 403004, 429…, 413…, 401…, 400…) as a fallback. `released` and `modified`
//! outcomes are retried (unlike the Java SDK, which counted them as success).
//! With `retry_timeout` set, a message still failing after that long completes with its last
//! outcome instead of being retried again.
//!
//! # Rate limiting
//! `max_sends_per_second > 0`: a GCRA token bucket plus a sliding-window cap, so no 1-second window
//! ever holds more sends than the limit. `0`: unlimited until throttled, then AIMD (halve the achieved
//! rate, +5% of it per second without throttling). Both apply together (the lower wins).
//!
//! # Backpressure
//! [`C2dClient::send`] waits while `max_queued` messages are pending (queued or in flight). A
//! device whose queue stays full keeps its messages pending, so a flood for one stuck device can
//! fill `max_queued` and hold back the caller; `retry_timeout` bounds how long that lasts.
//! Device ids go into `to` unescaped, as the Java service SDK sent them.
//!
//! # Reconnection
//! Any connection, session or link failure (or a settlement missing for `operation_timeout`) closes
//! the connection, waits a capped exponential backoff with jitter and reconnects; every message that
//! was not settled is sent again (at-least-once; the device may see a duplicate with the same
//! message-id).

use crate::config::Secret;
use crate::iothub::cbs::{CbsClient, CbsError, SAS_TOKEN_TYPE};
use crate::iothub::connstr::IotHubConnectionString;
use crate::iothub::feedback::{
    run_feedback, FeedbackBatch, FeedbackExit, FeedbackMetrics, FEEDBACK_ADDRESS,
};
use crate::iothub::ratelimit::{Backoff, RateLimiter};
use crate::iothub::sas::SasError;
use fe2o3_amqp::connection::ConnectionHandle;
use fe2o3_amqp::link::delivery::{DeliveryFut, Sendable};
use fe2o3_amqp::link::{Receiver, SendError, Sender};
use fe2o3_amqp::sasl_profile::SaslProfile;
use fe2o3_amqp::session::SessionHandle;
use fe2o3_amqp::types::definitions::ErrorCondition;
use fe2o3_amqp::types::messaging::{
    ApplicationProperties, Data, Message, Outcome as AmqpOutcome, Properties,
};
use fe2o3_amqp::types::primitives::{Binary, Symbol, Timestamp};
use fe2o3_amqp::{Connection, Session};
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use serde::Serialize;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// A connection that lasted this long resets the reconnection backoff.
const STABLE_CONNECTION: Duration = Duration::from_secs(10);

/// Target address of the C2D sender link.
pub const DEVICEBOUND_ADDRESS: &str = "/messages/devicebound";

/// The `iothub-ack` application property: which delivery feedback the hub should produce.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub enum AckMode {
    #[default]
    None,
    Positive,
    Negative,
    Full,
}

impl AckMode {
    /// The wire value (`none`, `positive`, `negative`, `full`) as the IoT Hub docs list it.
    pub fn as_str(&self) -> &'static str {
        match self {
            AckMode::None => "none",
            AckMode::Positive => "positive",
            AckMode::Negative => "negative",
            AckMode::Full => "full",
        }
    }

    /// Parses the connector setting (`None`, `Full`, `PositiveOnly`, `NegativeOnly`) and the wire
    /// spellings (`positive`, `negative`), case-insensitively.
    pub fn parse(s: &str) -> Option<AckMode> {
        match s.trim().to_ascii_lowercase().as_str() {
            "none" => Some(AckMode::None),
            "full" => Some(AckMode::Full),
            "positive" | "positiveonly" => Some(AckMode::Positive),
            "negative" | "negativeonly" => Some(AckMode::Negative),
            _ => None,
        }
    }
}

/// One cloud-to-device message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct C2dMessage {
    pub device_id: String,
    pub message_id: String,
    pub body: Vec<u8>,
    /// `absolute-expiry-time`.
    pub expiry: Option<SystemTime>,
    pub correlation_id: Option<String>,
    pub ack: AckMode,
}

impl C2dMessage {
    pub fn new(
        device_id: impl Into<String>,
        message_id: impl Into<String>,
        body: impl Into<Vec<u8>>,
    ) -> Self {
        C2dMessage {
            device_id: device_id.into(),
            message_id: message_id.into(),
            body: body.into(),
            expiry: None,
            correlation_id: None,
            ack: AckMode::None,
        }
    }

    /// The AMQP message as sent on `/messages/devicebound`.
    pub fn to_amqp(&self) -> Message<Data> {
        self.clone().into_amqp()
    }

    /// Like [`C2dMessage::to_amqp`], without copying the body.
    pub fn into_amqp(self) -> Message<Data> {
        let mut props = Properties::builder()
            .to(format!("/devices/{}/messages/devicebound", self.device_id))
            .message_id(self.message_id);
        if let Some(c) = self.correlation_id {
            props = props.correlation_id(c);
        }
        if let Some(t) = self.expiry {
            let ms = t
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0);
            props = props.absolute_expiry_time(Timestamp::from_milliseconds(ms));
        }
        Message::builder()
            .properties(props.build())
            .application_properties(
                ApplicationProperties::builder()
                    .insert("iothub-ack", self.ack.as_str())
                    .build(),
            )
            .data(Binary::from(self.body))
            .build()
    }
}

/// How IoT Hub (or the link) answered one send attempt, classified.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum Outcome {
    Accepted,
    Throttled,
    DeviceQueueFull,
    DeviceNotFound,
    TooLarge,
    Malformed,
    Unauthorized,
    Unknown {
        condition: String,
        description: String,
    },
}

impl Outcome {
    /// Classifies an AMQP error condition (and description) the way IoT Hub reports them.
    pub fn from_error(condition: &str, description: Option<&str>) -> Outcome {
        match condition {
            "amqp:not-found" => Outcome::DeviceNotFound,
            "amqp:resource-limit-exceeded" => Outcome::DeviceQueueFull,
            "com.microsoft:device-container-throttled" | "com.microsoft:server-busy" => {
                Outcome::Throttled
            }
            "amqp:link:message-size-exceeded" => Outcome::TooLarge,
            "amqp:unauthorized-access" => Outcome::Unauthorized,
            "com.microsoft:argument-error"
            | "com.microsoft:argument-out-of-range"
            | "amqp:decode-error"
            | "amqp:invalid-field" => Outcome::Malformed,
            _ => {
                let d = description.unwrap_or_default();
                let has = |needle: &str| d.contains(needle);
                if has("404001") || has("DeviceNotFound") {
                    Outcome::DeviceNotFound
                } else if has("403004") || has("DeviceMaximumQueueDepthExceeded") {
                    Outcome::DeviceQueueFull
                } else if has("429") || has("ThrottlingException") {
                    Outcome::Throttled
                } else if has("413001") || has("MessageTooLarge") {
                    Outcome::TooLarge
                } else if has("401002") || has("IotHubUnauthorizedAccess") {
                    Outcome::Unauthorized
                } else {
                    Outcome::Unknown {
                        condition: condition.to_string(),
                        description: d.to_string(),
                    }
                }
            }
        }
    }

    /// A final failure caused by the message itself (for `errors.tolerance`).
    pub fn is_record_error(&self) -> bool {
        matches!(
            self,
            Outcome::DeviceNotFound | Outcome::TooLarge | Outcome::Malformed
        )
    }

    /// Final outcomes are never retried.
    pub fn is_final(&self) -> bool {
        matches!(self, Outcome::Accepted) || self.is_record_error()
    }

    /// Short label for logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Accepted => "accepted",
            Outcome::Throttled => "throttled",
            Outcome::DeviceQueueFull => "device_queue_full",
            Outcome::DeviceNotFound => "device_not_found",
            Outcome::TooLarge => "too_large",
            Outcome::Malformed => "malformed",
            Outcome::Unauthorized => "unauthorized",
            Outcome::Unknown { .. } => "unknown",
        }
    }
}

/// The text of an AMQP error condition.
pub fn condition_str(c: &ErrorCondition) -> String {
    match c {
        ErrorCondition::AmqpError(e) => Symbol::from(e).to_string(),
        ErrorCondition::ConnectionError(e) => Symbol::from(e).to_string(),
        ErrorCondition::SessionError(e) => Symbol::from(e).to_string(),
        ErrorCondition::LinkError(e) => Symbol::from(e).to_string(),
        ErrorCondition::Custom(s) => s.to_string(),
        #[allow(unreachable_patterns)]
        _ => format!("{c:?}"),
    }
}

/// The final result of one message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Completion {
    /// The id [`C2dClient::send`] assigned.
    pub id: u64,
    pub outcome: Outcome,
    /// The hub's error description, if any.
    pub description: Option<String>,
    /// Transfers made (1 when accepted at once).
    pub attempts: u32,
    /// When the last transfer was written to the link (`None` if it never was).
    pub sent_at: Option<std::time::Instant>,
}

/// The client was closed before the message completed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the C2D client is closed")]
pub struct ClientClosed;

/// Resolves to the message's final [`Completion`].
#[derive(Debug)]
pub struct SendHandle {
    pub id: u64,
    rx: oneshot::Receiver<Completion>,
}

impl Future for SendHandle {
    type Output = Result<Completion, ClientClosed>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.rx.poll_unpin(cx).map(|r| r.map_err(|_| ClientClosed))
    }
}

/// Settings of a [`C2dClient`].
#[derive(Clone, Debug)]
pub struct C2dOptions {
    pub connection: IotHubConnectionString,
    /// `amqp://host:port` or `amqps://host:port`; default `amqps://<HostName>:5671`.
    pub endpoint: Option<String>,
    /// PEM CA certificate(s) to trust instead of the public web roots (for `amqps://` test peers).
    pub ca_pem: Option<Vec<u8>>,
    pub max_in_flight: usize,
    /// 0 = no fixed limit (adapt to throttling).
    pub max_sends_per_second: u32,
    /// Messages accepted from callers but not yet completed, at most (backpressure on `send`).
    pub max_queued: usize,
    pub token_ttl: Duration,
    /// Bound for connecting, attaching, put-token, a transfer waiting for credit and a settlement.
    pub operation_timeout: Duration,
    pub reconnect_backoff: Backoff,
    /// Per-device backoff after queue-full and unknown errors.
    pub retry_backoff: Backoff,
    /// Delay before a throttled message is tried again (the rate limiter slows everything too).
    pub throttle_backoff: Backoff,
    /// Give up retrying a message after this long (it then completes with its last outcome).
    pub retry_timeout: Option<Duration>,
    /// Attach the feedback receiver and deliver batches through [`C2dClient::take_feedback`].
    pub feedback: bool,
    pub container_id: String,
    /// How to present the SAS token.
    pub auth: AuthMethod,
    /// Hub name for the SASL PLAIN user name `<policy>@sas.root.<hub>`; default: the first label
    /// of `HostName` (set it when `HostName` is an address, e.g. for an emulator).
    pub hub_name: Option<String>,
}

/// How the client authenticates.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AuthMethod {
    /// SASL ANONYMOUS, then put-token on `$cbs`; renewed on the open connection (default).
    #[default]
    Cbs,
    /// SASL PLAIN with `<policy>@sas.root.<hub>` and the token as password (what the Java
    /// service SDK used). The token cannot be renewed on a connection: before it expires the
    /// client stops sending, lets the in-flight messages settle and reconnects with a fresh one.
    SaslPlain,
}

impl C2dOptions {
    pub fn new(connection: IotHubConnectionString) -> Self {
        C2dOptions {
            connection,
            endpoint: None,
            ca_pem: None,
            max_in_flight: 64,
            max_sends_per_second: 0,
            max_queued: 4096,
            token_ttl: Duration::from_secs(3600),
            operation_timeout: Duration::from_secs(30),
            reconnect_backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(30)),
            retry_backoff: Backoff::new(Duration::from_millis(500), Duration::from_secs(60)),
            throttle_backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(5)),
            retry_timeout: None,
            feedback: false,
            container_id: format!("iotconnect-c2d-{}", uuid::Uuid::new_v4()),
            auth: AuthMethod::Cbs,
            hub_name: None,
        }
    }
}

/// Counters for metrics. All monotonic except `in_flight`, `queued` and `connected`.
#[derive(Debug, Default)]
pub struct C2dMetrics {
    pub sent: AtomicU64,
    pub accepted: AtomicU64,
    pub throttled: AtomicU64,
    pub device_queue_full: AtomicU64,
    pub device_not_found: AtomicU64,
    pub too_large: AtomicU64,
    pub malformed: AtomicU64,
    pub unauthorized: AtomicU64,
    pub unknown: AtomicU64,
    pub released: AtomicU64,
    pub retries: AtomicU64,
    pub in_flight: AtomicU64,
    pub queued: AtomicU64,
    pub reconnects: AtomicU64,
    pub connects: AtomicU64,
    pub token_renewals: AtomicU64,
    /// Send-rate limit in force, in thousandths of a message per second (0 = unlimited).
    pub rate_limit_millis: AtomicU64,
    pub connected: AtomicBool,
    pub feedback: Arc<FeedbackMetrics>,
}

/// A point-in-time copy of [`C2dMetrics`].
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct C2dMetricsSnapshot {
    pub sent: u64,
    pub accepted: u64,
    pub throttled: u64,
    pub device_queue_full: u64,
    pub device_not_found: u64,
    pub too_large: u64,
    pub malformed: u64,
    pub unauthorized: u64,
    pub unknown: u64,
    pub released: u64,
    pub retries: u64,
    pub in_flight: u64,
    pub queued: u64,
    pub reconnects: u64,
    pub connects: u64,
    pub token_renewals: u64,
    /// Send-rate limit in force (messages/s; `None` = unlimited).
    pub rate_limit: Option<f64>,
    pub connected: bool,
    pub feedback_records: u64,
    pub feedback_accepted: u64,
}

impl C2dMetrics {
    pub fn snapshot(&self) -> C2dMetricsSnapshot {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        C2dMetricsSnapshot {
            sent: g(&self.sent),
            accepted: g(&self.accepted),
            throttled: g(&self.throttled),
            device_queue_full: g(&self.device_queue_full),
            device_not_found: g(&self.device_not_found),
            too_large: g(&self.too_large),
            malformed: g(&self.malformed),
            unauthorized: g(&self.unauthorized),
            unknown: g(&self.unknown),
            released: g(&self.released),
            retries: g(&self.retries),
            in_flight: g(&self.in_flight),
            queued: g(&self.queued),
            reconnects: g(&self.reconnects),
            connects: g(&self.connects),
            token_renewals: g(&self.token_renewals),
            rate_limit: match g(&self.rate_limit_millis) {
                0 => None,
                m => Some(m as f64 / 1000.0),
            },
            connected: self.connected.load(Ordering::Relaxed),
            feedback_records: g(&self.feedback.records),
            feedback_accepted: g(&self.feedback.accepted),
        }
    }

    fn count(&self, o: &Outcome) {
        let c = match o {
            Outcome::Accepted => &self.accepted,
            Outcome::Throttled => &self.throttled,
            Outcome::DeviceQueueFull => &self.device_queue_full,
            Outcome::DeviceNotFound => &self.device_not_found,
            Outcome::TooLarge => &self.too_large,
            Outcome::Malformed => &self.malformed,
            Outcome::Unauthorized => &self.unauthorized,
            Outcome::Unknown { .. } => &self.unknown,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// Why connecting failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("invalid endpoint {0:?}: expected amqp://host:port or amqps://host[:port]")]
    BadEndpoint(String),
    #[error("TCP connect to {addr} failed: {msg}")]
    Io { addr: String, msg: String },
    #[error("TLS setup failed: {0}")]
    Tls(String),
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
}

/// Scheme, host and port of the endpoint to dial.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub tls: bool,
    pub host: String,
    pub port: u16,
}

impl Endpoint {
    /// Parses `amqp://host:port` / `amqps://host[:port]` (a trailing path is ignored).
    pub fn parse(url: &str) -> Result<Endpoint, ConnectError> {
        let bad = || ConnectError::BadEndpoint(url.to_string());
        let (scheme, rest) = url.split_once("://").ok_or_else(bad)?;
        let tls = match scheme.to_ascii_lowercase().as_str() {
            "amqp" => false,
            "amqps" => true,
            _ => return Err(bad()),
        };
        let authority = rest.split('/').next().unwrap_or_default();
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
            None if tls => 5671,
            None => 5672,
        };
        Ok(Endpoint { tls, host, port })
    }

    /// The endpoint for these options: the custom one or `amqps://<HostName>:5671`.
    pub fn for_options(opts: &C2dOptions) -> Result<Endpoint, ConnectError> {
        match &opts.endpoint {
            Some(e) => Endpoint::parse(e),
            None => Ok(Endpoint {
                tls: true,
                host: opts.connection.host().to_string(),
                port: opts.connection.port().unwrap_or(5671),
            }),
        }
    }
}

fn tls_connector(ca_pem: Option<&[u8]>) -> Result<tokio_rustls::TlsConnector, ConnectError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_pem {
        Some(pem) => {
            let mut reader = pem;
            let mut n = 0;
            for cert in rustls_pemfile::certs(&mut reader) {
                let cert = cert.map_err(|e| ConnectError::Tls(format!("bad CA PEM: {e}")))?;
                roots
                    .add(cert)
                    .map_err(|e| ConnectError::Tls(format!("bad CA certificate: {e}")))?;
                n += 1;
            }
            if n == 0 {
                return Err(ConnectError::Tls("the CA file holds no certificate".into()));
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = rustls::crypto::CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()));
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ConnectError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

async fn with_timeout<T>(
    what: &'static str,
    d: Duration,
    f: impl Future<Output = T>,
) -> Result<T, ConnectError> {
    tokio::time::timeout(d, f)
        .await
        .map_err(|_| ConnectError::Timeout(what, d))
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
        let addr = format!("{}:{}", ep.host, ep.port);
        let tcp = with_timeout("connecting", t, tokio::net::TcpStream::connect(&addr))
            .await?
            .map_err(|e| ConnectError::Io {
                addr: addr.clone(),
                msg: e.to_string(),
            })?;
        let _ = tcp.set_nodelay(true);
        let builder = Connection::builder()
            .container_id(opts.container_id.clone())
            .hostname(opts.connection.host())
            .scheme("amqp")
            .sasl_profile(profile);
        let connection = if ep.tls {
            // Azure style: TLS first, no AMQP TLS protocol header (what `alt_tls_establishment`
            // does); done here so IP-address hosts and custom CAs work too.
            let connector = tls_connector(opts.ca_pem.as_deref())?;
            let name = rustls::pki_types::ServerName::try_from(ep.host.clone())
                .map_err(|e| ConnectError::Tls(format!("bad server name {:?}: {e}", ep.host)))?;
            let tls = with_timeout("TLS handshake", t, connector.connect(name, tcp))
                .await?
                .map_err(|e| ConnectError::Tls(e.to_string()))?;
            with_timeout(
                "opening the AMQP connection",
                t,
                builder.open_with_stream(tls),
            )
            .await?
        } else {
            with_timeout(
                "opening the AMQP connection",
                t,
                builder.open_with_stream(tcp),
            )
            .await?
        }
        .map_err(|e| match e {
            fe2o3_amqp::connection::OpenError::SaslError { code, .. } => {
                ConnectError::SaslRefused(format!("{code:?}"))
            }
            e => ConnectError::Amqp {
                stage: "open",
                msg: e.to_string(),
            },
        })?;
        let mut connection = connection;
        let mut session =
            match with_timeout("beginning the session", t, Session::begin(&mut connection)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    let _ = connection.close().await;
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

/// One message travelling through the driver.
struct Job {
    id: u64,
    sendable: Box<Sendable<Data>>,
    first_sent: Option<Instant>,
    last_sent: Option<Instant>,
    attempts: u32,
    failures: u32,
    reply: oneshot::Sender<Completion>,
}

struct Request {
    device: Arc<str>,
    job: Job,
}

#[derive(Default)]
struct DeviceState {
    queue: VecDeque<Job>,
    busy: bool,
    blocked: bool,
    in_ready: bool,
}

/// Handle to the C2D sender. Cheap to share behind an `Arc`; `send` takes `&self`.
pub struct C2dClient {
    tx: mpsc::Sender<Request>,
    next_id: AtomicU64,
    metrics: Arc<C2dMetrics>,
    control: watch::Sender<Control>,
    task: std::sync::Mutex<Option<JoinHandle<()>>>,
    feedback: std::sync::Mutex<Option<mpsc::Receiver<FeedbackBatch>>>,
}

impl std::fmt::Debug for C2dClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("C2dClient").finish_non_exhaustive()
    }
}

impl C2dClient {
    /// Connects (failing fast on a bad endpoint, network or credentials) and starts the sender.
    /// Later connection losses are handled inside with reconnection.
    pub async fn connect(opts: C2dOptions) -> Result<C2dClient, ConnectError> {
        let opts = Arc::new(opts);
        let metrics = Arc::new(C2dMetrics::default());
        let (feedback_tx, feedback_rx) = if opts.feedback {
            let (tx, rx) = mpsc::channel(64);
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let first = Connected::open(&opts, &metrics, feedback_tx.as_ref()).await?;
        let (tx, rx) = mpsc::channel(opts.max_in_flight.max(1));
        let (control, control_rx) = watch::channel(Control::Run);
        let driver = Driver {
            limiter: RateLimiter::new(opts.max_sends_per_second, Instant::now()),
            opts: opts.clone(),
            rx,
            input_closed: false,
            devices: HashMap::new(),
            ready: VecDeque::new(),
            timers: BinaryHeap::new(),
            timer_seq: 0,
            pending: 0,
            in_flight: 0,
            metrics: metrics.clone(),
            feedback_tx,
            control: control_rx,
        };
        let task = tokio::spawn(driver.run(first));
        Ok(C2dClient {
            tx,
            next_id: AtomicU64::new(1),
            metrics,
            control,
            task: std::sync::Mutex::new(Some(task)),
            feedback: std::sync::Mutex::new(feedback_rx),
        })
    }

    /// Queues a message (waits while `max_queued` messages are pending) and returns the handle
    /// that resolves to its final outcome.
    pub async fn send(&self, msg: C2dMessage) -> Result<SendHandle, ClientClosed> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (reply, rx) = oneshot::channel();
        let device: Arc<str> = Arc::from(msg.device_id.as_str());
        // (built here, in the caller's task, so the driver only moves it to the link)
        let job = Job {
            id,
            sendable: Box::new(Sendable::builder().message(msg.into_amqp()).build()),
            first_sent: None,
            last_sent: None,
            attempts: 0,
            failures: 0,
            reply,
        };
        self.tx
            .send(Request { device, job })
            .await
            .map_err(|_| ClientClosed)?;
        Ok(SendHandle { id, rx })
    }

    pub fn metrics(&self) -> &Arc<C2dMetrics> {
        &self.metrics
    }

    /// The feedback batches (once; `None` without `feedback` or when already taken).
    pub fn take_feedback(&self) -> Option<mpsc::Receiver<FeedbackBatch>> {
        self.feedback.lock().ok().and_then(|mut g| g.take())
    }

    /// Stops accepting messages (later `send`s fail with [`ClientClosed`]), waits up to `drain` for
    /// the pending ones to complete, then closes the connection. Messages still pending after
    /// `drain` resolve to [`ClientClosed`]. Takes `&self` so a client shared in an `Arc` can be
    /// closed; a second call returns at once.
    pub async fn close(&self, drain: Duration) {
        let _ = self.control.send(Control::Drain);
        let task = self.task.lock().ok().and_then(|mut t| t.take());
        let Some(mut task) = task else {
            return;
        };
        if tokio::time::timeout(drain, &mut task).await.is_err() {
            let _ = self.control.send(Control::Abort);
            let _ = task.await;
        }
    }
}

/// When to put a fresh token: at 80% of the remaining lifetime of the one just put (computed from
/// its real expiry, which is whole seconds). A fixed token cannot be renewed: far future.
fn renew_deadline(opts: &C2dOptions, expiry_epoch: u64) -> Instant {
    if !opts.connection.can_renew() {
        return Instant::now() + Duration::from_secs(86400 * 365);
    }
    let remaining = (UNIX_EPOCH + Duration::from_secs(expiry_epoch))
        .duration_since(SystemTime::now())
        .unwrap_or(Duration::ZERO);
    Instant::now() + remaining.mul_f64(0.8).max(Duration::from_millis(500))
}

/// A connected link with its C2D sender (and the feedback task).
struct Connected {
    link: AmqpLink,
    sender: Sender,
    feedback_task: Option<JoinHandle<FeedbackExit>>,
    renew_at: Instant,
}

impl Connected {
    async fn open(
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
                host = %ep.host,
                port = ep.port,
                tls = ep.tls,
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

    async fn close(self) {
        if let Some(t) = self.feedback_task {
            t.abort();
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), self.sender.close()).await;
        self.link.close().await;
    }
}

/// What one transfer came to.
enum Attempt {
    Done(Outcome, Option<String>),
    /// `released` / `modified`: not delivered, try again.
    Released,
    /// The link or connection failed before a settlement.
    Lost(String),
}

type InFlight = BoxFuture<'static, (Arc<str>, Attempt)>;

fn settle(r: Result<Result<AmqpOutcome, SendError>, tokio::time::error::Elapsed>) -> Attempt {
    match r {
        Err(_) => Attempt::Lost("no settlement within the operation timeout".into()),
        Ok(Ok(AmqpOutcome::Accepted(_))) => Attempt::Done(Outcome::Accepted, None),
        Ok(Ok(AmqpOutcome::Rejected(rej))) => match rej.error {
            Some(e) => {
                let cond = condition_str(&e.condition);
                Attempt::Done(
                    Outcome::from_error(&cond, e.description.as_deref()),
                    e.description,
                )
            }
            None => Attempt::Done(
                Outcome::Unknown {
                    condition: String::new(),
                    description: "rejected without an error".into(),
                },
                None,
            ),
        },
        Ok(Ok(AmqpOutcome::Released(_))) | Ok(Ok(AmqpOutcome::Modified(_))) => Attempt::Released,
        #[allow(unreachable_patterns)]
        Ok(Ok(other)) => Attempt::Done(
            Outcome::Unknown {
                condition: String::new(),
                description: format!("unexpected outcome {other:?}"),
            },
            None,
        ),
        Ok(Err(e)) => send_error_attempt(e),
    }
}

fn send_error_attempt(e: SendError) -> Attempt {
    match e {
        SendError::MessageSizeExceeded(m) => Attempt::Done(Outcome::TooLarge, Some(m.to_string())),
        SendError::MessageEncodeError => Attempt::Done(
            Outcome::Malformed,
            Some("the message could not be encoded".into()),
        ),
        other => Attempt::Lost(other.to_string()),
    }
}

enum Stop {
    /// Input closed and everything completed.
    Done,
    /// Forced close.
    Abort,
    /// Connection lost (reason).
    Lost(String),
}

enum Event {
    Settled(Arc<str>, Attempt),
    /// The connection's event loop stopped (the peer closed it, or the transport failed).
    ConnectionClosed(Option<String>),
    Feedback(Result<FeedbackExit, tokio::task::JoinError>),
    Request(Option<Request>),
    Wake,
    Control(bool),
}

struct Driver {
    opts: Arc<C2dOptions>,
    rx: mpsc::Receiver<Request>,
    input_closed: bool,
    devices: HashMap<Arc<str>, DeviceState>,
    ready: VecDeque<Arc<str>>,
    timers: BinaryHeap<Reverse<(Instant, u64, Arc<str>)>>,
    timer_seq: u64,
    /// Jobs accepted from callers and not completed (queued + in flight).
    pending: usize,
    in_flight: usize,
    limiter: RateLimiter,
    metrics: Arc<C2dMetrics>,
    feedback_tx: Option<mpsc::Sender<FeedbackBatch>>,
    control: watch::Receiver<Control>,
}

/// What [`C2dClient::close`] asks of the driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Control {
    Run,
    /// Take no new messages; finish the pending ones.
    Drain,
    /// Give up on everything pending.
    Abort,
}

impl Driver {
    fn control_now(&self) -> Control {
        *self.control.borrow()
    }

    fn finished(&self) -> bool {
        (self.input_closed || (self.rx.is_closed() && self.rx.is_empty())) && self.pending == 0
    }

    fn gauges(&mut self) {
        let rate = self
            .limiter
            .rate()
            .map(|r| (r * 1000.0).round().max(1.0) as u64)
            .unwrap_or(0);
        self.metrics
            .rate_limit_millis
            .store(rate, Ordering::Relaxed);
        self.metrics
            .in_flight
            .store(self.in_flight as u64, Ordering::Relaxed);
        self.metrics
            .queued
            .store(self.pending as u64, Ordering::Relaxed);
    }

    async fn run(mut self, first: Connected) {
        let mut conn = Some(first);
        let mut failures: u32 = 0;
        let mut abort_gone = false;
        loop {
            let c = match conn.take() {
                Some(c) => c,
                None => {
                    if self.finished() {
                        return;
                    }
                    let delay = self.opts.reconnect_backoff.delay(failures);
                    failures = failures.saturating_add(1);
                    let sleep = tokio::time::sleep(delay);
                    tokio::pin!(sleep);
                    loop {
                        tokio::select! {
                            _ = &mut sleep => break,
                            r = self.control.changed(), if !abort_gone => match r {
                                Ok(()) => match self.control_now() {
                                    Control::Abort => {
                                        self.fail_all();
                                        return;
                                    }
                                    Control::Drain => self.rx.close(),
                                    Control::Run => {}
                                },
                                // The client was dropped without `close`: no abort can come.
                                Err(_) => abort_gone = true,
                            },
                        }
                    }
                    match Connected::open(&self.opts, &self.metrics, self.feedback_tx.as_ref())
                        .await
                    {
                        Ok(c) => {
                            self.metrics.reconnects.fetch_add(1, Ordering::Relaxed);
                            tracing::info!(attempt = failures, "C2D connection re-established");
                            c
                        }
                        Err(e) => {
                            if e.is_auth() {
                                tracing::error!(error = %e, "C2D reconnect refused; retrying with backoff");
                            } else {
                                tracing::warn!(error = %e, "C2D reconnect failed; retrying with backoff");
                            }
                            continue;
                        }
                    }
                }
            };
            let connected_at = Instant::now();
            let (c, stop) = self.run_connected(c).await;
            self.metrics.connected.store(false, Ordering::Relaxed);
            self.requeue_in_flight();
            self.gauges();
            // The backoff starts over only after a connection that held for a while, so a peer
            // that accepts connections and then fails every send is not hammered.
            if connected_at.elapsed() >= STABLE_CONNECTION {
                failures = 0;
            }
            // Bounded: a dead peer must not delay the reconnection.
            let _ = tokio::time::timeout(Duration::from_secs(2), c.close()).await;
            match stop {
                Stop::Done => return,
                Stop::Abort => {
                    self.fail_all();
                    return;
                }
                Stop::Lost(reason) => {
                    tracing::warn!(reason = %reason, pending = self.pending, "C2D connection lost; reconnecting and resending unsettled messages");
                }
            }
        }
    }

    async fn run_connected(&mut self, mut c: Connected) -> (Connected, Stop) {
        let mut inflight: FuturesUnordered<InFlight> = FuturesUnordered::new();
        let t = self.opts.operation_timeout;
        let max = self.opts.max_in_flight.max(1);
        let mut abort_gone = false;
        let mut last_progress = Instant::now();
        let mut armed = c.renew_at;
        let wake = tokio::time::sleep_until(armed);
        tokio::pin!(wake);
        let mut wake_fired = false;
        // SASL PLAIN token near expiry: no new sends; reconnect once nothing is in flight.
        let mut reauth = false;
        loop {
            if self.finished() {
                return (c, Stop::Done);
            }
            if reauth && self.in_flight == 0 {
                self.drain_ready(&mut inflight);
                return (
                    c,
                    Stop::Lost(
                        "SAS token near expiry; reconnecting with a fresh one (SASL PLAIN)".into(),
                    ),
                );
            }
            // Fill the pipeline.
            let mut limiter_wake = None;
            while self.in_flight < max && !reauth {
                let Some(dev) = self.ready.front().cloned() else {
                    break;
                };
                let now = Instant::now();
                if let Err(at) = self.limiter.check(now) {
                    limiter_wake = Some(at);
                    break;
                }
                self.ready.pop_front();
                let st = self.devices.get_mut(&dev).expect("ready device has state");
                st.in_ready = false;
                let job = st.queue.front_mut().expect("ready device has a job");
                let r = tokio::time::timeout(t, c.sender.send_batchable_ref(&job.sendable)).await;
                match r {
                    Ok(Ok(fut)) => {
                        job.attempts += 1;
                        job.last_sent = Some(now);
                        if job.first_sent.is_none() {
                            job.first_sent = Some(now);
                        }
                        if job.attempts > 1 {
                            self.metrics.retries.fetch_add(1, Ordering::Relaxed);
                        }
                        st.busy = true;
                        self.in_flight += 1;
                        self.limiter.record(now);
                        self.metrics.sent.fetch_add(1, Ordering::Relaxed);
                        if self.in_flight == 1 {
                            last_progress = now;
                        }
                        let fut: DeliveryFut<Result<AmqpOutcome, SendError>> = fut;
                        inflight.push(async move { (dev, settle(Ok(fut.await))) }.boxed());
                    }
                    Ok(Err(e)) => match send_error_attempt(e) {
                        Attempt::Done(outcome, desc) => {
                            self.metrics.count(&outcome);
                            job.attempts += 1;
                            self.finish(&dev, outcome, desc);
                        }
                        Attempt::Lost(reason) => {
                            self.make_ready(&dev, true);
                            self.drain_ready(&mut inflight);
                            return (c, Stop::Lost(reason));
                        }
                        Attempt::Released => unreachable!("send errors are never released"),
                    },
                    Err(_) => {
                        self.make_ready(&dev, true);
                        self.drain_ready(&mut inflight);
                        return (
                            c,
                            Stop::Lost("no link credit within the operation timeout".into()),
                        );
                    }
                }
            }
            self.gauges();
            // One timer serves token renewal, retry timers, the rate limiter and stall detection.
            // It is re-armed only when it must fire earlier; firing early just re-arms it.
            let next_timer = self.timers.peek().map(|Reverse((at, _, _))| *at);
            let stall_at = (self.in_flight > 0).then(|| last_progress + t);
            let want = [Some(c.renew_at), next_timer, limiter_wake, stall_at]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(c.renew_at);
            if want < armed || wake_fired {
                wake.as_mut().reset(want);
                armed = want;
                wake_fired = false;
            }
            let can_take = !self.input_closed && self.pending < self.opts.max_queued.max(1);
            let ev = tokio::select! {
                Some((dev, a)) = inflight.next(), if !inflight.is_empty() => Event::Settled(dev, a),
                r = self.rx.recv(), if can_take => Event::Request(r),
                _ = &mut wake, if !wake_fired => Event::Wake,
                r = c.link.connection.on_close() => Event::ConnectionClosed(r.err().map(|e| e.to_string())),
                r = async { c.feedback_task.as_mut().expect("guarded").await }, if c.feedback_task.is_some() => Event::Feedback(r),
                r = self.control.changed(), if !abort_gone => Event::Control(r.is_ok()),
            };
            let mut lost = None;
            match ev {
                Event::Settled(dev, a) => {
                    last_progress = Instant::now();
                    lost = self.on_settled(&dev, a);
                }
                Event::Request(Some(r)) => self.enqueue(r),
                Event::Request(None) => self.input_closed = true,
                Event::ConnectionClosed(err) => {
                    lost = Some(match err {
                        Some(e) => format!("connection closed: {e}"),
                        None => "connection closed by the peer".to_string(),
                    });
                }
                Event::Feedback(r) => {
                    c.feedback_task = None;
                    match r {
                        Ok(FeedbackExit::ConsumerGone) => {
                            tracing::info!(
                                "feedback batches are no longer read; detaching feedback for good"
                            );
                            self.feedback_tx = None;
                        }
                        Ok(FeedbackExit::LinkFailed(e)) => {
                            lost = Some(format!("feedback receiver failed: {e}"))
                        }
                        Err(e) => lost = Some(format!("feedback task ended: {e}")),
                    }
                }
                Event::Wake => {
                    wake_fired = true;
                    let now = Instant::now();
                    self.release_timers();
                    if self.in_flight > 0 && now >= last_progress + t {
                        lost = Some(format!("no settlement within {t:?}"));
                    } else if now >= c.renew_at && c.link.cbs.is_none() {
                        reauth = true;
                        c.renew_at = now + Duration::from_secs(86400 * 365);
                    } else if now >= c.renew_at {
                        match c.link.put_token(&self.opts).await {
                            Ok(()) => {
                                self.metrics.token_renewals.fetch_add(1, Ordering::Relaxed);
                                c.renew_at = renew_deadline(&self.opts, c.link.token_expiry);
                                tracing::debug!("C2D SAS token renewed on the open connection");
                            }
                            Err(e) => lost = Some(format!("token renewal failed: {e}")),
                        }
                    }
                }
                Event::Control(true) => match self.control_now() {
                    Control::Abort => return (c, Stop::Abort),
                    Control::Drain => self.rx.close(),
                    Control::Run => {}
                },
                Event::Control(false) => abort_gone = true,
            }
            if lost.is_none() {
                // Take whatever else is ready without going through select again.
                while let Some(Some((dev, a))) = inflight.next().now_or_never() {
                    last_progress = Instant::now();
                    if let Some(reason) = self.on_settled(&dev, a) {
                        lost = Some(reason);
                        break;
                    }
                }
            }
            if let Some(reason) = lost {
                self.drain_ready(&mut inflight);
                return (c, Stop::Lost(reason));
            }
            while !self.input_closed && self.pending < self.opts.max_queued.max(1) {
                match self.rx.try_recv() {
                    Ok(r) => self.enqueue(r),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => self.input_closed = true,
                }
            }
        }
    }

    /// Processes settlements that already arrived before the connection is dropped, so messages
    /// that were accepted are not sent twice.
    fn drain_ready(&mut self, inflight: &mut FuturesUnordered<InFlight>) {
        while let Some(Some((dev, a))) = inflight.next().now_or_never() {
            if let Attempt::Lost(_) = a {
                // Stays at the front of its device queue; resent after reconnecting.
                continue;
            }
            let _ = self.on_settled(&dev, a);
        }
    }

    fn enqueue(&mut self, r: Request) {
        self.pending += 1;
        let st = self.devices.entry(r.device.clone()).or_default();
        st.queue.push_back(r.job);
        if !st.busy && !st.blocked && !st.in_ready {
            st.in_ready = true;
            self.ready.push_back(r.device);
        }
    }

    /// Makes a device sendable again (after a lost transfer), at the front when `front`.
    fn make_ready(&mut self, dev: &Arc<str>, front: bool) {
        if let Some(st) = self.devices.get_mut(dev) {
            if st.busy {
                st.busy = false;
                self.in_flight = self.in_flight.saturating_sub(1);
            }
            if !st.in_ready && !st.blocked && !st.queue.is_empty() {
                st.in_ready = true;
                if front {
                    self.ready.push_front(dev.clone());
                } else {
                    self.ready.push_back(dev.clone());
                }
            }
        }
    }

    /// After a connection loss every unsettled message is sent again, device order kept.
    fn requeue_in_flight(&mut self) {
        let busy: Vec<Arc<str>> = self
            .devices
            .iter()
            .filter(|(_, s)| s.busy)
            .map(|(d, _)| d.clone())
            .collect();
        for d in busy {
            self.make_ready(&d, true);
        }
        self.in_flight = 0;
    }

    fn schedule(&mut self, dev: &Arc<str>, delay: Duration) {
        if let Some(st) = self.devices.get_mut(dev) {
            st.blocked = true;
            self.timer_seq += 1;
            self.timers.push(Reverse((
                Instant::now() + delay,
                self.timer_seq,
                dev.clone(),
            )));
        }
    }

    fn release_timers(&mut self) {
        let now = Instant::now();
        while let Some(Reverse((at, _, _))) = self.timers.peek() {
            if *at > now {
                break;
            }
            let Reverse((_, _, dev)) = self.timers.pop().expect("peeked");
            if let Some(st) = self.devices.get_mut(&dev) {
                st.blocked = false;
                if !st.busy && !st.in_ready && !st.queue.is_empty() {
                    st.in_ready = true;
                    self.ready.push_back(dev);
                }
            }
        }
    }

    fn finish(&mut self, dev: &Arc<str>, outcome: Outcome, description: Option<String>) {
        let Some(st) = self.devices.get_mut(dev) else {
            return;
        };
        let Some(job) = st.queue.pop_front() else {
            return;
        };
        self.pending -= 1;
        self.metrics
            .in_flight
            .store(self.in_flight as u64, Ordering::Relaxed);
        self.metrics
            .queued
            .store(self.pending as u64, Ordering::Relaxed);
        let _ = job.reply.send(Completion {
            id: job.id,
            outcome,
            description,
            attempts: job.attempts,
            sent_at: job.last_sent.map(Instant::into_std),
        });
        if st.queue.is_empty() {
            if !st.blocked && !st.busy {
                self.devices.remove(dev);
            }
        } else if !st.blocked && !st.busy && !st.in_ready {
            st.in_ready = true;
            self.ready.push_back(dev.clone());
        }
    }

    /// Handles one settlement; returns a reason when the connection must be re-established.
    fn on_settled(&mut self, dev: &Arc<str>, a: Attempt) -> Option<String> {
        let st = self.devices.get_mut(dev)?;
        if st.busy {
            st.busy = false;
            self.in_flight = self.in_flight.saturating_sub(1);
        }
        let now = Instant::now();
        match a {
            Attempt::Lost(reason) => {
                self.make_ready(dev, true);
                Some(reason)
            }
            Attempt::Released => {
                self.metrics.released.fetch_add(1, Ordering::Relaxed);
                let failures = st.queue.front().map(|j| j.failures).unwrap_or(0);
                if let Some(j) = st.queue.front_mut() {
                    j.failures += 1;
                }
                let d = self.opts.throttle_backoff.delay(failures);
                self.schedule(dev, d);
                None
            }
            Attempt::Done(outcome, desc) => {
                self.metrics.count(&outcome);
                let job = st.queue.front_mut()?;
                let expired = match (self.opts.retry_timeout, job.first_sent) {
                    (Some(limit), Some(first)) => now.duration_since(first) >= limit,
                    _ => false,
                };
                if outcome.is_final() || expired {
                    if expired && !outcome.is_final() {
                        tracing::warn!(device = %dev, outcome = outcome.label(), "C2D message still failing after the retry timeout; giving up on it");
                    }
                    self.finish(dev, outcome, desc);
                    return None;
                }
                let failures = job.failures;
                job.failures += 1;
                match outcome {
                    Outcome::Throttled => {
                        self.limiter.on_throttled(now);
                        let d = self.opts.throttle_backoff.delay(failures);
                        self.schedule(dev, d);
                        None
                    }
                    Outcome::DeviceQueueFull => {
                        let d = self.opts.retry_backoff.delay(failures);
                        tracing::debug!(device = %dev, delay = ?d, "device queue full; retrying that device later");
                        self.schedule(dev, d);
                        None
                    }
                    Outcome::Unauthorized => {
                        let d = self.opts.retry_backoff.delay(failures);
                        self.schedule(dev, d);
                        Some(format!(
                            "IoT Hub refused a send as unauthorized ({}); re-authenticating",
                            desc.unwrap_or_default()
                        ))
                    }
                    other => {
                        let d = self.opts.retry_backoff.delay(failures);
                        tracing::warn!(device = %dev, outcome = ?other, delay = ?d, "C2D send failed with an unclassified error; retrying");
                        self.schedule(dev, d);
                        None
                    }
                }
            }
        }
    }

    /// Forced close: every pending message resolves to [`ClientClosed`].
    fn fail_all(&mut self) {
        self.devices.clear();
        self.ready.clear();
        self.timers.clear();
        self.pending = 0;
        self.in_flight = 0;
        self.rx.close();
        self.gauges();
    }
}

/// Result of [`raw_send_rate`].
#[derive(Clone, Debug, Serialize)]
pub struct RawSendReport {
    pub messages: u64,
    pub accepted: u64,
    pub rejected: u64,
    pub elapsed_ms: f64,
    pub per_second: f64,
}

/// Benchmark base: opens a connection with the same authentication, attaches a sender to
/// `/messages/devicebound` and sends `messages` messages (device `devices[i % len]`, `body`) as
/// fast as fe2o3-amqp allows, keeping up to `window` transfers unsettled, without any of
/// [`C2dClient`]'s bookkeeping (no per-device ordering, no rate limit, no retries).
pub async fn raw_send_rate(
    opts: &C2dOptions,
    messages: u64,
    devices: &[String],
    body: &[u8],
    window: usize,
) -> Result<RawSendReport, ConnectError> {
    assert!(
        !devices.is_empty(),
        "raw_send_rate needs at least one device"
    );
    let mut link = AmqpLink::open(opts).await?;
    let mut sender = link
        .sender("raw-sender", DEVICEBOUND_ADDRESS, opts.operation_timeout)
        .await?;
    let window = window.max(1);
    let mut inflight = FuturesUnordered::new();
    let (mut accepted, mut rejected) = (0u64, 0u64);
    let mut tally = |r: Result<AmqpOutcome, SendError>| match r {
        Ok(AmqpOutcome::Accepted(_)) => accepted += 1,
        _ => rejected += 1,
    };
    let start = std::time::Instant::now();
    let run_id = uuid::Uuid::new_v4().simple().to_string();
    for i in 0..messages {
        while inflight.len() >= window {
            if let Some(r) = inflight.next().await {
                tally(r);
            }
        }
        let mut m = C2dMessage::new(
            devices[(i as usize) % devices.len()].clone(),
            format!("raw-{run_id}-{i}"),
            body.to_vec(),
        );
        m.ack = AckMode::None;
        let fut = sender
            .send_batchable(m.into_amqp())
            .await
            .map_err(|e| ConnectError::Amqp {
                stage: "send",
                msg: e.to_string(),
            })?;
        inflight.push(fut);
    }
    while let Some(r) = inflight.next().await {
        tally(r);
    }
    let elapsed = start.elapsed();
    let _ = tokio::time::timeout(Duration::from_secs(2), sender.close()).await;
    link.close().await;
    Ok(RawSendReport {
        messages,
        accepted,
        rejected,
        elapsed_ms: elapsed.as_secs_f64() * 1000.0,
        per_second: messages as f64 / elapsed.as_secs_f64().max(1e-9),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_iothub_error_conditions() {
        assert_eq!(
            Outcome::from_error("amqp:not-found", Some("Device not found")),
            Outcome::DeviceNotFound
        );
        assert_eq!(
            Outcome::from_error("amqp:resource-limit-exceeded", None),
            Outcome::DeviceQueueFull
        );
        assert_eq!(
            Outcome::from_error("com.microsoft:device-container-throttled", None),
            Outcome::Throttled
        );
        assert_eq!(
            Outcome::from_error("amqp:link:message-size-exceeded", None),
            Outcome::TooLarge
        );
        assert_eq!(
            Outcome::from_error("amqp:unauthorized-access", None),
            Outcome::Unauthorized
        );
        for c in [
            "com.microsoft:argument-error",
            "com.microsoft:argument-out-of-range",
            "amqp:decode-error",
            "amqp:invalid-field",
        ] {
            assert_eq!(Outcome::from_error(c, None), Outcome::Malformed, "{c}");
        }
        assert_eq!(
            Outcome::from_error("com.microsoft:timeout", Some("try later")),
            Outcome::Unknown {
                condition: "com.microsoft:timeout".into(),
                description: "try later".into()
            }
        );
        // Fallback on IoT Hub's numeric codes in the description.
        assert_eq!(
            Outcome::from_error(
                "com.microsoft:other",
                Some("ErrorCode:DeviceNotFound;404001")
            ),
            Outcome::DeviceNotFound
        );
        assert_eq!(
            Outcome::from_error("x:y", Some("403004 DeviceMaximumQueueDepthExceeded")),
            Outcome::DeviceQueueFull
        );
        assert_eq!(
            Outcome::from_error("x:y", Some("429001 ThrottlingException")),
            Outcome::Throttled
        );
    }

    #[test]
    fn final_and_record_errors() {
        assert!(Outcome::Accepted.is_final());
        assert!(!Outcome::Accepted.is_record_error());
        for o in [
            Outcome::DeviceNotFound,
            Outcome::TooLarge,
            Outcome::Malformed,
        ] {
            assert!(o.is_final() && o.is_record_error(), "{o:?}");
        }
        for o in [
            Outcome::Throttled,
            Outcome::DeviceQueueFull,
            Outcome::Unauthorized,
            Outcome::Unknown {
                condition: "a".into(),
                description: "b".into(),
            },
        ] {
            assert!(!o.is_final(), "{o:?}");
        }
    }

    #[test]
    fn ack_mode_spellings() {
        assert_eq!(AckMode::parse("None"), Some(AckMode::None));
        assert_eq!(AckMode::parse("Full"), Some(AckMode::Full));
        assert_eq!(AckMode::parse("PositiveOnly"), Some(AckMode::Positive));
        assert_eq!(AckMode::parse("negativeonly"), Some(AckMode::Negative));
        assert_eq!(AckMode::parse("positive"), Some(AckMode::Positive));
        assert_eq!(AckMode::parse("sometimes"), None);
        assert_eq!(AckMode::Negative.as_str(), "negative");
    }

    #[test]
    fn message_carries_iothub_properties() {
        let mut m = C2dMessage::new("dev-1", "msg1", b"Turn On".to_vec());
        m.ack = AckMode::Full;
        m.correlation_id = Some("corr".into());
        m.expiry = Some(UNIX_EPOCH + Duration::from_millis(1_800_000_000_123));
        let a = m.to_amqp();
        let p = a.properties.as_ref().unwrap();
        assert_eq!(p.to.as_deref(), Some("/devices/dev-1/messages/devicebound"));
        assert_eq!(
            p.message_id,
            Some(fe2o3_amqp::types::messaging::MessageId::String(
                "msg1".into()
            ))
        );
        assert_eq!(
            p.correlation_id,
            Some(fe2o3_amqp::types::messaging::MessageId::String(
                "corr".into()
            ))
        );
        assert_eq!(
            p.absolute_expiry_time.as_ref().map(|t| t.milliseconds()),
            Some(1_800_000_000_123)
        );
        let ap = a.application_properties.as_ref().unwrap();
        assert_eq!(
            ap.0.get("iothub-ack"),
            Some(&fe2o3_amqp::types::primitives::SimpleValue::String(
                "full".into()
            ))
        );
        assert_eq!(a.body.0, b"Turn On".to_vec());
    }

    #[test]
    fn options_debug_hides_the_key() {
        let key = "c2VjcmV0LWtleS1ieXRlcw==";
        let cs = IotHubConnectionString::parse(&Secret::new(format!(
            "HostName=h.azure-devices.net;SharedAccessKeyName=service;SharedAccessKey={key}"
        )))
        .unwrap();
        let o = C2dOptions::new(cs);
        let d = format!("{o:?}");
        assert!(!d.contains(key), "{d}");
        assert!(d.contains("h.azure-devices.net"));
        assert_eq!(
            Endpoint::for_options(&o).unwrap(),
            Endpoint {
                tls: true,
                host: "h.azure-devices.net".into(),
                port: 5671
            }
        );
    }

    #[test]
    fn endpoints() {
        assert_eq!(
            Endpoint::parse("amqp://127.0.0.1:5672").unwrap(),
            Endpoint {
                tls: false,
                host: "127.0.0.1".into(),
                port: 5672
            }
        );
        assert_eq!(
            Endpoint::parse("amqps://myhub.azure-devices.net").unwrap(),
            Endpoint {
                tls: true,
                host: "myhub.azure-devices.net".into(),
                port: 5671
            }
        );
        assert_eq!(Endpoint::parse("AMQPS://h:1/x").unwrap().port, 1);
        assert!(Endpoint::parse("http://h").is_err());
        assert!(Endpoint::parse("amqp://:5").is_err());
        assert!(Endpoint::parse("amqp://h:notaport").is_err());
    }
}
