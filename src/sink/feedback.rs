//! Feedback forwarding: the hub's delivery feedback (when `IotHub.MessageDeliveryAcknowledgement`
//! is not `None` and `IotHub.FeedbackTopic` is set) written to Kafka.
//!
//! Invariant: an AMQP feedback message is settled (`accept`) only after Kafka acknowledged every
//! record of it; if any write fails it is released, so the hub delivers it again (duplicates in
//! the topic are possible, never gaps). Each record is JSON with IoT Hub's field names, key =
//! device id.

use crate::iothub::feedback::{FeedbackBatch, FeedbackRecord};
use crate::worker::producer::Producer;
use rdkafka::producer::FutureRecord;
use tokio::sync::mpsc;
use tracing::{debug, warn};

/// The Kafka record for one feedback record: (key, JSON value).
pub fn feedback_record(r: &FeedbackRecord) -> (Option<String>, Vec<u8>) {
    let value = serde_json::to_vec(r).expect("a struct of strings always serialises");
    (r.device_id.clone(), value)
}

/// Writes each batch to `topic` and settles it (see the module docs) until `rx` closes.
pub async fn forward_feedback(
    mut rx: mpsc::Receiver<FeedbackBatch>,
    producer: Producer,
    topic: String,
    id: String,
) {
    while let Some(batch) = rx.recv().await {
        let sends = batch.records.iter().map(|r| {
            let (key, payload) = feedback_record(r);
            let producer = producer.clone();
            let topic = topic.clone();
            async move {
                let mut rec = FutureRecord::<str, [u8]>::to(&topic).payload(&payload[..]);
                if let Some(k) = key.as_deref() {
                    rec = rec.key(k);
                }
                producer.send(rec).await.map(|_| ())
            }
        });
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iothub::feedback::parse_feedback;
    use proptest::prelude::*;

    #[test]
    fn record_keeps_iothub_field_names_and_device_key() {
        let r = parse_feedback(
            br#"[{"originalMessageId":"m1","deviceId":"d1","statusCode":"Success","enqueuedTimeUtc":"2026-11-22T03:00:00Z"}]"#,
        )
        .unwrap();
        let (key, value) = feedback_record(&r[0]);
        assert_eq!(key.as_deref(), Some("d1"));
        let v: serde_json::Value = serde_json::from_slice(&value).unwrap();
        assert_eq!(v["originalMessageId"], "m1");
        assert_eq!(v["statusCode"], "Success");
    }

    proptest! {
        /// Arbitrary bytes never panic the parser; whatever parses is written and read back
        /// unchanged.
        #[test]
        fn feedback_parsing_never_panics(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            if let Ok(records) = parse_feedback(&body) {
                for r in &records {
                    let (_, v) = feedback_record(r);
                    let back: FeedbackRecord = serde_json::from_slice(&v).unwrap();
                    prop_assert_eq!(&back, r);
                }
            }
        }

        /// Well-formed arrays with arbitrary strings (and numeric status codes) round-trip.
        #[test]
        fn feedback_arrays_round_trip(
            entries in proptest::collection::vec(
                (any::<Option<String>>(), any::<Option<String>>(), prop_oneof![
                    any::<Option<String>>().prop_map(|s| s.map(serde_json::Value::String)),
                    any::<i64>().prop_map(|n| Some(serde_json::Value::from(n))),
                ]),
                0..8,
            )
        ) {
            let arr: Vec<serde_json::Value> = entries.iter().map(|(id, dev, status)| {
                serde_json::json!({"originalMessageId": id, "deviceId": dev, "statusCode": status})
            }).collect();
            let body = serde_json::to_vec(&arr).unwrap();
            let parsed = parse_feedback(&body).unwrap();
            prop_assert_eq!(parsed.len(), entries.len());
            for (p, (id, dev, status)) in parsed.iter().zip(&entries) {
                prop_assert_eq!(&p.original_message_id, id);
                prop_assert_eq!(&p.device_id, dev);
                let want = match status {
                    Some(serde_json::Value::String(s)) => Some(s.clone()),
                    Some(n) => Some(n.to_string()),
                    None => None,
                };
                prop_assert_eq!(&p.status_code, &want);
            }
        }
    }
}
