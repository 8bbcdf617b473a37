//! The IoT Hub source task (`IotHubSourceTask` + Connect's `WorkerSourceTask` around it).
//!
//! One pipeline per assigned hub partition, all running concurrently:
//!
//! ```text
//! receiver (reader.rs: owns its Event Hubs client and link)   librdkafka's delivery reports
//!   receive a batch → drop redelivered (by sequence number)     (produce.rs: Completer, on the
//!   → build the records → submit them to the partition's   ──▶  producer's polling thread)
//!     Acker (acker.rs, one lock per batch) → enqueue each        complete each ticket in the
//!     into librdkafka with its ticket (hub order kept)           Acker → committable offset
//!   stall watchdog (stall.rs)
//! ```
//!
//! [`Room`] caps the records in flight per partition (about [`MAX_IN_FLIGHT_PER_PARTITION`], plus at
//! most one batch); when it is reached the receiver stops asking for events, so AMQP credit is only
//! granted as fast as Kafka acknowledges. Every
//! `offset.flush.interval.ms` and at shutdown the task commits, per partition, the offset of the
//! longest fully finished prefix of its records to the worker's offset store, also after a failure
//! (never past a record that failed or is still in flight). Transient receive errors and stalls reopen
//! the link from the last delivered sequence number; they never end the task. Refused credentials,
//! non-record Kafka errors and (with `errors.tolerance=none`) record errors end it.

use super::acker::Acker;
use super::position::Start;
use super::reader::Reader;
use super::record::RecordBuilder;
use super::stall::Ages;
use crate::config::{ConnectorConfig, SourceConfig};
use crate::connect::Value;
use crate::offsets::{OffsetBackingStore, PartitionMap};
use crate::rest::metrics::{task_labels, Labels, METRICS};
use crate::worker::task::TaskContext;
use azure_messaging_eventhubs::ConsumerClient;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

/// AMQP link credit per partition (the benchmark's raw reader uses the same).
pub use super::reader::PREFETCH;

/// Records in flight (enqueued, not yet acknowledged) per hub partition.
pub const MAX_IN_FLIGHT_PER_PARTITION: usize = 1024;
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
    if source.transport.kind == super::transport::TransportType::AmqpWebSockets {
        b = b.with_transport(azure_messaging_eventhubs::models::AmqpTransport::WebSocket);
    }
    b.open_with_connection_string(source.connection.connection_string().expose(), None)
        .await
}

/// One hub partition of the task: its acknowledgement state (fed by its receiver and its delivery
/// reports, taken by the committer), the ages of its last event and commit, and its in-flight cap.
pub struct Partition {
    pub id: String,
    pub acker: Mutex<Acker>,
    pub ages: Ages,
    pub room: Room,
}

/// The in-flight cap of one partition: the receiver waits while [`MAX_IN_FLIGHT_PER_PARTITION`]
/// records are unfinished and is woken once fewer than three quarters of it are. Only a waiting
/// receiver is ever woken (no wake-up per record).
#[derive(Default)]
pub struct Room {
    waiting: AtomicBool,
    freed: tokio::sync::Notify,
}

impl Room {
    /// Called after a completion left `unfinished` records.
    pub fn freed(&self, unfinished: usize) {
        if unfinished < MAX_IN_FLIGHT_PER_PARTITION * 3 / 4
            && self.waiting.load(Ordering::SeqCst)
            && self.waiting.swap(false, Ordering::SeqCst)
        {
            self.freed.notify_one();
        }
    }

