//! One owned hub partition of a source connector in distributed mode: receive → convert → produce,
//! with the partition's offset written to `offset.storage.topic` after every batch.
//!
//! Exactly-once (`exactly.once.source.support=enabled`), per batch:
//! `begin_transaction` → the batch's records → its offset record → `commit_transaction`.
//! * `transactional.id = <group.id>-<connector>-<hub partition>`: whoever owns the partition next
//!   calls `init_transactions` with the same id, which fences this producer and aborts its open
//!   transaction, so a paused or partitioned old owner can never commit again (KIP-618's fencing).
//! * The start position is read from the offsets topic **after** `init_transactions`, once no
//!   transaction before the topic's end is still open ([`super::start`]), so it is exactly the end of
//!   the last committed batch: nothing lost, nothing twice.
//! * The hub receiver is an owner-level (epoch) receiver whose level is fixed when the pipeline
//!   starts: a newer owner's receiver kicks this one off, and this one can never kick a newer one.
//!
//! At-least-once (disabled): the same loop with the idempotent producer; the offset record is written
//! once every record of the batch is acknowledged.
//!
//! On a transient error the batch is aborted (or simply not committed) and the receiver reopens after
//! the last committed sequence number. If a commit or an abort itself fails, the producer's
//! transaction state is unknown: the pipeline drops it and starts over with a new producer, whose
//! `init_transactions` aborts what the old one left open, from the offset committed in the topic.
//! Stop (revocation, shutdown) ends between batches: the current
//! transaction is committed (or aborted) before [`run`] returns.

use super::status::{task_key, StatusWriter};
use crate::config::distributed::{DistributedConfig, TransactionBoundary};
use crate::config::{ConnectorConfig, SourceConfig};
use crate::offsets::kafka::offset_record;
use crate::source::position::{after_sequence, Start};
use crate::source::record::{OutRecord, RecordBuilder};
use crate::source::task::open_client;
use crate::worker::backoff::Backoff;
use crate::worker::producer::{Client, Delivery, EnqueueError, Producer, SendError};
use azure_messaging_eventhubs::error::ErrorKind as EhErrorKind;
use azure_messaging_eventhubs::{OpenReceiverOptions, StartPosition};
use futures::StreamExt;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureRecord, Producer as _};
use rdkafka::ClientConfig;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// What every owned partition of one source connector shares.
pub struct SourceJob {
    pub cfg: Arc<DistributedConfig>,
    pub connector: Arc<ConnectorConfig>,
    pub source: SourceConfig,
    pub records: Arc<RecordBuilder>,
    /// Producer settings of the connector (before the transactional id).
    pub producer_base: ClientConfig,
    /// Consumer settings for reading the worker's topics.
    pub consumer_base: ClientConfig,
    pub status: StatusWriter,
    /// The hub's partition ids, in coordination-topic order (index i = Kafka partition i).
    pub partitions: Vec<String>,
}

impl SourceJob {
    pub fn source_partition(&self, p: &str) -> [(&str, String); 2] {
        [
            (
                "EventHubName",
                self.source.connection.event_hub_name.clone(),
            ),
            ("EventHubPartition", p.to_string()),
        ]
    }

    pub fn transactional_id(&self, p: &str) -> String {
        format!("{}-{}-{p}", self.cfg.group_id, self.connector.name)
    }
}

/// Why a pipeline ended.
#[derive(Debug)]
pub enum End {
    /// Asked to stop; the last batch is committed or aborted.
    Stopped,
    /// Another owner took over (producer fenced or receiver kicked off by a newer epoch).
    Fenced(String),
    /// A non-retriable error.
    Failed(anyhow::Error),
}

fn is_fenced(e: &KafkaError) -> bool {
    match e {
        KafkaError::Transaction(t) => {
            t.is_fatal()
                || matches!(
                    t.code(),
                    RDKafkaErrorCode::ProducerFenced | RDKafkaErrorCode::InvalidProducerEpoch
                )
        }
        other => matches!(
            other.rdkafka_error_code(),
            Some(RDKafkaErrorCode::ProducerFenced)
                | Some(RDKafkaErrorCode::InvalidProducerEpoch)
                | Some(RDKafkaErrorCode::Fenced)
        ),
    }
}

/// Runs a blocking producer call off the async threads.
pub(super) async fn blocking<T: Send + 'static>(
    p: &Producer,
    f: impl FnOnce(&Client) -> Result<T, KafkaError> + Send + 'static,
) -> Result<T, KafkaError> {
    let p = p.clone();
    tokio::task::spawn_blocking(move || f(p.client()))
        .await
        .expect("producer call panicked")
}

