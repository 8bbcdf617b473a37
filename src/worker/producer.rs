//! The one Kafka send path: source records, dead letter queue records and C2D feedback all go
//! through [`Producer`].
//!
//! Invariants:
//! * A full librdkafka queue is never an error: [`Producer::enqueue`] waits (capped backoff, 1 to
//!   32 ms) until there is room or the caller's stop token fires. It hands the same record back to
//!   librdkafka, so nothing is rebuilt or reordered.
//! * Every other failure, at enqueue or at delivery, comes back as a [`SendError`] carrying its
//!   [`ErrorClass`] (decided in [`super::errors`]); callers act on the class, never on the text.
//! * A [`Delivery`] resolves only when the broker acknowledged the record (`acks=all`), so an offset
//!   may be committed once it resolved `Ok`.
//! * The worker creates producers (one per task run and purpose, see
//!   [`super::task::TaskContext::producer`]); tasks never build their own.

use super::backoff::Backoff;
use super::errors::{classify_kafka, ErrorClass};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::ToBytes;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer as _};
use rdkafka::ClientConfig;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long [`Producer::enqueue`] waits between attempts while librdkafka's queue is full.
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

/// Why [`Producer::enqueue`] returned without a delivery.
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

/// A record's pending acknowledgement.
pub struct Delivery(DeliveryFuture);

impl Future for Delivery {
    type Output = Result<Acked, SendError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx).map(|r| match r {
            Ok(Ok(d)) => Ok(Acked {
                partition: d.partition,
                offset: d.offset,
            }),
            Ok(Err((e, _))) => Err(SendError::new(e)),
            // The producer was dropped before the record was acknowledged.
            Err(_) => Err(SendError::new(KafkaError::Canceled)),
        })
    }
}

/// A shared, clonable Kafka producer.
#[derive(Clone)]
pub struct Producer {
    inner: Arc<FutureProducer>,
}

impl Producer {
    /// Creates a producer from librdkafka settings (see `config::kafka::*producer_settings`).
    pub fn create(config: &ClientConfig) -> Result<Producer, SendError> {
        let inner: FutureProducer = config.create().map_err(SendError::new)?;
        Ok(Producer {
            inner: Arc::new(inner),
        })
    }

    /// Enqueues `record`, waiting while librdkafka's queue is full. Returns the pending
    /// acknowledgement, [`EnqueueError::Stopped`] when `stop` fired while waiting, or the
    /// classified refusal.
    pub async fn enqueue<K, P>(
        &self,
        mut record: FutureRecord<'_, K, P>,
        stop: &CancellationToken,
    ) -> Result<Delivery, EnqueueError>
    where
        K: ToBytes + ?Sized,
        P: ToBytes + ?Sized,
    {
        let mut waits = QUEUE_FULL_BACKOFF.attempts();
        loop {
            match self.inner.send_result(record) {
                Ok(d) => return Ok(Delivery(d)),
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
    /// passed. True when everything was acknowledged.
    pub async fn flush(&self, timeout: Duration) -> bool {
        let p = self.inner.clone();
        matches!(
            tokio::task::spawn_blocking(move || p.flush(timeout)).await,
            Ok(Ok(()))
        )
    }

    /// The underlying client (metadata, statistics).
    pub fn client(&self) -> &FutureProducer {
        &self.inner
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
