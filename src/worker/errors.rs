//! Error classes and Connect's error handling (`runtime/errors/`): the ONE place that decides
//! whether a failure is retried, skipped or ends the task.
//!
//! * [`ErrorClass`]: `Retriable` (network, throttling, queue full, leader moves: retried with
//!   backoff, never skipped), `Record` (this record cannot be written or sent: too large, invalid,
//!   unconvertible: goes to `errors.tolerance`), `Fatal` (topic missing, not authorized, fenced or
//!   fatal producer, bad configuration: the task fails whatever the tolerance).
//! * Classification is by protocol code ([`classify_kafka`]; C2D outcomes are classified by the sink
//!   by AMQP condition symbol and IoT Hub error code into the same enum), never by message text.
//! * [`ToleranceOperator`] is Connect's `RetryWithToleranceOperator`: only `Record` errors may ever be
//!   tolerated (`errors.tolerance=all`); `errors.retry.timeout` bounds how long a retriable
//!   condition of one record is retried (0 and -1: for ever, see the README).
//! * [`LogReporter`] and [`DeadLetterQueueReporter`] report a tolerated record exactly as Connect's
//!   `LogReporter` / `DeadLetterQueueReporter` do (same log line, same `__connect.errors.*` headers).

use super::producer::{Producer, SendError};
use crate::config::connector::ErrorsConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use std::fmt;
use std::future::Future;
use std::time::Duration;
use tracing::error;

/// What a failure means for the record and the task.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// Transient: retry (with backoff), never skip, never fail the task for it.
    Retriable,
    /// This record is bad: `errors.tolerance` decides (fail the task, or log/dead-letter and skip).
    Record,
    /// The task cannot go on (missing topic, refused authorization, fenced producer, bad config).
    Fatal,
}

impl ErrorClass {
    pub fn name(self) -> &'static str {
        match self {
            ErrorClass::Retriable => "retriable",
            ErrorClass::Record => "record",
            ErrorClass::Fatal => "fatal",
        }
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The class of a librdkafka error code, for producers and consumers alike.
pub fn classify_kafka_code(code: RDKafkaErrorCode) -> ErrorClass {
    use RDKafkaErrorCode as C;
    match code {
        // The record itself cannot be written.
        C::MessageSizeTooLarge
        | C::InvalidMessageSize
        | C::MessageBatchTooLarge
        | C::InvalidRecord
        | C::InvalidMessage
        | C::InvalidTimestamp
        | C::BadMessage
        | C::KeySerialization
        | C::ValueSerialization
        | C::KeyDeserialization
        | C::ValueDeserialization
        | C::UnsupportedForMessageFormat => ErrorClass::Record,
        // Nothing written to this topic can succeed until an operator acts.
        C::UnknownTopicOrPartition
        | C::UnknownTopic
        | C::UnknownPartition
        | C::InvalidTopic
        | C::TopicAuthorizationFailed
        | C::ClusterAuthorizationFailed
        | C::GroupAuthorizationFailed
        | C::TransactionalIdAuthorizationFailed
        | C::SaslAuthenticationFailed
        | C::Authentication
        | C::UnsupportedSASLMechanism
        | C::IllegalSASLState
        | C::InvalidRequiredAcks
        | C::InvalidConfig
        | C::InvalidArgument
        | C::NotConfigured
        // Idempotence / transactions: the producer is fenced or lost its guarantees.
        | C::Fatal
        | C::Fenced
        | C::ProducerFenced
        | C::InvalidProducerEpoch
        | C::InvalidProducerIdMapping
        | C::OutOfOrderSequenceNumber
        | C::UnknownProducerId
        | C::TransactionCoordinatorFenced
        | C::FencedInstanceId
        | C::GaplessGuarantee
        | C::InvalidTransactionalState => ErrorClass::Fatal,
        // Queue full, timeouts, transport, leader moves, coordinator changes, throttling and
        // anything not named above: retried.
        _ => ErrorClass::Retriable,
    }
}

/// The class of a Kafka client error.
pub fn classify_kafka(e: &KafkaError) -> ErrorClass {
    match e {
        KafkaError::ClientConfig(..) | KafkaError::ClientCreation(_) => ErrorClass::Fatal,
        // The client was dropped (the task is stopping): retried by whoever runs next.
        KafkaError::Canceled => ErrorClass::Retriable,
        other => other
            .rdkafka_error_code()
            .map_or(ErrorClass::Retriable, classify_kafka_code),
    }
}

/// A converter could not turn the record into data, or data into bytes: always the record's fault.
pub const CONVERSION: ErrorClass = ErrorClass::Record;

/// Where a record failed, in Connect's `Stage` names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    KeyConverter,
    ValueConverter,
    HeaderConverter,
    Transformation,
    TaskPut,
    TaskPoll,
    KafkaProduce,
    KafkaConsume,
}

