//! The C2D driver: one tokio task that owns the connection, the sender link and the per-device
//! queues ([`DeviceQueues`]), fed by [`super::C2dClient::send`] through a bounded channel.
//!
//! Invariants:
//! * Up to `max_in_flight` transfers are unsettled at once (fe2o3 `send_batchable`: the transfer is
//!   written, its settlement awaited separately), at most one per device (see `queues`).
//! * Requests are taken from the channel while connected **and while reconnecting**, up to
//!   `max_queued` pending, so a caller is never blocked by an outage as long as it keeps its own
//!   number of unfinished messages below `max_queued` (the sink does).
//! * Close requests ([`Control`]) are noticed in every state, including while dialling.
//! * Every message that was not settled when a connection is lost is sent again after
//!   reconnecting (at-least-once; the device may see the same message-id twice). Settlements that
//!   had already arrived are processed first, so accepted messages are not resent.
//! * Each settlement is classified once ([`Outcome`]); the class decides: `Record` completes the
//!   message, `Retriable` schedules that device again (throttling also slows the whole sender),
//!   `Fatal` (unauthorized) re-authenticates and retries, and completes the message after
//!   [`UNAUTHORIZED_ATTEMPTS`] refusals in a row.

use super::link::{renew_deadline, ConnectError, Connected};
use super::outcome::{condition_str, Completion, ErrorClass, Outcome};
use super::queues::{DeviceId, DeviceQueues};
use super::{C2dMetrics, C2dOptions};
use crate::iothub::feedback::{FeedbackBatch, FeedbackExit};
use crate::iothub::ratelimit::RateLimiter;
use fe2o3_amqp::link::delivery::{DeliveryFut, Sendable};
use fe2o3_amqp::link::SendError;
use fe2o3_amqp::types::messaging::{Data, Outcome as AmqpOutcome};
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

/// A connection that lasted this long resets the reconnection backoff.
const STABLE_CONNECTION: Duration = Duration::from_secs(10);

/// Unauthorized replies in a row for one message (each followed by a fresh authentication)
/// before the message completes as [`Outcome::Unauthorized`] (a fatal error for the caller).
pub const UNAUTHORIZED_ATTEMPTS: u32 = 3;

/// One message travelling through the driver.
pub(crate) struct Job {
    pub id: u64,
    pub sendable: Box<Sendable<Data>>,
    pub first_sent: Option<Instant>,
    pub last_sent: Option<Instant>,
    pub attempts: u32,
    pub failures: u32,
    pub unauthorized: u32,
    pub reply: oneshot::Sender<Completion>,
}

pub(crate) struct Request {
    pub device: DeviceId,
    pub job: Job,
}

/// What [`super::C2dClient::close`] asks of the driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Control {
    Run,
    /// Take no new messages; finish the pending ones.
    Drain,
    /// Give up on everything pending.
    Abort,
}

/// What one transfer came to.
enum Attempt {
    Done(Outcome, Option<String>),
    /// `released` / `modified`: not delivered, try again.
    Released,
    /// The link or connection failed before a settlement.
    Lost(String),
}

type InFlight = BoxFuture<'static, (DeviceId, Attempt)>;

