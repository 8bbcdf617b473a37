//! Cloud-to-device (C2D) client: one AMQP connection, one pipelined sender link.
//!
//! * [`message`]: the message and its AMQP form (`to`, `message-id`, `iothub-ack`, one `data` body).
//! * [`outcome`]: how each send is classified (AMQP condition symbol, IoT Hub error code) and its
//!   [`ErrorClass`].
//! * [`transport`]: TCP / TLS / AMQP over WebSockets / HTTP proxy.
//! * [`link`]: endpoint, authenticated connection (CBS or SASL PLAIN), sender and feedback links.
//! * [`queues`]: per-device queues (pure; the ordering rule lives there).
//! * [`driver`]: the task that owns the connection and the queues.
//!
//! # Pipelining and ordering rule
//! Up to `max_in_flight` messages are unsettled at once. **At most one message per device is
//! unsettled at any time**: a device's next message is sent only after the previous one was settled
//! (accepted or finally failed). So every retry (throttling, queue full, unknown error,
//! reconnection) resends the device's oldest message first and per-device order always holds;
//! different devices are interleaved round-robin. A device whose queue is full (403004) waits out
//! its own backoff without holding back other devices.
//!
//! # Outcomes
//! `Record` errors (unknown device, too large, malformed) complete the message; `Retriable` ones
//! (throttling, full device queue, anything unknown, `released`/`modified`) are retried, for ever
//! unless `retry_timeout` is set (then the message completes with its last outcome). An
//! unauthorized send re-authenticates; after [`driver::UNAUTHORIZED_ATTEMPTS`] in a row the message
//! completes as `Unauthorized` (`Fatal`).
//!
//! # Rate limiting
//! `max_sends_per_second > 0`: a GCRA token bucket plus a sliding-window cap, so no 1-second window
//! ever holds more sends than the limit. `0`: unlimited until throttled, then AIMD (halve the achieved
//! rate, +5% of it per second without throttling). Both apply together (the lower wins).
//!
//! # Backpressure and outages
//! [`C2dClient::send`] waits only while `max_queued` messages are pending (queued or in flight);
//! the driver takes requests while reconnecting too, so a caller that keeps fewer than
//! `max_queued` messages unfinished never waits, even during a hub outage. [`C2dClient::try_send`]
//! never waits. Device ids go into `to` unescaped, as the Java service SDK sent them.
//!
//! # Reconnection
//! Any connection, session or link failure (or a settlement missing for `operation_timeout`) closes
//! the connection, waits a capped exponential backoff with jitter and reconnects; every message that
//! was not settled is sent again (at-least-once; the device may see a duplicate with the same
//! message-id). [`C2dClient::close`] is honoured in every state, including while dialling.

pub mod driver;
pub mod link;
pub mod message;
pub mod outcome;
pub mod queues;
pub mod transport;

pub use link::{AmqpLink, ConnectError, Endpoint, DEVICEBOUND_ADDRESS};
pub use message::{AckMode, C2dMessage};
pub use outcome::{condition_str, Completion, ErrorClass, HubErrorCode, Outcome};

use crate::config::connector::TransportType;
use crate::iothub::connstr::IotHubConnectionString;
use crate::iothub::feedback::{FeedbackBatch, FeedbackMetrics};
use crate::iothub::ratelimit::{Backoff, RateLimiter};
use driver::{Control, Driver, Job, Request};
use fe2o3_amqp::link::delivery::Sendable;
use futures::FutureExt;
use link::Connected;
use serde::Serialize;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// The client was closed before the message completed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the C2D client is closed")]
pub struct ClientClosed;

/// Why [`C2dClient::try_send`] did not take a message.
#[derive(Debug, thiserror::Error)]
pub enum TrySendError {
    /// `max_queued` messages are pending; the message is handed back.
    #[error("the C2D client has max_queued messages pending")]
    Full(Box<C2dMessage>),
    #[error("the C2D client is closed")]
    Closed,
}

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
    /// `amqp://host:port`, `amqps://host:port`, `ws://…` or `wss://…`; default
    /// `amqps://<HostName>:5671` (or `wss://<HostName>:443/$iothub/websocket`).
    pub endpoint: Option<String>,
    /// `Amqp` (default) or `AmqpWebSockets`.
    pub transport: TransportType,
    /// HTTP proxy for WebSockets (`http://[user:pass@]host:port`); default `HTTPS_PROXY`.
    pub proxy: Option<String>,
    /// PEM CA certificate(s) to trust instead of the public web roots (`IotHub.TrustedCaFile`).
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
            transport: TransportType::Amqp,
            proxy: None,
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

    pub(crate) fn count(&self, o: &Outcome) {
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
        // As deep as the driver's own limit, so the channel never is the tighter bound.
        let (tx, rx) = mpsc::channel(opts.max_queued.max(1));
        let (control, control_rx) = watch::channel(Control::Run);
        let driver = Driver {
            limiter: RateLimiter::new(opts.max_sends_per_second, Instant::now()),
            opts: opts.clone(),
            rx,
            input_closed: false,
            queues: Default::default(),
            metrics: metrics.clone(),
            feedback_tx,
            control: control_rx,
            control_gone: false,
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

    fn request(&self, msg: C2dMessage) -> (Request, SendHandle) {
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
            unauthorized: 0,
            reply,
        };
        (Request { device, job }, SendHandle { id, rx })
    }

    /// Queues a message (waits while `max_queued` messages are pending) and returns the handle
    /// that resolves to its final outcome.
    pub async fn send(&self, msg: C2dMessage) -> Result<SendHandle, ClientClosed> {
        let (req, handle) = self.request(msg);
        self.tx.send(req).await.map_err(|_| ClientClosed)?;
        Ok(handle)
    }

    /// Queues a message without ever waiting.
    pub fn try_send(&self, msg: C2dMessage) -> Result<SendHandle, TrySendError> {
        let permit = match self.tx.try_reserve() {
            Ok(p) => p,
            Err(mpsc::error::TrySendError::Full(())) => {
                return Err(TrySendError::Full(Box::new(msg)))
            }
            Err(mpsc::error::TrySendError::Closed(())) => return Err(TrySendError::Closed),
        };
        let (req, handle) = self.request(msg);
        permit.send(req);
        Ok(handle)
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
            // The driver notices an abort in every state; closing the link is bounded (2 s).
            if tokio::time::timeout(Duration::from_secs(3), &mut task)
                .await
                .is_err()
            {
                task.abort();
            }
        }
    }
}
