//! Writing one source record to Kafka, and what a Kafka error means for it.
//!
//! Classes (Connect + issue 10.1): `Retriable` errors are retried (librdkafka retries them itself up to
//! `delivery.timeout.ms`; one that still surfaces is sent again); `Record` errors (the record itself is
//! unacceptable: too large, invalid) are the only ones `errors.tolerance=all` may skip; everything
//! else (topic missing, not authorized, fenced or fatal idempotent producer, unknown codes) is `Fatal`:
//! the task fails with nothing committed past the last acknowledged record, whatever the tolerance.
//!
//! The classes and the classification are the worker's (`worker::errors`).

use super::acker::Outcome;
use super::reader::InFlight;
use super::record::OutRecord;
use super::task::{Partition, SourceShared};
use crate::rest::metrics::{Labels, METRICS};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

/// The worker's error classes: decided in one place (`worker::errors`).
pub use crate::worker::errors::classify_kafka as classify;
pub use crate::worker::errors::ErrorClass;

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
        let mut backoff = super::reader::reconnect_backoff();
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
    use rdkafka::error::RDKafkaErrorCode;

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
