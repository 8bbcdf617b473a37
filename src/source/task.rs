//! The IoT Hub source task (`IotHubSourceTask` + Connect's `WorkerSourceTask` around it).
//!
//! One pipeline per assigned hub partition, all running concurrently:
//!
//! ```text
//! receiver task (owns its Event Hubs client and link)          acker task
//!   receive → drop redelivered (by sequence number)              awaits the delivery futures IN ORDER,
//!   → build the record → enqueue into librdkafka   ──bounded──▶  so what it has seen is exactly the
//!     (order kept: one enqueuer per hub partition)    channel    fully-acked prefix (Connect's
//!                                                                SubmittedRecords) → committable offset
//! ```
//!
//! The bounded channel caps the records in flight per partition; when it is full the receiver stops
//! asking for events, so AMQP credit is only granted as fast as Kafka acknowledges. Every
//! `offset.flush.interval.ms` and at shutdown the task commits the offsets of acknowledged records to
//! the worker's offset store. Transient receive errors reopen the link from the last delivered sequence
//! number with capped exponential backoff; they never end the task.

use super::position::{after_sequence, Start};
use super::record::{OutRecord, RecordBuilder};
use crate::config::{ConnectorConfig, SourceConfig};
use crate::connect::Value;
use crate::offsets::{OffsetBackingStore, PartitionMap};
use crate::rest::metrics::{task_labels, Labels, METRICS};
use crate::worker::backoff::{Attempts, Backoff};
use crate::worker::task::{TargetState, TaskContext};
use azure_messaging_eventhubs::error::ErrorKind as EhErrorKind;
use azure_messaging_eventhubs::models::ReceivedEventData;
use azure_messaging_eventhubs::{ConsumerClient, OpenReceiverOptions, StartPosition};
use futures::StreamExt;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

/// Records in flight (enqueued, not yet acknowledged) per hub partition.
pub const MAX_IN_FLIGHT_PER_PARTITION: usize = 1024;
/// AMQP link credit (prefetch) per partition.
pub const PREFETCH: u32 = 300;
/// First and longest wait between reconnect attempts.
pub const BACKOFF_MIN: Duration = Duration::from_millis(100);
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Wait after `amqp:link:stolen` (another reader holds the partition): slow on purpose.
pub const STOLEN_BACKOFF: Duration = Duration::from_secs(30);

/// What every task of one connector shares.
pub struct SourceShared {
    pub connector: Arc<ConnectorConfig>,
    pub source: SourceConfig,
    pub records: Arc<RecordBuilder>,
}

impl SourceShared {
    /// toketi's source partition map: `{"EventHubName":…,"EventHubPartition":"n"}`.
    pub fn source_partition(&self, partition: &str) -> PartitionMap {
        vec![
            (
                "EventHubName".to_string(),
                self.source.connection.event_hub_name.clone(),
            ),
            ("EventHubPartition".to_string(), partition.to_string()),
        ]
    }
}

/// Opens an Event Hubs consumer client for the connector's hub (custom endpoint and consumer group).
pub async fn open_client(
    source: &SourceConfig,
) -> azure_messaging_eventhubs::Result<ConsumerClient> {
    let mut b = ConsumerClient::builder()
        .with_consumer_group(source.consumer_group.clone())
        .with_application_id("iotconnect".to_string());
    if let Some(ep) = &source.custom_endpoint {
        b = b.with_custom_endpoint(ep.clone());
    }
    b.open_with_connection_string(source.connection.connection_string().expose(), None)
        .await
}

/// Progress of one hub partition, written by its acker and read by the committer.
#[derive(Default)]
struct Progress {
    /// `x-opt-offset` of the last record of the acknowledged prefix, not yet committed.
    pending_offset: Option<String>,
    /// Its sequence number (for the lag metric).
    pending_seq: Option<i64>,
    /// Acknowledged records since the last commit.
    acked: u64,
}

struct Partition {
    id: String,
    progress: Mutex<Progress>,
}

/// One enqueued (or deliberately dropped) record, in hub order, for the acker.
enum InFlight {
    Sent {
        delivery: DeliveryFuture,
        offset: String,
        seq: Option<i64>,
        enqueued_ms: Option<i64>,
    },
    /// Skipped (conversion failed with `errors.tolerance=all`): counts as done for offsets.
    Skipped { offset: String, seq: Option<i64> },
}

