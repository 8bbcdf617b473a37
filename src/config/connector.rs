//! Connector files: the common Connect keys plus the IoT Hub source and sink keys (toketi.md §2.2, §3.2).

use super::reader::Reader;
use super::{ConverterSpec, LoadedFile, Problems, Secret};
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

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

/// How to reach the Event Hub-compatible endpoint.
#[derive(Clone, Debug)]
pub struct EventHubConnection {
    /// `sb://<namespace host>/`
    pub endpoint: String,
    /// EntityPath / `IotHub.EventHubCompatibleName`: the event hub, and `EventHubName` in offsets.
    pub event_hub_name: String,
    pub key_name: String,
    pub key: Secret,
}

impl EventHubConnection {
    /// `Endpoint=…;SharedAccessKeyName=…;SharedAccessKey=…;EntityPath=…` for the Event Hubs client.
    pub fn connection_string(&self) -> Secret {
        Secret::new(format!(
            "Endpoint={};SharedAccessKeyName={};SharedAccessKey={};EntityPath={}",
            self.endpoint,
            self.key_name,
            self.key.expose(),
            self.event_hub_name
        ))
    }

    /// The namespace host of the endpoint (`sb://host/` → `host`).
    pub fn host(&self) -> &str {
        let rest = self
            .endpoint
            .split_once("://")
            .map_or(self.endpoint.as_str(), |(_, r)| r);
        rest.split('/').next().unwrap_or(rest)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordKey {
    /// No key, as toketi.
    None,
    /// The device id, so per-device order survives Kafka partitioning.
    DeviceId,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordFormat {
    /// toketi's `iothub.kafka.connect` Struct through the configured converter.
    Struct,
    /// Body bytes untouched, device id key, properties as headers, enqueued time as timestamp.
    Raw,
}

#[derive(Clone, Debug)]
pub struct SourceConfig {
    pub topic: String,
    pub connection: EventHubConnection,
    pub custom_endpoint: Option<String>,
    pub consumer_group: String,
    /// `IotHub.Partitions`: optional; the hub is asked, and a disagreeing value only warned about.
    pub partitions: Option<u32>,
    pub start_time: Option<SystemTime>,
    /// `IotHub.Offsets` entries by partition index (empty = none).
    pub offsets: Vec<String>,
    pub batch_size: usize,
    pub receive_timeout: Duration,
    pub record_key: RecordKey,
    pub record_format: RecordFormat,
    /// `IotHub.StallTimeout`: a partition silent this long while the hub has newer events is
    /// reopened (source/stall.rs); zero disables the watchdog.
    pub stall_timeout: Duration,
    /// `IotHub.TransportType`, `IotHub.AllowPlaintext` (read by source/transport.rs).
    pub transport: crate::source::transport::SourceTransport,
}

/// `IotHub.MessageDeliveryAcknowledgement`: the one ack enum, defined with the C2D message.
pub use crate::iothub::c2d::AckMode as Ack;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Topics {
    List(Vec<String>),
    Regex(String),
}

#[derive(Clone, Debug)]
pub struct SinkConfig {
    pub topics: Topics,
    /// IoT Hub service connection string (`HostName=…;SharedAccessKeyName=…;SharedAccessKey=…`).
    pub connection_string: Secret,
    pub ack: Ack,
    /// `IotHub.CustomEndpoint`, `IotHub.TransportType`, `IotHub.AllowPlaintext`,
    /// `IotHub.TrustedCaFile`, `IotHub.Proxy`.
    pub hub: HubTransport,
    pub max_in_flight: usize,
    pub max_sends_per_second: u32,
    pub feedback_topic: Option<String>,
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

/// The explicit port of an `sb://host:port/` style endpoint.
fn endpoint_port(endpoint: &str) -> Option<u16> {
    let rest = endpoint.split_once("://").map_or(endpoint, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or(rest);
    authority.rsplit_once(':').and_then(|(_, p)| p.parse().ok())
}

fn filled(v: Option<String>) -> Option<String> {
    v.filter(|s| !s.is_empty() && s != PLACEHOLDER)
}

/// `IotHub.TransportType`: AMQP over TCP (port 5671) or over WebSockets (port 443).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TransportType {
    #[default]
    Amqp,
    AmqpWebSockets,
}

/// How to reach the hub (source and sink use the same keys).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HubTransport {
    /// `IotHub.CustomEndpoint`: `amqp(s)://host:port` or `ws(s)://host[:port][/path]`.
    pub custom_endpoint: Option<String>,
    /// `IotHub.TransportType` (`Amqp` default, `AmqpWebSockets`).
    pub transport: TransportType,
    /// `IotHub.AllowPlaintext`: allow an unencrypted custom endpoint on a non-loopback host.
    pub allow_plaintext: bool,
    /// `IotHub.TrustedCaFile`: PEM CA bundle trusted instead of the public roots.
    pub trusted_ca_file: Option<std::path::PathBuf>,
    /// `IotHub.Proxy`: `http://[user:pass@]host:port` for WebSockets (else `HTTPS_PROXY`).
    pub proxy: Option<String>,
}

/// True for `localhost`, 127.0.0.0/8 and ::1 (with or without brackets).
pub fn is_loopback_host(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h.eq_ignore_ascii_case("localhost")
        || h.parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Reads the transport keys; problems are reported on the key they concern.
pub fn read_hub_transport(r: &mut Reader) -> Option<HubTransport> {
    let before = r.problems.len();
    let transport = match r
        .one_of("IotHub.TransportType", "Amqp", &["Amqp", "AmqpWebSockets"])
        .as_str()
    {
        "AmqpWebSockets" => TransportType::AmqpWebSockets,
        _ => TransportType::Amqp,
    };
    let allow_plaintext = r.boolean("IotHub.AllowPlaintext", false);
    let custom_endpoint = filled(r.string("IotHub.CustomEndpoint")).and_then(|v| {
        let v = v.trim_end_matches('/').to_string();
        let (scheme, rest) = v.split_once("://").unwrap_or_default();
        let scheme = scheme.to_ascii_lowercase();
        let authority = rest.split('/').next().unwrap_or_default();
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (h, Some(p)),
            _ => (authority, None),
        };
        let port_ok = port.is_some_and(|p| p.parse::<u16>().is_ok());
        let ok = match scheme.as_str() {
            "amqp" | "amqps" => !host.is_empty() && port_ok,
            "ws" | "wss" => !host.is_empty() && (port.is_none() || port_ok),
            _ => false,
        };
        if !ok {
            r.problem(
                "IotHub.CustomEndpoint",
                "Invalid value: expected amqp://host:port, amqps://host:port, ws://host:port[/path] or wss://host[:port][/path]",
            );
            return None;
        }
        if (scheme == "amqp" || scheme == "ws") && !allow_plaintext && !is_loopback_host(host) {
            r.problem(
                "IotHub.CustomEndpoint",
                format!("{scheme}:// to {host} would send the IoT Hub credentials unencrypted; use {scheme}s:// or set IotHub.AllowPlaintext=true"),
            );
            return None;
        }
        Some(v)
    });
    let trusted_ca_file = filled(r.string("IotHub.TrustedCaFile")).map(std::path::PathBuf::from);
    if let Some(p) = &trusted_ca_file {
        if let Err(e) = std::fs::metadata(p) {
            r.problem(
                "IotHub.TrustedCaFile",
                format!("cannot read {}: {e}", p.display()),
            );
        }
    }
    let proxy = filled(r.string("IotHub.Proxy"));
    if let Some(p) = &proxy {
        if !p.to_ascii_lowercase().starts_with("http://") {
            r.problem(
                "IotHub.Proxy",
                "Invalid value: expected http://[user:password@]host:port",
            );
        }
    }
    if r.problems.len() > before {
        return None;
    }
    Some(HubTransport {
        custom_endpoint,
        transport,
        allow_plaintext,
        trusted_ca_file,
        proxy,
    })
}

fn read_source(r: &mut Reader) -> Option<SourceConfig> {
    let before = r.problems.len();
    let topic = r.required("Kafka.Topic");
    if topic.as_deref() == Some(PLACEHOLDER) {
        r.problem(
            "Kafka.Topic",
            "still PLACEHOLDER: set the Kafka topic to write to (e.g. iotin)",
        );
    }
    let cs = r
        .secret("IotHub.ConnectionString")
        .filter(|s| s.expose() != PLACEHOLDER);
    let four = [
        "IotHub.EventHubCompatibleName",
        "IotHub.EventHubCompatibleEndpoint",
        "IotHub.AccessKeyName",
    ];
    let connection = if let Some(cs) = cs {
        for k in four.iter().chain(["IotHub.AccessKeyValue"].iter()) {
            if filled(r.string(k)).is_some() {
                r.problem(
                    k,
                    "set either IotHub.ConnectionString or the four IotHub.EventHubCompatibleName/Endpoint/AccessKeyName/AccessKeyValue keys, not both",
                );
            }
        }
        match crate::iothub::connstr::EventHubConnectionString::parse(&cs) {
            Ok(parsed) => match parsed.entity_path() {
                Ok(entity) => Some(EventHubConnection {
                    endpoint: parsed.endpoint.clone(),
                    event_hub_name: entity.to_string(),
                    key_name: parsed.key_name.clone(),
                    key: parsed.key.clone(),
                }),
                Err(e) => {
                    r.problem("IotHub.ConnectionString", format!("not an Event Hub-compatible connection string: {e} (copy it from the hub's Built-in endpoints page)"));
                    None
                }
            },
            Err(e) => {
                r.problem(
                    "IotHub.ConnectionString",
                    format!("not an Event Hub-compatible connection string: {e} (expected Endpoint=sb://…/;SharedAccessKeyName=…;SharedAccessKey=…;EntityPath=…, from the hub's Built-in endpoints page)"),
                );
                None
            }
        }
    } else {
        if let Some(k) = r
            .misspelling_of("IotHub.ConnectionString")
            .map(str::to_string)
        {
            r.problem(
                "IotHub.ConnectionString",
                format!(
                    "not set, but the file has \"{k}\": did you mean \"IotHub.ConnectionString\"?"
                ),
            );
        }
        let name = r.required("IotHub.EventHubCompatibleName");
        let endpoint = r.required("IotHub.EventHubCompatibleEndpoint");
        let key_name = r.required("IotHub.AccessKeyName");
        let key = match r.secret("IotHub.AccessKeyValue") {
            Some(k) => Some(k),
            None => {
                r.problem(
                    "IotHub.AccessKeyValue",
                    "Missing required configuration \"IotHub.AccessKeyValue\" which has no default value.",
                );
                None
            }
        };
        for (k, v) in four.iter().zip([&name, &endpoint, &key_name]) {
            if v.as_deref() == Some(PLACEHOLDER) {
                r.problem(
                    k,
                    "still PLACEHOLDER: fill it in from the hub's Built-in endpoints page",
                );
            }
        }
        if key.as_ref().is_some_and(|k| k.expose() == PLACEHOLDER) {
            r.problem(
                "IotHub.AccessKeyValue",
                "still PLACEHOLDER: set the shared access key",
            );
        }
        if let Some(e) = &endpoint {
            if e != PLACEHOLDER
                && !["sb://", "amqps://", "amqp://", "https://"]
                    .iter()
                    .any(|s| e.starts_with(s))
            {
                r.problem(
                    "IotHub.EventHubCompatibleEndpoint",
                    format!("Invalid value {e}: expected sb://<namespace>.servicebus.windows.net/"),
                );
            }
        }
        match (name, endpoint, key_name, key) {
            (Some(event_hub_name), Some(endpoint), Some(key_name), Some(key)) => {
                Some(EventHubConnection {
                    endpoint,
                    event_hub_name,
                    key_name,
                    key,
                })
            }
            _ => None,
        }
    };
    let hub = read_hub_transport(r);
    let custom_endpoint = hub.as_ref().and_then(|h| h.custom_endpoint.clone());
    let transport = crate::source::transport::for_source(r, hub.as_ref());
    let consumer_group = r
        .non_empty("IotHub.ConsumerGroup")
        .unwrap_or_else(|| "$Default".into());
    let partitions = filled(r.string("IotHub.Partitions"))
        .map(|_| r.int("IotHub.Partitions", 0, 1, 1024) as u32);
    let start_time = match filled(r.string("IotHub.StartTime")) {
        None => None,
        Some(v) => {
            match time::OffsetDateTime::parse(&v, &time::format_description::well_known::Rfc3339) {
                Ok(t) => Some(SystemTime::from(t)),
                Err(_) => {
                    r.problem(
                    "IotHub.StartTime",
                    format!("cannot parse '{v}' as a UTC instant like 2016-11-28T00:00:00Z (RFC 3339); leave it empty to start from the stored offsets or IotHub.Offsets"),
                );
                    None
                }
            }
        }
    };
    let offsets: Vec<String> = match filled(r.raw("IotHub.Offsets").map(|s| s.trim().to_string())) {
        None => Vec::new(),
        Some(v) => v.split(',').map(|s| s.trim().to_string()).collect(),
    };
    for (i, o) in offsets.iter().enumerate() {
        if !(o.is_empty() || o == "@latest" || o.parse::<i64>().is_ok_and(|n| n >= -1)) {
            r.problem(
                "IotHub.Offsets",
                format!("entry {i} ('{o}') is not an Event Hubs offset: use a number, -1 (start of stream), @latest or leave it empty"),
            );
        }
    }
    let batch_size = r.int("BatchSize", 100, 1, 1_000_000) as usize;
    let receive_timeout = Duration::from_secs(r.int("ReceiveTimeout", 60, 0, 86_400) as u64);
    let record_key = match r
        .one_of("Kafka.RecordKey", "none", &["none", "deviceId"])
        .as_str()
    {
        "deviceId" => RecordKey::DeviceId,
        _ => RecordKey::None,
    };
    let record_format = match r
        .one_of("Kafka.RecordFormat", "struct", &["struct", "raw"])
        .as_str()
    {
        "raw" => RecordFormat::Raw,
        _ => RecordFormat::Struct,
    };
    let stall_timeout = Duration::from_secs(r.int("IotHub.StallTimeout", 60, 0, 86_400) as u64);
    if r.problems.len() > before {
        return None;
    }
    Some(SourceConfig {
        topic: topic?,
        connection: connection?,
        custom_endpoint,
        consumer_group,
        partitions,
        start_time,
        offsets,
        batch_size,
        receive_timeout,
        record_key,
        record_format,
        stall_timeout,
        transport,
    })
}

fn read_sink(r: &mut Reader, errors: &ErrorsConfig) -> Option<SinkConfig> {
    let before = r.problems.len();
    let list = filled(r.string("topics"));
    let regex = filled(r.string("topics.regex"));
    let topics = match (list, regex) {
        (Some(l), None) => {
            let t: Vec<String> = l
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect();
            Some(Topics::List(t))
        }
        (None, Some(re)) => match regex::Regex::new(&re) {
            Ok(_) => Some(Topics::Regex(re)),
            Err(e) => {
                r.problem("topics.regex", format!("Invalid regular expression: {e}"));
                None
            }
        },
        (Some(_), Some(_)) => {
            r.problem(
                "topics",
                "Must configure one of topics or topics.regex, not both",
            );
            None
        }
        (None, None) => {
            r.problem(
                "topics",
                "Must configure one of topics or topics.regex (e.g. topics=iotout)",
            );
            None
        }
    };
    if let (Some(Topics::List(t)), Some(dlq)) = (&topics, &errors.dlq_topic) {
        if t.contains(dlq) {
            r.problem(
                "errors.deadletterqueue.topic.name",
                format!("The DLQ topic '{dlq}' may not be included in the list of topics ('topics') to consume"),
            );
        }
    }
    let connection_string = match r.secret("IotHub.ConnectionString") {
        Some(cs) if cs.expose() == PLACEHOLDER => {
            r.problem(
                "IotHub.ConnectionString",
                "still PLACEHOLDER: set the service policy's connection string (IoT Hub > Shared access policies > service)",
            );
            None
        }
        None => {
            let hint = r
                .misspelling_of("IotHub.ConnectionString")
                .map_or(String::new(), |k| {
                    format!(" The file has \"{k}\": did you mean \"IotHub.ConnectionString\"?")
                });
            r.problem(
                "IotHub.ConnectionString",
                format!("Missing required configuration \"IotHub.ConnectionString\" (HostName=<hub>.azure-devices.net;SharedAccessKeyName=service;SharedAccessKey=…).{hint}"),
            );
            None
        }
        Some(cs) => match crate::iothub::connstr::IotHubConnectionString::parse(&cs) {
            Ok(_) => Some(cs),
            Err(e) => {
                r.problem(
                    "IotHub.ConnectionString",
                    format!("not an IoT Hub service connection string: {e} (expected HostName=<hub>.azure-devices.net;SharedAccessKeyName=service;SharedAccessKey=…)"),
                );
                None
            }
        },
    };
    let ack = match r
        .one_of(
            "IotHub.MessageDeliveryAcknowledgement",
            "None",
            &["None", "Full", "PositiveOnly", "NegativeOnly"],
        )
        .as_str()
    {
        "Full" => Ack::Full,
        "PositiveOnly" => Ack::Positive,
        "NegativeOnly" => Ack::Negative,
        _ => Ack::None,
    };
    let hub = read_hub_transport(r);
    let max_in_flight = r.int("IotHub.C2D.MaxInFlight", 64, 1, 10_000) as usize;
    let max_sends_per_second = r.int("IotHub.C2D.MaxSendsPerSecond", 0, 0, 1_000_000) as u32;
    let feedback_topic = filled(r.string("IotHub.FeedbackTopic"));
    if feedback_topic.is_some() && ack == Ack::None {
        r.problem(
            "IotHub.FeedbackTopic",
            "feedback only exists when IotHub.MessageDeliveryAcknowledgement is Full, PositiveOnly or NegativeOnly",
        );
    }
    if r.problems.len() > before {
        return None;
    }
    Some(SinkConfig {
        topics: topics?,
        connection_string: connection_string?,
        ack,
        hub: hub?,
        max_in_flight,
        max_sends_per_second,
        feedback_topic,
    })
}
