//! Failed records out: Connect's error log line and the dead letter queue record.
//!
//! The DLQ record is the original record (key, value, headers, byte for byte) plus, with
//! `errors.deadletterqueue.context.headers.enable=true`, Connect's `__connect.errors.*` headers.
//! A record counts as finished (its offset may be committed) only once the DLQ write was
//! acknowledged; a failed DLQ write fails the task.

use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;

/// Where a record failed, in Connect's `Stage` names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    ValueConverter,
    TaskPut,
}

impl Stage {
    pub fn name(self) -> &'static str {
        match self {
            Stage::ValueConverter => "VALUE_CONVERTER",
            Stage::TaskPut => "TASK_PUT",
        }
    }
}

/// The consumed record as read, kept for the dead letter queue.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Original {
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

impl Original {
    pub fn of<M: Message>(m: &M) -> Original {
        Original {
            key: m.key().map(<[u8]>::to_vec),
            value: m.payload().map(<[u8]>::to_vec),
            headers: m
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }
}

/// Where the failed record came from and why it failed.
#[derive(Clone, Debug)]
pub struct Failure<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub timestamp: Option<i64>,
    pub connector: &'a str,
    pub task_id: usize,
    /// Connect's task id (`<connector>-<task>`).
    pub task: &'a str,
    pub stage: Stage,
    /// The class that failed (converter or connector class).
    pub class: &'a str,
    pub message: &'a str,
}

impl Failure<'_> {
    /// Connect's `LogReporter` line.
    pub fn log_line(&self) -> String {
        format!(
            "Error encountered in task {}. Executing stage '{}' with class '{}', where consumed record is {{topic='{}', partition={}, offset={}, timestamp={}, timestampType=CreateTime}}. {}",
            self.task,
            self.stage.name(),
            self.class,
            self.topic,
            self.partition,
            self.offset,
            self.timestamp.unwrap_or(-1),
            self.message
        )
    }

    /// Connect's `__connect.errors.*` context headers, in Connect's order.
    pub fn context_headers(&self) -> Vec<(&'static str, String)> {
        vec![
            ("__connect.errors.topic", self.topic.to_string()),
            ("__connect.errors.partition", self.partition.to_string()),
            ("__connect.errors.offset", self.offset.to_string()),
            (
                "__connect.errors.connector.name",
                self.connector.to_string(),
            ),
            ("__connect.errors.task.id", self.task_id.to_string()),
            ("__connect.errors.stage", self.stage.name().to_string()),
            ("__connect.errors.class.name", self.class.to_string()),
            (
                "__connect.errors.exception.class.name",
                "org.apache.kafka.connect.errors.ConnectException".to_string(),
            ),
            (
                "__connect.errors.exception.message",
                self.message.to_string(),
            ),
            (
                "__connect.errors.exception.stacktrace",
                format!(
                    "org.apache.kafka.connect.errors.ConnectException: {}",
                    self.message
                ),
            ),
        ]
    }
}

/// The headers of the DLQ record: the original ones, then the context headers if wanted.
pub fn dlq_headers(original: &Original, context: Option<&Failure<'_>>) -> OwnedHeaders {
    let mut headers = OwnedHeaders::new();
    for (k, v) in &original.headers {
        headers = headers.insert(Header {
            key: k,
            value: v.as_deref(),
        });
    }
    if let Some(f) = context {
        for (k, v) in f.context_headers() {
            headers = headers.insert(Header {
                key: k,
                value: Some(v.as_bytes()),
            });
        }
    }
    headers
}

/// Writes the DLQ record and waits for Kafka's acknowledgement.
pub async fn send(
    producer: FutureProducer,
    topic: String,
    original: Original,
    headers: OwnedHeaders,
) -> Result<(), String> {
    let mut record = FutureRecord::<[u8], [u8]>::to(&topic).headers(headers);
    if let Some(k) = original.key.as_deref() {
        record = record.key(k);
    }
    if let Some(v) = original.value.as_deref() {
        record = record.payload(v);
    }
    producer
        .send(record, Timeout::Never)
        .await
        .map(|_| ())
        .map_err(|(e, _)| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure() -> Failure<'static> {
        Failure {
            topic: "iotout",
            partition: 2,
            offset: 41,
            timestamp: Some(1700000000000),
            connector: "sink",
            task_id: 0,
            task: "sink-0",
            stage: Stage::TaskPut,
            class: "com.microsoft.azure.iot.kafka.connect.sink.IotHubSinkConnector",
            message: "IoT Hub rejected the C2D message: device_not_found",
        }
    }

    #[test]
    fn log_line_is_connects() {
        assert_eq!(
            failure().log_line(),
            "Error encountered in task sink-0. Executing stage 'TASK_PUT' with class 'com.microsoft.azure.iot.kafka.connect.sink.IotHubSinkConnector', where consumed record is {topic='iotout', partition=2, offset=41, timestamp=1700000000000, timestampType=CreateTime}. IoT Hub rejected the C2D message: device_not_found"
        );
    }

    #[test]
    fn headers_keep_the_original_then_add_context() {
        let original = Original {
            key: Some(b"k".to_vec()),
            value: Some(b"v".to_vec()),
            headers: vec![("h1".into(), Some(b"x".to_vec())), ("h2".into(), None)],
        };
        let f = failure();
        let h = dlq_headers(&original, Some(&f));
        let got: Vec<(String, Option<Vec<u8>>)> = h
            .iter()
            .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
            .collect();
        assert_eq!(got.len(), 12);
        assert_eq!(got[0], ("h1".into(), Some(b"x".to_vec())));
        assert_eq!(got[1], ("h2".into(), None));
        assert_eq!(
            got[2],
            ("__connect.errors.topic".into(), Some(b"iotout".to_vec()))
        );
        assert_eq!(
            got[4],
            ("__connect.errors.offset".into(), Some(b"41".to_vec()))
        );
        assert_eq!(
            got[7],
            ("__connect.errors.stage".into(), Some(b"TASK_PUT".to_vec()))
        );
        assert_eq!(dlq_headers(&original, None).count(), 2);
    }
}
