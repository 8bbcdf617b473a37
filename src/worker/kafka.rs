//! Kafka reachability at start-up: Connect looks the cluster id up with an admin client and stops
//! with exit code 2 when the cluster does not answer.

use crate::config::kafka::admin_settings;
use crate::config::WorkerConfig;
use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, Consumer};
use std::time::Duration;

/// How often start-up says that Kafka does not answer yet.
const WARN_EVERY: Duration = Duration::from_secs(3);

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
        // Asked in rounds of a few seconds, so a WARN names the servers while Kafka is unreachable
        // instead of staying silent for the whole default.api.timeout.ms.
        let started = std::time::Instant::now();
        let metadata = loop {
            let left = timeout.saturating_sub(started.elapsed());
            let round = std::time::Instant::now();
            match consumer.fetch_metadata(None, left.min(WARN_EVERY)) {
                Ok(m) => break m,
                Err(e) if started.elapsed() < timeout => {
                    tracing::warn!(
                        "Kafka cluster at {servers} is not reachable yet ({e}); retrying for another {} ms (default.api.timeout.ms)",
                        timeout.saturating_sub(started.elapsed()).as_millis()
                    );
                    std::thread::sleep(WARN_EVERY.saturating_sub(round.elapsed()).min(
                        timeout.saturating_sub(started.elapsed()),
                    ));
                }
                Err(e) => {
                    return Err(anyhow::Error::from(e).context(format!(
                        "Kafka cluster at {servers} did not answer within {} ms (default.api.timeout.ms)",
                        timeout.as_millis()
                    )))
                }
            }
        };
        let id = consumer
            .client()
            .fetch_cluster_id(timeout)
            .unwrap_or_else(|| format!("unknown ({} broker(s))", metadata.brokers().len()));
        Ok(id)
    })
    .await?
}
