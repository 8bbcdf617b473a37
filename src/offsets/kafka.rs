//! The Kafka-topic offset store of distributed mode (Connect's `KafkaOffsetBackingStore`).
//!
//! Invariants:
//! * Records are exactly Connect's: key `["<connector>",{<source partition>}]`, value the offset map,
//!   both compact JSON without schemas (the bytes of [`key_bytes`]/[`value_bytes`], shared with the
//!   offsets file); a null value is a tombstone.
//! * Every producer writing to the topic uses `partitioner=murmur2_random` (Java's default
//!   partitioner), so a key always lands on the partition a JVM worker would write it to and
//!   compaction keeps one value per key ([`crate::distributed::murmur2::partition`]).
//! * Reading is "every partition from the beginning to its end" with `isolation.level=read_committed`
//!   (the end is librdkafka's partition EOF: the last stable offset), last value per key wins, so
//!   offsets written inside an aborted transaction are never seen.
//! * The topic is created compacted (`cleanup.policy=compact`) with `offset.storage.partitions` /
//!   `offset.storage.replication.factor`; an existing topic with another cleanup policy is refused,
//!   as Connect refuses it.

use crate::connect::Value;
use crate::offsets::backing::{
    OffsetBackingStore, OffsetMap as BackingOffsetMap, PartitionMap, StoredOffset,
};
use crate::offsets::file::Entry;
use crate::offsets::store::{key_bytes, value_bytes, OffsetStore};
use anyhow::Context;
use futures::future::BoxFuture;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use std::collections::HashSet;
use std::time::{Duration, Instant};
use tracing::info;

/// One topic of the worker (offsets, configs, status): name and creation settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicSpec {
    pub name: String,
    pub partitions: i32,
    /// `-1`: the broker's default.
    pub replication_factor: i16,
}

/// The record (key, value) Connect writes for one source partition's offset.
pub fn offset_record(
    connector: &str,
    partition: &[(&str, &str)],
    offset: Option<&[(&str, Value)]>,
) -> (Vec<u8>, Option<Vec<u8>>) {
    (key_bytes(connector, partition), offset.map(value_bytes))
}

/// Creates `spec` compacted when it does not exist; refuses an existing topic that is not compacted.
pub async fn ensure_compacted_topic(admin: &ClientConfig, spec: &TopicSpec) -> anyhow::Result<()> {
    let client: AdminClient<DefaultClientContext> = admin
        .create()
        .context("cannot create the Kafka admin client")?;
    let replication = if spec.replication_factor < 0 {
        TopicReplication::Fixed(-1)
    } else {
        TopicReplication::Fixed(spec.replication_factor as i32)
    };
    let topic =
        NewTopic::new(&spec.name, spec.partitions, replication).set("cleanup.policy", "compact");
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let res = client
        .create_topics(&[topic], &opts)
        .await
        .with_context(|| format!("cannot create topic {}", spec.name))?;
    for r in res {
        match r {
            Ok(t) => info!(
                "Created topic {t} (cleanup.policy=compact, {} partitions)",
                spec.partitions
            ),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {
                check_compacted(&client, &spec.name).await?
            }
            Err((t, e)) => anyhow::bail!("cannot create topic {t}: {e}"),
        }
    }
    Ok(())
}

/// Connect's check on an existing internal topic: `cleanup.policy` must be `compact` only.
async fn check_compacted(
    client: &AdminClient<DefaultClientContext>,
    topic: &str,
) -> anyhow::Result<()> {
    let res = client
        .describe_configs(&[ResourceSpecifier::Topic(topic)], &AdminOptions::new())
        .await
        .with_context(|| format!("cannot describe topic {topic}"))?;
    for r in res {
        let Ok(resource) = r else { continue };
        if let Some(policy) = resource.get("cleanup.policy").and_then(|e| e.value.clone()) {
            if policy.trim() != "compact" {
                anyhow::bail!(
                    "Topic '{topic}' supplied via the 'offset.storage.topic', 'config.storage.topic' or 'status.storage.topic' property is required \
                     to have 'cleanup.policy=compact' to guarantee consistency and durability of source connector offsets, but found the topic \
                     currently has 'cleanup.policy={policy}'. Continuing would likely result in eventually losing source connector offsets and \
                     problems restarting this Connect cluster in the future. Change the 'offset.storage.topic' property in the Connect worker \
                     configurations to use a topic with 'cleanup.policy=compact'."
                );
            }
        }
    }
    Ok(())
}

