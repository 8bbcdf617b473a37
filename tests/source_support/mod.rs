//! Helpers of the source tests: the in-process IoT Hub emulator, worker/connector files, and running
//! `iotconnect standalone` against them.
#![allow(dead_code)]

use crate::support::*;
use iotconnect_emulator::{Emulator, EmulatorOptions, SentEvent, TelemetryProps};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const JSON: &str = "org.apache.kafka.connect.json.JsonConverter";
pub const STRING: &str = "org.apache.kafka.connect.storage.StringConverter";
pub const T: Duration = Duration::from_secs(60);

/// The emulator, on its own runtime (the tests themselves are synchronous).
pub struct Hub {
    pub emu: Option<Emulator>,
    pub rt: tokio::runtime::Runtime,
}

impl Hub {
    pub fn start(partitions: u32) -> Hub {
        Hub::start_with(EmulatorOptions {
            partitions,
            ..Default::default()
        })
    }
    pub fn start_with(opts: EmulatorOptions) -> Hub {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let emu = rt.block_on(Emulator::start(opts)).unwrap();
        Hub { emu: Some(emu), rt }
    }
    pub fn emu(&self) -> &Emulator {
        self.emu.as_ref().unwrap()
    }
    pub fn send(&self, device: &str, body: &[u8], props: Option<TelemetryProps>) -> SentEvent {
        self.emu().send_telemetry(device, body.to_vec(), props)
    }
    pub fn receivers_attached(&self) -> u64 {
        self.emu().stats().partition_receivers_attached
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        if let Some(e) = self.emu.take() {
            self.rt.block_on(e.shutdown());
        }
    }
}

/// A worker file with the JSON converter without schemas for keys and values.
pub fn noschema_worker(dir: &Path) -> PathBuf {
    worker_file(dir, JSON, JSON, "value.converter.schemas.enable=false\n")
}

pub fn worker_file(dir: &Path, key: &str, value: &str, extra: &str) -> PathBuf {
    write_file(
        dir,
        "worker.properties",
        &format!(
            "bootstrap.servers={}\n\
             key.converter={key}\n\
             value.converter={value}\n\
             offset.storage.file.filename={}\n\
             offset.flush.interval.ms=500\n\
             listeners=http://127.0.0.1:{}\n{extra}",
            broker().bootstrap,
            offsets_path(dir).display(),
            free_port()
        ),
    )
}

pub fn offsets_path(dir: &Path) -> PathBuf {
    dir.join("connect.offsets")
}

pub fn source_file(dir: &Path, name: &str, topic: &str, hub: &Hub, extra: &str) -> PathBuf {
    let info = hub.emu().info();
    write_file(
        dir,
        "source.properties",
        &format!(
            "name={name}\n\
             connector.class=com.microsoft.azure.iot.kafka.connect.source.IotHubSourceConnector\n\
             tasks.max=1\n\
             Kafka.Topic={topic}\n\
             IotHub.ConnectionString={}\n\
             IotHub.CustomEndpoint={}\n\
             BatchSize=100\n\
             ReceiveTimeout=5\n{extra}",
            info.event_hub_connection_string.expose(),
            info.amqp_endpoint
        ),
    )
}

/// Starts `iotconnect standalone` and waits until it says it started.
pub fn start(worker: &Path, source: &Path) -> Process {
    start_env(worker, source, &[])
}

/// [`start`] with extra environment variables.
pub fn start_env(worker: &Path, source: &Path, env: &[(&str, &str)]) -> Process {
    let p = Process::spawn(
        &[
            "standalone",
            worker.to_str().unwrap(),
            source.to_str().unwrap(),
        ],
        env,
    );
    p.wait_for_log("Kafka Connect started", T);
    p
}

pub fn json(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(bytes)))
}

/// `(deviceId, sequenceNumber)` of a JSON (schemas.enable=false) record value.
pub fn id_seq(r: &Record) -> (String, i64) {
    let v = json(r.value.as_deref().unwrap());
    let p = if v.get("payload").is_some() {
        &v["payload"]
    } else {
        &v
    };
    (
        p["deviceId"].as_str().unwrap().to_string(),
        p["sequenceNumber"].as_i64().unwrap(),
    )
}

