//! One sink task: Kafka consumer → converter → C2D client, with Connect's commit, error and
//! pause semantics.
//!
//! * Consumer group `connect-<name>`, auto-commit off. Every consumed record is tracked; a
//!   partition's offset is committed (explicitly, offset + 1) only up to the longest prefix of its
//!   records that were accepted by IoT Hub or dead-lettered ([`super::tracker`]). Commits run every
//!   `offset.flush.interval.ms` (async), on revocation (sync, from the rebalance callback) and at
//!   shutdown (sync). A crash therefore never loses a message; records sent but not yet committed
//!   are delivered again after a restart (at-least-once; the device may see the same message-id
//!   twice).
//! * Up to `IotHub.C2D.MaxInFlight` messages are unsettled on the one AMQP link of the task's
//!   [`C2dClient`]; the client keeps per-device order and retries throttling, full device queues,
//!   unknown errors and connection loss itself. When [`QUEUE_FACTOR`] × MaxInFlight records are
//!   waiting, the consumer is not polled; if that lasts [`BACKPRESSURE_PAUSE_AFTER`], the assigned
//!   partitions are paused and polling resumes (group membership and `max.poll.interval.ms` are
//!   safe) until half of them are done.
//! * Record errors (conversion errors, unknown device, too large, malformed, or a retriable outcome
//!   past `errors.retry.timeout`) go through `errors.tolerance`: `none` commits what is finished
//!   before the record and fails the task with a message naming topic, partition and offset; `all`
//!   logs (with `errors.log.enable`), writes the original record to the dead letter queue with
//!   Connect's `__connect.errors.*` headers (when configured) and moves on.
//! * `errors.retry.timeout`: > 0 bounds how long the client retries a message; 0 (the default) and
//!   -1 retry transient hub conditions for ever, because dropping a throttled message is never
//!   right (Connect's "0 = no retry" applies to its converter stage, which cannot fail transiently).
//! * The record key is not converted (the device id comes from the value), so a key the key
//!   converter could not read does not fail the record.

use super::message::{self, MessageError};
use super::tracker::{TopicPartition, Tracker};
use crate::config::connector::{Ack, SinkConfig, Topics};
use crate::config::{ConnectorConfig, WorkerConfig};
use crate::connect::convert::Converter;
use crate::iothub::c2d::{
    AckMode, C2dClient, C2dMetricsSnapshot, C2dOptions, ClientClosed, Completion, Outcome,
};
use crate::iothub::connstr::IotHubConnectionString;
use crate::iothub::feedback::FeedbackBatch;
use crate::iothub::ratelimit::Backoff;
use crate::rest::metrics::{task_labels, Labels, METRICS};
use crate::worker::task::{TargetState, TaskContext};
use anyhow::Context as _;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};

/// Records waiting (consumed, not finished) at most `QUEUE_FACTOR × MaxInFlight` before the
/// partitions are paused.
pub const QUEUE_FACTOR: usize = 16;

/// Backpressure lasting this long pauses the partitions (see `TaskState::sync_pause`).
pub const BACKPRESSURE_PAUSE_AFTER: Duration = Duration::from_secs(10);

/// State shared with the rebalance callbacks (which run inside the consumer's poll).
struct Shared {
    id: String,
    tracker: Mutex<Tracker>,
    /// Whether assigned partitions must be paused (operator pause or backpressure).
    paused: AtomicBool,
    labels: Labels,
}

struct SinkContext {
    shared: Arc<Shared>,
}

impl ClientContext for SinkContext {}

