//! The distributed worker file (`connect-distributed.properties`): Connect's `DistributedConfig` keys
//! that iotconnect's distributed mode uses, read and validated as Connect does, on top of everything
//! the standalone worker file holds ([`WorkerConfig`]).
//!
//! Invariants: `group.id` and the three storage topics are required and distinct; partitions and
//! replication factors are positive or `-1` (the broker's default); `offset.storage.file.filename`
//! is optional here and, when given, only names the standalone file to import on first start.

use super::reader::Reader;
use super::{kafka, ConnectorConfig, LoadedFile, Problems, Providers, WorkerConfig};
use crate::offsets::kafka::TopicSpec;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `exactly.once.source.support` (KIP-618).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExactlyOnce {
    Disabled,
    /// Rolling-upgrade step in Connect; here the same as disabled.
    Preparing,
    Enabled,
}

/// `transaction.boundary` (per connector, or a worker-wide default here).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransactionBoundary {
    /// One transaction per batch (`BatchSize` events or `ReceiveTimeout`).
    Poll,
    /// One transaction per `transaction.boundary.interval.ms`.
    Interval(Duration),
}

/// Keys this file reads in addition to [`WorkerConfig`]'s.
pub const DISTRIBUTED_KEYS: &[&str] = &[
    "group.id",
    "config.storage.topic",
    "config.storage.replication.factor",
    "offset.storage.topic",
    "offset.storage.partitions",
    "offset.storage.replication.factor",
    "status.storage.topic",
    "status.storage.partitions",
    "status.storage.replication.factor",
    "exactly.once.source.support",
    "transaction.boundary",
    "transaction.boundary.interval.ms",
    "session.timeout.ms",
    "heartbeat.interval.ms",
    "rebalance.timeout.ms",
    "scheduled.rebalance.max.delay.ms",
    "worker.sync.timeout.ms",
    "worker.unsync.backoff.ms",
    "connect.protocol",
    "offset.storage.file.filename",
];

#[derive(Clone, Debug)]
pub struct DistributedConfig {
    pub worker: WorkerConfig,
    pub group_id: String,
    pub config_topic: TopicSpec,
    pub offset_topic: TopicSpec,
    pub status_topic: TopicSpec,
    pub exactly_once: ExactlyOnce,
    pub boundary: TransactionBoundary,
    pub session_timeout: Duration,
    pub heartbeat_interval: Duration,
    pub rebalance_timeout: Duration,
    /// `offset.storage.file.filename`: a standalone offsets file imported on first start.
    pub import_file: Option<PathBuf>,
}

impl DistributedConfig {
    pub fn exactly_once(&self) -> bool {
        self.exactly_once == ExactlyOnce::Enabled
    }

    /// Reads the distributed keys of `file` (the standalone keys through [`WorkerConfig`]).
    pub fn from_file(file: &LoadedFile) -> Result<DistributedConfig, Problems> {
        let mut problems = Problems::default();
        let import_file = file
            .resolved
            .get("offset.storage.file.filename")
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
            .map(PathBuf::from);
        // The standalone reader requires the offsets file: give it a name it never opens.
        let mut standalone = file.clone();
        if import_file.is_none() {
            standalone.resolved.insert(
                "offset.storage.file.filename".into(),
                "/nonexistent/iotconnect-distributed-has-no-offsets-file".into(),
            );
        }
        let worker = match WorkerConfig::from_file(&standalone) {
            Ok(mut w) => {
                w.warnings.retain(|warning| {
                    !DISTRIBUTED_KEYS
                        .iter()
                        .any(|k| warning.contains(&format!("The configuration '{k}' was")))
                });
                Some(w)
            }
            Err(p) => {
                problems.extend(p);
                None
            }
        };
        let mut r = Reader::new(file.display_name(), &file.resolved);
        let group_id = r.required("group.id");
        let config_topic = topic(&mut r, "config.storage", None);
        let offset_topic = topic(&mut r, "offset.storage", Some(25));
        let status_topic = topic(&mut r, "status.storage", Some(5));
        let eos = r.non_empty("exactly.once.source.support");
        let exactly_once = match eos.as_deref().map(str::to_ascii_lowercase).as_deref() {
            None | Some("disabled") => ExactlyOnce::Disabled,
            Some("preparing") => ExactlyOnce::Preparing,
            Some("enabled") => ExactlyOnce::Enabled,
            Some(_) => {
                r.problem(
                    "exactly.once.source.support",
                    format!(
                        "Invalid value {} for configuration exactly.once.source.support: String must be one of (case insensitive): DISABLED, ENABLED, PREPARING",
                        eos.unwrap_or_default()
                    ),
                );
                ExactlyOnce::Disabled
            }
        };
        let boundary = read_boundary(&mut r, worker.as_ref());
        let session_timeout = r.millis("session.timeout.ms", 10_000);
        let heartbeat_interval = r.millis("heartbeat.interval.ms", 3_000);
        let rebalance_timeout = r.millis("rebalance.timeout.ms", 60_000);
        if heartbeat_interval >= session_timeout {
            r.problem(
                "heartbeat.interval.ms",
                "heartbeat.interval.ms must be lower than session.timeout.ms (typically a third of it)",
            );
        }
        if let (Some(c), Some(o), Some(s)) = (&config_topic, &offset_topic, &status_topic) {
            if c.name == o.name || c.name == s.name || o.name == s.name {
                r.problem(
                    "offset.storage.topic",
                    format!(
                        "config.storage.topic ({}), offset.storage.topic ({}) and status.storage.topic ({}) must be three different topics",
                        c.name, o.name, s.name
                    ),
                );
            }
        }
        problems.extend(r.problems);
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(DistributedConfig {
            worker: worker.expect("no problems means a worker config"),
            group_id: group_id.expect("required"),
            config_topic: config_topic.expect("required"),
            offset_topic: offset_topic.expect("required"),
            status_topic: status_topic.expect("required"),
            exactly_once,
            boundary,
            session_timeout,
            heartbeat_interval,
            rebalance_timeout,
            import_file,
        })
    }
}