/// Runs one task until `ctx.shutdown`; returns `Err` only for non-retriable errors.
pub async fn run(
    mut ctx: TaskContext,
    shared: Arc<SourceShared>,
    partitions: Vec<(String, String)>,
) -> anyhow::Result<()> {
    let name = shared.connector.name.clone();
    let id = ctx.id.clone();
    debug!("Starting IotHubSourceTask");
    let list: Vec<&str> = partitions.iter().map(|(p, _)| p.as_str()).collect();
    info!(
        "Starting IotHubSourceTask for partitions {}",
        list.join(",")
    );
    let settings =
        crate::config::kafka::producer_settings(&ctx.worker, &shared.connector, ctx.task_id)
            .map_err(|p| anyhow::anyhow!("{p}"))?;
    let producer: FutureProducer = settings
        .config
        .create()
        .map_err(|e| anyhow::anyhow!("cannot create the Kafka producer: {e}"))?;
    let producer = Arc::new(producer);

    // Start positions, resolved once per run (a restart re-reads the store).
    let mut starts = Vec::new();
    for (p, initial) in &partitions {
        let sp = shared.source_partition(p);
        debug!(
            "Attempting to get saved offset for SourcePartition: {{EventHubName={}, EventHubPartition={p}}}",
            shared.source.connection.event_hub_name
        );
        let saved = ctx.offsets.get(&name, &sp).await?;
        let saved_offset = match &saved {
            None => None,
            Some(m) => match m.iter().find(|(k, _)| k == "EventHubOffset") {
                Some((_, Value::String(v))) if !v.trim().is_empty() => Some(v.clone()),
                _ => anyhow::bail!(
                    "the offset store ({}) holds an unusable offset for {name} partition {p} (no EventHubOffset string): \
                     remove it with `iotconnect offsets reset <offsets file> --connector {name} --partition {p}` while the worker is stopped",
                    ctx.offsets.describe()
                ),
            },
        };
        let start = Start::resolve(saved_offset.as_deref(), shared.source.start_time, initial);
        info!("{}", start.log_line(p));
        starts.push((p.clone(), start));
    }

    let labels = task_labels(&name, ctx.task_id);
    let stop = CancellationToken::new();
    let lag = tokio::spawn(refresh_lag(
        shared.clone(),
        partitions.iter().map(|(p, _)| p.clone()).collect(),
        stop.clone(),
    ));
    let (fatal_tx, mut fatal_rx) = mpsc::channel::<anyhow::Error>(starts.len().max(1));
    let links_up = Arc::new(AtomicUsize::new(0));
    let total = starts.len();
    let mut parts = Vec::new();
    let mut receivers = Vec::new();
    let mut ackers = Vec::new();
    for (p, start) in starts {
        let part = Arc::new(Partition {
            id: p.clone(),
            progress: Mutex::new(Progress::default()),
        });
        parts.push(part.clone());
        let (tx, rx) = mpsc::channel::<InFlight>(MAX_IN_FLIGHT_PER_PARTITION);
        let reader = Reader {
            labels: labels.clone(),
            shared: shared.clone(),
            producer: producer.clone(),
            partition: p.clone(),
            start,
            last_seq: None,
            stop: stop.clone(),
            target: ctx.target.clone(),
            out: tx,
            fatal: fatal_tx.clone(),
            links_up: links_up.clone(),
            total,
            health: ctx.health.clone(),
        };
        receivers.push(tokio::spawn(reader.run()));
        ackers.push(tokio::spawn(ack_loop(
            labels.clone(),
            rx,
            part,
            shared.connector.errors.tolerate_all,
            fatal_tx.clone(),
        )));
    }
    drop(fatal_tx);

    let interval = ctx
        .worker
        .offset_flush_interval
        .max(Duration::from_millis(1));
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failure: Option<anyhow::Error> = None;
    loop {
        tokio::select! {
            _ = ctx.shutdown.cancelled() => break,
            e = fatal_rx.recv() => {
                if let Some(e) = e { failure = Some(e); }
                break;
            }
            _ = tick.tick() => {
                if let Err(e) = commit(&shared, &*ctx.offsets, &id, &labels, &parts).await {
                    error!("WorkerSourceTask{{id={id}}} Flush of offsets threw an unexpected exception: {e:#}");
                }
            }
            r = ctx.target.changed() => {
                if r.is_err() { break; }
            }
        }
    }
    // Stop receiving, then wait (bounded) for the records in flight, then the final commit.
    info!("Stopping IotHubSourceTask");
    stop.cancel();
    for r in receivers {
        let _ = tokio::time::timeout(Duration::from_secs(2), r).await;
    }
    // Wait for in-flight records up to offset.flush.timeout.ms, but leave room in the graceful
    // shutdown budget for the final commit.
    let budget = ctx
        .worker
        .offset_flush_timeout
        .min(ctx.worker.task_shutdown_graceful_timeout.mul_f64(0.7));
    let deadline = tokio::time::Instant::now() + budget;
    let flushed = {
        let p = producer.clone();
        let left = budget;
        tokio::task::spawn_blocking(move || p.flush(left)).await
    };
    if !matches!(flushed, Ok(Ok(()))) {
        warn!("WorkerSourceTask{{id={id}}} Timed out waiting for in-flight records to be acknowledged; their offsets are not committed and they will be read again");
    }
    for a in ackers {
        if tokio::time::timeout_at(deadline, a).await.is_err() {
            break;
        }
    }
    // Also after a failure: only acknowledged positions are ever committed (Connect does the same).
    if let Err(e) = commit(&shared, &*ctx.offsets, &id, &labels, &parts).await {
        error!("WorkerSourceTask{{id={id}}} Flush of offsets threw an unexpected exception: {e:#}");
    }
    lag.abort();
    ctx.health.set_links_up(false);
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Commits the acknowledged offsets of every partition (Connect's `commitOffsets`).
async fn commit(
    shared: &SourceShared,
    offsets: &dyn OffsetBackingStore,
    id: &str,
    labels: &Labels,
    parts: &[Arc<Partition>],
) -> anyhow::Result<()> {
    let t0 = Instant::now();
    let mut entries = Vec::new();
    let mut count = 0u64;
    let mut taken = Vec::new();
    for p in parts {
        let mut g = p.progress.lock().unwrap();
        if let Some(o) = g.pending_offset.take() {
            entries.push((
                shared.source_partition(&p.id),
                Some(vec![(
                    "EventHubOffset".to_string(),
                    Value::String(o.clone()),
                )]),
            ));
            count += g.acked;
            taken.push((p.clone(), o, g.acked, g.pending_seq.take()));
            g.acked = 0;
        }
    }
    if entries.is_empty() {
        debug!("WorkerSourceTask{{id={id}}} Either no records were produced by the task since the last offset commit, or every record has been filtered out");
        return Ok(());
    }
    info!("WorkerSourceTask{{id={id}}} Committing offsets for {count} acknowledged messages");
    match offsets.put(&shared.connector.name, entries).await {
        Ok(()) => {
            info!(
                "Finished WorkerSourceTask{{id={id}}} commitOffsets successfully in {} ms",
                t0.elapsed().as_millis()
            );
            METRICS.commit_succeeded(labels);
            for (p, _, _, seq) in &taken {
                if let Some(seq) = seq {
                    partition_committed(&shared.connector.name, &p.id, *seq);
                }
            }
            Ok(())
        }
        Err(e) => {
            METRICS.offset_commit_failure.get_or_create(labels).inc();
            // Keep them for the next attempt unless newer offsets arrived meanwhile.
            for (p, o, n, seq) in taken {
                let mut g = p.progress.lock().unwrap();
                if g.pending_offset.is_none() {
                    g.pending_offset = Some(o);
                    g.pending_seq = seq;
                }
                g.acked += n;
            }
            Err(e)
        }
    }
}

/// Awaits the delivery futures of one partition in hub order.
async fn ack_loop(
    labels: Labels,
    mut rx: mpsc::Receiver<InFlight>,
    part: Arc<Partition>,
    tolerate_all: bool,
    fatal: mpsc::Sender<anyhow::Error>,
) {
    while let Some(item) = rx.recv().await {
        let (offset, seq, ok) = match item {
            InFlight::Skipped { offset, seq } => (offset, seq, true),
            InFlight::Sent {
                delivery,
                offset,
                seq,
                enqueued_ms,
            } => match delivery.await {
                Ok(Ok(_)) => {
                    METRICS.source_record_write.get_or_create(&labels).inc();
                    if let Some(ms) = enqueued_ms {
                        super::metrics::record_ack_latency(ms);
                    }
                    (offset, seq, true)
                }
                Ok(Err((e, _))) => {
                    if tolerate_all {
                        error!(
                            "WorkerSourceTask: failed to send a record of hub partition {} (offset {offset}), skipped (errors.tolerance=all): {e}",
                            part.id
                        );
                        (offset, seq, true)
                    } else {
                        let _ = fatal
                            .send(anyhow::anyhow!(
                                "Unrecoverable exception from producer send callback: hub partition {} offset {offset}: {e}",
                                part.id
                            ))
                            .await;
                        (offset, seq, false)
                    }
                }
                Err(_) => (offset, seq, false), // producer gone: shutting down
            },
        };
        if !ok {
            // Nothing after an unacknowledged record may be committed.
            return;
        }
        let mut g = part.progress.lock().unwrap();
        g.pending_offset = Some(offset);
        if seq.is_some() {
            g.pending_seq = seq;
        }
        g.acked += 1;
    }
}

/// The receiving half of one partition's pipeline.
struct Reader {
    /// `connector`, `task` metric labels.
    labels: Labels,
    shared: Arc<SourceShared>,
    producer: Arc<FutureProducer>,
    partition: String,
    start: Start,
    /// Sequence number of the last event handed on (for reconnects and dropping redeliveries).
    last_seq: Option<i64>,
    stop: CancellationToken,
    target: watch::Receiver<TargetState>,
    out: mpsc::Sender<InFlight>,
    fatal: mpsc::Sender<anyhow::Error>,
    links_up: Arc<AtomicUsize>,
    total: usize,
    health: Arc<crate::worker::task::TaskHealth>,
}

/// Why a link session ended.
enum LinkEnd {
    Stop,
    Paused,
    Fatal,
    Transient(String),
    Stolen(String),
}

impl Reader {
    fn position(&self) -> StartPosition {
        match self.last_seq {
            Some(s) => after_sequence(s),
            None => self.start.position(),
        }
    }

    fn link(&self, up: bool) {
        let n = if up {
            self.links_up.fetch_add(1, Ordering::SeqCst) + 1
        } else {
            self.links_up.fetch_sub(1, Ordering::SeqCst) - 1
        };
        self.health.set_links_up(n == self.total);
    }

    async fn sleep(&self, d: Duration) -> bool {
        tokio::select! {
            _ = self.stop.cancelled() => false,
            _ = tokio::time::sleep(d) => true,
        }
    }

    async fn run(mut self) {
        let hub = self.shared.source.connection.event_hub_name.clone();
        let p = self.partition.clone();
        let mut backoff = Backoff::new(BACKOFF_MIN, BACKOFF_MAX).attempts();
        loop {
            if self.stop.is_cancelled() {
                return;
            }
            if *self.target.borrow() != TargetState::Started {
                tokio::select! {
                    _ = self.stop.cancelled() => return,
                    r = self.target.changed() => { if r.is_err() { return; } continue; }
                }
            }
            let client = match tokio::select! {
                _ = self.stop.cancelled() => return,
                c = open_client(&self.shared.source) => c,
            } {
                Ok(c) => c,
                Err(e) => {
                    let d = backoff.step();
                    warn!("Cannot connect to eventHub {hub} for partition {p}: {e}; retrying in {} ms", d.as_millis());
                    if !self.sleep(d).await {
                        return;
                    }
                    continue;
                }
            };
            let opts = OpenReceiverOptions {
                start_position: Some(self.position()),
                prefetch: Some(PREFETCH),
                owner_level: None,
                receive_timeout: None,
            };
            let end = match client
                .open_receiver_on_partition(p.clone(), Some(opts))
                .await
            {
                Err(e) => LinkEnd::Transient(format!("cannot open the receiver: {e}")),
                Ok(rx) => {
                    self.link(true);
                    let end = self.session(&rx, &mut backoff).await;
                    self.link(false);
                    if matches!(end, LinkEnd::Stop | LinkEnd::Fatal) {
                        // Detach in the background: the final offset commit must not wait for it.
                        tokio::spawn(async move {
                            let _ = tokio::time::timeout(Duration::from_secs(5), rx.close()).await;
                            let _ =
                                tokio::time::timeout(Duration::from_secs(5), client.close()).await;
                        });
                        return;
                    }
                    let _ = tokio::time::timeout(Duration::from_secs(5), rx.close()).await;
                    end
                }
            };
            let _ = tokio::time::timeout(Duration::from_secs(5), client.close()).await;
            let wait = match end {
                LinkEnd::Stop | LinkEnd::Fatal => return,
                LinkEnd::Paused => continue,
                LinkEnd::Transient(why) => {
                    METRICS
                        .reconnects
                        .get_or_create(&vec![
                            ("connector".to_string(), self.shared.connector.name.clone()),
                            ("endpoint".to_string(), "eventhubs".to_string()),
                        ])
                        .inc();
                    let d = backoff.step();
                    warn!(
                        "Error while getting SourceRecords for eventHub {hub} partition {p}: {why}; reconnecting after sequence number {} in {} ms",
                        self.last_seq.map_or("(start)".to_string(), |s| s.to_string()),
                        d.as_millis()
                    );
                    d
                }
                LinkEnd::Stolen(why) => {
                    error!(
                        "Partition {p} of eventHub {hub} was taken by another reader in consumer group {} (amqp:link:stolen: {why}); give iotconnect its own consumer group. Retrying in {} s",
                        self.shared.source.consumer_group,
                        STOLEN_BACKOFF.as_secs()
                    );
                    STOLEN_BACKOFF
                }
            };
            if !self.sleep(wait).await {
                return;
            }
        }
    }

    /// Receives on one open link until it fails, the task stops or pauses.
    async fn session(
        &mut self,
        rx: &azure_messaging_eventhubs::EventReceiver,
        backoff: &mut Attempts,
    ) -> LinkEnd {
        let hub = self.shared.source.connection.event_hub_name.clone();
        let p = self.partition.clone();
        let batch = self.shared.source.batch_size.max(1);
        let timeout = self.shared.source.receive_timeout;
        let mut stream = rx.stream_events().ready_chunks(batch);
        let mut dropped = 0u64;
        let stop = self.stop.clone();
        let mut target = self.target.clone();
        loop {
            debug!("Polling for data from eventHub {hub} partition {p}");
            let next = async {
                if timeout.is_zero() {
                    Some(stream.next().await)
                } else {
                    tokio::time::timeout(timeout, stream.next()).await.ok()
                }
            };
            let got = tokio::select! {
                biased;
                _ = stop.cancelled() => return LinkEnd::Stop,
                r = target.changed() => {
                    if r.is_err() { return LinkEnd::Stop; }
                    if *target.borrow() != TargetState::Started { return LinkEnd::Paused; }
                    continue;
                }
                n = next => n,
            };
            let items = match got {
                None => {
                    debug!("Finished processing all messages from eventHub {hub} partition {p}");
                    continue;
                }
                Some(None) => return LinkEnd::Transient("the receive stream ended".into()),
                Some(Some(items)) => items,
            };
            debug!(
                "Received {} messages from eventHub {hub} partition {p} (requested {batch} batch)",
                items.len()
            );
            for item in items {
                let ev = match item {
                    Ok(ev) => ev,
                    Err(e) => {
                        if dropped > 0 {
                            debug!("partition {p}: dropped {dropped} redelivered events");
                        }
                        return match e.kind {
                            EhErrorKind::ConsumerDisconnected(d) => {
                                LinkEnd::Stolen(format!("{d:?}"))
                            }
                            _ => LinkEnd::Transient(e.to_string()),
                        };
                    }
                };
                backoff.reset();
                if let Some(seq) = ev.sequence_number() {
                    if self.last_seq.is_some_and(|last| seq <= last) {
                        dropped += 1;
                        continue;
                    }
                }
                if !self.hand_on(&ev).await {
                    return LinkEnd::Fatal;
                }
                if let Some(seq) = ev.sequence_number() {
                    self.last_seq = Some(seq);
                }
            }
        }
    }

    /// Builds, enqueues and passes one event to the acker. False when the task must stop.
    async fn hand_on(&mut self, ev: &ReceivedEventData) -> bool {
        let offset = ev.offset().clone().unwrap_or_default();
        let seq = ev.sequence_number();
        METRICS.source_record_poll.get_or_create(&self.labels).inc();
        let enqueued_ms = ev.enqueued_time().map(|t| {
            t.duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0)
        });
        let rec = match self.shared.records.build(ev) {
            Ok(r) => r,
            Err(e) => {
                if self.shared.connector.errors.tolerate_all {
                    error!(
                        "Error converting the event at offset {offset} of partition {}: {e:#}; skipped (errors.tolerance=all)",
                        self.partition
                    );
                    METRICS.record_errors.get_or_create(&self.labels).inc();
                    return self
                        .out
                        .send(InFlight::Skipped { offset, seq })
                        .await
                        .is_ok();
                }
                let _ = self
                    .fatal
                    .send(anyhow::anyhow!(
                        "Error converting the event at offset {offset} of partition {}: {e:#}",
                        self.partition
                    ))
                    .await;
                return false;
            }
        };
        let delivery = match self.enqueue(&rec).await {
            Some(d) => d,
            None => return false,
        };
        let item = InFlight::Sent {
            delivery,
            offset,
            seq,
            enqueued_ms,
        };
        // Space for it first; a stop while the acker is full (Kafka slow or down) must not hang: the
        // record is then simply not committed, and read again after a restart.
        tokio::select! {
            biased;
            r = self.out.send(item) => r.is_ok(),
            _ = self.stop.cancelled() => false,
        }
    }

    /// Enqueues into librdkafka, waiting while its queue is full. None when stopping or fatal.
    async fn enqueue(&self, rec: &OutRecord) -> Option<DeliveryFuture> {
        let topic = self.shared.source.topic.as_str();
        loop {
            let mut fr: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic);
            if let Some(k) = &rec.key {
                fr = fr.key(k.as_slice());
            }
            if let Some(v) = &rec.value {
                fr = fr.payload(v.as_slice());
            }
            if let Some(ts) = rec.timestamp {
                fr = fr.timestamp(ts);
            }
            if !rec.headers.is_empty() {
                let mut h = OwnedHeaders::new_with_capacity(rec.headers.len());
                for (k, v) in &rec.headers {
                    h = h.insert(Header {
                        key: k,
                        value: Some(v.as_slice()),
                    });
                }
                fr = fr.headers(h);
            }
            match self.producer.send_result(fr) {
                Ok(d) => return Some(d),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    // librdkafka's queue is full: give its I/O thread a moment.
                    if !self.sleep(Duration::from_millis(2)).await {
                        return None;
                    }
                }
                Err((e, _)) => {
                    let _ = self
                        .fatal
                        .send(anyhow::anyhow!(
                            "cannot send a record of hub partition {} to topic {topic}: {e}",
                            self.partition
                        ))
                        .await;
                    return None;
                }
            }
        }
    }
}

