//! Writing source records to Kafka, and what a Kafka error means for them.
//!
//! Each record is enqueued through the worker's [`Producer`] with its acker ticket; librdkafka's
//! delivery report comes back to the partition's [`Completer`] on the producer's polling thread, which
//! completes the ticket in the partition's [`Acker`](super::acker::Acker) directly: no future,
//! channel or task wake-up per record.
//!
//! Classes (Connect + issue 10.1): `Retriable` errors are retried (librdkafka retries them itself up to
//! `delivery.timeout.ms`; one that still surfaces is sent again, byte for byte as librdkafka held it,
//! after a backoff, while later records go on); `Record` errors (the record itself is unacceptable:
//! too large, invalid) are the only ones `errors.tolerance=all` may skip; everything else (topic
//! missing, not authorized, fenced or fatal idempotent producer, unknown codes) is `Fatal`: the task
//! fails with nothing committed past the last acknowledged record, whatever the tolerance.
//!
//! Invariants: every ticket handed to [`Completer::send`] is completed at most once, with
//! `Delivered` only after Kafka acknowledged it; a record still queued when the producer is closed or
//! the task stops stays unfinished (never committed, read again after a restart).
//!
//! The classes and the classification are the worker's (`worker::errors`).

use super::acker::{Outcome, Ticket};
use super::record::OutRecord;
use super::task::{Partition, SourceShared};
use crate::config::connector::RecordFormat;
use crate::rest::metrics::{Labels, METRICS};
use crate::worker::producer::{
    Acked, DeliverySink, EnqueueError, Producer, SendError, WeakProducer,
};
use prometheus_client::metrics::counter::Counter;
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Weak};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

/// The worker's error classes: decided in one place (`worker::errors`).
pub use crate::worker::errors::classify_kafka as classify;
pub use crate::worker::errors::ErrorClass;

/// `stamp` of a record without an enqueued time (no latency is recorded for it).
pub const NO_STAMP: i64 = i64::MIN;

/// The librdkafka record of `rec` (borrowing its bytes; librdkafka copies them when enqueueing).
pub fn to_record<'a>(topic: &'a str, rec: &'a OutRecord) -> FutureRecord<'a, [u8], [u8]> {
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
    fr
}

/// The record librdkafka holds, as an [`OutRecord`] again (to send it again after a retriable
/// error). The timestamp is kept only in the raw format, the one that sets it; the Struct format's
/// records carry none (librdkafka stamps them when enqueued), as the first send did.
fn from_message(msg: &BorrowedMessage<'_>, format: RecordFormat) -> OutRecord {
    let headers = msg
        .headers()
        .map(|hs| {
            hs.iter()
                .map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec()))
                .collect()
        })
        .unwrap_or_default();
    OutRecord {
        key: msg.key().map(<[u8]>::to_vec),
        value: msg.payload().map(<[u8]>::to_vec),
        headers,
        timestamp: match format {
            RecordFormat::Raw => msg.timestamp().to_millis(),
            RecordFormat::Struct => None,
        },
    }
}

/// Completes one hub partition's records from their delivery reports (see the module doc).
pub struct Completer {
    /// `connector`, `task` metric labels.
    labels: Labels,
    shared: Arc<SourceShared>,
    part: Arc<Partition>,
    fatal: mpsc::Sender<anyhow::Error>,
    stop: CancellationToken,
    /// Where re-sends run (delivery reports arrive on librdkafka's thread).
    runtime: tokio::runtime::Handle,
    /// Weak: librdkafka's queue holds this completer, which must not keep the producer open.
    producer: WeakProducer,
    written: Counter,
    /// Retriable delivery failures since the last delivered record (the re-send backoff).
    retries: AtomicU32,
    me: Weak<Completer>,
}

impl Completer {
    pub fn new(
        labels: Labels,
        shared: Arc<SourceShared>,
        part: Arc<Partition>,
        producer: &Producer,
        fatal: mpsc::Sender<anyhow::Error>,
        stop: CancellationToken,
    ) -> Arc<Completer> {
        let written = METRICS.source_record_write.get_or_create(&labels).clone();
        Arc::new_cyclic(|me| Completer {
            labels,
            shared,
            part,
            fatal,
            stop,
            runtime: tokio::runtime::Handle::current(),
            producer: producer.downgrade(),
            written,
            retries: AtomicU32::new(0),
            me: me.clone(),
        })
    }

    /// Enqueues record `ticket` (already submitted to the partition's acker, in hub order), waiting
    /// while librdkafka's queue is full; a retriable refusal is retried here, in place (order kept).
    /// `stamp` is the event's enqueued time in ms (or [`NO_STAMP`]). False when the task must stop
    /// (stopping, or the record failed the task).
    pub async fn send(
        &self,
        producer: &Producer,
        ticket: Ticket,
        stamp: i64,
        rec: &OutRecord,
    ) -> bool {
        let Some(me) = self.me.upgrade() else {
            return false;
        };
        let topic = self.shared.source.topic.as_str();
        let mut backoff = super::reader::reconnect_backoff();
        loop {
            let sink: Arc<dyn DeliverySink> = me.clone();
            let r = producer
                .enqueue_to(to_record(topic, rec), sink, ticket.raw(), stamp, &self.stop)
                .await;
            match r {
                Ok(()) => return true,
                Err(EnqueueError::Stopped) => return false,
                Err(EnqueueError::Failed(e)) if e.class == ErrorClass::Retriable => {
                    let d = backoff.step();
                    warn!(
                        "Retriable error enqueueing the record of hub partition {} for topic {topic}: {e}; trying again in {} ms",
                        self.part.id,
                        d.as_millis()
                    );
                    tokio::select! {
                        _ = self.stop.cancelled() => return false,
                        _ = tokio::time::sleep(d) => {}
                    }
                }
                Err(EnqueueError::Failed(e)) => {
                    let outcome = self.fail(ticket, &e);
                    self.complete(ticket, outcome);
                    return outcome != Outcome::Failed;
                }
            }
        }
    }

