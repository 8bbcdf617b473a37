//! Connector configurations in `config.storage.topic`, so every worker of a group runs the same one.
//!
//! Record: key `connector-<name>` (Connect's), value `{"properties":{…},"iotconnect.sha256":"…"}`:
//! the properties as written with secret values `[hidden]` (provider references stay references;
//! no secret ever reaches the topic), plus a SHA-256 of the resolved configuration so that a
//! differing secret is noticed too. Connect's readers take `properties` and ignore the rest.
//!
//! Rule: the first worker to start a connector publishes its configuration; a worker whose
//! configuration differs from the one in the topic refuses to take work for that connector and says
//! which keys differ. `--replace-config` publishes this worker's configuration instead (workers that
//! already run the old one keep running it until restarted: restart them all).

use crate::config::ConnectorConfig;
use crate::offsets::kafka::read_to_end;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::time::Duration;

pub fn key(connector: &str) -> String {
    format!("connector-{connector}")
}

/// SHA-256 (hex) of the resolved properties, `key=value\n` in key order.
pub fn digest(c: &ConnectorConfig) -> String {
    let mut h = Sha256::new();
    for (k, v) in &c.file.resolved {
        h.update(k.as_bytes());
        h.update(b"=");
        h.update(v.as_bytes());
        h.update(b"\n");
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The record value this worker publishes for `c`.
pub fn value(c: &ConnectorConfig) -> Vec<u8> {
    serde_json::json!({"properties": c.file.masked(), "iotconnect.sha256": digest(c)})
        .to_string()
        .into_bytes()
}

/// Why this worker's configuration is not the group's (None when equal).
pub fn difference(c: &ConnectorConfig, published: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(published).ok()?;
    if v["iotconnect.sha256"].as_str() == Some(digest(c).as_str()) {
        return None;
    }
    let theirs: BTreeMap<String, String> = v["properties"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default();
    let ours = c.file.masked();
    let mut keys: Vec<&str> = ours
        .iter()
        .filter(|(k, v)| theirs.get(*k) != Some(v))
        .map(|(k, _)| k.as_str())
        .chain(
            theirs
                .keys()
                .filter(|k| !ours.contains_key(*k))
                .map(String::as_str),
        )
        .collect();
    keys.sort_unstable();
    keys.dedup();
    Some(if keys.is_empty() {
        "a secret value (or a provider-resolved value) differs".to_string()
    } else {
        format!("keys that differ: {}", keys.join(", "))
    })
}

/// Latest published value of `connector`, if any.
pub fn published(
    consumer_base: &ClientConfig,
    topic: &str,
    connector: &str,
    timeout: Duration,
) -> anyhow::Result<Option<Vec<u8>>> {
    let k = key(connector);
    let mut last = None;
    for (rk, v) in read_to_end(consumer_base, topic, timeout)? {
        if rk == k.as_bytes() {
            last = v;
        }
    }
    Ok(last)
}

/// Publishes this worker's configuration of `c` (awaited).
pub async fn publish(
    producer: &FutureProducer,
    topic: &str,
    c: &ConnectorConfig,
) -> anyhow::Result<()> {
    let v = value(c);
    let k = key(&c.name);
    producer
        .send(
            FutureRecord::to(topic).key(&k).payload(&v),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| anyhow::Error::new(e).context(format!("publishing {k} to {topic}")))?;
    Ok(())
}

/// A plain producer for the worker's own topics (murmur2 like Java's, acks=all).
pub fn worker_producer(base: &ClientConfig) -> anyhow::Result<FutureProducer> {
    let mut c = base.clone();
    c.set("partitioner", "murmur2_random").set("acks", "all");
    Ok(c.create()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::properties::Properties;
    use crate::config::LoadedFile;

    fn connector(batch: &str, key: &str) -> ConnectorConfig {
        let mut p = Properties::new();
        for (k, v) in [
            ("name", "hub"),
            ("connector.class", "IotHubSource"),
            ("Kafka.Topic", "iotin"),
            ("IotHub.EventHubCompatibleName", "myhub"),
            (
                "IotHub.EventHubCompatibleEndpoint",
                "sb://myhub.servicebus.windows.net/",
            ),
            ("IotHub.AccessKeyName", "service"),
            ("IotHub.AccessKeyValue", key),
            ("BatchSize", batch),
        ] {
            p.insert(k.into(), v.into());
        }
        ConnectorConfig::from_file(&LoadedFile {
            path: "source.properties".into(),
            raw: p.clone(),
            resolved: p,
        })
        .unwrap()
    }

    #[test]
    fn equal_configs_agree_and_differences_are_named_without_secrets() {
        let a = connector("50", "c2VjcmV0LWtleS1vbmU=");
        let published = value(&a);
        let text = String::from_utf8(published.clone()).unwrap();
        assert!(!text.contains("c2VjcmV0LWtleS1vbmU="), "{text}");
        assert!(text.starts_with(r#"{"properties":{"#), "{text}");
        assert_eq!(difference(&a, &published), None);
        let b = connector("7", "c2VjcmV0LWtleS1vbmU=");
        assert_eq!(
            difference(&b, &published).as_deref(),
            Some("keys that differ: BatchSize")
        );
        let c = connector("50", "YW5vdGhlci1rZXk=");
        let why = difference(&c, &published).unwrap();
        assert!(why.contains("secret"), "{why}");
        assert!(!why.contains("YW5vdGhlci1rZXk="), "{why}");
    }
}
