//! Delivery feedback: the receiver on `/messages/servicebound/feedback`.
//!
//! IoT Hub batches feedback records (content type `application/vnd.microsoft.iothub.feedback.json`)
//! into one AMQP message whose body is a JSON array of
//! `{originalMessageId, deviceGenerationId, deviceId, enqueuedTimeUtc, statusCode, description}`.
//! Each message is handed to the caller as a [`FeedbackBatch`] and settled only when the caller says
//! so through its [`FeedbackAck`]: `accept()` once the records are durable (e.g. Kafka acknowledged
//! them), `release()` to have the hub deliver it again. Dropping the ack without deciding releases it.
//! A body that is not such a JSON array is rejected (settled with `amqp:decode-error`) and logged.
//! After a reconnection, unsettled feedback messages are delivered again by the hub (duplicates in
//! the feedback topic are possible; every record carries `originalMessageId` for de-duplication).

use fe2o3_amqp::link::delivery::Delivery;
use fe2o3_amqp::link::Receiver;
use fe2o3_amqp::types::definitions::{AmqpError, Error as AmqpErrorBody};
use fe2o3_amqp::types::messaging::Body;
use fe2o3_amqp::types::primitives::Value;
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// Source address of the feedback link.
pub const FEEDBACK_ADDRESS: &str = "/messages/servicebound/feedback";

/// One feedback record as IoT Hub sends it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FeedbackRecord {
    #[serde(default)]
    pub original_message_id: Option<String>,
    #[serde(default)]
    pub device_generation_id: Option<String>,
    #[serde(default)]
    pub device_id: Option<String>,
    #[serde(default)]
    pub enqueued_time_utc: Option<String>,
    /// `Success`, `Expired`, `DeliveryCountExceeded`, `Rejected` or `Purged` (IoT Hub sends a string;
    /// a number is kept as its decimal text).
    #[serde(default, deserialize_with = "string_or_number")]
    pub status_code: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
}

fn string_or_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let v = Option::<serde_json::Value>::deserialize(d)?;
    Ok(match v {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) => Some(s),
        Some(other) => Some(other.to_string()),
    })
}

#[derive(Debug, thiserror::Error)]
pub enum FeedbackParseError {
    #[error("feedback body is not a JSON array of feedback records: {0}")]
    Json(#[from] serde_json::Error),
    #[error("feedback message has no data or string body")]
    NoBody,
}

/// Parses a feedback message body (the JSON array).
pub fn parse_feedback(body: &[u8]) -> Result<Vec<FeedbackRecord>, FeedbackParseError> {
    Ok(serde_json::from_slice(body)?)
}

fn body_bytes(body: &Body<Value>) -> Option<Vec<u8>> {
    match body {
        Body::Data(batch) => {
            let mut out = Vec::new();
            for d in batch.iter() {
                out.extend_from_slice(&d.0);
            }
            Some(out)
        }
        Body::Value(v) => match &v.0 {
            Value::String(s) => Some(s.clone().into_bytes()),
            Value::Binary(b) => Some(b.to_vec()),
            _ => None,
        },
        _ => None,
    }
}

/// What the caller decided about a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckDecision {
    /// Settle with `accepted`: the hub forgets the message.
    Accept,
    /// Settle with `released`: the hub delivers it again.
    Release,
}

/// Settles one feedback message when the caller decides. Dropping it releases the message.
#[derive(Debug)]
pub struct FeedbackAck {
    tx: Option<oneshot::Sender<AckDecision>>,
}

impl FeedbackAck {
    /// The batch is durable: accept (settle) the feedback message.
    pub fn accept(mut self) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(AckDecision::Accept);
        }
    }

    /// Could not store the batch: release it so the hub delivers it again.
    pub fn release(mut self) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(AckDecision::Release);
        }
    }
}

impl Drop for FeedbackAck {
    fn drop(&mut self) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(AckDecision::Release);
        }
    }
}

/// One feedback message: its records and the handle that settles it.
#[derive(Debug)]
pub struct FeedbackBatch {
    pub records: Vec<FeedbackRecord>,
    pub ack: FeedbackAck,
}

type Decided = (
    Result<AckDecision, oneshot::error::RecvError>,
    Delivery<Body<Value>>,
);

/// Counters of the feedback receiver.
#[derive(Debug, Default)]
pub struct FeedbackMetrics {
    pub messages: AtomicU64,
    pub records: AtomicU64,
    pub accepted: AtomicU64,
    pub released: AtomicU64,
    pub malformed: AtomicU64,
}

/// Why [`run_feedback`] returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedbackExit {
    /// The link or connection failed (reason); reconnecting brings feedback back.
    LinkFailed(String),
    /// The batch receiver was dropped: nobody wants feedback any more.
    ConsumerGone,
}

