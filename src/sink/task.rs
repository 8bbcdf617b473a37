//! One sink task: Kafka consumer → converter → C2D client, with Connect's commit, error and
//! pause semantics.
//!
//! * Consumer group `connect-<name>`, auto-commit off ([`super::rebalance`]). Every consumed record
//!   is tracked; a partition's offset is committed only up to the longest prefix of its records that
//!   were accepted by IoT Hub or dead-lettered ([`super::tracker`]). Commits run every
//!   `offset.flush.interval.ms` (async), on revocation (sync) and at shutdown (sync). A crash
//!   therefore never loses a message; records sent but not yet committed are delivered again after
//!   a restart (at-least-once; the device may see the same message-id twice).
//! * Up to `IotHub.C2D.MaxInFlight` messages are unsettled on the one AMQP link of the task's
//!   [`C2dClient`]; the client keeps per-device order and retries throttling, full device queues,
//!   unknown errors and connection loss itself.
//! * **The loop never waits on the hub.** Messages are handed over with
//!   [`C2dClient::try_send`]; at most [`QUEUE_FACTOR`] × MaxInFlight records are unfinished (the
//!   client's own limit, so a hand-over never blocks). At that limit the consumer is not polled;
//!   if it lasts `min(10 s, max.poll.interval.ms / 2)`, or at once while the hub connection is down,
//!   the assigned partitions are paused and polling resumes, so group membership and
//!   `max.poll.interval.ms` are safe during a hub outage, periodic commits of what finished go on,
//!   and shutdown is noticed. Polling stops pausing once half of the records are done.
//! * Shutdown (within `task.shutdown.graceful.timeout.ms`): wait up to half of it for messages in
//!   flight, commit synchronously, then close the client (anything unsettled is sent again after a
//!   restart).
//! * Record errors (conversion errors, unknown device, too large, malformed, or a retriable outcome
//!   past `errors.retry.timeout`) go through `errors.tolerance`: `none` commits what is finished
//!   before the record and fails the task with a message naming topic, partition and offset; `all`
//!   logs (with `errors.log.enable`), writes the original record to the dead letter queue
//!   (the worker's `LogReporter` / `DeadLetterQueueReporter`) and moves on. Fatal outcomes (unauthorized) fail the task whatever the tolerance.
//! * The record key is not converted (the device id comes from the value), so a key the key
//!   converter could not read does not fail the record.

use super::message::{self, MessageError};
use super::rebalance::{self, Shared, SinkConsumer, SinkContext};
pub use super::setup::{c2d_options, value_converter};
use super::setup::{connect, pause_after};
use super::tracker::{TopicPartition, Tracker};
use crate::config::connector::Topics;
use crate::config::ConnectorConfig;
use crate::connect::convert::Converter;
use crate::iothub::c2d::{
    AckMode, C2dClient, C2dMessage, C2dMetricsSnapshot, ClientClosed, Completion, ErrorClass,
    TrySendError,
};
use crate::rest::metrics::{task_labels, Labels, METRICS};
use crate::worker::errors::{
    DeadLetterQueueReporter, Decision, FailedRecord, LogReporter, Origin, Stage, ToleranceOperator,
};
use crate::worker::producer::Producer;
use crate::worker::task::{TargetState, TaskContext};
use anyhow::Context as _;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::message::{Headers, Message};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tracing::{debug, info, warn};

/// Records unfinished at most `QUEUE_FACTOR × MaxInFlight` (the client's `max_queued`).
pub const QUEUE_FACTOR: usize = 16;

pub use super::setup::BACKPRESSURE_PAUSE_AFTER;

/// A consumed record while its message is on its way.
struct Pending {
    tp: TopicPartition,
    generation: u64,
    offset: i64,
    timestamp: Option<i64>,
    /// Kept only when a dead letter queue is configured.
    original: Option<Original>,
}

/// The consumed record as read, kept for the dead letter queue.
#[derive(Clone, Debug, Default)]
struct Original {
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(String, Option<Vec<u8>>)>,
}

