//! Kafka reachability at start-up: Connect looks the cluster id up with an admin client and stops
//! with exit code 2 when the cluster does not answer.

use crate::config::kafka::admin_settings;
use crate::config::WorkerConfig;
use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, Consumer};
use std::time::Duration;

/// Asks the cluster for its metadata and id. The error says which servers were tried and why.
pub async fn cluster_id(worker: &WorkerConfig) -> anyhow::Result<String> {
    let settings = admin_settings(worker)?;
    let servers = worker.bootstrap_servers.clone();
    let timeout = worker.kafka_check_timeout.max(Duration::from_millis(100));
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = settings
            .config
            .create()
            .with_context(|| format!("cannot create a Kafka client for {servers}"))?;
        let metadata = consumer.fetch_metadata(None, timeout).with_context(|| {
            format!(
                "Kafka cluster at {servers} did not answer within {} ms (default.api.timeout.ms)",
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
