//! Writing one source record to Kafka, and what a Kafka error means for it.
//!
//! Classes (Connect + issue 10.1): `Retriable` errors are retried (librdkafka retries them itself up to
//! `delivery.timeout.ms`; one that still surfaces is sent again); `Record` errors (the record itself is
//! unacceptable: too large, invalid) are the only ones `errors.tolerance=all` may skip; everything
//! else (topic missing, not authorized, fenced or fatal idempotent producer, unknown codes) is `Fatal`:
//! the task fails with nothing committed past the last acknowledged record, whatever the tolerance.
//!
//! The classes are the worker's (`ErrorClass`); this module only maps librdkafka's codes to them.

use super::acker::Outcome;
use super::reader::InFlight;
use super::record::OutRecord;
use super::task::{Partition, SourceShared};
use crate::rest::metrics::{Labels, METRICS};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

/// What an error means for the record and the task (the worker's three classes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// Transient: try again.
    Retriable,
    /// This record is bad: `errors.tolerance` decides.
    Record,
    /// The task cannot go on.
    Fatal,
}

/// The class of a librdkafka error code met while producing.
pub fn classify_code(code: RDKafkaErrorCode) -> ErrorClass {
    use RDKafkaErrorCode as C;
    match code {
        // The record itself cannot be written.
        C::MessageSizeTooLarge
        | C::InvalidMessageSize
        | C::InvalidRecord
        | C::BadMessage
        | C::KeySerialization
        | C::ValueSerialization => ErrorClass::Record,
        // Transient conditions librdkafka could not get past within its own retries.
        C::QueueFull
        | C::MessageTimedOut
        | C::BrokerTransportFailure
        | C::AllBrokersDown
        | C::Resolve
        | C::OperationTimedOut
        | C::TimedOutQueue
        | C::RequestTimedOut
        | C::NotEnoughReplicas
        | C::NotEnoughReplicasAfterAppend
        | C::NotLeaderForPartition
        | C::LeaderNotAvailable
        | C::NetworkException
        | C::BrokerNotAvailable
        | C::InvalidMessage
        | C::KafkaStorageError
        | C::Retry => ErrorClass::Retriable,
        // Missing topic, authorization, fenced/fatal producer, and anything unknown: stop, lose nothing.
        _ => ErrorClass::Fatal,
    }
}

/// The class of a producer error (`send_result` or delivery future).
pub fn classify(e: &KafkaError) -> ErrorClass {
    match e.rdkafka_error_code() {
        Some(code) => classify_code(code),
        None => ErrorClass::Fatal,
    }
}

/// Hands one record to librdkafka. `Ok` is the delivery future; `Err` the error (not retried here).
pub fn send(
    producer: &FutureProducer,
    topic: &str,
    rec: &OutRecord,
) -> Result<DeliveryFuture, KafkaError> {
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
    producer.send_result(fr).map_err(|(e, _)| e)
}

/// What one partition's acker needs.
pub struct AckLoop {
    /// `connector`, `task` metric labels.
    pub labels: Labels,
    pub shared: Arc<SourceShared>,
    pub producer: Arc<FutureProducer>,
    pub part: Arc<Partition>,
    pub fatal: mpsc::Sender<anyhow::Error>,
    pub stop: CancellationToken,
}

/// Awaits the delivery futures of one partition in hub order and completes each record in the
/// partition's acker: delivered; a record error skipped (tolerance all) or failed; a retriable error
/// sent again; anything else failed, whatever the tolerance. Returns after the first failure (nothing
/// after it can be committed) or when the receiver is gone.
pub async fn ack_loop(a: AckLoop, mut rx: mpsc::Receiver<InFlight>) {
    let topic = a.shared.source.topic.clone();
    let p = a.part.id.clone();
    while let Some(item) = rx.recv().await {
        let InFlight {
            ticket,
            mut delivery,
            record,
            offset,
            enqueued_ms,
        } = item;
        let mut backoff = super::reader::Backoff::new();
        let outcome = loop {
            let e = match delivery.await {
                Ok(Ok(_)) => {
                    METRICS.source_record_write.get_or_create(&a.labels).inc();
                    if let Some(ms) = enqueued_ms {
                        super::metrics::record_ack_latency(ms);
                    }
                    break Outcome::Delivered;
                }
                Ok(Err((e, _))) => e,
                // The producer is gone: shutting down; this record stays unfinished.
                Err(_) => return,
            };
            match classify(&e) {
                ErrorClass::Retriable => {
                    let d = backoff.step();
                    warn!(
                        "Retriable error writing the record of hub partition {p} offset {offset} to topic {topic}: {e}; sending it again in {} ms",
                        d.as_millis()
                    );
                    tokio::select! {
                        _ = a.stop.cancelled() => return,
                        _ = tokio::time::sleep(d) => {}
                    }
                    match super::reader::send_retrying(&a.producer, &topic, &record, &a.stop).await
                    {
                        Ok(Some(d)) => delivery = d,
                        Ok(None) => return,
                        Err(e) => break fail(&a, &topic, &offset, &e).await,
                    }
                }
                _ => break fail(&a, &topic, &offset, &e).await,
            }
        };
        a.part.acker.lock().unwrap().complete(ticket, outcome);
        if outcome == Outcome::Failed {
            return;
        }
    }
}

/// A record or fatal delivery error: `Skipped` (record error, tolerance all) or `Failed` (the task
/// is told to stop).
async fn fail(a: &AckLoop, topic: &str, offset: &str, e: &KafkaError) -> Outcome {
    let p = &a.part.id;
    let class = classify(e);
    if class == ErrorClass::Record && a.shared.connector.errors.tolerate_all {
        error!(
            "Kafka refused the record of hub partition {p} offset {offset} for topic {topic}: {e}; skipped (errors.tolerance=all)"
        );
        METRICS.record_errors.get_or_create(&a.labels).inc();
        METRICS
            .partition_records_skipped
            .get_or_create(a.part.ages.labels())
            .inc();
        return Outcome::Skipped;
    }
    let why = if class == ErrorClass::Record {
        "a record error with errors.tolerance=none"
    } else {
        "not a record error, so the task stops whatever errors.tolerance says"
    };
    let _ = a
        .fatal
        .send(anyhow::anyhow!(
            "Unrecoverable exception from producer send callback: hub partition {p} offset {offset}, topic {topic}: {e} ({why}; nothing after the last acknowledged record is committed)"
        ))
        .await;
    Outcome::Failed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_to_classes() {
        use RDKafkaErrorCode as C;
        for c in [
            C::MessageSizeTooLarge,
            C::InvalidRecord,
            C::InvalidMessageSize,
        ] {
            assert_eq!(classify_code(c), ErrorClass::Record, "{c:?}");
        }
        for c in [
            C::QueueFull,
            C::MessageTimedOut,
            C::NotEnoughReplicas,
            C::AllBrokersDown,
        ] {
            assert_eq!(classify_code(c), ErrorClass::Retriable, "{c:?}");
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
            C::Authentication,
        ] {
            assert_eq!(classify_code(c), ErrorClass::Fatal, "{c:?}");
        }
        assert_eq!(
            classify(&KafkaError::MessageProduction(C::MessageSizeTooLarge)),
            ErrorClass::Record
        );
        assert_eq!(classify(&KafkaError::Canceled), ErrorClass::Fatal);
    }
}
