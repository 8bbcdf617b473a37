//! The one Kafka send path: source records, dead letter queue records and C2D feedback all go
//! through [`Producer`].
//!
//! Two ways to learn a record's outcome, on the same client and the same enqueue loop:
//! * awaited ([`Producer::enqueue`], [`Producer::send`]): a [`Delivery`] future (DLQ, feedback, the
//!   distributed pipeline);
//! * called back ([`Producer::enqueue_to`]): librdkafka's delivery report is handed, on its polling
//!   thread, to a [`DeliverySink`] with the `id` and `stamp` the record was enqueued with (the source:
//!   no future, no channel and no task wake-up per record).
//!
//! Invariants:
//! * A full librdkafka queue is never an error: enqueueing waits (capped backoff, 1 to 32 ms) until
//!   there is room or the caller's stop token fires. It hands the same record back to librdkafka, so
//!   nothing is rebuilt or reordered.
//! * Every other failure, at enqueue or at delivery, comes back as a [`SendError`] carrying its
//!   [`ErrorClass`] (decided in [`super::errors`]); callers act on the class, never on the text.
//! * A record's outcome is reported exactly once: `Ok` only when the broker acknowledged it
//!   (`acks=all`), so an offset may be committed once it came back `Ok`. A record still queued when
//!   the producer is closed comes back as a [`SendError::is_canceled`] error: not an outcome of the
//!   record, which callers leave unfinished.
//! * A [`DeliverySink`] runs on librdkafka's polling thread: it must not block.
//! * The worker creates producers (one per task run and purpose, see
//!   [`super::task::TaskContext::producer`]); tasks never build their own.

use super::backoff::Backoff;
use super::errors::{classify_kafka, ErrorClass};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Message, ToBytes};
use rdkafka::producer::{
    BaseRecord, DeliveryResult, FutureRecord, Producer as _, ProducerContext, ThreadedProducer,
};
use rdkafka::{ClientConfig, ClientContext};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

/// How long enqueueing waits between attempts while librdkafka's queue is full.
pub const QUEUE_FULL_BACKOFF: Backoff =
    Backoff::new(Duration::from_millis(1), Duration::from_millis(32));

/// A failed send, with its class.
#[derive(Debug)]
pub struct SendError {
    pub class: ErrorClass,
    pub error: KafkaError,
}

impl SendError {
    pub fn new(error: KafkaError) -> SendError {
        SendError {
            class: classify_kafka(&error),
            error,
        }
    }

    /// The producer was closed (or purged) with the record still queued: nothing is known about
    /// the record, it is neither delivered nor refused.
    pub fn is_canceled(&self) -> bool {
        matches!(self.error, KafkaError::Canceled)
            || matches!(
                self.error.rdkafka_error_code(),
                Some(RDKafkaErrorCode::PurgeQueue | RDKafkaErrorCode::PurgeInflight)
            )
    }
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({} error)", self.error, self.class)
    }
}

impl std::error::Error for SendError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

/// Why enqueueing returned without enqueueing.
#[derive(Debug)]
pub enum EnqueueError {
    /// The stop token fired while waiting for queue space.
    Stopped,
    /// librdkafka refused the record.
    Failed(SendError),
}

impl fmt::Display for EnqueueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EnqueueError::Stopped => f.write_str("stopped while waiting for producer queue space"),
            EnqueueError::Failed(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for EnqueueError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            EnqueueError::Stopped => None,
            EnqueueError::Failed(e) => Some(e),
        }
    }
}

/// Where an acknowledged record landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Acked {
    pub partition: i32,
    pub offset: i64,
}

/// Receives the delivery reports of records enqueued with [`Producer::enqueue_to`]. Called on
/// librdkafka's polling thread (or a thread flushing the producer): must not block.
pub trait DeliverySink: Send + Sync + 'static {
    /// The outcome of the record enqueued with `id` and `stamp`; `msg` is the record as librdkafka
    /// holds it (key, value, headers, timestamp), e.g. to send it again after a retriable error.
    fn delivered(
        &self,
        id: u64,
        stamp: i64,
        result: Result<Acked, SendError>,
        msg: &BorrowedMessage<'_>,
    );
}

/// Where a record's delivery report goes (the delivery opaque: one small box per record).
pub enum Notify {
    Await(oneshot::Sender<Result<Acked, SendError>>),
    Sink {
        sink: Arc<dyn DeliverySink>,
        id: u64,
        stamp: i64,
    },
}

/// Routes librdkafka's delivery reports to their [`Notify`].
pub struct SendContext;

impl ClientContext for SendContext {}

impl ProducerContext for SendContext {
    type DeliveryOpaque = Box<Notify>;

    fn delivery(&self, report: &DeliveryResult<'_>, notify: Box<Notify>) {
        let (result, msg) = match report {
            Ok(m) => (
                Ok(Acked {
                    partition: m.partition(),
                    offset: m.offset(),
                }),
                m,
            ),
            Err((e, m)) => (Err(SendError::new(e.clone())), m),
        };
        match *notify {
            Notify::Await(tx) => {
                let _ = tx.send(result);
            }
            Notify::Sink { sink, id, stamp } => sink.delivered(id, stamp, result, msg),
        }
    }
}

