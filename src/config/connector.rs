//! Connector files: the common Connect keys (name, class, tasks, converters, overrides, `errors.*`),
//! and the dispatch to the IoT Hub source keys ([`super::source`]), sink keys ([`super::sink`]) and
//! the hub transport keys both share ([`super::transport`]) (toketi.md §2.2, §3.2).
//!
//! A file either yields a complete `ConnectorConfig` or every problem found in it, each naming the
//! file and the key; nothing is half-read.

use super::reader::Reader;
use super::sink::read_sink;
use super::source::{endpoint_port, read_source};
use super::{ConverterSpec, LoadedFile, Problems};
use std::collections::BTreeMap;
use std::time::Duration;

pub use super::sink::{Ack, SinkConfig, Topics};
pub use super::source::{EventHubConnection, RecordFormat, RecordKey, SourceConfig};
pub use super::transport::{is_loopback_host, read_hub_transport, HubTransport, TransportType};

pub const SOURCE_CLASSES: &[&str] = &[
    "com.microsoft.azure.iot.kafka.connect.source.IotHubSourceConnector",
    "com.microsoft.azure.iot.kafka.connect.IotHubSourceConnector",
    "IotHubSourceConnector",
    "IotHubSource",
];
pub const SINK_CLASSES: &[&str] = &[
    "com.microsoft.azure.iot.kafka.connect.sink.IotHubSinkConnector",
    "IotHubSinkConnector",
    "IotHubSink",
];
/// The canonical class names (what `GET /connector-plugins` lists).
pub const SOURCE_CLASS: &str = SOURCE_CLASSES[0];
pub const SINK_CLASS: &str = SINK_CLASSES[0];

/// Value the sample files ship with; treated as "not filled in".
pub const PLACEHOLDER: &str = "PLACEHOLDER";

const COMMON_ACCEPTED: &[&str] = &[
    "config.action.reload",
    "tasks.max.enforce",
    "header.converter",
];
const COMMON_PREFIXES: &[&str] = &[
    "producer.override.",
    "consumer.override.",
    "admin.override.",
    "header.converter.",
    "topic.creation.",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectorKind {
    Source,
    Sink,
}

impl ConnectorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectorKind::Source => "source",
            ConnectorKind::Sink => "sink",
        }
    }
}

/// Connect's `errors.*` keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorsConfig {
    /// `errors.tolerance=all`.
    pub tolerate_all: bool,
    pub log_enable: bool,
    pub log_include_messages: bool,
    /// `errors.retry.timeout` in ms: 0 no retry, -1 for ever.
    pub retry_timeout_ms: i64,
    pub retry_delay_max: Duration,
    pub dlq_topic: Option<String>,
    pub dlq_context_headers: bool,
    pub dlq_replication_factor: i64,
}

/// One connector file, typed. `Debug` masks secret values (see [`super::masked_map`]).
#[derive(Clone)]
pub struct ConnectorConfig {
    pub file: LoadedFile,
    pub name: String,
    pub class: String,
    pub kind: ConnectorKind,
    pub tasks_max: usize,
    pub key_converter: Option<ConverterSpec>,
    pub value_converter: Option<ConverterSpec>,
    pub producer_override: BTreeMap<String, String>,
    pub consumer_override: BTreeMap<String, String>,
    pub errors: ErrorsConfig,
    pub source: Option<SourceConfig>,
    pub sink: Option<SinkConfig>,
    pub warnings: Vec<String>,
}

impl std::fmt::Debug for ConnectorConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectorConfig")
            .field("file", &self.file)
            .field("name", &self.name)
            .field("class", &self.class)
            .field("kind", &self.kind)
            .field("tasks_max", &self.tasks_max)
            .field("key_converter", &self.key_converter)
            .field("value_converter", &self.value_converter)
            .field(
                "producer_override",
                &super::masked_map(&self.producer_override),
            )
            .field(
                "consumer_override",
                &super::masked_map(&self.consumer_override),
            )
            .field("errors", &self.errors)
            .field("source", &self.source)
            .field("sink", &self.sink)
            .finish_non_exhaustive()
    }
}