impl Original {
    fn of<M: Message>(m: &M) -> Original {
        Original {
            key: m.key().map(<[u8]>::to_vec),
            value: m.payload().map(<[u8]>::to_vec),
            headers: m
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }
}

enum Event {
    Sent(u64, Result<Completion, ClientClosed>),
    DeadLettered(u64, Result<(), String>),
}

/// Runs one sink task until `ctx.shutdown` fires (Ok) or a non-retriable error (Err).
pub async fn run(ctx: TaskContext) -> anyhow::Result<()> {
    let connector = ctx.connector.clone();
    let worker = ctx.worker.clone();
    let sink = connector
        .sink
        .clone()
        .context("not a sink connector configuration")?;
    let converter = value_converter(&worker, &connector)?;
    let opts = c2d_options(&connector, &sink)?;
    let labels = task_labels(&connector.name, ctx.task_id);
    info!("Starting IotHub Sink");
    let Some(client) = connect(&ctx, &opts).await? else {
        return Ok(());
    };
    let client = Arc::new(client);
    ctx.health.set_links_up(true);

    let needs_producer = connector.errors.dlq_topic.is_some() || opts.feedback;
    let producer: Option<Producer> = if needs_producer {
        let s = crate::config::kafka::dlq_producer_settings(&worker, &connector, ctx.task_id)
            .map_err(|p| anyhow::anyhow!("{p}"))?;
        Some(
            Producer::create(&s.config)
                .context("creating the dead letter queue / feedback producer")?,
        )
    } else {
        None
    };
    let dlq = producer.clone().and_then(|p| {
        DeadLetterQueueReporter::new(p, &connector.name, ctx.task_id, &connector.errors)
    });
    let feedback_task =
        match (client.take_feedback(), &sink.feedback_topic, &producer) {
            (Some(rx), Some(topic), Some(p)) => Some(tokio::spawn(
                super::feedback::forward_feedback(rx, p.clone(), topic.clone(), ctx.id.clone()),
            )),
            _ => None,
        };

    let shared = Arc::new(Shared {
        id: ctx.id.clone(),
        tracker: Mutex::new(Tracker::default()),
        paused: Default::default(),
        labels: labels.clone(),
    });
    let settings = crate::config::kafka::consumer_settings(&worker, &connector, ctx.task_id)
        .map_err(|p| anyhow::anyhow!("{p}"))?;
    let max_poll = settings
        .config
        .get("max.poll.interval.ms")
        .and_then(|v| v.parse::<u64>().ok())
        .map(Duration::from_millis);
    let consumer: SinkConsumer = settings
        .config
        .create_with_context(SinkContext {
            shared: shared.clone(),
        })
        .context("creating the Kafka consumer")?;
    rebalance::subscribe(&consumer, &sink.topics)?;
    info!(
        "[Consumer clientId=connector-consumer-{}-{}, groupId=connect-{}] Subscribed to topic(s): {}",
        connector.name,
        ctx.task_id,
        connector.name,
        match &sink.topics {
            Topics::List(l) => l.join(", "),
            Topics::Regex(r) => format!("pattern {r}"),
        }
    );
    info!("WorkerSinkTask{{id={}}} Executing sink task", ctx.id);

    let log_reporter = LogReporter::new(ctx.id.clone(), &connector.errors);
    let mut state = TaskState {
        ctx,
        connector: connector.clone(),
        converter,
        client: client.clone(),
        tolerance: ToleranceOperator::from_config(&connector.errors),
        log_reporter,
        dlq,
        shared,
        consumer: Arc::new(consumer),
        labels,
        ack: sink.ack,
        pending: HashMap::new(),
        events: FuturesUnordered::new(),
        backlog: VecDeque::new(),
        next_id: 0,
        cap: opts.max_queued,
        pause_after: pause_after(max_poll),
        partitions_paused: false,
        full_since: None,
        last_client_metrics: C2dMetricsSnapshot::default(),
    };
    let result = state.run_loop().await;
    let result = match result {
        Ok(()) => state.drain_and_commit().await,
        Err(e) => Err(e),
    };
    info!("Stopping IotHubSink Task");
    info!("Closing IotHub clients");
    client.close(Duration::from_millis(500)).await;
    if let Some(t) = feedback_task {
        t.abort();
    }
    state.publish_client_metrics();
    state.ctx.health.set_links_up(false);
    result
}

struct TaskState {
    ctx: TaskContext,
    connector: Arc<ConnectorConfig>,
    converter: Converter,
    client: Arc<C2dClient>,
    tolerance: ToleranceOperator,
    log_reporter: LogReporter,
    dlq: Option<DeadLetterQueueReporter>,
    shared: Arc<Shared>,
    consumer: Arc<SinkConsumer>,
    labels: Labels,
    ack: AckMode,
    pending: HashMap<u64, Pending>,
    events: FuturesUnordered<BoxFuture<'static, Event>>,
    /// Messages the client did not take yet (never in practice: its limit is ours).
    backlog: VecDeque<(u64, C2dMessage)>,
    next_id: u64,
    cap: usize,
    pause_after: Duration,
    partitions_paused: bool,
    full_since: Option<std::time::Instant>,
    last_client_metrics: C2dMetricsSnapshot,
}

impl TaskState {
    async fn run_loop(&mut self) -> anyhow::Result<()> {
        let mut commit_tick = tokio::time::interval(self.ctx.worker.offset_flush_interval);
        commit_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        commit_tick.tick().await;
        // Notices a hub outage (to pause at once) while nothing else happens.
        let mut housekeeping = tokio::time::interval(Duration::from_millis(250));
        housekeeping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut target = self.ctx.target.clone();
        let shutdown = self.ctx.shutdown.clone();
        let consumer = self.consumer.clone();
        loop {
            self.flush_backlog()?;
            let may_poll = self.sync_pause();
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return Ok(()),
                Some(ev) = self.events.next(), if !self.events.is_empty() => self.on_event(ev).await?,
                r = target.changed() => {
                    if r.is_err() { return Ok(()); }
                    let t = *target.borrow();
                    match t {
                        TargetState::Paused => info!("WorkerSinkTask{{id={}}} Pausing: partitions paused, group membership kept", self.ctx.id),
                        TargetState::Started => info!("WorkerSinkTask{{id={}}} Resuming", self.ctx.id),
                        TargetState::Stopped => {}
                    }
                    self.commit(false, CommitMode::Async);
                }
                _ = commit_tick.tick() => {
                    self.commit(false, CommitMode::Async);
                    self.publish_client_metrics();
                }
                _ = housekeeping.tick() => self.publish_client_metrics(),
                m = consumer.recv(), if may_poll => {
                    match m {
                        Ok(m) => self.on_record(&m)?,
                        Err(e) => warn!("WorkerSinkTask{{id={}}} Kafka consumer error: {e}", self.ctx.id),
                    }
                }
            }
        }
    }

