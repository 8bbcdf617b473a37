//! IoT Hub sink connector and task: Kafka records → IoT Hub cloud-to-device messages.
//!
//! * [`message`]: record value → C2D message (every input form, differences from the Java sink).
//! * [`task`]: the task loop (pipelined sends that never wait on the hub, commits,
//!   errors.tolerance, pause/resume, outages, shutdown).
//! * [`setup`]: C2D options, value converter, first connection.
//! * [`rebalance`]: subscription, rebalance callbacks, offset commits.
//! * [`tracker`]: which offsets are safe to commit.
//! * [`feedback`]: delivery feedback → Kafka.
//! * [`stats`]: optional send-latency recording (benchmark).

pub mod feedback;
pub mod message;
pub mod rebalance;
pub mod setup;
pub mod stats;
pub mod task;
pub mod tracker;

use crate::config::{ConnectorConfig, WorkerConfig};
use crate::worker::connector::{Connector, ConnectorContext, TaskKind, TaskPlan};
use crate::worker::task::{TaskBody, TaskContext};
use futures::future::BoxFuture;
use std::sync::Arc;
use tracing::info;

/// The IoT Hub sink connector, as the worker sees it.
pub struct IotHubSink;

impl Connector for IotHubSink {
    fn class_name(&self) -> &'static str {
        crate::config::connector::SINK_CLASS
    }
    fn accepts(&self, connector: &ConnectorConfig) -> bool {
        connector.sink.is_some()
    }
    fn task_kind(&self) -> TaskKind {
        TaskKind {
            worker_class: "WorkerSinkTask",
            noun: "Sink",
        }
    }
    fn validate(&self, _worker: &WorkerConfig, _connector: &ConnectorConfig) -> anyhow::Result<()> {
        // The sink's checks carry Connect's "Could not start …" wording: done in `plan_tasks`.
        Ok(())
    }
    fn plan(&self, ctx: ConnectorContext) -> BoxFuture<'static, anyhow::Result<Vec<TaskPlan>>> {
        Box::pin(plan_tasks(ctx.worker, ctx.connector))
    }
}

/// One task per `tasks.max`; the consumer group spreads the topic partitions over them.
/// Checks the settings every task needs (connection string, converter) before planning.
pub async fn plan_tasks(
    worker: Arc<WorkerConfig>,
    connector: Arc<ConnectorConfig>,
) -> anyhow::Result<Vec<TaskPlan>> {
    let sink = connector.sink.as_ref().ok_or_else(|| {
        anyhow::anyhow!(
            "connector {}: not an IoT Hub sink configuration",
            connector.name
        )
    })?;
    info!("Starting IotHubSinkConnector");
    task::c2d_options(&connector, sink).map_err(|e| {
        anyhow::anyhow!(
            "Could not start IotHubSinkConnector due to a configuration exception: {e:#}"
        )
    })?;
    task::value_converter(&worker, &connector)?;
    let mut shown = connector.file.masked();
    shown.insert(
        "task.class".into(),
        "com.microsoft.azure.iot.kafka.connect.sink.IotHubSinkTask".into(),
    );
    let body: TaskBody = Arc::new(|ctx: TaskContext| Box::pin(task::run(ctx)));
    Ok((0..connector.tasks_max.max(1))
        .map(|_| TaskPlan {
            config: shown.clone(),
            body: body.clone(),
        })
        .collect())
}