impl Stage {
    pub fn name(self) -> &'static str {
        match self {
            Stage::KeyConverter => "KEY_CONVERTER",
            Stage::ValueConverter => "VALUE_CONVERTER",
            Stage::HeaderConverter => "HEADER_CONVERTER",
            Stage::Transformation => "TRANSFORMATION",
            Stage::TaskPut => "TASK_PUT",
            Stage::TaskPoll => "TASK_POLL",
            Stage::KafkaProduce => "KAFKA_PRODUCE",
            Stage::KafkaConsume => "KAFKA_CONSUME",
        }
    }
}

/// Where the failed record came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A consumed Kafka record (sink).
    Consumed {
        topic: String,
        partition: i32,
        offset: i64,
        timestamp: Option<i64>,
    },
    /// A source event (hub partition and its `x-opt-offset`).
    Source { partition: String, offset: String },
}

/// Everything a reporter needs about one failed record (owned: reporting may outlive the caller).
#[derive(Clone, Debug)]
pub struct FailedRecord {
    pub origin: Origin,
    pub stage: Stage,
    /// The class executing the stage (converter class, connector class).
    pub class_name: String,
    /// The error, with its chain.
    pub message: String,
    /// The original record, for the dead letter queue.
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

/// `errors.retry.timeout` as iotconnect applies it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetryLimit {
    /// 0 and -1: retriable conditions are retried until the task stops.
    Forever,
    /// > 0: a record still failing after this long becomes a record error.
    For(Duration),
}

/// What to do with one failed record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Try again after a backoff.
    Retry,
    /// Report (log / dead letter queue) and move on; counts as done for commits.
    Skip,
    /// Fail the task; nothing at or after this record is committed.
    Fail,
}

/// Connect's `RetryWithToleranceOperator`: the tolerance decision for every class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ToleranceOperator {
    /// `errors.tolerance=all`.
    pub tolerate_all: bool,
    pub retry: RetryLimit,
    /// `errors.retry.delay.max.ms`.
    pub retry_delay_max: Duration,
}

impl ToleranceOperator {
    pub fn from_config(e: &ErrorsConfig) -> ToleranceOperator {
        ToleranceOperator {
            tolerate_all: e.tolerate_all,
            retry: if e.retry_timeout_ms > 0 {
                RetryLimit::For(Duration::from_millis(e.retry_timeout_ms as u64))
            } else {
                RetryLimit::Forever
            },
            retry_delay_max: e.retry_delay_max,
        }
    }

    /// The decision for a failure of `class` (only `Record` errors are ever skipped).
    pub fn decide(&self, class: ErrorClass) -> Decision {
        match class {
            ErrorClass::Retriable => Decision::Retry,
            ErrorClass::Record if self.tolerate_all => Decision::Skip,
            ErrorClass::Record | ErrorClass::Fatal => Decision::Fail,
        }
    }

    /// The decision for a retriable failure that has been retried for `elapsed`: past
    /// `errors.retry.timeout` it becomes a record error.
    pub fn decide_after(&self, class: ErrorClass, elapsed: Duration) -> Decision {
        match (class, self.retry) {
            (ErrorClass::Retriable, RetryLimit::For(limit)) if elapsed >= limit => {
                self.decide(ErrorClass::Record)
            }
            _ => self.decide(class),
        }
    }

