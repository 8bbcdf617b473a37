//! IoT Hub source connector and task.

use crate::config::{ConnectorConfig, WorkerConfig};
use crate::worker::runtime::TaskPlan;
use std::sync::Arc;

/// Discovers partitions and splits them over `tasks.max` tasks.
pub async fn plan_tasks(
    _worker: Arc<WorkerConfig>,
    connector: Arc<ConnectorConfig>,
) -> anyhow::Result<TaskPlan> {
    anyhow::bail!(
        "connector {}: the IoT Hub source task is not part of this build yet",
        connector.name
    )
}