fn tpl_names(tpl: &TopicPartitionList) -> String {
    tpl.elements()
        .iter()
        .map(|e| format!("{}-{}", e.topic(), e.partition()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn offsets_tpl(offsets: &[(TopicPartition, i64)]) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    for ((t, p), o) in offsets {
        let _ = tpl.add_partition_offset(t, *p, Offset::Offset(*o));
    }
    tpl
}

fn show_offsets(offsets: &[(TopicPartition, i64)]) -> String {
    let parts: Vec<String> = offsets
        .iter()
        .map(|((t, p), o)| {
            format!("{t}-{p}=OffsetAndMetadata{{offset={o}, leaderEpoch=null, metadata=''}}")
        })
        .collect();
    format!("{{{}}}", parts.join(", "))
}

impl ConsumerContext for SinkContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(tpl) => {
                let lost = consumer.assignment_lost();
                let revoked: Vec<TopicPartition> = tpl
                    .elements()
                    .iter()
                    .map(|e| (e.topic().to_string(), e.partition()))
                    .collect();
                let mut tracker = self.shared.tracker.lock().unwrap();
                if lost {
                    warn!(
                        "WorkerSinkTask{{id={}}} Partitions lost: {} (not committing; their records will be re-read)",
                        self.shared.id,
                        tpl_names(tpl)
                    );
                } else {
                    let offsets = tracker.committable(true, |tp| revoked.contains(tp));
                    if !offsets.is_empty() {
                        info!(
                            "WorkerSinkTask{{id={}}} Committing offsets synchronously using sequence number on revocation: {}",
                            self.shared.id,
                            show_offsets(&offsets)
                        );
                        match consumer.commit(&offsets_tpl(&offsets), CommitMode::Sync) {
                            Ok(()) => METRICS.commit_succeeded(&self.shared.labels),
                            Err(e) => {
                                METRICS
                                    .offset_commit_failure
                                    .get_or_create(&self.shared.labels)
                                    .inc();
                                warn!(
                                    "WorkerSinkTask{{id={}}} Offset commit on revocation failed: {e}",
                                    self.shared.id
                                );
                            }
                        }
                    }
                    info!(
                        "WorkerSinkTask{{id={}}} Partitions revoked: {}",
                        self.shared.id,
                        tpl_names(tpl)
                    );
                }
                for tp in &revoked {
                    tracker.drop_partition(tp);
                }
            }
            Rebalance::Assign(_) => {}
            Rebalance::Error(e) => {
                warn!(
                    "WorkerSinkTask{{id={}}} Rebalance error: {e}",
                    self.shared.id
                )
            }
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            info!(
                "WorkerSinkTask{{id={}}} Partitions assigned: {}",
                self.shared.id,
                tpl_names(tpl)
            );
            {
                let mut tracker = self.shared.tracker.lock().unwrap();
                for e in tpl.elements() {
                    tracker.assign((e.topic().to_string(), e.partition()));
                }
            }
            if self.shared.paused.load(Ordering::SeqCst) {
                if let Err(e) = consumer.pause(tpl) {
                    warn!(
                        "WorkerSinkTask{{id={}}} Could not pause newly assigned partitions: {e}",
                        self.shared.id
                    );
                }
            }
        }
    }
}

type Consumer_ = StreamConsumer<SinkContext>;

/// A consumed record while its message is on its way.
struct InFlight {
    tp: TopicPartition,
    generation: u64,
    offset: i64,
    timestamp: Option<i64>,
    /// Kept only when a dead letter queue is configured.
    original: Option<Original>,
}

struct Original {
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(String, Option<Vec<u8>>)>,
}

enum Event {
    Sent(u64, Result<Completion, ClientClosed>),
    DeadLettered(u64, Result<(), String>),
}

/// Where a record failed, in Connect's `Stage` names.
#[derive(Clone, Copy)]
enum Stage {
    ValueConverter,
    TaskPut,
}

impl Stage {
    fn name(self) -> &'static str {
        match self {
            Stage::ValueConverter => "VALUE_CONVERTER",
            Stage::TaskPut => "TASK_PUT",
        }
    }
}

/// Maps the connector's ack setting to the wire mode.
pub fn ack_mode(ack: Ack) -> AckMode {
    match ack {
        Ack::None => AckMode::None,
        Ack::Full => AckMode::Full,
        Ack::PositiveOnly => AckMode::Positive,
        Ack::NegativeOnly => AckMode::Negative,
    }
}

/// The C2D client options for a sink config (without connecting).
pub fn c2d_options(connector: &ConnectorConfig, sink: &SinkConfig) -> anyhow::Result<C2dOptions> {
    let cs = IotHubConnectionString::parse(&sink.connection_string)
        .with_context(|| format!("connector {}: IotHub.ConnectionString", connector.name))?;
    let mut o = C2dOptions::new(cs);
    o.endpoint = sink.custom_endpoint.clone();
    o.max_in_flight = sink.max_in_flight.max(1);
    o.max_sends_per_second = sink.max_sends_per_second;
    o.max_queued = o.max_in_flight * QUEUE_FACTOR;
    o.feedback = sink.ack != Ack::None && sink.feedback_topic.is_some();
    if connector.errors.retry_timeout_ms > 0 {
        o.retry_timeout = Some(Duration::from_millis(
            connector.errors.retry_timeout_ms as u64,
        ));
    }
    Ok(o)
}