    /// Whether a failure of `class` may be skipped.
    pub fn tolerates(&self, class: ErrorClass) -> bool {
        self.decide(class) == Decision::Skip
    }
}

/// Connect's `LogReporter`: one ERROR line per tolerated record when `errors.log.enable=true`.
#[derive(Clone, Debug)]
pub struct LogReporter {
    /// Connect's `<connector>-<task>` id.
    pub task_id: String,
    pub enabled: bool,
    /// `errors.log.include.messages`: also log the record's key and value sizes (never contents).
    pub include_messages: bool,
}

impl LogReporter {
    pub fn new(task_id: impl Into<String>, e: &ErrorsConfig) -> LogReporter {
        LogReporter {
            task_id: task_id.into(),
            enabled: e.log_enable,
            include_messages: e.log_include_messages,
        }
    }

    /// The line Connect logs (`None` when logging is off).
    pub fn line(&self, f: &FailedRecord) -> Option<String> {
        if !self.enabled {
            return None;
        }
        let what = match &f.origin {
            Origin::Consumed {
                topic,
                partition,
                offset,
                timestamp,
            } => format!(
                "where consumed record is {{topic='{topic}', partition={partition}, offset={offset}, timestamp={}, timestampType=CreateTime}}",
                timestamp.unwrap_or(-1)
            ),
            Origin::Source { partition, offset } => {
                format!("where source record is {{hub partition={partition}, offset={offset}}}")
            }
        };
        let sizes = if self.include_messages {
            format!(
                " (key {} bytes, value {} bytes)",
                f.key.as_ref().map_or(0, Vec::len),
                f.value.as_ref().map_or(0, Vec::len)
            )
        } else {
            String::new()
        };
        Some(format!(
            "Error encountered in task {}. Executing stage '{}' with class '{}', {what}{sizes}. {}",
            self.task_id,
            f.stage.name(),
            f.class_name,
            f.message
        ))
    }

    pub fn report(&self, f: &FailedRecord) {
        if let Some(line) = self.line(f) {
            error!("{line}");
        }
    }
}

/// Connect's `DeadLetterQueueReporter`: writes the original record to
/// `errors.deadletterqueue.topic.name`, with the `__connect.errors.*` context headers when
/// `errors.deadletterqueue.context.headers.enable=true`.
#[derive(Clone)]
pub struct DeadLetterQueueReporter {
    producer: Producer,
    pub topic: String,
    pub context_headers: bool,
    pub connector: String,
    pub task: usize,
}

/// Connect's exception class for every error iotconnect reports.
pub const EXCEPTION_CLASS: &str = "org.apache.kafka.connect.errors.ConnectException";

impl DeadLetterQueueReporter {
    /// `None` when the connector has no dead letter queue.
    pub fn new(
        producer: Producer,
        connector: &str,
        task: usize,
        e: &ErrorsConfig,
    ) -> Option<DeadLetterQueueReporter> {
        Some(DeadLetterQueueReporter {
            producer,
            topic: e.dlq_topic.clone()?,
            context_headers: e.dlq_context_headers,
            connector: connector.to_string(),
            task,
        })
    }

    /// The record's own headers followed (when enabled) by Connect's context headers.
    pub fn headers(&self, f: &FailedRecord) -> Vec<(String, Option<Vec<u8>>)> {
        let mut out = f.headers.clone();
        if !self.context_headers {
            return out;
        }
        let (topic, partition, offset) = match &f.origin {
            Origin::Consumed {
                topic,
                partition,
                offset,
                ..
            } => (topic.clone(), partition.to_string(), offset.to_string()),
            Origin::Source { partition, offset } => {
                (String::new(), partition.clone(), offset.clone())
            }
        };
        let context = [
            ("__connect.errors.topic", topic),
            ("__connect.errors.partition", partition),
            ("__connect.errors.offset", offset),
            ("__connect.errors.connector.name", self.connector.clone()),
            ("__connect.errors.task.id", self.task.to_string()),
            ("__connect.errors.stage", f.stage.name().to_string()),
            ("__connect.errors.class.name", f.class_name.clone()),
            (
                "__connect.errors.exception.class.name",
                EXCEPTION_CLASS.to_string(),
            ),
            ("__connect.errors.exception.message", f.message.clone()),
            (
                "__connect.errors.exception.stacktrace",
                format!("{EXCEPTION_CLASS}: {}", f.message),
            ),
        ];
        out.extend(
            context
                .into_iter()
                .map(|(k, v)| (k.to_string(), Some(v.into_bytes()))),
        );
        out
    }