/// Consumer context of the end-of-topic readers: partition EOF is what they wait for, not an error.
struct QuietEof;

impl rdkafka::ClientContext for QuietEof {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        use rdkafka::error::KafkaError;
        let eof = matches!(
            error,
            KafkaError::PartitionEOF(_) | KafkaError::Global(RDKafkaErrorCode::PartitionEOF)
        );
        if !eof {
            tracing::error!("librdkafka: {error}: {reason}");
        }
    }
}

impl rdkafka::consumer::ConsumerContext for QuietEof {}

/// The partition ids of `topic`; an error if it does not exist.
fn partitions_of(
    consumer: &BaseConsumer<QuietEof>,
    topic: &str,
    timeout: Duration,
) -> anyhow::Result<Vec<i32>> {
    let md = consumer
        .fetch_metadata(Some(topic), timeout)
        .with_context(|| format!("cannot read the metadata of topic {topic}"))?;
    let parts: Vec<i32> = md
        .topics()
        .first()
        .map(|t| t.partitions().iter().map(|p| p.id()).collect())
        .unwrap_or_default();
    anyhow::ensure!(!parts.is_empty(), "topic {topic} does not exist");
    Ok(parts)
}

/// A partition of the offsets topic whose last stable offset is still below the high watermark it
/// had when [`wait_until_stable`] began: a transaction written before that point is not yet complete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unstable {
    pub partition: i32,
    pub stable: i64,
    pub high: i64,
}