/// The librdkafka client under [`Producer`] (its own polling thread serves delivery reports).
pub type Client = ThreadedProducer<SendContext>;

/// A record's pending acknowledgement.
pub struct Delivery(oneshot::Receiver<Result<Acked, SendError>>);

impl Future for Delivery {
    type Output = Result<Acked, SendError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx).map(|r| match r {
            Ok(r) => r,
            // The producer was dropped before the record was acknowledged.
            Err(_) => Err(SendError::new(KafkaError::Canceled)),
        })
    }
}

/// A shared, clonable Kafka producer.
#[derive(Clone)]
pub struct Producer {
    inner: Arc<Client>,
}

/// A [`Producer`] handle that does not keep it open (for delivery sinks, which librdkafka's queue
/// keeps alive: a strong handle there would keep a closed task's producer alive).
#[derive(Clone)]
pub struct WeakProducer(Weak<Client>);

impl WeakProducer {
    pub fn upgrade(&self) -> Option<Producer> {
        self.0.upgrade().map(|inner| Producer { inner })
    }
}

impl Producer {
    /// Creates a producer from librdkafka settings (see `config::kafka::*producer_settings`).
    pub fn create(config: &ClientConfig) -> Result<Producer, SendError> {
        let inner: Client = config
            .create_with_context(SendContext)
            .map_err(SendError::new)?;
        Ok(Producer {
            inner: Arc::new(inner),
        })
    }

    pub fn downgrade(&self) -> WeakProducer {
        WeakProducer(Arc::downgrade(&self.inner))
    }

    /// The one enqueue loop: hands `record` to librdkafka, waiting while its queue is full.
    /// [`EnqueueError::Stopped`] when `stop` fired while waiting, else the classified refusal (the
    /// record's [`Notify`] is then dropped unreported).
    pub async fn enqueue_record<K, P>(
        &self,
        mut record: BaseRecord<'_, K, P, Box<Notify>>,
        stop: &CancellationToken,
    ) -> Result<(), EnqueueError>
    where
        K: ToBytes + ?Sized,
        P: ToBytes + ?Sized,
    {
        let mut waits = QUEUE_FULL_BACKOFF.attempts();
        loop {
            match self.inner.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    tokio::select! {
                        _ = stop.cancelled() => return Err(EnqueueError::Stopped),
                        _ = tokio::time::sleep(waits.step()) => {}
                    }
                }
                Err((e, _)) => return Err(EnqueueError::Failed(SendError::new(e))),
            }
        }
    }

    /// Enqueues `record`; its outcome goes to `sink` with `id` and `stamp` (see [`DeliverySink`]).
    pub async fn enqueue_to<K, P>(
        &self,
        record: FutureRecord<'_, K, P>,
        sink: Arc<dyn DeliverySink>,
        id: u64,
        stamp: i64,
        stop: &CancellationToken,
    ) -> Result<(), EnqueueError>
    where
        K: ToBytes + ?Sized,
        P: ToBytes + ?Sized,
    {
        let notify = Box::new(Notify::Sink { sink, id, stamp });
        self.enqueue_record(base(record, notify), stop).await
    }

    /// Enqueues `record`, waiting while librdkafka's queue is full. Returns the pending
    /// acknowledgement, [`EnqueueError::Stopped`] when `stop` fired while waiting, or the
    /// classified refusal.
    pub async fn enqueue<K, P>(
        &self,
        record: FutureRecord<'_, K, P>,
        stop: &CancellationToken,
    ) -> Result<Delivery, EnqueueError>
    where
        K: ToBytes + ?Sized,
        P: ToBytes + ?Sized,
    {
        let (tx, rx) = oneshot::channel();
        self.enqueue_record(base(record, Box::new(Notify::Await(tx))), stop)
            .await?;
        Ok(Delivery(rx))
    }

    /// Enqueues and waits for the acknowledgement (DLQ, feedback: one record at a time).
    pub async fn send<K, P>(&self, record: FutureRecord<'_, K, P>) -> Result<Acked, SendError>
    where
        K: ToBytes + ?Sized,
        P: ToBytes + ?Sized,
    {
        // Never stopped from outside: the caller drops the future to give up.
        let never = CancellationToken::new();
        match self.enqueue(record, &never).await {
            Ok(d) => d.await,
            Err(EnqueueError::Failed(e)) => Err(e),
            Err(EnqueueError::Stopped) => Err(SendError::new(KafkaError::Canceled)),
        }
    }

    /// Waits (on a blocking thread) until every enqueued record is acknowledged or `timeout`
    /// passed. True when everything was acknowledged (and its delivery report served).
    pub async fn flush(&self, timeout: Duration) -> bool {
        let p = self.inner.clone();
        matches!(
            tokio::task::spawn_blocking(move || p.flush(timeout)).await,
            Ok(Ok(()))
        )
    }

    /// The underlying client (metadata, statistics, transactions).
    pub fn client(&self) -> &Client {
        &self.inner
    }
}