fn settle(r: Result<AmqpOutcome, SendError>) -> Attempt {
    match r {
        Ok(AmqpOutcome::Accepted(_)) => Attempt::Done(Outcome::Accepted, None),
        Ok(AmqpOutcome::Rejected(rej)) => match rej.error {
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
        Ok(AmqpOutcome::Released(_)) | Ok(AmqpOutcome::Modified(_)) => Attempt::Released,
        #[allow(unreachable_patterns)]
        Ok(other) => Attempt::Done(
            Outcome::Unknown {
                condition: String::new(),
                description: format!("unexpected outcome {other:?}"),
            },
            None,
        ),
        Err(e) => send_error_attempt(e),
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
    Settled(DeviceId, Attempt),
    /// The connection's event loop stopped (the peer closed it, or the transport failed).
    ConnectionClosed(Option<String>),
    Feedback(Result<FeedbackExit, tokio::task::JoinError>),
    Request(Option<Request>),
    Wake,
    Control(bool),
}

pub(crate) struct Driver {
    pub opts: Arc<C2dOptions>,
    pub rx: mpsc::Receiver<Request>,
    pub input_closed: bool,
    pub queues: DeviceQueues<Job>,
    pub limiter: RateLimiter,
    pub metrics: Arc<C2dMetrics>,
    pub feedback_tx: Option<mpsc::Sender<FeedbackBatch>>,
    pub control: watch::Receiver<Control>,
    /// The control channel's sender is gone (client dropped without `close`).
    pub control_gone: bool,
}

impl Driver {
    fn control_now(&self) -> Control {
        *self.control.borrow()
    }

    fn finished(&self) -> bool {
        (self.input_closed || (self.rx.is_closed() && self.rx.is_empty()))
            && self.queues.pending() == 0
    }

    fn can_take(&self) -> bool {
        !self.input_closed && self.queues.pending() < self.opts.max_queued.max(1)
    }

    fn gauges(&mut self) {
        let rate = self
            .limiter
            .rate()
            .map(|r| (r * 1000.0).round().max(1.0) as u64)
            .unwrap_or(0);
        let m = &self.metrics;
        m.rate_limit_millis.store(rate, Ordering::Relaxed);
        m.in_flight
            .store(self.queues.in_flight() as u64, Ordering::Relaxed);
        m.queued
            .store(self.queues.pending() as u64, Ordering::Relaxed);
    }

    /// Handles a control change; returns true when everything must be given up now.
    fn on_control(&mut self, changed: bool) -> bool {
        if !changed {
            self.control_gone = true;
            return false;
        }
        match self.control_now() {
            Control::Abort => true,
            Control::Drain => {
                self.rx.close();
                false
            }
            Control::Run => false,
        }
    }

    /// Waits for `f` (a sleep or a dial) while still taking requests and noticing close
    /// requests. `None` when an abort came.
    async fn while_disconnected<T>(
        &mut self,
        f: impl std::future::Future<Output = T>,
    ) -> Option<T> {
        tokio::pin!(f);
        loop {
            let can_take = self.can_take();
            tokio::select! {
                r = &mut f => return Some(r),
                r = self.control.changed(), if !self.control_gone => {
                    if self.on_control(r.is_ok()) {
                        return None;
                    }
                }
                r = self.rx.recv(), if can_take => match r {
                    Some(r) => self.queues.push(r.device, r.job),
                    None => self.input_closed = true,
                },
            }
            self.gauges();
        }
    }

    pub async fn run(mut self, first: Connected) {
        let mut conn = Some(first);
        let mut failures: u32 = 0;
        loop {
            let c = match conn.take() {
                Some(c) => c,
                None => {
                    if self.finished() {
                        return;
                    }
                    let delay = self.opts.reconnect_backoff.delay(failures);
                    failures = failures.saturating_add(1);
                    if self
                        .while_disconnected(tokio::time::sleep(delay))
                        .await
                        .is_none()
                    {
                        self.fail_all();
                        return;
                    }
                    if self.finished() {
                        return;
                    }
                    let opts = self.opts.clone();
                    let metrics = self.metrics.clone();
                    let feedback_tx = self.feedback_tx.clone();
                    let open =
                        async move { Connected::open(&opts, &metrics, feedback_tx.as_ref()).await };
                    let Some(r) = self.while_disconnected(open).await else {
                        self.fail_all();
                        return;
                    };
                    match r {
                        Ok(c) => {
                            self.metrics.reconnects.fetch_add(1, Ordering::Relaxed);
                            tracing::info!(attempt = failures, "C2D connection re-established");
                            c
                        }
                        Err(e) => {
                            log_reconnect_failure(&e);
                            continue;
                        }
                    }
                }
            };
            let connected_at = Instant::now();
            let (c, stop) = self.run_connected(c).await;
            self.metrics.connected.store(false, Ordering::Relaxed);
            self.queues.unstart_all();
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
                    tracing::warn!(reason = %reason, pending = self.queues.pending(), "C2D connection lost; reconnecting and resending unsettled messages");
                }
            }
        }
    }

    async fn run_connected(&mut self, mut c: Connected) -> (Connected, Stop) {
        let mut inflight: FuturesUnordered<InFlight> = FuturesUnordered::new();
        let t = self.opts.operation_timeout;
        let max = self.opts.max_in_flight.max(1);
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
            if reauth && self.queues.in_flight() == 0 {
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
            while self.queues.in_flight() < max && !reauth && self.queues.has_ready() {
                let now = Instant::now();
                if let Err(at) = self.limiter.check(now) {
                    limiter_wake = Some(at);
                    break;
                }
                let (dev, job) = self.queues.start_next().expect("has ready");
                match tokio::time::timeout(t, c.sender.send_batchable_ref(&job.sendable)).await {
                    Ok(Ok(fut)) => {
                        job.attempts += 1;
                        job.last_sent = Some(now);
                        job.first_sent.get_or_insert(now);
                        if job.attempts > 1 {
                            self.metrics.retries.fetch_add(1, Ordering::Relaxed);
                        }
                        self.limiter.record(now);
                        self.metrics.sent.fetch_add(1, Ordering::Relaxed);
                        if self.queues.in_flight() == 1 {
                            last_progress = now;
                        }
                        let fut: DeliveryFut<Result<AmqpOutcome, SendError>> = fut;
                        inflight.push(async move { (dev, settle(fut.await)) }.boxed());
                    }
                    Ok(Err(e)) => match send_error_attempt(e) {
                        Attempt::Done(outcome, desc) => {
                            self.metrics.count(&outcome);
                            job.attempts += 1;
                            self.finish(&dev, outcome, desc);
                        }
                        Attempt::Lost(reason) => {
                            self.queues.unstart(&dev);
                            self.drain_ready(&mut inflight);
                            return (c, Stop::Lost(reason));
                        }
                        Attempt::Released => unreachable!("send errors are never released"),
                    },
                    Err(_) => {
                        self.queues.unstart(&dev);
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
            let stall_at = (self.queues.in_flight() > 0).then(|| last_progress + t);
            let want = [
                Some(c.renew_at),
                self.queues.next_timer(),
                limiter_wake,
                stall_at,
            ]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(c.renew_at);
            if want < armed || wake_fired {
                wake.as_mut().reset(want);
                armed = want;
                wake_fired = false;
            }
            let can_take = self.can_take();
            let ev = tokio::select! {
                Some((dev, a)) = inflight.next(), if !inflight.is_empty() => Event::Settled(dev, a),
                r = self.rx.recv(), if can_take => Event::Request(r),
                _ = &mut wake, if !wake_fired => Event::Wake,
                r = c.link.connection.on_close() => Event::ConnectionClosed(r.err().map(|e| e.to_string())),
                r = async { c.feedback_task.as_mut().expect("guarded").await }, if c.feedback_task.is_some() => Event::Feedback(r),
                r = self.control.changed(), if !self.control_gone => Event::Control(r.is_ok()),
            };
            let mut lost = None;
            match ev {
                Event::Settled(dev, a) => {
                    last_progress = Instant::now();
                    lost = self.on_settled(&dev, a);
                }
                Event::Request(Some(r)) => self.queues.push(r.device, r.job),
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
                    self.queues.release_due(now);
                    if self.queues.in_flight() > 0 && now >= last_progress + t {
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
                Event::Control(changed) => {
                    if self.on_control(changed) {
                        return (c, Stop::Abort);
                    }
                }
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
            while self.can_take() {
                match self.rx.try_recv() {
                    Ok(r) => self.queues.push(r.device, r.job),
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

    fn finish(&mut self, dev: &DeviceId, outcome: Outcome, description: Option<String>) {
        let Some(job) = self.queues.complete(dev) else {
            return;
        };
        self.gauges();
        let _ = job.reply.send(Completion {
            id: job.id,
            outcome,
            description,
            attempts: job.attempts,
            sent_at: job.last_sent.map(Instant::into_std),
        });
    }

    /// Handles one settlement; returns a reason when the connection must be re-established.
    fn on_settled(&mut self, dev: &DeviceId, a: Attempt) -> Option<String> {
        let now = Instant::now();
        match a {
            Attempt::Lost(reason) => {
                self.queues.unstart(dev);
                Some(reason)
            }
            Attempt::Released => {
                self.metrics.released.fetch_add(1, Ordering::Relaxed);
                let job = self.queues.front_mut(dev)?;
                let failures = job.failures;
                job.failures += 1;
                let d = self.opts.throttle_backoff.delay(failures);
                self.queues.retry_at(dev, now + d);
                None
            }
            Attempt::Done(outcome, desc) => {
                self.metrics.count(&outcome);
                let retry_timeout = self.opts.retry_timeout;
                let job = self.queues.front_mut(dev)?;
                let expired = match (retry_timeout, job.first_sent) {
                    (Some(limit), Some(first)) => now.duration_since(first) >= limit,
                    _ => false,
                };
                if outcome == Outcome::Unauthorized {
                    job.unauthorized += 1;
                } else {
                    job.unauthorized = 0;
                }
                let gave_up_auth = job.unauthorized >= UNAUTHORIZED_ATTEMPTS;
                if outcome.is_final() || expired || gave_up_auth {
                    if expired && !outcome.is_final() {
                        tracing::warn!(device = %dev, outcome = outcome.label(), "C2D message still failing after the retry timeout; giving up on it");
                    }
                    self.finish(dev, outcome, desc);
                    return None;
                }
                let failures = job.failures;
                job.failures += 1;
                let (delay, reconnect) = match (outcome.class(), &outcome) {
                    (_, Outcome::Throttled) => {
                        self.limiter.on_throttled(now);
                        (self.opts.throttle_backoff.delay(failures), None)
                    }
                    (_, Outcome::DeviceQueueFull) => {
                        let d = self.opts.retry_backoff.delay(failures);
                        tracing::debug!(device = %dev, delay = ?d, "device queue full; retrying that device later");
                        (d, None)
                    }
                    (Some(ErrorClass::Fatal), _) => (
                        self.opts.retry_backoff.delay(failures),
                        Some(format!(
                            "IoT Hub refused a send as unauthorized ({}); re-authenticating",
                            desc.unwrap_or_default()
                        )),
                    ),
                    (_, other) => {
                        let d = self.opts.retry_backoff.delay(failures);
                        tracing::warn!(device = %dev, outcome = ?other, delay = ?d, "C2D send failed with an unclassified error; retrying");
                        (d, None)
                    }
                };
                self.queues.retry_at(dev, now + delay);
                reconnect
            }
        }
    }

    /// Forced close: every pending message resolves to [`super::ClientClosed`].
    fn fail_all(&mut self) {
        drop(self.queues.take_all());
        self.rx.close();
        self.gauges();
    }
}

fn log_reconnect_failure(e: &ConnectError) {
    if e.is_auth() {
        tracing::error!(error = %e, "C2D reconnect refused; retrying with backoff");
    } else {
        tracing::warn!(error = %e, "C2D reconnect failed; retrying with backoff");
    }
}