    /// Waits until `acker` has room for more records. False when `stop` fired first.
    pub async fn wait(&self, acker: &Mutex<Acker>, stop: &CancellationToken) -> bool {
        loop {
            if acker.lock().unwrap().unfinished() < MAX_IN_FLIGHT_PER_PARTITION {
                return true;
            }
            self.waiting.store(true, Ordering::SeqCst);
            // Checked again after announcing the wait: a completion in between left a permit.
            if acker.lock().unwrap().unfinished() < MAX_IN_FLIGHT_PER_PARTITION {
                self.waiting.store(false, Ordering::SeqCst);
                return true;
            }
            tokio::select! {
                _ = stop.cancelled() => return false,
                _ = self.freed.notified() => {}
            }
        }
    }
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
    // The worker's producer of this run (created by the worker, dropped when the run ends).
    let producer = ctx.producer()?;

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
    let lag = tokio::spawn(super::lag::refresh_lag(
        shared.clone(),
        partitions.iter().map(|(p, _)| p.clone()).collect(),
        stop.clone(),
    ));
    let (fatal_tx, mut fatal_rx) = mpsc::channel::<anyhow::Error>(starts.len().max(1));
    let links_up = Arc::new(AtomicUsize::new(0));
    let total = starts.len();
    let mut parts = Vec::new();
    let mut receivers = Vec::new();
    for (p, start) in starts {
        let part = Arc::new(Partition {
            id: p.clone(),
            acker: Mutex::new(Acker::new()),
            ages: Ages::new(&name, &p),
            room: Room::default(),
        });
        parts.push(part.clone());
        let completer = super::produce::Completer::new(
            labels.clone(),
            shared.clone(),
            part.clone(),
            &producer,
            fatal_tx.clone(),
            stop.clone(),
        );
        let reader = Reader {
            polled: METRICS.source_record_poll.get_or_create(&labels).clone(),
            labels: labels.clone(),
            shared: shared.clone(),
            producer: producer.clone(),
            completer,
            part,
            start,
            last_seq: None,
            stop: stop.clone(),
            target: ctx.target.clone(),
            fatal: fatal_tx.clone(),
            links_up: links_up.clone(),
            total,
            health: ctx.health.clone(),
        };
        receivers.push(tokio::spawn(reader.run()));
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
    // Delivery reports are served before flush returns: the acks are in the ackers after it.
    if !producer.flush(budget).await {
        warn!("WorkerSourceTask{{id={id}}} Timed out waiting for in-flight records to be acknowledged; their offsets are not committed and they will be read again");
    }
    // Also after a failure: only acknowledged positions are ever committed (Connect does the same).
    if let Err(e) = commit(&shared, &*ctx.offsets, &id, &labels, &parts).await {
        error!("WorkerSourceTask{{id={id}}} Flush of offsets threw an unexpected exception: {e:#}");
    }
    lag.abort();
    ctx.health.set_links_up(false);
    for p in &parts {
        ctx.health.set_stalled(&p.id, false);
    }
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
        let took = p.acker.lock().unwrap().take();
        if let Some((pos, n)) = took {
            entries.push((
                shared.source_partition(&p.id),
                Some(vec![(
                    "EventHubOffset".to_string(),
                    Value::String(pos.offset.clone()),
                )]),
            ));
            count += n;
            taken.push((p.clone(), pos, n));
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
            for (p, pos, _) in &taken {
                p.ages.committed();
                if let Some(seq) = pos.seq {
                    super::lag::partition_committed(&shared.connector.name, &p.id, seq);
                }
            }
            Ok(())
        }
        Err(e) => {
            METRICS.offset_commit_failure.get_or_create(labels).inc();
            // Keep them for the next attempt unless newer offsets arrived meanwhile.
            for (p, pos, n) in taken {
                p.acker.lock().unwrap().untake(pos, n);
            }
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::acker::Outcome;

    /// The receiver waits while the cap is reached and is woken only once completions bring the
    /// partition below three quarters of it; a stop ends the wait.
    #[tokio::test]
    async fn room_waits_at_the_cap_and_wakes_below_three_quarters() {
        let acker = Arc::new(Mutex::new(Acker::new()));
        let room = Arc::new(Room::default());
        let tickets: Vec<_> = (0..MAX_IN_FLIGHT_PER_PARTITION)
            .map(|_| acker.lock().unwrap().submit(None))
            .collect();
        let stop = CancellationToken::new();
        let waiter = {
            let (acker, room, stop) = (acker.clone(), room.clone(), stop.clone());
            tokio::spawn(async move { room.wait(&acker, &stop).await })
        };
        let complete = |n: usize, from: usize| {
            for t in &tickets[from..from + n] {
                acker.lock().unwrap().complete(*t, Outcome::Delivered);
            }
            let left = acker.lock().unwrap().unfinished();
            room.freed(left);
            left
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "full: the receiver waits");
        // Still at or above three quarters: no wake-up.
        assert_eq!(complete(MAX_IN_FLIGHT_PER_PARTITION / 4, 0), 768);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "not below three quarters yet");
        complete(1, MAX_IN_FLIGHT_PER_PARTITION / 4);
        let woke = tokio::time::timeout(Duration::from_secs(2), waiter).await;
        assert!(matches!(woke, Ok(Ok(true))), "woken below three quarters");

        // Full again, then stopped.
        for _ in 0..MAX_IN_FLIGHT_PER_PARTITION {
            acker.lock().unwrap().submit(None);
        }
        let waiter = {
            let (acker, room, stop) = (acker.clone(), room.clone(), stop.clone());
            tokio::spawn(async move { room.wait(&acker, &stop).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        stop.cancel();
        let r = tokio::time::timeout(Duration::from_secs(2), waiter).await;
        assert!(matches!(r, Ok(Ok(false))), "a stop ends the wait");
    }
}