/// The value converter the sink reads records with.
pub fn value_converter(
    worker: &WorkerConfig,
    connector: &ConnectorConfig,
) -> anyhow::Result<Converter> {
    let spec = connector.effective_value_converter(&worker.value_converter);
    Converter::configure(&spec.class, &spec.props, false)
        .map_err(|e| anyhow::anyhow!("connector {}: {e}", connector.name))
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

    // The C2D client: retry network trouble until shutdown; refused credentials fail the task.
    let backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
    let mut attempt = 0u32;
    let client = loop {
        match C2dClient::connect(opts.clone()).await {
            Ok(c) => break Arc::new(c),
            Err(e) if e.is_auth() => {
                return Err(anyhow::anyhow!(e)).context(format!(
                    "connector {}: IoT Hub refused the credentials of IotHub.ConnectionString",
                    connector.name
                ))
            }
            Err(e) => {
                let d = backoff.delay(attempt);
                attempt += 1;
                warn!(
                    "WorkerSinkTask{{id={}}} Could not connect to IoT Hub ({e}); retrying in {} ms",
                    ctx.id,
                    d.as_millis()
                );
                tokio::select! {
                    _ = ctx.shutdown.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(d) => {}
                }
            }
        }
    };
    ctx.health.set_links_up(true);

    let needs_producer = connector.errors.dlq_topic.is_some() || opts.feedback;
    let producer: Option<FutureProducer> = if needs_producer {
        let s = crate::config::kafka::dlq_producer_settings(&worker, &connector, ctx.task_id)
            .map_err(|p| anyhow::anyhow!("{p}"))?;
        Some(
            s.config
                .create()
                .context("creating the dead letter queue / feedback producer")?,
        )
    } else {
        None
    };

    // Feedback: Kafka first, then settle the AMQP feedback message.
    let feedback_task = match (client.take_feedback(), &sink.feedback_topic, &producer) {
        (Some(rx), Some(topic), Some(p)) => Some(tokio::spawn(forward_feedback(
            rx,
            p.clone(),
            topic.clone(),
            ctx.id.clone(),
        ))),
        _ => None,
    };

    let shared = Arc::new(Shared {
        id: ctx.id.clone(),
        tracker: Mutex::new(Tracker::default()),
        paused: AtomicBool::new(false),
        labels: labels.clone(),
    });
    let settings = crate::config::kafka::consumer_settings(&worker, &connector, ctx.task_id)
        .map_err(|p| anyhow::anyhow!("{p}"))?;
    let consumer: Consumer_ = settings
        .config
        .create_with_context(SinkContext {
            shared: shared.clone(),
        })
        .context("creating the Kafka consumer")?;
    match &sink.topics {
        Topics::List(list) => {
            let refs: Vec<&str> = list.iter().map(String::as_str).collect();
            consumer.subscribe(&refs).context("subscribing")?;
        }
        Topics::Regex(re) => {
            let pattern = if re.starts_with('^') {
                re.clone()
            } else {
                format!("^{re}")
            };
            consumer
                .subscribe(&[pattern.as_str()])
                .context("subscribing")?;
        }
    }
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

    let mut state = TaskState {
        ctx,
        connector: connector.clone(),
        sink,
        converter,
        client: client.clone(),
        producer,
        shared,
        consumer: Arc::new(consumer),
        labels,
        ack: ack_mode(connector.sink.as_ref().map(|s| s.ack).unwrap_or(Ack::None)),
        in_flight: HashMap::new(),
        events: FuturesUnordered::new(),
        next_id: 0,
        cap: opts.max_queued,
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
    client.close(Duration::from_secs(2)).await;
    if let Some(t) = feedback_task {
        t.abort();
    }
    state.ctx.health.set_links_up(false);
    result
}

struct TaskState {
    ctx: TaskContext,
    connector: Arc<ConnectorConfig>,
    #[allow(dead_code)]
    sink: SinkConfig,
    converter: Converter,
    client: Arc<C2dClient>,
    producer: Option<FutureProducer>,
    shared: Arc<Shared>,
    consumer: Arc<Consumer_>,
    labels: Labels,
    ack: AckMode,
    in_flight: HashMap<u64, InFlight>,
    events: FuturesUnordered<BoxFuture<'static, Event>>,
    next_id: u64,
    cap: usize,
    partitions_paused: bool,
    full_since: Option<std::time::Instant>,
    last_client_metrics: C2dMetricsSnapshot,
}

impl TaskState {
    async fn run_loop(&mut self) -> anyhow::Result<()> {
        let mut commit_tick = tokio::time::interval(self.ctx.worker.offset_flush_interval);
        commit_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        commit_tick.tick().await;
        let mut target = self.ctx.target.clone();
        let shutdown = self.ctx.shutdown.clone();
        let consumer = self.consumer.clone();
        loop {
            let may_poll = self.sync_pause();
            let long_full = self
                .full_since
                .filter(|_| !self.partitions_paused)
                .map(|t| tokio::time::Instant::from_std(t + BACKPRESSURE_PAUSE_AFTER));
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
                    self.commit(false);
                }
                _ = commit_tick.tick() => {
                    self.commit(false);
                    self.publish_client_metrics();
                }
                _ = tokio::time::sleep_until(long_full.unwrap_or_else(tokio::time::Instant::now)), if long_full.is_some() => {}
                m = consumer.recv(), if may_poll => {
                    match m {
                        Ok(m) => self.on_record(&m).await?,
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

    /// Pauses or resumes the assigned partitions to match the operator's target and long
    /// backpressure. Returns whether the consumer may be polled now: with `cap` records waiting it
    /// is not polled (librdkafka keeps its prefetched records; heartbeats continue), and when that
    /// lasts [`BACKPRESSURE_PAUSE_AFTER`] the partitions are paused and polling resumes (so
    /// `max.poll.interval.ms` is never exceeded) until half of the waiting records are done.
    /// (Pausing at once would make librdkafka drop and re-fetch its prefetched records each time.)
    fn sync_pause(&mut self) -> bool {
        let in_flight = self.shared.tracker.lock().unwrap().in_flight();
        let now = std::time::Instant::now();
        if in_flight >= self.cap {
            self.full_since.get_or_insert(now);
        } else if !self.partitions_paused || in_flight <= self.cap / 2 {
            self.full_since = None;
        }
        let full = self
            .full_since
            .is_some_and(|t| now.duration_since(t) >= BACKPRESSURE_PAUSE_AFTER);
        let may_poll = in_flight < self.cap || self.partitions_paused || full;
        let want = self.ctx.is_paused() || full;
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
        debug!(
            "WorkerSinkTask{{id={}}} partitions {}",
            self.ctx.id,
            if want { "paused" } else { "resumed" }
        );
        self.partitions_paused = want;
        true
    }

    async fn on_record(&mut self, m: &rdkafka::message::BorrowedMessage<'_>) -> anyhow::Result<()> {
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
        let original = self.connector.errors.dlq_topic.as_ref().map(|_| Original {
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
        });
        let rec = InFlight {
            tp,
            generation,
            offset,
            timestamp: m.timestamp().to_millis(),
            original,
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
                let handle = self
                    .client
                    .send(msg)
                    .await
                    .map_err(|_| anyhow::anyhow!("the C2D client closed unexpectedly"))?;
                self.in_flight.insert(id, rec);
                self.events
                    .push(async move { Event::Sent(id, handle.await) }.boxed());
                Ok(())
            }
            Err(msg) => {
                self.record_failed(id, rec, Stage::ValueConverter, msg)
                    .await
            }
        }
    }

    async fn on_event(&mut self, ev: Event) -> anyhow::Result<()> {
        match ev {
            Event::Sent(id, Ok(c)) => {
                let Some(rec) = self.in_flight.remove(&id) else {
                    return Ok(());
                };
                if c.outcome == Outcome::Accepted {
                    if let Some(t) = c.sent_at {
                        super::stats::record(t.elapsed());
                    }
                    METRICS.sink_record_send.get_or_create(&self.labels).inc();
                    METRICS.c2d_accepted.get_or_create(&self.labels).inc();
                    self.finish(&rec);
                    Ok(())
                } else {
                    METRICS.c2d_rejected.get_or_create(&self.labels).inc();
                    let mut msg =
                        format!("IoT Hub rejected the C2D message: {}", c.outcome.label());
                    if let Some(d) = &c.description {
                        msg.push_str(&format!(" ({d})"));
                    }
                    if !c.outcome.is_record_error() {
                        msg.push_str(&format!(
                            " after retrying for errors.retry.timeout ({} attempts)",
                            c.attempts
                        ));
                    }
                    self.record_failed(id, rec, Stage::TaskPut, msg).await
                }
            }
            Event::Sent(_, Err(ClientClosed)) => {
                anyhow::bail!("the C2D client closed before a message completed")
            }
            Event::DeadLettered(id, r) => {
                let Some(rec) = self.in_flight.remove(&id) else {
                    return Ok(());
                };
                match r {
                    Ok(()) => {
                        METRICS.dlq_produce.get_or_create(&self.labels).inc();
                        self.finish(&rec);
                        Ok(())
                    }
                    Err(e) => {
                        self.commit_sync();
                        anyhow::bail!(
                            "could not write the record {}-{}@{} to the dead letter queue {}: {e}",
                            rec.tp.0,
                            rec.tp.1,
                            rec.offset,
                            self.connector.errors.dlq_topic.as_deref().unwrap_or("")
                        )
                    }
                }
            }
        }
    }

    fn finish(&mut self, rec: &InFlight) {
        self.shared
            .tracker
            .lock()
            .unwrap()
            .finish(&rec.tp, rec.generation, rec.offset);
    }

    /// `errors.tolerance` for one failed record.
    async fn record_failed(
        &mut self,
        id: u64,
        rec: InFlight,
        stage: Stage,
        msg: String,
    ) -> anyhow::Result<()> {
        METRICS.record_errors.get_or_create(&self.labels).inc();
        let errors = &self.connector.errors;
        let class = match stage {
            Stage::ValueConverter => self.converter.class_name().to_string(),
            Stage::TaskPut => self.connector.class.clone(),
        };
        if !errors.tolerate_all {
            // commit what is finished before it; nothing at or past it
            self.commit_sync();
            anyhow::bail!(
                "record {}-{} at offset {} (topic {}, partition {}, offset {}) failed in stage {}: {msg}. \
                 errors.tolerance=none: the task stops; nothing at or after this offset is committed",
                rec.tp.0,
                rec.tp.1,
                rec.offset,
                rec.tp.0,
                rec.tp.1,
                rec.offset,
                stage.name()
            );
        }
        if errors.log_enable {
            error!(
                "Error encountered in task {}. Executing stage '{}' with class '{}', where consumed record is {{topic='{}', partition={}, offset={}, timestamp={}, timestampType=CreateTime}}. {msg}",
                self.ctx.id,
                stage.name(),
                class,
                rec.tp.0,
                rec.tp.1,
                rec.offset,
                rec.timestamp.unwrap_or(-1)
            );
        }
        let (Some(topic), Some(producer)) = (errors.dlq_topic.clone(), self.producer.clone())
        else {
            self.finish(&rec);
            return Ok(());
        };
        let original = rec
            .original
            .as_ref()
            .expect("kept when a DLQ is configured");
        let mut headers = OwnedHeaders::new();
        for (k, v) in &original.headers {
            headers = headers.insert(Header {
                key: k,
                value: v.as_deref(),
            });
        }
        if errors.dlq_context_headers {
            let ctx_headers = [
                ("__connect.errors.topic", rec.tp.0.clone()),
                ("__connect.errors.partition", rec.tp.1.to_string()),
                ("__connect.errors.offset", rec.offset.to_string()),
                (
                    "__connect.errors.connector.name",
                    self.connector.name.clone(),
                ),
                ("__connect.errors.task.id", self.ctx.task_id.to_string()),
                ("__connect.errors.stage", stage.name().to_string()),
                ("__connect.errors.class.name", class),
                (
                    "__connect.errors.exception.class.name",
                    "org.apache.kafka.connect.errors.ConnectException".to_string(),
                ),
                ("__connect.errors.exception.message", msg.clone()),
                (
                    "__connect.errors.exception.stacktrace",
                    format!("org.apache.kafka.connect.errors.ConnectException: {msg}"),
                ),
            ];
            for (k, v) in ctx_headers {
                headers = headers.insert(Header {
                    key: k,
                    value: Some(v.as_bytes()),
                });
            }
        }
        let key = original.key.clone();
        let value = original.value.clone();
        self.in_flight.insert(id, rec);
        self.events.push(
            async move {
                let mut record = FutureRecord::<[u8], [u8]>::to(&topic).headers(headers);
                if let Some(k) = key.as_deref() {
                    record = record.key(k);
                }
                if let Some(v) = value.as_deref() {
                    record = record.payload(v);
                }
                let r = producer
                    .send(record, Timeout::Never)
                    .await
                    .map(|_| ())
                    .map_err(|(e, _)| e.to_string());
                Event::DeadLettered(id, r)
            }
            .boxed(),
        );
        Ok(())
    }

    fn commit(&mut self, all: bool) {
        self.commit_offsets(all, CommitMode::Async);
    }

    fn commit_sync(&mut self) {
        self.commit_offsets(true, CommitMode::Sync);
    }

    /// Commits the accepted-or-dead-lettered prefix of every partition (all of it with `all`).
    fn commit_offsets(&mut self, all: bool, mode: CommitMode) {
        let offsets = self
            .shared
            .tracker
            .lock()
            .unwrap()
            .committable(all, |_| true);
        if offsets.is_empty() {
            return;
        }
        let shown = show_offsets(&offsets);
        match mode {
            CommitMode::Sync => info!(
                "WorkerSinkTask{{id={}}} Committing offsets synchronously: {shown}",
                self.ctx.id
            ),
            CommitMode::Async => debug!(
                "WorkerSinkTask{{id={}}} Committing offsets asynchronously: {shown}",
                self.ctx.id
            ),
        }
        match self.consumer.commit(&offsets_tpl(&offsets), mode) {
            Ok(()) => METRICS.commit_succeeded(&self.labels),
            Err(e) => {
                METRICS
                    .offset_commit_failure
                    .get_or_create(&self.labels)
                    .inc();
                warn!(
                    "WorkerSinkTask{{id={}}} Offset commit failed: {e}",
                    self.ctx.id
                );
            }
        }
    }

    /// Shutdown: wait (bounded) for messages in flight, then commit synchronously.
    async fn drain_and_commit(&mut self) -> anyhow::Result<()> {
        let budget = self.ctx.worker.task_shutdown_graceful_timeout.mul_f64(0.7);
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
                        self.events.len()
                    );
                    break;
                }
            }
        }
        self.commit_sync();
        result
    }
}

