//! `GET /connectors/{name}/offsets` (KIP-875 shape): source offsets from the worker's live offset
//! store, sink offsets from the consumer group `connect-<name>`.

use crate::config::{ConnectorConfig, Topics};
use crate::worker::runtime::Worker;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{json, Value};
use std::time::Duration;

/// The live offset store's entries of `connector` (what its tasks committed).
pub async fn source_offsets(
    worker: &Worker,
    connector: &ConnectorConfig,
) -> anyhow::Result<Vec<Value>> {
    Ok(worker
        .offsets
        .entries()
        .await?
        .into_iter()
        .filter(|e| e.connector == connector.name)
        .filter_map(|e| Some(json!({"partition": e.partition, "offset": e.offset?})))
        .collect())
}

pub async fn sink_offsets(
    worker: &Worker,
    connector: &ConnectorConfig,
) -> anyhow::Result<Vec<Value>> {
    let settings = crate::config::kafka::consumer_settings(&worker.config, connector, 0)
        .map_err(|p| anyhow::anyhow!("{p}"))?;
    let topics = connector
        .sink
        .as_ref()
        .map(|s| s.topics.clone())
        .ok_or_else(|| anyhow::anyhow!("{} is not a sink connector", connector.name))?;
    tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<Value>> {
        let consumer: BaseConsumer = settings.config.create()?;
        let md = consumer.fetch_metadata(None, Duration::from_secs(10))?;
        let wanted: Vec<String> = match topics {
            Topics::List(list) => list,
            Topics::Regex(re) => {
                // Java's Pattern.matches: the whole name must match.
                let re = regex::Regex::new(&format!("^(?:{re})$"))?;
                md.topics()
                    .iter()
                    .map(|t| t.name().to_string())
                    .filter(|n| re.is_match(n))
                    .collect()
            }
        };
        let mut tpl = TopicPartitionList::new();
        for t in md
            .topics()
            .iter()
            .filter(|t| wanted.iter().any(|w| w == t.name()))
        {
            for p in t.partitions() {
                tpl.add_partition(t.name(), p.id());
            }
        }
        let committed = consumer.committed_offsets(tpl, Duration::from_secs(10))?;
        let mut out = Vec::new();
        for e in committed.elements() {
            if let Offset::Offset(o) = e.offset() {
                out.push(json!({
                    "partition": {"kafka_topic": e.topic(), "kafka_partition": e.partition()},
                    "offset": {"kafka_offset": o},
                }));
            }
        }
        Ok(out)
    })
    .await?
}