/// Receives feedback on `receiver` and forwards batches to `out` until the link fails or `out` is
/// closed. Settles each message as its [`FeedbackAck`] decides.
pub async fn run_feedback(
    mut receiver: Receiver,
    out: mpsc::Sender<FeedbackBatch>,
    metrics: Arc<FeedbackMetrics>,
) -> FeedbackExit {
    let mut pending = FuturesUnordered::new();
    loop {
        tokio::select! {
            decided = pending.next(), if !pending.is_empty() => {
                let Some((decision, delivery)): Option<Decided> = decided else { continue };
                let r = match decision.unwrap_or(AckDecision::Release) {
                    AckDecision::Accept => {
                        metrics.accepted.fetch_add(1, Ordering::Relaxed);
                        receiver.accept(&delivery).await
                    }
                    AckDecision::Release => {
                        metrics.released.fetch_add(1, Ordering::Relaxed);
                        receiver.release(&delivery).await
                    }
                };
                if let Err(e) = r {
                    tracing::warn!(error = %e, "could not settle a feedback message; the hub will deliver it again");
                    return FeedbackExit::LinkFailed(e.to_string());
                }
            }
            received = receiver.recv::<Body<Value>>() => {
                let delivery = match received {
                    Ok(d) => d,
                    Err(e) => {
                        tracing::warn!(error = %e, "feedback receiver stopped");
                        return FeedbackExit::LinkFailed(e.to_string());
                    }
                };
                metrics.messages.fetch_add(1, Ordering::Relaxed);
                let parsed = match body_bytes(delivery.body()) {
                    Some(b) => parse_feedback(&b),
                    None => Err(FeedbackParseError::NoBody),
                };
                match parsed {
                    Ok(records) => {
                        metrics.records.fetch_add(records.len() as u64, Ordering::Relaxed);
                        let (tx, rx) = oneshot::channel();
                        let batch = FeedbackBatch { records, ack: FeedbackAck { tx: Some(tx) } };
                        if out.send(batch).await.is_err() {
                            // Nobody listens any more: leave it unsettled for redelivery.
                            let _ = receiver.release(&delivery).await;
                            return FeedbackExit::ConsumerGone;
                        }
                        pending.push(async move { (rx.await, delivery) });
                    }
                    Err(e) => {
                        metrics.malformed.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(error = %e, "rejecting a malformed feedback message");
                        let err = AmqpErrorBody::new(AmqpError::DecodeError, Some(e.to_string()), None);
                        if let Err(e) = receiver.reject(&delivery, err).await {
                            return FeedbackExit::LinkFailed(e.to_string());
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_iothub_feedback_array() {
        let body = br#"[
          {"originalMessageId":"msg1","deviceGenerationId":"636","deviceId":"dev-1",
           "enqueuedTimeUtc":"2026-11-22T03:00:00.1234567Z","statusCode":"Success","description":"Success"},
          {"originalMessageId":"msg2","deviceGenerationId":"636","deviceId":"dev-2",
           "enqueuedTimeUtc":"2026-11-22T03:00:01Z","statusCode":"Expired","description":"Message Expired"}
        ]"#;
        let r = parse_feedback(body).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].original_message_id.as_deref(), Some("msg1"));
        assert_eq!(r[0].device_id.as_deref(), Some("dev-1"));
        assert_eq!(r[1].status_code.as_deref(), Some("Expired"));
        assert_eq!(r[1].description.as_deref(), Some("Message Expired"));
        // Re-serialised with the same field names.
        let j = serde_json::to_value(&r[0]).unwrap();
        assert_eq!(j["originalMessageId"], "msg1");
        assert_eq!(j["enqueuedTimeUtc"], "2026-11-22T03:00:00.1234567Z");
    }

    #[test]
    fn numeric_status_and_missing_fields() {
        let r = parse_feedback(br#"[{"deviceId":"d","statusCode":0}]"#).unwrap();
        assert_eq!(r[0].status_code.as_deref(), Some("0"));
        assert_eq!(r[0].original_message_id, None);
        assert!(parse_feedback(b"{\"not\":\"an array\"}").is_err());
        assert!(parse_feedback(b"").is_err());
    }

    #[tokio::test]
    async fn dropping_the_ack_releases() {
        let (tx, rx) = oneshot::channel();
        drop(FeedbackAck { tx: Some(tx) });
        assert_eq!(rx.await.unwrap(), AckDecision::Release);
        let (tx, rx) = oneshot::channel();
        FeedbackAck { tx: Some(tx) }.accept();
        assert_eq!(rx.await.unwrap(), AckDecision::Accept);
    }
}
