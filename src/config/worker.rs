//! The worker file (`connect-standalone.properties`).

use super::reader::Reader;
use super::{ConverterSpec, LoadedFile, Problems};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// Keys Kafka Connect's standalone worker knows but iotconnect does not need: accepted silently.
const ACCEPTED: &[&str] = &[
    "plugin.path",
    "plugin.discovery",
    "header.converter",
    "rest.advertised.listener",
    "access.control.allow.origin",
    "access.control.allow.methods",
    "rest.extension.classes",
    "response.http.headers.config",
    "admin.listeners",
    "connector.client.config.override.policy",
    "topic.creation.enable",
    "topic.tracking.enable",
    "topic.tracking.allow.reset",
    "metrics.sample.window.ms",
    "metrics.num.samples",
    "metrics.recording.level",
    "metric.reporters",
    "client.dns.lookup",
    "config.providers",
    "task.shutdown.graceful.timeout.ms",
    "default.api.timeout.ms",
    super::rest::JAAS_CONFIG_KEY,
    // distributed-only keys (Kafka passes them to the admin client only)
    "group.id",
    "config.storage.topic",
    "config.storage.replication.factor",
    "offset.storage.topic",
    "offset.storage.replication.factor",
    "offset.storage.partitions",
    "status.storage.topic",
    "status.storage.replication.factor",
    "status.storage.partitions",
    "exactly.once.source.support",
    "scheduled.rebalance.max.delay.ms",
];

/// Prefixes accepted as-is (internal converters, provider params, Kafka client security keys…).
const ACCEPTED_PREFIXES: &[&str] = &[
    "internal.",
    "config.providers.",
    "listeners.https.",
    "header.converter.",
    "metrics.context.",
];

/// Top-level client keys: used by the admin client (the start-up reachability check), as in Connect.
pub const CLIENT_SECURITY_PREFIXES: &[&str] = &["security.", "sasl.", "ssl.", "client.id"];

/// The REST listener.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listener {
    pub scheme: String,
    pub host: String,
    pub port: u16,
}

/// The worker's settings. `Debug` masks secret values (see [`super::masked_map`]).
#[derive(Clone)]
pub struct WorkerConfig {
    pub file: LoadedFile,
    pub bootstrap_servers: String,
    pub key_converter: ConverterSpec,
    pub value_converter: ConverterSpec,
    pub offset_file: PathBuf,
    pub offset_flush_interval: Duration,
    pub offset_flush_timeout: Duration,
    pub task_shutdown_graceful_timeout: Duration,
    /// Time allowed for the start-up check that the Kafka cluster answers (`default.api.timeout.ms`).
    pub kafka_check_timeout: Duration,
    pub listeners: Vec<Listener>,
    /// Basic authentication and cross-origin rules of the REST API.
    pub rest: super::rest::RestSecurity,
    /// `host:port` reported as `worker_id` in status JSON.
    pub worker_id: String,
    /// Top-level client keys (security, sasl, ssl, client.dns.lookup): admin client only.
    pub admin: BTreeMap<String, String>,
    /// `producer.*`, prefix stripped.
    pub producer: BTreeMap<String, String>,
    /// `consumer.*`, prefix stripped.
    pub consumer: BTreeMap<String, String>,
    pub warnings: Vec<String>,
}

impl std::fmt::Debug for WorkerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerConfig")
            .field("file", &self.file)
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("key_converter", &self.key_converter)
            .field("value_converter", &self.value_converter)
            .field("offset_file", &self.offset_file)
            .field("offset_flush_interval", &self.offset_flush_interval)
            .field("offset_flush_timeout", &self.offset_flush_timeout)
            .field(
                "task_shutdown_graceful_timeout",
                &self.task_shutdown_graceful_timeout,
            )
            .field("kafka_check_timeout", &self.kafka_check_timeout)
            .field("listeners", &self.listeners)
            .field("rest", &self.rest)
            .field("worker_id", &self.worker_id)
            .field("admin", &super::masked_map(&self.admin))
            .field("producer", &super::masked_map(&self.producer))
            .field("consumer", &super::masked_map(&self.consumer))
            .finish_non_exhaustive()
    }
}

