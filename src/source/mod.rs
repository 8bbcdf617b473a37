//! IoT Hub source connector and task (toketi's `IotHubSourceConnector` / `IotHubSourceTask`).
//!
//! * [`plan_tasks`]: asks the hub for its partitions (`$management`), splits them round-robin over
//!   `tasks.max` tasks and builds each task's body.
//! * [`task`]: the running task (one concurrent receive → produce → acknowledge pipeline per partition).
//! * [`record`]: the Kafka record of one event (toketi's Struct through the configured converters, or
//!   the raw format).
//! * [`position`]: start positions and the partition split.
//! * [`reader`] (receive, one per hub partition), [`produce`] (Kafka writes, error classes, the
//!   acker loop), [`acker`] (what may be committed), [`stall`] (the stall watchdog), [`lag`],
//!   [`auth`] (refused credentials).

pub mod acker;
pub mod auth;
pub mod lag;
pub mod metrics;
pub mod position;
pub mod produce;
pub mod reader;
pub mod record;
pub mod stall;
pub mod task;
pub mod transport;

use crate::config::{ConnectorConfig, WorkerConfig};
use crate::worker::connector::{Connector, ConnectorContext, TaskKind, TaskPlan};
use crate::worker::task::TaskBody;
use anyhow::Context;
use futures::future::BoxFuture;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};

/// Attempts to read the partition list at start before the connector fails.
pub const DISCOVERY_ATTEMPTS: u32 = 5;
/// Longest single discovery attempt.
pub const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(20);

/// The IoT Hub source connector, as the worker sees it.
pub struct IotHubSource;

impl Connector for IotHubSource {
    fn class_name(&self) -> &'static str {
        crate::config::connector::SOURCE_CLASS
    }
    fn accepts(&self, connector: &ConnectorConfig) -> bool {
        connector.source.is_some()
    }
    fn task_kind(&self) -> TaskKind {
        TaskKind {
            worker_class: "WorkerSourceTask",
            noun: "Source",
        }
    }
    fn validate(&self, worker: &WorkerConfig, connector: &ConnectorConfig) -> anyhow::Result<()> {
        record::RecordBuilder::new(worker, connector)
            .map(|_| ())
            .with_context(|| format!("connector {}", connector.name))
    }
    fn plan(&self, ctx: ConnectorContext) -> BoxFuture<'static, anyhow::Result<Vec<TaskPlan>>> {
        Box::pin(plan_tasks(ctx.worker, ctx.connector))
    }
}

/// Discovers partitions and splits them over `tasks.max` tasks.
pub async fn plan_tasks(
    worker: Arc<WorkerConfig>,
    connector: Arc<ConnectorConfig>,
) -> anyhow::Result<Vec<TaskPlan>> {
    crate::init_tls();
    let source = connector.source.clone().with_context(|| {
        format!(
            "connector {} has no IoT Hub source settings",
            connector.name
        )
    })?;
    info!("Starting IotHubSourceConnector");
    // The Event Hubs client uses rustls; with both aws-lc-rs and ring in the tree, a process-wide
    // provider must be chosen (idempotent; the lead may move this to main).
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let records = record::RecordBuilder::new(&worker, &connector)
        .with_context(|| format!("connector {}", connector.name))?;
    if source.transport.kind == transport::TransportType::AmqpWebSockets {
        for var in ["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"] {
            if std::env::var_os(var).is_some() {
                warn!("{var} is set but the Event Hubs client library cannot use a proxy: the source connects to the hub directly");
            }
        }
    }
    let partitions = discover_partitions(&connector.name, &source).await?;
    if let Some(n) = source.partitions {
        if n as usize != partitions.len() {
            warn!(
                "IotHub.Partitions={n} but event hub {} has {} partitions ({}): reading all {} (the setting is no longer needed)",
                source.connection.event_hub_name,
                partitions.len(),
                partitions.join(","),
                partitions.len()
            );
        }
    }
    let shared = Arc::new(task::SourceShared {
        connector: connector.clone(),
        source: source.clone(),
        records: Arc::new(records),
    });
    let mut plan = Vec::new();
    for assigned in position::assign(&partitions, &source.offsets, connector.tasks_max) {
        let config = task_config(&connector, &source, partitions.len(), &assigned);
        let shared = shared.clone();
        let body: TaskBody = Arc::new(move |ctx| {
            let shared = shared.clone();
            let assigned = assigned.clone();
            Box::pin(task::run(ctx, shared, assigned))
        });
        plan.push(TaskPlan { config, body });
    }
    Ok(plan)
}