    /// Copies the C2D client's counters into the process metrics (as deltas) and the link health.
    fn publish_client_metrics(&mut self) {
        let now = self.client.metrics().snapshot();
        let last = &self.last_client_metrics;
        let l = &self.labels;
        METRICS
            .c2d_sent
            .get_or_create(l)
            .inc_by(now.sent.saturating_sub(last.sent));
        METRICS
            .c2d_throttled
            .get_or_create(l)
            .inc_by(now.throttled.saturating_sub(last.throttled));
        METRICS
            .reconnects
            .get_or_create(l)
            .inc_by(now.reconnects.saturating_sub(last.reconnects));
        METRICS
            .c2d_in_flight
            .get_or_create(l)
            .set(now.in_flight as i64);
        self.ctx.health.set_links_up(now.connected);
        self.last_client_metrics = now;
    }

    /// Pauses or resumes the assigned partitions to match the operator's target, long
    /// backpressure and hub outages. Returns whether the consumer may be polled now: with `cap`
    /// records unfinished it is not polled (librdkafka keeps its prefetched records; heartbeats
    /// continue), and when that lasts `pause_after` (or the hub is unreachable) the partitions are
    /// paused and polling resumes until half of the records are done. (Pausing at once on every
    /// full moment would make librdkafka drop and re-fetch its prefetched records each time.)
    fn sync_pause(&mut self) -> bool {
        let unfinished = self.shared.tracker.lock().unwrap().in_flight();
        let now = std::time::Instant::now();
        if unfinished >= self.cap {
            self.full_since.get_or_insert(now);
        } else if !self.partitions_paused || unfinished <= self.cap / 2 {
            self.full_since = None;
        }
        let hub_down = !self.client.metrics().connected.load(Ordering::Relaxed);
        let full = self
            .full_since
            .is_some_and(|t| hub_down || now.duration_since(t) >= self.pause_after);
        let want = self.ctx.is_paused() || full;
        let may_poll =
            self.backlog.is_empty() && (unfinished < self.cap || self.partitions_paused || want);
        if want == self.partitions_paused {
            return may_poll;
        }
        self.shared.paused.store(want, Ordering::SeqCst);
        match self.consumer.assignment() {
            Ok(tpl) => {
                let r = if want {
                    self.consumer.pause(&tpl)
                } else {
                    self.consumer.resume(&tpl)
                };
                if let Err(e) = r {
                    warn!(
                        "WorkerSinkTask{{id={}}} pause/resume failed: {e}",
                        self.ctx.id
                    );
                }
            }
            Err(e) => warn!(
                "WorkerSinkTask{{id={}}} assignment unavailable: {e}",
                self.ctx.id
            ),
        }
        if full && want {
            info!(
                "WorkerSinkTask{{id={}}} {} records waiting for IoT Hub{}: partitions paused, polling continues (group membership kept)",
                self.ctx.id,
                unfinished,
                if hub_down { " (hub unreachable)" } else { "" }
            );
        } else {
            debug!(
                "WorkerSinkTask{{id={}}} partitions {}",
                self.ctx.id,
                if want { "paused" } else { "resumed" }
            );
        }
        self.partitions_paused = want;
        self.backlog.is_empty() && (may_poll || want)
    }

