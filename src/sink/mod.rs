//! IoT Hub sink connector and task.

use crate::config::{ConnectorConfig, WorkerConfig};
use crate::worker::runtime::TaskPlan;
use std::sync::Arc;

/// One task per `tasks.max`; the consumer group spreads the topic partitions over them.
pub async fn plan_tasks(
    _worker: Arc<WorkerConfig>,
    connector: Arc<ConnectorConfig>,
) -> anyhow::Result<TaskPlan> {
    anyhow::bail!(
        "connector {}: the IoT Hub sink task is not part of this build yet",
        connector.name
    )
}