/// Reads the partition ids through `$management`, retrying a few times with capped backoff.
pub async fn discover_partitions(
    connector: &str,
    source: &crate::config::SourceConfig,
) -> anyhow::Result<Vec<String>> {
    let mut wait = Duration::from_millis(500);
    let mut last = String::new();
    for attempt in 1..=DISCOVERY_ATTEMPTS {
        let r = tokio::time::timeout(DISCOVERY_TIMEOUT, async {
            let client = task::open_client(source).await?;
            let props = client.get_eventhub_properties().await;
            let _ = tokio::time::timeout(Duration::from_secs(5), client.close()).await;
            props
        })
        .await;
        match r {
            Ok(Ok(p)) if !p.partition_ids.is_empty() => {
                let mut ids = p.partition_ids;
                position::sort_partition_ids(&mut ids);
                info!(
                    "Event hub {} has {} partitions: {}",
                    source.connection.event_hub_name,
                    ids.len(),
                    ids.join(",")
                );
                return Ok(ids);
            }
            Ok(Ok(_)) => last = "the hub reported no partitions".into(),
            Ok(Err(e)) if auth::is_unauthorized(&e) => {
                return Err(auth::refused(source, &e)
                    .context(format!("Could not start IotHubSourceConnector {connector}")));
            }
            Ok(Err(e)) => last = e.to_string(),
            Err(_) => last = format!("no answer within {} s", DISCOVERY_TIMEOUT.as_secs()),
        }
        if attempt < DISCOVERY_ATTEMPTS {
            warn!(
                "Cannot read the partitions of event hub {} (attempt {attempt}/{DISCOVERY_ATTEMPTS}): {last}; retrying in {} ms",
                source.connection.event_hub_name,
                wait.as_millis()
            );
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(8));
        }
    }
    anyhow::bail!(
        "Could not start IotHubSourceConnector {connector}: cannot read the partitions of event hub {} (endpoint {}, dialled {}) (consumer group {}) after {DISCOVERY_ATTEMPTS} attempts: {last}. \
         Check IotHub.EventHubCompatibleEndpoint/Name and the access key (or IotHub.ConnectionString), and that the endpoint is reachable",
        source.connection.event_hub_name,
        source.connection.endpoint,
        auth::dialled(source),
        source.consumer_group
    )
}

/// The task configuration as toketi's `taskConfigs` shows it (§2.4), secrets masked.
fn task_config(
    connector: &ConnectorConfig,
    source: &crate::config::SourceConfig,
    partitions: usize,
    assigned: &[(String, String)],
) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    m.insert(
        "task.class".to_string(),
        "com.microsoft.azure.iot.kafka.connect.source.IotHubSourceTask".to_string(),
    );
    m.insert(
        "IotHub.EventHubCompatibleConnectionString".into(),
        crate::config::secret::HIDDEN.into(),
    );
    m.insert(
        "IotHub.EventHubCompatibleName".into(),
        source.connection.event_hub_name.clone(),
    );
    m.insert("IotHub.ConsumerGroup".into(), source.consumer_group.clone());
    m.insert("IotHub.Partitions".into(), partitions.to_string());
    m.insert("IotHub.Offsets".into(), source.offsets.join(","));
    m.insert(
        "IotHub.StartTime".into(),
        source
            .start_time
            .map(position::instant_string)
            .unwrap_or_default(),
    );
    m.insert("BatchSize".into(), source.batch_size.to_string());
    m.insert(
        "ReceiveTimeout".into(),
        source.receive_timeout.as_secs().to_string(),
    );
    m.insert("Kafka.Topic".into(), source.topic.clone());
    if let Some(e) = &source.custom_endpoint {
        m.insert("IotHub.CustomEndpoint".into(), e.clone());
    }
    let tp: serde_json::Map<String, serde_json::Value> = assigned
        .iter()
        .map(|(p, o)| (p.clone(), serde_json::Value::String(o.clone())))
        .collect();
    m.insert(
        "TaskPartitions".into(),
        serde_json::Value::Object(tp).to_string(),
    );
    let _ = connector;
    m
}