/// The same record with a delivery opaque.
fn base<'a, K, P>(
    r: FutureRecord<'a, K, P>,
    notify: Box<Notify>,
) -> BaseRecord<'a, K, P, Box<Notify>>
where
    K: ToBytes + ?Sized,
    P: ToBytes + ?Sized,
{
    BaseRecord {
        topic: r.topic,
        partition: r.partition,
        payload: r.payload,
        key: r.key,
        timestamp: r.timestamp,
        headers: r.headers,
        delivery_opaque: notify,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unreachable_producer(extra: &[(&str, &str)]) -> Producer {
        let mut c = ClientConfig::new();
        // Nothing listens there: records stay queued, which is what the tests need.
        c.set("bootstrap.servers", "127.0.0.1:9")
            .set("message.timeout.ms", "600000");
        for (k, v) in extra {
            c.set(*k, *v);
        }
        Producer::create(&c).unwrap()
    }

    #[tokio::test]
    async fn queue_full_waits_and_stops_on_request() {
        let p = unreachable_producer(&[("queue.buffering.max.messages", "1")]);
        let stop = CancellationToken::new();
        let _first = p
            .enqueue(FutureRecord::<[u8], [u8]>::to("t").payload(b"1"), &stop)
            .await
            .expect("room for one");
        let stopper = {
            let stop = stop.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                stop.cancel();
            })
        };
        let t0 = std::time::Instant::now();
        let r = p
            .enqueue(FutureRecord::<[u8], [u8]>::to("t").payload(b"2"), &stop)
            .await;
        assert!(matches!(r, Err(EnqueueError::Stopped)), "{:?}", r.err());
        assert!(t0.elapsed() >= Duration::from_millis(40));
        stopper.await.unwrap();
    }

    /// What a test sink saw: (id, stamp, error class or None for delivered, canceled, payload).
    type Seen = (u64, i64, Option<ErrorClass>, bool, Vec<u8>);

    #[derive(Default)]
    struct Recorder {
        seen: std::sync::Mutex<Vec<Seen>>,
    }

    impl DeliverySink for Recorder {
        fn delivered(
            &self,
            id: u64,
            stamp: i64,
            result: Result<Acked, SendError>,
            msg: &BorrowedMessage<'_>,
        ) {
            let (class, canceled) = match &result {
                Ok(_) => (None, false),
                Err(e) => (Some(e.class), e.is_canceled()),
            };
            let payload = msg.payload().unwrap_or_default().to_vec();
            self.seen
                .lock()
                .unwrap()
                .push((id, stamp, class, canceled, payload));
        }
    }

    async fn wait_seen(r: &Recorder, n: usize) -> Vec<Seen> {
        for _ in 0..200 {
            if r.seen.lock().unwrap().len() >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        r.seen.lock().unwrap().clone()
    }

    #[tokio::test]
    async fn a_callback_report_carries_id_stamp_class_and_the_record() {
        let p = unreachable_producer(&[("message.timeout.ms", "100")]);
        let r = Arc::new(Recorder::default());
        p.enqueue_to(
            FutureRecord::<[u8], [u8]>::to("t").payload(b"body"),
            r.clone(),
            7,
            -3,
            &CancellationToken::new(),
        )
        .await
        .unwrap();
        let seen = wait_seen(&r, 1).await;
        // Timed out in the queue: retriable, not a cancellation, the record's bytes as sent.
        assert_eq!(
            seen,
            vec![(7, -3, Some(ErrorClass::Retriable), false, b"body".to_vec())]
        );
    }

    #[tokio::test]
    async fn records_queued_when_the_producer_closes_are_reported_canceled() {
        let p = unreachable_producer(&[]);
        let r = Arc::new(Recorder::default());
        for id in 0..3 {
            p.enqueue_to(
                FutureRecord::<[u8], [u8]>::to("t").payload(b"x"),
                r.clone(),
                id,
                0,
                &CancellationToken::new(),
            )
            .await
            .unwrap();
        }
        drop(p);
        let seen = wait_seen(&r, 3).await;
        assert_eq!(seen.len(), 3, "{seen:?}");
        assert!(seen.iter().all(|s| s.3), "{seen:?}");
        let mut ids: Vec<u64> = seen.iter().map(|s| s.0).collect();
        ids.sort();
        assert_eq!(ids, vec![0, 1, 2]);
    }

    #[tokio::test]
    async fn refusals_come_back_classified() {
        let p = unreachable_producer(&[("message.max.bytes", "1000")]);
        let big = vec![0u8; 5000];
        let r = p
            .enqueue(
                FutureRecord::<[u8], [u8]>::to("t").payload(&big[..]),
                &CancellationToken::new(),
            )
            .await;
        match r {
            Err(EnqueueError::Failed(e)) => assert_eq!(e.class, ErrorClass::Record, "{e}"),
            other => panic!("expected a record error, got {:?}", other.err()),
        }
    }
}
