//! Kafka reachability at start-up: Connect looks the cluster id up with an admin client and stops
//! with exit code 2 when the cluster does not answer.

use crate::config::kafka::admin_settings;
use crate::config::WorkerConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use std::time::Duration;

/// Asks the cluster for its metadata and id. The error says which servers were tried and why.
pub async fn cluster_id(worker: &WorkerConfig) -> anyhow::Result<String> {
    let settings = admin_settings(worker).map_err(|p| anyhow::anyhow!("{p}"))?;
    let servers = worker.bootstrap_servers.clone();
    let timeout = worker.kafka_check_timeout.max(Duration::from_millis(100));
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = settings
            .config
            .create()
            .map_err(|e| anyhow::anyhow!("cannot create a Kafka client for {servers}: {e}"))?;
        let metadata = consumer.fetch_metadata(None, timeout).map_err(|e| {
            anyhow::anyhow!(
                "Kafka cluster at {servers} did not answer within {} ms (default.api.timeout.ms): {e}",
                timeout.as_millis()
            )
        })?;
        let id = consumer
            .client()
            .fetch_cluster_id(timeout)
            .unwrap_or_else(|| format!("unknown ({} broker(s))", metadata.brokers().len()));
        Ok(id)
    })
    .await?
}