    /// Writes the record; resolves once Kafka acknowledged it (or with the classified error).
    /// The returned future owns everything it needs.
    pub fn report(
        &self,
        f: &FailedRecord,
    ) -> impl Future<Output = Result<(), SendError>> + Send + 'static {
        let headers = self.headers(f);
        let key = f.key.clone();
        let value = f.value.clone();
        let topic = self.topic.clone();
        let producer = self.producer.clone();
        async move {
            let mut h = OwnedHeaders::new_with_capacity(headers.len());
            for (k, v) in &headers {
                h = h.insert(Header {
                    key: k,
                    value: v.as_deref(),
                });
            }
            let mut record = FutureRecord::<[u8], [u8]>::to(&topic).headers(h);
            if let Some(k) = key.as_deref() {
                record = record.key(k);
            }
            if let Some(v) = value.as_deref() {
                record = record.payload(v);
            }
            producer.send(record).await.map(|_| ())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_codes_are_classified_once() {
        use RDKafkaErrorCode as C;
        for c in [
            C::MessageSizeTooLarge,
            C::InvalidRecord,
            C::InvalidMessageSize,
        ] {
            assert_eq!(classify_kafka_code(c), ErrorClass::Record, "{c:?}");
        }
        for c in [
            C::UnknownTopicOrPartition,
            C::UnknownTopic,
            C::TopicAuthorizationFailed,
            C::ClusterAuthorizationFailed,
            C::ProducerFenced,
            C::Fenced,
            C::Fatal,
            C::OutOfOrderSequenceNumber,
            C::InvalidProducerEpoch,
        ] {
            assert_eq!(classify_kafka_code(c), ErrorClass::Fatal, "{c:?}");
        }
        for c in [
            C::QueueFull,
            C::MessageTimedOut,
            C::RequestTimedOut,
            C::BrokerTransportFailure,
            C::AllBrokersDown,
            C::NotLeaderForPartition,
            C::LeaderNotAvailable,
            C::NotEnoughReplicas,
            C::NetworkException,
            C::ThrottlingQuotaExceeded,
        ] {
            assert_eq!(classify_kafka_code(c), ErrorClass::Retriable, "{c:?}");
        }
        assert_eq!(
            classify_kafka(&KafkaError::MessageProduction(C::MessageSizeTooLarge)),
            ErrorClass::Record
        );
        assert_eq!(
            classify_kafka(&KafkaError::MessageProduction(C::TopicAuthorizationFailed)),
            ErrorClass::Fatal
        );
        assert_eq!(
            classify_kafka(&KafkaError::ClientCreation("x".into())),
            ErrorClass::Fatal
        );
        assert_eq!(classify_kafka(&KafkaError::Canceled), ErrorClass::Retriable);
    }

    fn errors(all: bool, retry_ms: i64) -> ErrorsConfig {
        ErrorsConfig {
            tolerate_all: all,
            log_enable: true,
            log_include_messages: false,
            retry_timeout_ms: retry_ms,
            retry_delay_max: Duration::from_secs(60),
            dlq_topic: None,
            dlq_context_headers: true,
            dlq_replication_factor: 3,
        }
    }

    #[test]
    fn only_record_errors_are_ever_tolerated() {
        let none = ToleranceOperator::from_config(&errors(false, 0));
        let all = ToleranceOperator::from_config(&errors(true, 0));
        assert_eq!(none.decide(ErrorClass::Record), Decision::Fail);
        assert_eq!(all.decide(ErrorClass::Record), Decision::Skip);
        for op in [none, all] {
            assert_eq!(op.decide(ErrorClass::Fatal), Decision::Fail);
            assert_eq!(op.decide(ErrorClass::Retriable), Decision::Retry);
            assert!(!op.tolerates(ErrorClass::Fatal));
            assert_eq!(op.retry, RetryLimit::Forever);
            assert_eq!(
                op.decide_after(ErrorClass::Retriable, Duration::from_secs(86_400)),
                Decision::Retry
            );
        }
        assert_eq!(
            ToleranceOperator::from_config(&errors(false, -1)).retry,
            RetryLimit::Forever
        );
        let bounded = ToleranceOperator::from_config(&errors(true, 1000));
        assert_eq!(
            bounded.decide_after(ErrorClass::Retriable, Duration::from_millis(999)),
            Decision::Retry
        );
        assert_eq!(
            bounded.decide_after(ErrorClass::Retriable, Duration::from_millis(1000)),
            Decision::Skip
        );
        assert_eq!(
            bounded.decide_after(ErrorClass::Fatal, Duration::ZERO),
            Decision::Fail
        );
    }

    fn failed() -> FailedRecord {
        FailedRecord {
            origin: Origin::Consumed {
                topic: "iotout".into(),
                partition: 2,
                offset: 41,
                timestamp: Some(1_700_000_000_000),
            },
            stage: Stage::ValueConverter,
            class_name: "org.apache.kafka.connect.json.JsonConverter".into(),
            message: "bad json".into(),
            key: Some(b"k".to_vec()),
            value: Some(b"{".to_vec()),
            headers: vec![("h".into(), Some(b"v".to_vec()))],
        }
    }

    #[test]
    fn log_reporter_writes_connects_line() {
        let mut r = LogReporter::new("sink-0", &errors(true, 0));
        assert_eq!(
            r.line(&failed()).unwrap(),
            "Error encountered in task sink-0. Executing stage 'VALUE_CONVERTER' with class \
             'org.apache.kafka.connect.json.JsonConverter', where consumed record is {topic='iotout', \
             partition=2, offset=41, timestamp=1700000000000, timestampType=CreateTime}. bad json"
        );
        r.enabled = false;
        assert_eq!(r.line(&failed()), None);
    }

    #[test]
    fn dead_letter_headers_are_the_originals_then_connects_context() {
        let mut c = rdkafka::ClientConfig::new();
        c.set("bootstrap.servers", "127.0.0.1:9");
        let producer = Producer::create(&c).unwrap();
        let mut e = errors(true, 0);
        assert!(DeadLetterQueueReporter::new(producer.clone(), "sink", 3, &e).is_none());
        e.dlq_topic = Some("dlq".into());
        let mut r = DeadLetterQueueReporter::new(producer, "sink", 3, &e).unwrap();
        let h = r.headers(&failed());
        let names: Vec<&str> = h.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "h",
                "__connect.errors.topic",
                "__connect.errors.partition",
                "__connect.errors.offset",
                "__connect.errors.connector.name",
                "__connect.errors.task.id",
                "__connect.errors.stage",
                "__connect.errors.class.name",
                "__connect.errors.exception.class.name",
                "__connect.errors.exception.message",
                "__connect.errors.exception.stacktrace",
            ]
        );
        let value = |k: &str| {
            String::from_utf8(h.iter().find(|(n, _)| n == k).unwrap().1.clone().unwrap()).unwrap()
        };
        assert_eq!(value("__connect.errors.topic"), "iotout");
        assert_eq!(value("__connect.errors.partition"), "2");
        assert_eq!(value("__connect.errors.offset"), "41");
        assert_eq!(value("__connect.errors.task.id"), "3");
        assert_eq!(value("__connect.errors.stage"), "VALUE_CONVERTER");
        assert_eq!(
            value("__connect.errors.exception.stacktrace"),
            "org.apache.kafka.connect.errors.ConnectException: bad json"
        );
        r.context_headers = false;
        assert_eq!(r.headers(&failed()).len(), 1);
    }
}