/// Offsets of every entry in the offsets file, as `(key JSON, value JSON)`.
pub fn offsets_entries(dir: &Path) -> Vec<(serde_json::Value, Option<serde_json::Value>)> {
    iotconnect::offsets::load(&offsets_path(dir))
        .unwrap()
        .into_iter()
        .map(|(k, v)| (json(&k), v.map(|v| json(&v))))
        .collect()
}

/// The committed `EventHubOffset` of `connector`'s hub partition `p`, if any.
pub fn committed(dir: &Path, connector: &str, p: u32) -> Option<String> {
    if !offsets_path(dir).exists() {
        return None;
    }
    let p = p.to_string();
    offsets_entries(dir).into_iter().find_map(|(k, v)| {
        (k[0] == connector && k[1]["EventHubPartition"] == p.as_str())
            .then(|| v.and_then(|v| v["EventHubOffset"].as_str().map(String::from)))
            .flatten()
    })
}

/// Waits until the offsets of every non-empty hub partition are committed up to its last event.
pub fn wait_all_committed(dir: &Path, connector: &str, hub: &Hub) {
    let parts = hub.emu().stats().partitions;
    wait_until("every partition's last offset to be committed", T, || {
        parts.iter().filter(|p| !p.is_empty).all(|p| {
            committed(dir, connector, p.id).as_deref() == Some(p.last_enqueued_offset.as_str())
        })
    });
}

/// Sends `n` events from `devices` devices with JSON bodies `{"i":…}`; returns the count.
pub fn send_many(hub: &Hub, start: usize, n: usize, devices: usize) -> usize {
    for i in start..start + n {
        hub.send(
            &format!("dev-{}", i % devices),
            format!("{{\"i\":{i}}}").as_bytes(),
            None,
        );
    }
    n
}

/// Reads every record of `topic` (its size from the watermarks) and returns (unique, duplicates).
pub fn unique_and_duplicates(topic: &str) -> (usize, usize) {
    let size = topic_size(&broker().bootstrap, topic) as usize;
    let recs = read_topic(&broker().bootstrap, topic, size, T);
    let mut seen = std::collections::HashSet::new();
    let mut dups = 0;
    for r in &recs {
        if !seen.insert(id_seq(r)) {
            dups += 1;
        }
    }
    (seen.len(), dups)
}

/// The REST port written into a worker file by [`worker_file`].
pub fn rest_port(worker: &Path) -> u16 {
    let text = std::fs::read_to_string(worker).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("listeners=http://127.0.0.1:"))
        .and_then(|p| p.trim().parse().ok())
        .expect("listeners= in the worker file")
}

/// GET `path` on the worker's REST port: (status, body).
pub fn rest_get(port: u16, path: &str) -> (u16, String) {
    let r = reqwest::blocking::Client::new()
        .get(format!("http://127.0.0.1:{port}{path}"))
        .timeout(Duration::from_secs(10))
        .send()
        .unwrap();
    (r.status().as_u16(), r.text().unwrap())
}

/// The value of the Prometheus sample `name` whose labels contain every `labels` pair (`k="v"`).
pub fn metric(port: u16, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let (_, text) = rest_get(port, "/metrics");
    text.lines().find_map(|l| {
        let (series, value) = l.rsplit_once(' ')?;
        let (n, rest) = series.split_once('{').unwrap_or((series, ""));
        if n != name {
            return None;
        }
        labels
            .iter()
            .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
            .then(|| value.parse().ok())
            .flatten()
    })
}

/// POSTs a fault to the emulator's `/emulator/faults`.
pub fn post_fault(hub: &Hub, body: serde_json::Value) {
    let url = format!("{}/emulator/faults", hub.emu().info().http_endpoint);
    let r = reqwest::blocking::Client::new()
        .post(url)
        .json(&body)
        .timeout(Duration::from_secs(10))
        .send()
        .unwrap();
    let status = r.status();
    assert!(status.is_success(), "{status}: {}", r.text().unwrap());
}

/// The Connect status of task 0 of `connector` (`RUNNING`, `FAILED`, …) and its trace.
pub fn task_state(port: u16, connector: &str) -> (String, String) {
    let (_, body) = rest_get(port, &format!("/connectors/{connector}/status"));
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    let t = &v["tasks"][0];
    (
        t["state"].as_str().unwrap_or("").to_string(),
        t["trace"].as_str().unwrap_or("").to_string(),
    )
}