fn partition_labels(connector: &str, partition: &str) -> Labels {
    vec![
        ("connector".to_string(), connector.to_string()),
        ("partition".to_string(), partition.to_string()),
    ]
}

/// Lag of a hub partition = last enqueued sequence number − last committed one (−1 when nothing is).
fn update_lag(labels: &Labels) {
    let last = METRICS
        .partition_last_enqueued_sequence
        .get_or_create(labels)
        .get();
    let committed = METRICS
        .partition_committed_sequence
        .get_or_create(labels)
        .get();
    METRICS
        .partition_lag
        .get_or_create(labels)
        .set((last - committed).max(0));
}

fn partition_committed(connector: &str, partition: &str, seq: i64) {
    let labels = partition_labels(connector, partition);
    METRICS
        .partition_committed_sequence
        .get_or_create(&labels)
        .set(seq);
    update_lag(&labels);
}

/// How often the hub is asked for its partitions' last enqueued sequence numbers.
const LAG_REFRESH: Duration = Duration::from_secs(5);

/// Keeps the lag metric current: every few seconds asks `$management` for each partition's last
/// enqueued sequence number. Failures only skip a refresh.
async fn refresh_lag(shared: Arc<SourceShared>, partitions: Vec<String>, stop: CancellationToken) {
    let name = shared.connector.name.clone();
    for p in &partitions {
        let labels = partition_labels(&name, p);
        // Nothing committed yet: the lag is everything since the start of the stream.
        METRICS
            .partition_committed_sequence
            .get_or_create(&labels)
            .set(-1);
    }
    let mut client = None;
    loop {
        if client.is_none() {
            client = open_client(&shared.source).await.ok();
        }
        if let Some(c) = &client {
            for p in &partitions {
                match c.get_partition_properties(p).await {
                    Ok(props) => {
                        let labels = partition_labels(&name, p);
                        let last = if props.is_empty {
                            -1
                        } else {
                            props.last_enqueued_sequence_number
                        };
                        METRICS
                            .partition_last_enqueued_sequence
                            .get_or_create(&labels)
                            .set(last);
                        update_lag(&labels);
                    }
                    Err(e) => {
                        debug!("lag refresh of partition {p} failed: {e}");
                        client = None;
                        break;
                    }
                }
            }
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(LAG_REFRESH) => {}
        }
    }
    if let Some(c) = client {
        let _ = tokio::time::timeout(Duration::from_secs(2), c.close()).await;
    }
}