impl WorkerConfig {
    pub fn from_file(file: &LoadedFile) -> Result<WorkerConfig, Problems> {
        let mut r = Reader::new(file.display_name(), &file.resolved);
        r.accept(ACCEPTED);
        for p in ACCEPTED_PREFIXES {
            r.accept_prefix(p);
        }
        let bootstrap_servers = r
            .non_empty("bootstrap.servers")
            .unwrap_or_else(|| "localhost:9092".into());
        for server in bootstrap_servers.split(',').map(str::trim) {
            if server
                .rsplit_once(':')
                .and_then(|(_, p)| p.parse::<u16>().ok())
                .is_none()
            {
                r.problem(
                    "bootstrap.servers",
                    format!("Invalid url in bootstrap.servers: {server} (expected host:port)"),
                );
            }
        }
        let key_converter = ConverterSpec::read(&mut r, "key.converter", true);
        let value_converter = ConverterSpec::read(&mut r, "value.converter", true);
        let offset_file = r
            .required("offset.storage.file.filename")
            .map(PathBuf::from);
        let offset_flush_interval = r.positive_millis("offset.flush.interval.ms", 60_000);
        let offset_flush_timeout = r.positive_millis("offset.flush.timeout.ms", 5_000);
        let task_shutdown_graceful_timeout = r.millis("task.shutdown.graceful.timeout.ms", 5_000);
        let kafka_check_timeout = r.positive_millis("default.api.timeout.ms", 60_000);
        let listeners = read_listeners(&mut r);
        let kafka_opts = std::env::var("KAFKA_OPTS").ok();
        let (rest, rest_problems) = super::rest::read(&file.resolved, kafka_opts.as_deref());
        for (key, message) in rest_problems {
            r.problem(&key, message);
        }
        let advertised_host = r.non_empty("rest.advertised.host.name");
        let advertised_port = r.optional_int("rest.advertised.port", 1, 65535);
        let first = listeners.first().cloned().unwrap_or(Listener {
            scheme: "http".into(),
            host: "127.0.0.1".into(),
            port: 8083,
        });
        let worker_id = format!(
            "{}:{}",
            advertised_host.unwrap_or(first.host.clone()),
            advertised_port.map(|p| p as u16).unwrap_or(first.port)
        );
        let mut admin = BTreeMap::new();
        for (k, v) in file.resolved.iter() {
            if CLIENT_SECURITY_PREFIXES.iter().any(|p| k.starts_with(p)) {
                r.accept(&[k.as_str()]);
                admin.insert(k.clone(), v.trim().to_string());
            }
        }
        let producer = r.prefixed("producer.");
        let consumer = r.prefixed("consumer.");
        r.prefixed("admin.").into_iter().for_each(|(k, v)| {
            admin.insert(k, v);
        });
        let mut warnings = Vec::new();
        if admin.contains_key("security.protocol") && !producer.contains_key("security.protocol") {
            warnings.push(
                "security.protocol is set for the worker but not as producer.security.protocol / consumer.security.protocol: \
                 as in Kafka Connect, producers and consumers do not inherit top-level security settings"
                    .to_string(),
            );
        }
        if file.resolved.contains_key("internal.key.converter")
            || file.resolved.contains_key("internal.value.converter")
        {
            warnings.push(
                "internal.key.converter/internal.value.converter are ignored: offsets are always JSON without schemas, as in Kafka Connect 3.x"
                    .to_string(),
            );
        }
        warnings.extend(r.unknown_key_warnings());
        if !r.problems.is_empty() {
            return Err(r.problems);
        }
        Ok(WorkerConfig {
            file: file.clone(),
            bootstrap_servers,
            key_converter: key_converter.expect("no problems means a converter"),
            value_converter: value_converter.expect("no problems means a converter"),
            offset_file: offset_file.expect("no problems means a file"),
            offset_flush_interval,
            offset_flush_timeout,
            task_shutdown_graceful_timeout,
            kafka_check_timeout,
            listeners,
            rest,
            worker_id,
            admin,
            producer,
            consumer,
            warnings,
        })
    }
}

/// `listeners` (default `http://127.0.0.1:8083`: unlike Connect we bind to loopback unless told), or
/// the 2.x `rest.host.name`/`rest.port` pair when `listeners` is absent.
fn read_listeners(r: &mut Reader) -> Vec<Listener> {
    let host = r.non_empty("rest.host.name");
    let port = r.optional_int("rest.port", 0, 65535);
    let Some(list) = r.non_empty("listeners") else {
        return vec![Listener {
            scheme: "http".into(),
            host: host.unwrap_or_else(|| "127.0.0.1".into()),
            port: port.map(|p| p as u16).unwrap_or(8083),
        }];
    };
    let mut out = Vec::new();
    for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let parsed = item.split_once("://").and_then(|(scheme, rest)| {
            let (h, p) = rest.trim_end_matches('/').rsplit_once(':')?;
            Some(Listener {
                scheme: scheme.to_ascii_lowercase(),
                host: if h.is_empty() {
                    "0.0.0.0".into()
                } else {
                    h.trim_matches(['[', ']']).into()
                },
                port: p.parse().ok()?,
            })
        });
        match parsed {
            Some(l) if l.scheme == "http" => out.push(l),
            Some(l) => r.problem(
                "listeners",
                format!("{}:// listeners are not supported; use http:// (put a TLS proxy in front)", l.scheme),
            ),
            None => r.problem(
                "listeners",
                format!("Invalid listener {item}: expected http://host:port (e.g. http://127.0.0.1:8083)"),
            ),
        }
    }
    out
}