impl ConnectorConfig {
    pub fn from_file(file: &LoadedFile) -> Result<ConnectorConfig, Problems> {
        let mut r = Reader::new(file.display_name(), &file.resolved);
        r.accept(COMMON_ACCEPTED);
        for p in COMMON_PREFIXES {
            r.accept_prefix(p);
        }
        let name = r.required("name").unwrap_or_default();
        if name.chars().any(|c| c.is_control()) {
            r.problem(
                "name",
                "Connector name must not contain ISO control characters",
            );
        }
        let class = r.required("connector.class").unwrap_or_default();
        let kind = if SOURCE_CLASSES.contains(&class.as_str()) {
            Some(ConnectorKind::Source)
        } else if SINK_CLASSES.contains(&class.as_str()) {
            Some(ConnectorKind::Sink)
        } else {
            if !class.is_empty() {
                r.problem(
                    "connector.class",
                    format!(
                        "Failed to find any class that implements Connector and which name matches {class}; \
                         iotconnect provides {} (aliases IotHubSource) and {} (alias IotHubSink)",
                        SOURCE_CLASS, SINK_CLASS
                    ),
                );
            }
            None
        };
        let tasks_max = r.int("tasks.max", 1, 1, 1024) as usize;
        let key_converter = ConverterSpec::read(&mut r, "key.converter", false);
        let value_converter = ConverterSpec::read(&mut r, "value.converter", false);
        for key in ["transforms", "predicates"] {
            if r.non_empty(key).is_some() {
                r.problem(
                    key,
                    "single message transforms are not supported by iotconnect",
                );
            }
        }
        let producer_override = r.prefixed("producer.override.");
        let consumer_override = r.prefixed("consumer.override.");
        let errors = read_errors(&mut r);
        let source = (kind == Some(ConnectorKind::Source)).then(|| read_source(&mut r));
        let sink = (kind == Some(ConnectorKind::Sink)).then(|| read_sink(&mut r, &errors));
        if kind == Some(ConnectorKind::Source) && errors.dlq_topic.is_some() {
            r.problem(
                "errors.deadletterqueue.topic.name",
                "a dead letter queue is only available for sink connectors",
            );
        }
        let mut warnings: Vec<String> = r.unknown_key_warnings();
        if let Some(Some(s)) = &source {
            if let (Some(port), None) = (endpoint_port(&s.connection.endpoint), &s.custom_endpoint)
            {
                let key = if file.resolved.contains_key("IotHub.ConnectionString") {
                    "IotHub.ConnectionString"
                } else {
                    "IotHub.EventHubCompatibleEndpoint"
                };
                let host = s.connection.host().split(':').next().unwrap_or_default();
                warnings.push(format!(
                    "{}:{key}: the endpoint carries port {port}, which the Event Hubs client drops (it always dials \
                     {host}:5671 over TLS); to reach port {port} set IotHub.CustomEndpoint=amqp://{host}:{port} \
                     (or amqps://{host}:{port})",
                    file.display_name()
                ));
            }
        }
        if let Some(Some(s)) = &sink {
            if s.hub.custom_endpoint.is_none() {
                if let Ok(cs) =
                    crate::iothub::connstr::IotHubConnectionString::parse(&s.connection_string)
                {
                    if let Some(port) = cs.port() {
                        warnings.push(format!(
                            "{}:IotHub.ConnectionString: HostName carries port {port}: without IotHub.CustomEndpoint the \
                             sink dials amqps://{host}:{port} (TLS); for a plain AMQP endpoint such as the emulator set \
                             IotHub.CustomEndpoint=amqp://{host}:{port}",
                            file.display_name(),
                            host = cs.host()
                        ));
                    }
                }
            }
        }
        if let Some(Some(s)) = &source {
            if s.batch_size > 999 {
                warnings.push(format!(
                    "{}:BatchSize: {} is above the Java connector's maximum of 999; iotconnect accepts it",
                    file.display_name(),
                    s.batch_size
                ));
            }
        }
        if !r.problems.is_empty() {
            return Err(r.problems);
        }
        Ok(ConnectorConfig {
            file: file.clone(),
            name,
            class,
            kind: kind.expect("no problems means a kind"),
            tasks_max,
            key_converter,
            value_converter,
            producer_override,
            consumer_override,
            errors,
            source: source.flatten(),
            sink: sink.flatten(),
            warnings,
        })
    }

    /// The converter for this connector's keys: the connector's own, else the worker's (Connect §2.4).
    pub fn effective_key_converter<'a>(&'a self, worker: &'a ConverterSpec) -> &'a ConverterSpec {
        self.key_converter.as_ref().unwrap_or(worker)
    }

    pub fn effective_value_converter<'a>(&'a self, worker: &'a ConverterSpec) -> &'a ConverterSpec {
        self.value_converter.as_ref().unwrap_or(worker)
    }
}

fn read_errors(r: &mut Reader) -> ErrorsConfig {
    let tolerance = r.one_of("errors.tolerance", "none", &["none", "all"]);
    let retry_timeout_ms = r.int("errors.retry.timeout", 0, -1, i64::MAX);
    let retry_delay_max = r.millis("errors.retry.delay.max.ms", 60_000);
    ErrorsConfig {
        tolerate_all: tolerance == "all",
        log_enable: r.boolean("errors.log.enable", false),
        log_include_messages: r.boolean("errors.log.include.messages", false),
        retry_timeout_ms,
        retry_delay_max,
        dlq_topic: r.non_empty("errors.deadletterqueue.topic.name"),
        dlq_context_headers: r.boolean("errors.deadletterqueue.context.headers.enable", false),
        dlq_replication_factor: r.int(
            "errors.deadletterqueue.topic.replication.factor",
            3,
            -1,
            32767,
        ),
    }
}

pub(super) fn filled(v: Option<String>) -> Option<String> {
    v.filter(|s| !s.is_empty() && s != PLACEHOLDER)
}