/// `<prefix>.topic`, `<prefix>.partitions` (when the topic has them) and `<prefix>.replication.factor`.
fn topic(r: &mut Reader, prefix: &str, default_partitions: Option<i64>) -> Option<TopicSpec> {
    let name = r.required(&format!("{prefix}.topic"));
    let partitions = match default_partitions {
        // The config topic always has exactly one partition (Connect).
        None => 1,
        Some(d) => positive_or_default(r, &format!("{prefix}.partitions"), d),
    };
    let replication = positive_or_default(r, &format!("{prefix}.replication.factor"), 3);
    Some(TopicSpec {
        name: name?,
        partitions: partitions as i32,
        replication_factor: replication as i16,
    })
}

fn positive_or_default(r: &mut Reader, key: &str, default: i64) -> i64 {
    let v = r.int(key, default, -1, i16::MAX as i64);
    if v == 0 {
        r.problem(
            key,
            format!("Invalid value 0 for configuration {key}: Value must be -1 (use the broker's default) or a positive number"),
        );
    }
    v
}

fn read_boundary(r: &mut Reader, worker: Option<&WorkerConfig>) -> TransactionBoundary {
    let raw = r.non_empty("transaction.boundary");
    match raw.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None | Some("poll") => TransactionBoundary::Poll,
        Some("interval") => {
            let default = worker
                .map(|w| w.offset_flush_interval.as_millis() as i64)
                .unwrap_or(60_000);
            TransactionBoundary::Interval(r.millis("transaction.boundary.interval.ms", default))
        }
        Some("connector") => {
            r.problem(
                "transaction.boundary",
                "The connector does not support connector-defined transaction boundaries with the given configuration. Please reconfigure it to use a different transaction boundary definition.",
            );
            TransactionBoundary::Poll
        }
        Some(_) => {
            r.problem(
                "transaction.boundary",
                format!(
                    "Invalid value {} for configuration transaction.boundary: String must be one of (case insensitive): POLL, INTERVAL, CONNECTOR",
                    raw.unwrap_or_default()
                ),
            );
            TransactionBoundary::Poll
        }
    }
}

/// The distributed worker file and the connector files, with every problem of every file.
pub struct LoadedDistributed {
    pub config: DistributedConfig,
    pub connectors: Vec<ConnectorConfig>,
    pub warnings: Vec<String>,
}