/// Runs hub partition `index` until `stop` or an end; writes its status.
/// `generation` is the coordination group's generation of the assignment that started it.
pub async fn run(
    job: Arc<SourceJob>,
    index: usize,
    generation: i32,
    stop: CancellationToken,
) -> End {
    let p = job.partitions[index].clone();
    let key = task_key(&job.connector.name, index as i32);
    let end = run_inner(&job, &p, generation, &stop).await;
    match &end {
        End::Stopped => job.status.put(&key, "UNASSIGNED", None, generation).await,
        End::Fenced(why) => info!(
            "WorkerSourceTask{{id={}-{index}}} hub partition {p} was taken over by another worker: {why}",
            job.connector.name
        ),
        End::Failed(e) => {
            let trace = format!("{e:#}");
            warn!(
                "WorkerSourceTask{{id={}-{index}}} Task threw an uncaught and unrecoverable exception: {trace}",
                job.connector.name
            );
            job.status.put(&key, "FAILED", Some(&trace), generation).await
        }
    }
    end
}

async fn run_inner(
    job: &Arc<SourceJob>,
    p: &str,
    generation: i32,
    stop: &CancellationToken,
) -> End {
    let eos = job.cfg.exactly_once();
    let mut cfg = job.producer_base.clone();
    cfg.set("partitioner", "murmur2_random").set(
        "client.id",
        format!("connector-producer-{}-{p}", job.connector.name),
    );
    if eos {
        // librdkafka: a record's delivery timeout may not exceed the transaction timeout.
        cfg.set("transactional.id", job.transactional_id(p))
            .set("transaction.timeout.ms", "60000")
            .set("delivery.timeout.ms", "60000");
    }
    // Owner level fixed for this pipeline's life: later owners always have a higher one.
    let owner_level = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let mut restarts = super::start::SETUP_BACKOFF.attempts();
    let mut running = false;
    // One producer per round: a transaction that could neither commit nor abort leaves the
    // producer in an unknown state, so the next round starts over with a new one (its
    // `init_transactions` aborts what the old one left open) and reads the offset again.
    loop {
        let producer = match Producer::create(&cfg) {
            Ok(pr) => pr,
            Err(e) => {
                return End::Failed(anyhow::Error::new(e).context("cannot create the producer"))
            }
        };
        let start = match super::start::start_with(job, p, &producer, eos, stop).await {
            Some(Ok(s)) => s,
            Some(Err(e)) => return End::Failed(e),
            None => return End::Stopped,
        };
        info!("{}", start.log_line(p));
        if !running {
            job.status
                .put(
                    &task_key(&job.connector.name, job.index_of(p) as i32),
                    "RUNNING",
                    None,
                    generation,
                )
                .await;
            running = true;
        }
        let mut part = Part {
            job: job.clone(),
            p: p.to_string(),
            producer,
            eos,
            committed_seq: None,
            start,
            broken: None,
        };
        let why = match part.sessions(owner_level, stop).await {
            Ok(end) => return end,
            Err(why) => why,
        };
        // Destroying a client waits for its outstanding requests: not on an async thread.
        let _ = tokio::task::spawn_blocking(move || drop(part)).await;
        let wait = restarts.step();
        warn!(
            "Hub partition {p}: {why}; starting over with a new producer from the last committed offset in {} ms",
            wait.as_millis()
        );
        tokio::select! {
            _ = stop.cancelled() => return End::Stopped,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

impl SourceJob {
    pub fn index_of(&self, p: &str) -> usize {
        self.partitions.iter().position(|x| x == p).unwrap_or(0)
    }
}

/// Reopening the receiver after a transient error (the producer kept).
const RECEIVE_BACKOFF: Backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));

enum Session {
    End(End),
    Retry(String),
}

struct Part {
    job: Arc<SourceJob>,
    p: String,
    producer: Producer,
    eos: bool,
    /// Sequence number of the last event whose batch (and offset) is committed.
    committed_seq: Option<i64>,
    start: Start,
    /// Why the producer's transaction state is unknown (a commit or abort failed): the
    /// pipeline must start over with a new producer.
    broken: Option<String>,
}

/// Events of the open batch: their records are enqueued; the offset follows at commit.
struct Batch {
    deliveries: Vec<Delivery>,
    last_offset: Option<String>,
    last_seq: Option<i64>,
    opened: Option<Instant>,
}

impl Part {
    fn position(&self) -> StartPosition {
        match self.committed_seq {
            Some(s) => after_sequence(s),
            None => self.start.position(),
        }
    }

    /// Receiver sessions until an end (`Ok`) or until the producer is broken (`Err` with why);
    /// other errors reopen the receiver after the last committed event with capped backoff.
    async fn sessions(
        &mut self,
        owner_level: i64,
        stop: &CancellationToken,
    ) -> Result<End, String> {
        let mut backoff = RECEIVE_BACKOFF.attempts();
        loop {
            if stop.is_cancelled() {
                return Ok(End::Stopped);
            }
            match self.session(owner_level, stop).await {
                Session::End(e) => return Ok(e),
                Session::Retry(why) => {
                    if let Some(broken) = self.broken.take() {
                        return Err(format!("{why} ({broken})"));
                    }
                    let wait = backoff.step();
                    warn!(
                        "Error on hub partition {}: {why}; reopening after sequence number {:?} in {} ms",
                        self.p,
                        self.committed_seq,
                        wait.as_millis()
                    );
                    tokio::select! {
                        _ = stop.cancelled() => return Ok(End::Stopped),
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
    }

    async fn session(&mut self, owner_level: i64, stop: &CancellationToken) -> Session {
        let client = tokio::select! {
            _ = stop.cancelled() => return Session::End(End::Stopped),
            c = open_client(&self.job.source) => match c {
                Ok(c) => c,
                Err(e) => return Session::Retry(format!("cannot connect to the hub: {e}")),
            },
        };
        let opts = OpenReceiverOptions {
            start_position: Some(self.position()),
            prefetch: Some(300),
            owner_level: Some(owner_level),
            receive_timeout: None,
        };
        let rx = match client
            .open_receiver_on_partition(self.p.clone(), Some(opts))
            .await
        {
            Ok(rx) => rx,
            Err(e) => {
                let _ = tokio::time::timeout(Duration::from_secs(5), client.close()).await;
                return match e.kind {
                    EhErrorKind::ConsumerDisconnected(_) => Session::End(End::Fenced(format!(
                        "a receiver with a higher owner level holds the partition: {e}"
                    ))),
                    _ => Session::Retry(format!("cannot open the receiver: {e}")),
                };
            }
        };
        let r = self.receive(&rx, stop).await;
        let _ = tokio::time::timeout(Duration::from_secs(5), rx.close()).await;
        let _ = tokio::time::timeout(Duration::from_secs(5), client.close()).await;
        r
    }

    async fn receive(
        &mut self,
        rx: &azure_messaging_eventhubs::EventReceiver,
        stop: &CancellationToken,
    ) -> Session {
        let batch_size = self.job.source.batch_size.max(1);
        let wait = self
            .job
            .source
            .receive_timeout
            .max(Duration::from_millis(100));
        let interval = match self.job.cfg.boundary {
            TransactionBoundary::Poll => None,
            TransactionBoundary::Interval(d) => Some(d),
        };
        let mut stream = rx.stream_events().ready_chunks(batch_size);
        let mut batch = Batch {
            deliveries: Vec::new(),
            last_offset: None,
            last_seq: None,
            opened: None,
        };
        let mut handed = self.committed_seq;
        loop {
            let due = match (interval, batch.opened) {
                (Some(d), Some(t)) => d.saturating_sub(t.elapsed()).min(wait),
                _ => wait,
            };
            let got = tokio::select! {
                biased;
                _ = stop.cancelled() => None,
                n = tokio::time::timeout(due, stream.next()) => Some(n),
            };
            let items = match got {
                // Stop: finish the open batch first (commit), then end.
                None => {
                    return match self.commit(&mut batch).await {
                        Ok(()) => Session::End(End::Stopped),
                        Err(s) => s,
                    };
                }
                Some(Err(_elapsed)) => Vec::new(),
                Some(Ok(None)) => return Session::Retry("the receive stream ended".into()),
                Some(Ok(Some(items))) => items,
            };
            for item in items {
                let ev = match item {
                    Ok(ev) => ev,
                    Err(e) => {
                        self.abort(&mut batch).await;
                        return match e.kind {
                            EhErrorKind::ConsumerDisconnected(_) => Session::End(End::Fenced(
                                format!("receiver kicked off by a newer owner: {e}"),
                            )),
                            _ => Session::Retry(e.to_string()),
                        };
                    }
                };
                let seq = ev.sequence_number();
                if let (Some(s), Some(h)) = (seq, handed) {
                    if s <= h {
                        continue; // redelivered
                    }
                }
                if batch.opened.is_none() {
                    if self.eos {
                        if let Err(e) = blocking(&self.producer, |pr| pr.begin_transaction()).await
                        {
                            return self.kafka_error(e, "begin_transaction");
                        }
                    }
                    batch.opened = Some(Instant::now());
                }
                let rec = match self.job.records.build(&ev) {
                    Ok(r) => r,
                    Err(e) if self.job.connector.errors.tolerate_all => {
                        warn!("Error converting an event of partition {}: {e:#}; skipped (errors.tolerance=all)", self.p);
                        batch.last_offset = ev.offset().clone();
                        batch.last_seq = seq;
                        continue;
                    }
                    Err(e) => {
                        self.abort(&mut batch).await;
                        return Session::End(End::Failed(
                            e.context(format!("converting an event of hub partition {}", self.p)),
                        ));
                    }
                };
                match self.enqueue(&rec, stop).await {
                    Ok(d) => batch.deliveries.push(d),
                    Err(Some(e)) => {
                        self.abort(&mut batch).await;
                        return self.kafka_error(e, "send");
                    }
                    Err(None) => {
                        self.abort(&mut batch).await;
                        return Session::End(End::Stopped);
                    }
                }
                batch.last_offset = ev.offset().clone();
                batch.last_seq = seq;
                if seq.is_some() {
                    handed = seq;
                }
            }
            let close = match (interval, batch.opened) {
                (_, None) => false,
                (None, Some(_)) => true,
                (Some(d), Some(t)) => t.elapsed() >= d,
            };
            if close {
                if let Err(s) = self.commit(&mut batch).await {
                    return s;
                }
            }
        }
    }

    fn kafka_error(&self, e: KafkaError, what: &str) -> Session {
        if is_fenced(&e) {
            Session::End(End::Fenced(format!("{what}: {e}")))
        } else {
            Session::Retry(format!("{what}: {e}"))
        }
    }

    /// Enqueues one record through the worker's send path (waits while librdkafka's queue is
    /// full). `Err(None)`: stopping.
    async fn enqueue(
        &self,
        rec: &OutRecord,
        stop: &CancellationToken,
    ) -> Result<Delivery, Option<KafkaError>> {
        let topic = self.job.source.topic.as_str();
        match self
            .producer
            .enqueue(crate::source::produce::to_record(topic, rec), stop)
            .await
        {
            Ok(d) => Ok(d),
            Err(EnqueueError::Stopped) => Err(None),
            Err(EnqueueError::Failed(e)) => Err(Some(e.error)),
        }
    }

    /// Writes the batch's offset record and commits (EOS) or awaits every acknowledgement (ALOS).
    async fn commit(&mut self, batch: &mut Batch) -> Result<(), Session> {
        if batch.opened.is_none() {
            return Ok(());
        }
        let deliveries = std::mem::take(&mut batch.deliveries);
        if !self.eos {
            for d in deliveries {
                match d.await {
                    Ok(_) => {}
                    Err(e) if e.is_canceled() => return Err(Session::End(End::Stopped)),
                    Err(SendError { error, .. }) => {
                        batch.opened = None;
                        return Err(self.kafka_error(error, "delivery"));
                    }
                }
            }
        }
        let offset = batch.last_offset.clone().unwrap_or_default();
        let sp = self.job.source_partition(&self.p);
        let borrowed: Vec<(&str, &str)> = sp.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let value = [("EventHubOffset", crate::connect::Value::String(offset))];
        let (k, v) = offset_record(&self.job.connector.name, &borrowed, Some(&value));
        let v = v.expect("an offset");
        let rec: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&self.job.cfg.offset_topic.name)
            .key(k.as_slice())
            .payload(v.as_slice());
        // Not stoppable: a stop waits for the batch's end (see the module documentation).
        let d = match self.producer.enqueue(rec, &CancellationToken::new()).await {
            Ok(d) => d,
            Err(EnqueueError::Failed(SendError { error, .. })) => {
                self.abort(batch).await;
                return Err(self.kafka_error(error, "offset record"));
            }
            Err(EnqueueError::Stopped) => unreachable!("the token is never cancelled"),
        };
        if self.eos {
            let t = self
                .job
                .cfg
                .worker
                .offset_flush_timeout
                .max(Duration::from_secs(30));
            if let Err(e) = blocking(&self.producer, move |pr| pr.commit_transaction(t)).await {
                let s = self.kafka_error(e, "commit_transaction");
                if matches!(s, Session::Retry(_)) {
                    self.broken = Some("the commit did not complete".into());
                }
                self.abort(batch).await;
                return Err(s);
            }
            drop(d);
        } else {
            match d.await {
                Ok(_) => {}
                Err(e) if e.is_canceled() => return Err(Session::End(End::Stopped)),
                Err(SendError { error, .. }) => {
                    batch.opened = None;
                    return Err(self.kafka_error(error, "offset record delivery"));
                }
            }
        }
        batch.opened = None;
        if batch.last_seq.is_some() {
            self.committed_seq = batch.last_seq;
        }
        Ok(())
    }

    /// Drops the open batch: aborts its transaction (EOS); ALOS records may already be written.
    async fn abort(&mut self, batch: &mut Batch) {
        if batch.opened.take().is_some() && self.eos {
            batch.deliveries.clear();
            if let Err(e) = blocking(&self.producer, |pr| {
                pr.abort_transaction(Duration::from_secs(30))
            })
            .await
            {
                warn!("abort_transaction on hub partition {}: {e}", self.p);
                self.broken = Some(format!("abort_transaction: {e}"));
            }
        }
        batch.deliveries.clear();
    }
}
