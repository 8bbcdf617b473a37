//! `GET /connectors/{name}/offsets` (KIP-875 shape): source offsets from the worker's live offset
//! store, sink offsets from the consumer group `connect-<name>`.
//!
//! Sink offsets are read with one Kafka client per sink connector, created on the first request and
//! owned by [`SinkOffsetClients`] for the life of the REST server (never one client per request).

use crate::config::{ConnectorConfig, Topics};
use crate::worker::runtime::Worker;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The Kafka clients that read sink connectors' committed offsets, one per connector.
#[derive(Default)]
pub struct SinkOffsetClients {
    clients: Mutex<HashMap<String, Arc<BaseConsumer>>>,
    created: AtomicUsize,
}

impl SinkOffsetClients {
    /// The connector's client, created with `config` on first use.
    pub fn get_or_create(
        &self,
        connector: &str,
        config: &rdkafka::ClientConfig,
    ) -> anyhow::Result<Arc<BaseConsumer>> {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = clients.get(connector) {
            return Ok(c.clone());
        }
        let consumer: BaseConsumer = config.create()?;
        let consumer = Arc::new(consumer);
        self.created.fetch_add(1, Ordering::Relaxed);
        clients.insert(connector.to_string(), consumer.clone());
        Ok(consumer)
    }

    /// How many clients were created so far.
    pub fn created(&self) -> usize {
        self.created.load(Ordering::Relaxed)
    }
}

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
    clients: &SinkOffsetClients,
) -> anyhow::Result<Vec<Value>> {
    let settings = crate::config::kafka::consumer_settings(&worker.config, connector, 0)?;
    let topics = connector
        .sink
        .as_ref()
        .map(|s| s.topics.clone())
        .ok_or_else(|| anyhow::anyhow!("{} is not a sink connector", connector.name))?;
    let consumer = clients.get_or_create(&connector.name, &settings.config)?;
    tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<Value>> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_client_per_connector_is_reused() {
        let clients = SinkOffsetClients::default();
        let mut config = rdkafka::ClientConfig::new();
        // Creating a client does not connect: nothing needs to listen here.
        config.set("bootstrap.servers", "127.0.0.1:9");
        let a = clients.get_or_create("snk", &config).unwrap();
        let b = clients.get_or_create("snk", &config).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(clients.created(), 1);
        let c = clients.get_or_create("other", &config).unwrap();
        assert!(!Arc::ptr_eq(&a, &c));
        assert_eq!(clients.created(), 2);
    }
}