/// Loads `connect-distributed.properties` and the connector files (same provider rules as standalone).
/// `Err((worker_failed, problems))`.
pub fn load(
    worker_path: &Path,
    connector_paths: &[PathBuf],
) -> Result<LoadedDistributed, (bool, Problems)> {
    let mut problems = Problems::default();
    let wname = worker_path.display().to_string();
    let raw = super::properties::load_file(worker_path).map_err(|e| {
        let mut p = Problems::default();
        p.push(&wname, "-", e.to_string());
        (true, p)
    })?;
    let (providers, provider_problems) = Providers::from_worker(&raw);
    for (k, m) in provider_problems {
        problems.push(&wname, &k, m);
    }
    let config =
        LoadedFile::load(worker_path, &providers).and_then(|f| DistributedConfig::from_file(&f));
    let config = match config {
        Ok(c) => c,
        Err(p) => {
            problems.extend(p);
            return Err((true, problems));
        }
    };
    if !problems.is_empty() {
        return Err((true, problems));
    }
    let mut warnings = config.worker.warnings.clone();
    let mut connectors: Vec<ConnectorConfig> = Vec::new();
    for path in connector_paths {
        match LoadedFile::load(path, &providers).and_then(|f| ConnectorConfig::from_file(&f)) {
            Ok(mut c) => {
                c.warnings.retain(|w| {
                    ![
                        "transaction.boundary",
                        "exactly.once.support",
                        "offsets.storage.topic",
                    ]
                    .iter()
                    .any(|k| w.contains(&format!("The configuration '{k}")))
                });
                warnings.extend(c.warnings.iter().cloned());
                if connectors.iter().any(|o| o.name == c.name) {
                    problems.push(
                        &path.display().to_string(),
                        "name",
                        format!("Connector {} already exists", c.name),
                    );
                }
                let mut r = Reader::new(c.file.display_name(), &c.file.resolved);
                let _ = read_boundary(&mut r, Some(&config.worker));
                if let Some(v) = r.non_empty("exactly.once.support") {
                    if !matches!(v.to_ascii_lowercase().as_str(), "requested" | "required") {
                        r.problem(
                            "exactly.once.support",
                            format!("Invalid value {v} for configuration exactly.once.support: String must be one of (case insensitive): REQUIRED, REQUESTED"),
                        );
                    } else if v.eq_ignore_ascii_case("required") && !config.exactly_once() {
                        r.problem(
                            "exactly.once.support",
                            "exactly.once.support=required but the worker has exactly.once.source.support disabled",
                        );
                    }
                }
                problems.extend(r.problems);
                problems.extend(kafka::check_connector_clients(&config.worker, &c));
                connectors.push(c);
            }
            Err(p) => problems.extend(p),
        }
    }
    if problems.is_empty() {
        Ok(LoadedDistributed {
            config,
            connectors,
            warnings,
        })
    } else {
        Err((false, problems))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::properties::Properties;

    fn file(text: &str) -> LoadedFile {
        let mut p = Properties::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let (k, v) = line.split_once('=').unwrap();
            p.insert(k.trim().into(), v.trim().into());
        }
        LoadedFile {
            path: "connect-distributed.properties".into(),
            raw: p.clone(),
            resolved: p,
        }
    }

    const BASE: &str = "bootstrap.servers=127.0.0.1:9092\n\
        key.converter=org.apache.kafka.connect.storage.StringConverter\n\
        value.converter=org.apache.kafka.connect.storage.StringConverter\n";

    #[test]
    fn connects_defaults_and_required_keys() {
        let f = file(&format!(
            "{BASE}group.id=g\nconfig.storage.topic=c\noffset.storage.topic=o\nstatus.storage.topic=s\n"
        ));
        let c = DistributedConfig::from_file(&f).unwrap();
        assert_eq!(c.group_id, "g");
        assert_eq!(c.offset_topic.partitions, 25);
        assert_eq!(c.status_topic.partitions, 5);
        assert_eq!(c.config_topic.partitions, 1);
        assert_eq!(c.offset_topic.replication_factor, 3);
        assert_eq!(c.exactly_once, ExactlyOnce::Disabled);
        assert_eq!(c.boundary, TransactionBoundary::Poll);
        assert_eq!(c.session_timeout, Duration::from_secs(10));
        assert!(c.import_file.is_none());
        assert!(c.worker.warnings.is_empty(), "{:?}", c.worker.warnings);

        let missing = DistributedConfig::from_file(&file(BASE))
            .unwrap_err()
            .to_string();
        for k in [
            "group.id",
            "config.storage.topic",
            "offset.storage.topic",
            "status.storage.topic",
        ] {
            assert!(missing.contains(k), "{k}: {missing}");
        }
    }

    #[test]
    fn bad_values_are_refused_as_connect_words_them() {
        let f = file(&format!(
            "{BASE}group.id=g\nconfig.storage.topic=c\noffset.storage.topic=c\nstatus.storage.topic=s\n\
             exactly.once.source.support=maybe\noffset.storage.partitions=0\ntransaction.boundary=connector\n"
        ));
        let e = DistributedConfig::from_file(&f).unwrap_err().to_string();
        assert!(
            e.contains("String must be one of (case insensitive): DISABLED, ENABLED, PREPARING"),
            "{e}"
        );
        assert!(e.contains("offset.storage.partitions"), "{e}");
        assert!(e.contains("must be three different topics"), "{e}");
        assert!(
            e.contains("connector-defined transaction boundaries"),
            "{e}"
        );
        let ok = file(&format!(
            "{BASE}group.id=g\nconfig.storage.topic=c\noffset.storage.topic=o\nstatus.storage.topic=s\n\
             exactly.once.source.support=ENABLED\noffset.storage.replication.factor=-1\n\
             transaction.boundary=interval\ntransaction.boundary.interval.ms=250\n\
             offset.storage.file.filename=/tmp/x.offsets\n"
        ));
        let c = DistributedConfig::from_file(&ok).unwrap();
        assert!(c.exactly_once());
        assert_eq!(c.offset_topic.replication_factor, -1);
        assert_eq!(
            c.boundary,
            TransactionBoundary::Interval(Duration::from_millis(250))
        );
        assert_eq!(c.import_file.as_deref(), Some(Path::new("/tmp/x.offsets")));
    }
}