/// Writes each feedback record as JSON to `topic` (key = device id); settles the AMQP feedback
/// message only after Kafka acknowledged every record of it (released otherwise, so the hub
/// delivers it again).
async fn forward_feedback(
    mut rx: mpsc::Receiver<FeedbackBatch>,
    producer: FutureProducer,
    topic: String,
    id: String,
) {
    while let Some(batch) = rx.recv().await {
        let mut sends = Vec::new();
        for r in &batch.records {
            let payload = match serde_json::to_vec(r) {
                Ok(p) => p,
                Err(e) => {
                    warn!("WorkerSinkTask{{id={id}}} feedback record not serialisable: {e}");
                    continue;
                }
            };
            let key = r.device_id.clone();
            let producer = producer.clone();
            let topic = topic.clone();
            sends.push(async move {
                let mut rec = FutureRecord::<str, [u8]>::to(&topic).payload(&payload[..]);
                if let Some(k) = key.as_deref() {
                    rec = rec.key(k);
                }
                producer
                    .send(rec, Timeout::After(Duration::from_secs(60)))
                    .await
                    .map(|_| ())
                    .map_err(|(e, _)| e)
            });
        }
        let results = futures::future::join_all(sends).await;
        match results.into_iter().find_map(Result::err) {
            None => {
                debug!(
                    "WorkerSinkTask{{id={id}}} {} feedback records written to {topic}",
                    batch.records.len()
                );
                batch.ack.accept();
            }
            Some(e) => {
                warn!("WorkerSinkTask{{id={id}}} could not write feedback to {topic} ({e}); the hub will deliver it again");
                batch.ack.release();
            }
        }
    }
}
