//! The IoT Hub source connector's keys (toketi.md §2.2 plus iotconnect's own): where the
//! Event Hub-compatible endpoint is, where to start, how records are keyed and shaped.
//!
//! `read_source` reports every problem on the key it concerns and returns `None` if there was any.

use super::connector::{filled, PLACEHOLDER};
use super::reader::Reader;
use super::transport::read_hub_transport;
use super::Secret;
use std::time::{Duration, SystemTime};

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

/// The explicit port of an `sb://host:port/` style endpoint.
pub(super) fn endpoint_port(endpoint: &str) -> Option<u16> {
    let rest = endpoint.split_once("://").map_or(endpoint, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or(rest);
    authority.rsplit_once(':').and_then(|(_, p)| p.parse().ok())
}

pub(super) fn read_source(r: &mut Reader) -> Option<SourceConfig> {
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