/// Waits (blocking) until every partition's last stable offset has reached the high watermark it
/// had when the call began, or `bound` passes; returns the partitions still short.
///
/// Why: a partition's end for `read_committed` is its last stable offset, which stays at the first
/// record of the oldest open transaction. Another task's offset record written just before ours
/// keeps our committed offset invisible until that task's transaction ends, so a new owner reading
/// at that moment would start from an older offset and read a batch twice. Waiting for the end as of
/// "now" closes that gap; transactions are short, so on a healthy cluster this returns at once.
pub fn wait_until_stable(
    consumer_base: &ClientConfig,
    topic: &str,
    bound: Duration,
) -> anyhow::Result<Vec<Unstable>> {
    let client = |isolation: &str| -> anyhow::Result<BaseConsumer<QuietEof>> {
        let mut cfg = consumer_base.clone();
        cfg.set("isolation.level", isolation)
            .set("enable.auto.commit", "false")
            .set("group.id", "iotconnect-offset-reader-unused");
        cfg.create_with_context(QuietEof)
            .context("cannot create a Kafka consumer")
    };
    let (uncommitted, committed) = (client("read_uncommitted")?, client("read_committed")?);
    let timeout = bound.max(Duration::from_secs(1));
    let parts = partitions_of(&uncommitted, topic, timeout)?;
    let mut high = Vec::with_capacity(parts.len());
    for &p in &parts {
        let (_, h) = uncommitted
            .fetch_watermarks(topic, p, timeout)
            .with_context(|| format!("cannot read the end of {topic}-{p}"))?;
        high.push((p, h));
    }
    let deadline = Instant::now() + bound;
    loop {
        let mut short = Vec::new();
        for &(p, h) in &high {
            // A read_committed client's high watermark is the last stable offset.
            let (_, stable) = committed
                .fetch_watermarks(topic, p, timeout)
                .with_context(|| format!("cannot read the stable end of {topic}-{p}"))?;
            if stable < h {
                short.push(Unstable {
                    partition: p,
                    stable,
                    high: h,
                });
            }
        }
        if short.is_empty() || Instant::now() >= deadline {
            return Ok(short);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Reads `topic` from the beginning of every partition to its end (read_committed); returns the
/// records in topic order per partition (key, value). Blocking: call from a blocking thread.
pub fn read_to_end(
    consumer_base: &ClientConfig,
    topic: &str,
    timeout: Duration,
) -> anyhow::Result<Vec<Entry>> {
    let mut cfg = consumer_base.clone();
    cfg.set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("group.id", "iotconnect-offset-reader-unused");
    let consumer: BaseConsumer<QuietEof> = cfg
        .create_with_context(QuietEof)
        .context("cannot create a Kafka consumer")?;
    let parts = partitions_of(&consumer, topic, timeout)?;
    let mut tpl = TopicPartitionList::new();
    for p in &parts {
        tpl.add_partition_offset(topic, *p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let deadline = Instant::now() + timeout;
    let mut at_end: HashSet<i32> = HashSet::new();
    let mut out = Vec::new();
    while at_end.len() < parts.len() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "could not read topic {topic} to its end within {timeout:?} ({} of {} partitions read)",
            at_end.len(),
            parts.len()
        );
        match consumer.poll(Duration::from_millis(200)) {
            None => {}
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                at_end.insert(p);
            }
            Some(Err(e)) => return Err(e).with_context(|| format!("reading topic {topic}")),
            // A partition once at its end stays done (Connect: the end as of the start of the
            // read); later records are still taken, they are only newer.
            Some(Ok(m)) => {
                if let Some(k) = m.key() {
                    out.push((k.to_vec(), m.payload().map(|v| v.to_vec())));
                }
            }
        }
    }
    Ok(out)
}

/// The offsets topic read into Connect's lookup (exact key bytes, then JSON equality).
pub fn load_store(
    consumer_base: &ClientConfig,
    topic: &str,
    timeout: Duration,
) -> anyhow::Result<OffsetStore> {
    Ok(OffsetStore::from_entries(read_to_end(
        consumer_base,
        topic,
        timeout,
    )?))
}

/// Whether any entry of the store belongs to `connector`.
pub fn has_connector(store: &OffsetStore, connector: &str) -> bool {
    store.entries().iter().any(|(k, v)| {
        v.is_some()
            && serde_json::from_slice::<serde_json::Value>(k)
                .ok()
                .and_then(|j| j.get(0).and_then(|n| n.as_str().map(|s| s == connector)))
                .unwrap_or(false)
    })
}

/// The worker's [`OffsetBackingStore`] over `offset.storage.topic` (Connect's
/// `KafkaOffsetBackingStore`): `get` reads the topic to its end (read_committed) so it sees what other
/// workers committed; `put` writes murmur2-partitioned records and returns once all are acknowledged
/// (acks=all). The exactly-once pipeline writes its offset records inside its own transactions instead.
pub struct KafkaOffsetBackingStore {
    consumer_base: ClientConfig,
    topic: String,
    producer: rdkafka::producer::FutureProducer,
    timeout: Duration,
    failure: std::sync::Mutex<Option<String>>,
}

impl KafkaOffsetBackingStore {
    pub fn new(base: &ClientConfig, topic: &str, timeout: Duration) -> anyhow::Result<Self> {
        let mut p = base.clone();
        p.set("partitioner", "murmur2_random").set("acks", "all");
        info!("Starting KafkaOffsetBackingStore with topic {topic}");
        Ok(KafkaOffsetBackingStore {
            consumer_base: base.clone(),
            topic: topic.to_string(),
            producer: p.create().context("cannot create the offsets producer")?,
            timeout,
            failure: std::sync::Mutex::new(None),
        })
    }

    async fn load(&self) -> anyhow::Result<OffsetStore> {
        let (b, t, to) = (self.consumer_base.clone(), self.topic.clone(), self.timeout);
        tokio::task::spawn_blocking(move || load_store(&b, &t, to))
            .await
            .context("offsets reader")?
    }
}

fn borrowed(p: &PartitionMap) -> Vec<(&str, &str)> {
    p.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

impl OffsetBackingStore for KafkaOffsetBackingStore {
    fn describe(&self) -> String {
        format!("topic {}", self.topic)
    }

    fn get<'a>(
        &'a self,
        connector: &'a str,
        partition: &'a PartitionMap,
    ) -> BoxFuture<'a, anyhow::Result<Option<BackingOffsetMap>>> {
        Box::pin(async move { Ok(self.load().await?.get(connector, &borrowed(partition))) })
    }

    fn put<'a>(
        &'a self,
        connector: &'a str,
        batch: Vec<(PartitionMap, Option<BackingOffsetMap>)>,
    ) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            for (p, o) in &batch {
                let o: Option<Vec<(&str, Value)>> = o
                    .as_ref()
                    .map(|o| o.iter().map(|(k, v)| (k.as_str(), v.clone())).collect());
                let (k, v) = offset_record(connector, &borrowed(p), o.as_deref());
                let mut rec: rdkafka::producer::FutureRecord<'_, [u8], [u8]> =
                    rdkafka::producer::FutureRecord::to(&self.topic).key(k.as_slice());
                if let Some(v) = &v {
                    rec = rec.payload(v.as_slice());
                }
                if let Err((e, _)) = self.producer.send(rec, self.timeout).await {
                    *self.failure.lock().unwrap() = Some(format!("writing {}: {e}", self.topic));
                    return Err(
                        anyhow::Error::new(e).context(format!("writing offsets to {}", self.topic))
                    );
                }
            }
            *self.failure.lock().unwrap() = None;
            Ok(())
        })
    }

    fn entries(&self) -> BoxFuture<'_, anyhow::Result<Vec<StoredOffset>>> {
        Box::pin(async move {
            let store = self.load().await?;
            Ok(store
                .entries()
                .iter()
                .filter_map(|(k, v)| {
                    let key: serde_json::Value = serde_json::from_slice(k).ok()?;
                    Some(StoredOffset {
                        connector: key.get(0)?.as_str()?.to_string(),
                        partition: key.get(1)?.clone(),
                        offset: v.as_ref().and_then(|v| serde_json::from_slice(v).ok()),
                    })
                })
                .collect())
        })
    }

    fn health(&self) -> Option<String> {
        self.failure.lock().unwrap().clone()
    }
}

