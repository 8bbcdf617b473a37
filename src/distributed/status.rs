//! Task status in `status.storage.topic`, in Connect's format (`KafkaStatusBackingStore`): key
//! `status-task-<connector>-<task>` / `status-connector-<connector>`, value
//! `{"state":"RUNNING","trace":null,"worker_id":"host:port","generation":N}` (JSON without schemas).
//!
//! In distributed mode a source task is one hub partition (task id = the hub partition's index), so
//! `GET /connectors/{name}/status` on any worker lists every hub partition with the worker reading
//! it. Writes are awaited (acks=all) so an UNASSIGNED written on revocation is in the topic before the
//! partition moves; the latest write per key wins, as in Connect.

use crate::offsets::kafka::read_to_end;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use serde_json::json;
use std::collections::HashMap;
use std::time::Duration;

pub fn task_key(connector: &str, task: i32) -> String {
    format!("status-task-{connector}-{task}")
}

pub fn connector_key(connector: &str) -> String {
    format!("status-connector-{connector}")
}

/// Connect's status value bytes.
pub fn value(state: &str, trace: Option<&str>, worker_id: &str, generation: i32) -> Vec<u8> {
    json!({"state": state, "trace": trace, "worker_id": worker_id, "generation": generation})
        .to_string()
        .into_bytes()
}

/// Writes status records for this worker.
#[derive(Clone)]
pub struct StatusWriter {
    producer: FutureProducer,
    topic: String,
    pub worker_id: String,
}

impl StatusWriter {
    pub fn new(base: &ClientConfig, topic: &str, worker_id: &str) -> anyhow::Result<StatusWriter> {
        let mut c = base.clone();
        c.set("partitioner", "murmur2_random").set("acks", "all");
        Ok(StatusWriter {
            producer: c.create()?,
            topic: topic.to_string(),
            worker_id: worker_id.to_string(),
        })
    }

    /// Writes `key`'s status; `generation` is the coordination group's generation the entry was
    /// decided in (0 for a connector's entry, written before the worker joins).
    pub async fn put(&self, key: &str, state: &str, trace: Option<&str>, generation: i32) {
        let v = value(state, trace, &self.worker_id, generation);
        let r = self
            .producer
            .send(
                FutureRecord::to(&self.topic).key(key).payload(&v),
                Duration::from_secs(10),
            )
            .await;
        if let Err((e, _)) = r {
            tracing::warn!("cannot write status {key}={state} to {}: {e}", self.topic);
        }
    }
}

/// One status entry as read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub state: String,
    pub worker_id: String,
    pub trace: Option<String>,
    pub generation: i32,
}

/// Reads the status topic to its end: latest entry per key (tombstones remove).
pub fn read_all(
    consumer_base: &ClientConfig,
    topic: &str,
    timeout: Duration,
) -> anyhow::Result<HashMap<String, Entry>> {
    let mut out = HashMap::new();
    for (k, v) in read_to_end(consumer_base, topic, timeout)? {
        let key = String::from_utf8_lossy(&k).to_string();
        match v.and_then(|v| serde_json::from_slice::<serde_json::Value>(&v).ok()) {
            None => {
                out.remove(&key);
            }
            Some(j) => {
                out.insert(
                    key,
                    Entry {
                        state: j["state"].as_str().unwrap_or("UNASSIGNED").to_string(),
                        worker_id: j["worker_id"].as_str().unwrap_or_default().to_string(),
                        trace: j["trace"].as_str().map(String::from),
                        generation: j["generation"].as_i64().unwrap_or(0) as i32,
                    },
                );
            }
        }
    }
    Ok(out)
}

/// Connect's status object for a source connector whose tasks are `tasks` hub partitions.
pub fn connector_status(
    name: &str,
    tasks: i32,
    entries: &HashMap<String, Entry>,
) -> serde_json::Value {
    let task_json = |i: i32| {
        let e = entries.get(&task_key(name, i));
        let mut t = json!({
            "id": i,
            "state": e.map_or("UNASSIGNED", |e| e.state.as_str()),
            "worker_id": e.map_or("", |e| e.worker_id.as_str()),
        });
        if let Some(trace) = e.and_then(|e| e.trace.as_deref()) {
            t["trace"] = json!(trace);
        }
        t
    };
    let c = entries.get(&connector_key(name));
    json!({
        "name": name,
        "connector": {
            "state": c.map_or("UNASSIGNED", |e| e.state.as_str()),
            "worker_id": c.map_or("", |e| e.worker_id.as_str()),
        },
        "tasks": (0..tasks).map(task_json).collect::<Vec<_>>(),
        "type": "source",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_values_are_connects() {
        assert_eq!(task_key("c", 3), "status-task-c-3");
        assert_eq!(connector_key("c"), "status-connector-c");
        assert_eq!(
            value("RUNNING", None, "127.0.0.1:8083", 0),
            br#"{"state":"RUNNING","trace":null,"worker_id":"127.0.0.1:8083","generation":0}"#
        );
    }

    #[test]
    fn missing_tasks_are_unassigned_and_traces_only_on_failure() {
        let mut m = HashMap::new();
        m.insert(
            task_key("c", 0),
            Entry {
                state: "RUNNING".into(),
                worker_id: "w1".into(),
                trace: None,
                generation: 3,
            },
        );
        m.insert(
            task_key("c", 1),
            Entry {
                state: "FAILED".into(),
                worker_id: "w2".into(),
                trace: Some("boom".into()),
                generation: 4,
            },
        );
        let s = connector_status("c", 3, &m);
        assert_eq!(s["tasks"][0]["worker_id"], "w1");
        assert!(s["tasks"][0].get("trace").is_none());
        assert_eq!(s["tasks"][1]["trace"], "boom");
        assert_eq!(s["tasks"][2]["state"], "UNASSIGNED");
        assert_eq!(s["connector"]["state"], "UNASSIGNED");
    }
}