    fn complete(&self, ticket: Ticket, outcome: Outcome) {
        let unfinished = {
            let mut a = self.part.acker.lock().unwrap();
            a.complete(ticket, outcome);
            a.unfinished()
        };
        self.part.room.freed(unfinished);
    }

    /// The hub offset of a submitted record, for messages.
    fn offset(&self, ticket: Ticket) -> String {
        self.part
            .acker
            .lock()
            .unwrap()
            .position(ticket)
            .map_or_else(|| "(none)".to_string(), |p| p.offset.clone())
    }

    /// A record or fatal error: `Skipped` (record error, tolerance all) or `Failed` (the task is
    /// told to stop).
    fn fail(&self, ticket: Ticket, e: &SendError) -> Outcome {
        let p = &self.part.id;
        let topic = &self.shared.source.topic;
        let offset = self.offset(ticket);
        if e.class == ErrorClass::Record && self.shared.connector.errors.tolerate_all {
            error!(
                "Kafka refused the record of hub partition {p} offset {offset} for topic {topic}: {}; skipped (errors.tolerance=all)",
                e.error
            );
            METRICS.record_errors.get_or_create(&self.labels).inc();
            METRICS
                .partition_records_skipped
                .get_or_create(self.part.ages.labels())
                .inc();
            return Outcome::Skipped;
        }
        let why = if e.class == ErrorClass::Record {
            "a record error with errors.tolerance=none"
        } else {
            "not a record error, so the task stops whatever errors.tolerance says"
        };
        // Full: a failure is already on its way to the task, which stops on the first one.
        let _ = self.fatal.try_send(anyhow::anyhow!(
            "Unrecoverable exception from producer send callback: hub partition {p} offset {offset}, topic {topic}: {} ({why}; nothing after the last acknowledged record is committed)",
            e.error
        ));
        Outcome::Failed
    }

    /// Sends a record again after a retriable delivery failure, after a backoff, on the runtime.
    fn resend(&self, ticket: Ticket, stamp: i64, e: &SendError, msg: &BorrowedMessage<'_>) {
        let (Some(me), Some(producer)) = (self.me.upgrade(), self.producer.upgrade()) else {
            return;
        };
        if self.stop.is_cancelled() {
            return;
        }
        let rec = from_message(msg, self.shared.source.record_format);
        let attempt = self.retries.fetch_add(1, Ordering::Relaxed);
        let d = crate::worker::backoff::Backoff::new(
            super::reader::BACKOFF_MIN,
            super::reader::BACKOFF_MAX,
        )
        .ceiling(attempt);
        warn!(
            "Retriable error writing the record of hub partition {} offset {} to topic {}: {}; sending it again in {} ms",
            self.part.id,
            self.offset(ticket),
            self.shared.source.topic,
            e.error,
            d.as_millis()
        );
        self.runtime.spawn(async move {
            tokio::select! {
                _ = me.stop.cancelled() => return,
                _ = tokio::time::sleep(d) => {}
            }
            me.send(&producer, ticket, stamp, &rec).await;
        });
    }
}

impl DeliverySink for Completer {
    fn delivered(
        &self,
        id: u64,
        stamp: i64,
        result: Result<Acked, SendError>,
        msg: &BorrowedMessage<'_>,
    ) {
        let ticket = Ticket::from_raw(id);
        match result {
            Ok(_) => {
                self.written.inc();
                if stamp != NO_STAMP {
                    super::metrics::record_ack_latency(stamp);
                }
                if self.retries.load(Ordering::Relaxed) != 0 {
                    self.retries.store(0, Ordering::Relaxed);
                }
                self.complete(ticket, Outcome::Delivered);
            }
            // The producer was closed with the record queued: it stays unfinished.
            Err(e) if e.is_canceled() => {}
            Err(e) if e.class == ErrorClass::Retriable => self.resend(ticket, stamp, &e, msg),
            Err(e) => {
                let outcome = self.fail(ticket, &e);
                self.complete(ticket, outcome);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::error::{KafkaError, RDKafkaErrorCode};

    /// The source relies on these classes (issue 10.1).
    #[test]
    fn the_classes_the_source_relies_on() {
        use RDKafkaErrorCode as C;
        let class = |c| classify(&KafkaError::MessageProduction(c));
        for c in [
            C::MessageSizeTooLarge,
            C::InvalidRecord,
            C::InvalidMessageSize,
        ] {
            assert_eq!(class(c), ErrorClass::Record, "{c:?}");
        }
        for c in [
            C::QueueFull,
            C::MessageTimedOut,
            C::NotEnoughReplicas,
            C::AllBrokersDown,
        ] {
            assert_eq!(class(c), ErrorClass::Retriable, "{c:?}");
        }
        for c in [
            C::UnknownTopic,
            C::UnknownTopicOrPartition,
            C::TopicAuthorizationFailed,
            C::ClusterAuthorizationFailed,
            C::Fatal,
            C::ProducerFenced,
            C::InvalidProducerEpoch,
            C::OutOfOrderSequenceNumber,
        ] {
            assert_eq!(class(c), ErrorClass::Fatal, "{c:?}");
        }
    }
}