    /// Hands queued messages to the client without waiting.
    fn flush_backlog(&mut self) -> anyhow::Result<()> {
        while let Some((id, msg)) = self.backlog.pop_front() {
            match self.client.try_send(msg) {
                Ok(handle) => self
                    .events
                    .push(async move { Event::Sent(id, handle.await) }.boxed()),
                Err(TrySendError::Full(msg)) => {
                    self.backlog.push_front((id, *msg));
                    break;
                }
                Err(TrySendError::Closed) => {
                    anyhow::bail!("the C2D client closed unexpectedly")
                }
            }
        }
        self.publish_client_metrics();
        Ok(())
    }

    fn on_record(&mut self, m: &rdkafka::message::BorrowedMessage<'_>) -> anyhow::Result<()> {
        METRICS.sink_record_read.get_or_create(&self.labels).inc();
        let tp: TopicPartition = (m.topic().to_string(), m.partition());
        let offset = m.offset();
        let generation = {
            let mut t = self.shared.tracker.lock().unwrap();
            if !t.has(&tp) {
                // a record of a partition revoked meanwhile: it will be read again by its owner
                return Ok(());
            }
            t.submit(&tp, offset)
        };
        let id = self.next_id;
        self.next_id += 1;
        let rec = Pending {
            tp,
            generation,
            offset,
            timestamp: m.timestamp().to_millis(),
            original: self
                .connector
                .errors
                .dlq_topic
                .as_ref()
                .map(|_| Original::of(m)),
        };
        let converted = self
            .converter
            .to_connect_data(m.payload())
            .map_err(|e| e.to_string())
            .and_then(|(schema, value)| {
                message::to_c2d(schema.as_deref(), &value, self.ack, SystemTime::now())
                    .map_err(|e: MessageError| e.to_string())
            });
        match converted {
            Ok(msg) => {
                debug!(
                    "Sending c2d message {} to device {} ({} bytes)",
                    msg.message_id,
                    msg.device_id,
                    msg.body.len()
                );
                self.pending.insert(id, rec);
                self.backlog.push_back((id, msg));
                self.flush_backlog()
            }
            Err(msg) => self.record_failed(id, rec, Stage::ValueConverter, ErrorClass::Record, msg),
        }
    }

    async fn on_event(&mut self, ev: Event) -> anyhow::Result<()> {
        let r = match ev {
            Event::Sent(id, Ok(c)) => {
                let Some(rec) = self.pending.remove(&id) else {
                    return Ok(());
                };
                match c.outcome.class() {
                    None => {
                        if let Some(t) = c.sent_at {
                            super::stats::record(t.elapsed());
                        }
                        METRICS.sink_record_send.get_or_create(&self.labels).inc();
                        METRICS.c2d_accepted.get_or_create(&self.labels).inc();
                        self.finish(&rec);
                        Ok(())
                    }
                    Some(class) => {
                        METRICS.c2d_rejected.get_or_create(&self.labels).inc();
                        let mut msg =
                            format!("IoT Hub rejected the C2D message: {}", c.outcome.label());
                        if let Some(d) = &c.description {
                            msg.push_str(&format!(" ({d})"));
                        }
                        let class = match class {
                            ErrorClass::Fatal => {
                                msg.push_str("; re-authenticating did not help: check the IotHub.ConnectionString policy (it needs ServiceConnect)");
                                ErrorClass::Fatal
                            }
                            // The client retried it until errors.retry.timeout: now a record error.
                            ErrorClass::Retriable => {
                                msg.push_str(&format!(
                                    " after retrying for errors.retry.timeout ({} attempts)",
                                    c.attempts
                                ));
                                ErrorClass::Record
                            }
                            ErrorClass::Record => ErrorClass::Record,
                        };
                        self.record_failed(id, rec, Stage::TaskPut, class, msg)
                    }
                }
            }
            Event::Sent(_, Err(ClientClosed)) => Err(anyhow::anyhow!(
                "the C2D client closed before a message completed"
            )),
            Event::DeadLettered(id, r) => {
                let Some(rec) = self.pending.remove(&id) else {
                    return Ok(());
                };
                match r {
                    Ok(()) => {
                        METRICS.dlq_produce.get_or_create(&self.labels).inc();
                        self.finish(&rec);
                        Ok(())
                    }
                    Err(e) => {
                        self.commit(true, CommitMode::Sync);
                        Err(anyhow::anyhow!(
                            "could not write the record {}-{}@{} to the dead letter queue {}: {e}",
                            rec.tp.0,
                            rec.tp.1,
                            rec.offset,
                            self.connector.errors.dlq_topic.as_deref().unwrap_or("")
                        ))
                    }
                }
            }
        };
        self.publish_client_metrics();
        r
    }