/// `iotconnect offsets show-topic --topic T --bootstrap B`: the latest entry of every key of an
/// offsets topic (read_committed), one JSON line each: `{"key":…,"value":…|null}`.
pub fn show_topic(
    bootstrap: &str,
    topic: &str,
    out: &mut dyn std::io::Write,
) -> anyhow::Result<()> {
    let mut base = ClientConfig::new();
    base.set("bootstrap.servers", bootstrap);
    let store = load_store(&base, topic, Duration::from_secs(30))?;
    for (k, v) in store.entries() {
        let key = serde_json::from_slice::<serde_json::Value>(k)
            .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(k).into()));
        let value = v.as_ref().map(|v| {
            serde_json::from_slice::<serde_json::Value>(v)
                .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(v).into()))
        });
        writeln!(out, "{}", serde_json::json!({"key": key, "value": value}))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_record_is_connects_json() {
        let (k, v) = offset_record(
            "AzureIotHubConnector",
            &[
                ("EventHubName", "iothub-ehub-x"),
                ("EventHubPartition", "3"),
            ],
            Some(&[("EventHubOffset", Value::String("4096".into()))]),
        );
        assert_eq!(
            k,
            br#"["AzureIotHubConnector",{"EventHubName":"iothub-ehub-x","EventHubPartition":"3"}]"#
        );
        assert_eq!(v.unwrap(), br#"{"EventHubOffset":"4096"}"#);
        let (_, tomb) = offset_record("c", &[("p", "1")], None);
        assert!(tomb.is_none());
    }

    #[test]
    fn has_connector_ignores_tombstones_and_other_connectors() {
        let store = OffsetStore::from_entries(vec![
            (br#"["a",{"p":"1"}]"#.to_vec(), Some(b"{}".to_vec())),
            (br#"["b",{"p":"1"}]"#.to_vec(), None),
        ]);
        assert!(has_connector(&store, "a"));
        assert!(!has_connector(&store, "b"));
        assert!(!has_connector(&store, "c"));
    }
}