    fn finish(&mut self, rec: &Pending) {
        self.shared
            .tracker
            .lock()
            .unwrap()
            .finish(&rec.tp, rec.generation, rec.offset);
    }

    /// `errors.tolerance` (the worker's [`ToleranceOperator`]) for one failed record.
    fn record_failed(
        &mut self,
        id: u64,
        rec: Pending,
        stage: Stage,
        class: ErrorClass,
        msg: String,
    ) -> anyhow::Result<()> {
        METRICS.record_errors.get_or_create(&self.labels).inc();
        let class_name = match stage {
            Stage::ValueConverter => self.converter.class_name().to_string(),
            _ => self.connector.class.clone(),
        };
        match self.tolerance.decide(class) {
            Decision::Skip => {}
            Decision::Fail | Decision::Retry => {
                let text = format!(
                    "record {}-{} at offset {} (topic {}, partition {}, offset {}) failed in stage {}: {msg}. \
                     The task stops ({}); nothing at or after this offset is committed",
                    rec.tp.0,
                    rec.tp.1,
                    rec.offset,
                    rec.tp.0,
                    rec.tp.1,
                    rec.offset,
                    stage.name(),
                    if class == ErrorClass::Fatal {
                        "a fatal error, whatever errors.tolerance says"
                    } else {
                        "errors.tolerance=none"
                    }
                );
                // commit what is finished before it; nothing at or past it
                self.commit(true, CommitMode::Sync);
                anyhow::bail!(text);
            }
        }
        let original = rec.original.clone().unwrap_or_default();
        let failed = FailedRecord {
            origin: Origin::Consumed {
                topic: rec.tp.0.clone(),
                partition: rec.tp.1,
                offset: rec.offset,
                timestamp: rec.timestamp,
            },
            stage,
            class_name,
            message: msg,
            key: original.key,
            value: original.value,
            headers: original.headers,
        };
        self.log_reporter.report(&failed);
        let Some(dlq) = &self.dlq else {
            self.finish(&rec);
            return Ok(());
        };
        let write = dlq.report(&failed);
        self.pending.insert(id, rec);
        self.events.push(
            async move { Event::DeadLettered(id, write.await.map_err(|e| e.to_string())) }.boxed(),
        );
        Ok(())
    }

    fn commit(&mut self, all: bool, mode: CommitMode) {
        rebalance::commit(&self.consumer, &self.shared, all, mode);
    }

    /// Shutdown: wait (up to half the graceful timeout) for messages in flight, then commit
    /// synchronously.
    async fn drain_and_commit(&mut self) -> anyhow::Result<()> {
        let budget = self.ctx.worker.task_shutdown_graceful_timeout / 2;
        let deadline = tokio::time::Instant::now() + budget;
        if !self.events.is_empty() {
            info!(
                "WorkerSinkTask{{id={}}} Waiting up to {} ms for {} messages in flight",
                self.ctx.id,
                budget.as_millis(),
                self.events.len()
            );
        }
        let mut result = Ok(());
        while !self.events.is_empty() {
            match tokio::time::timeout_at(deadline, self.events.next()).await {
                Ok(Some(ev)) => {
                    if let Err(e) = self.on_event(ev).await {
                        result = Err(e);
                        break;
                    }
                }
                Ok(None) => break,
                Err(_) => {
                    warn!(
                        "WorkerSinkTask{{id={}}} {} messages still in flight at shutdown; they will be sent again after restart",
                        self.ctx.id,
                        self.events.len() + self.backlog.len()
                    );
                    break;
                }
            }
        }
        self.commit(true, CommitMode::Sync);
        result
    }
}
