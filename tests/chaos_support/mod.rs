//! Helpers of the chaos suite: an emulator that can go away and come back on the same port, a broker
//! that can be stopped and restarted on the same port and data, a small tmpfs that can be filled,
//! the books of what was sent, and the worker's REST API.
#![allow(dead_code)]

use crate::support::*;
use iotconnect_emulator::{Emulator, EmulatorOptions};
use std::collections::HashMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub const T: Duration = Duration::from_secs(90);

/// `long` with `CHAOS_LONG=1` (the soak counts), `short` otherwise (CI).
pub fn long_or(long: usize, short: usize) -> usize {
    if std::env::var_os("CHAOS_LONG").is_some_and(|v| v != "0") {
        long
    } else {
        short
    }
}

/// The IoT Hub emulator on its own runtime; `stop` makes it unreachable (listener closed),
/// `restart` brings it back with the same options (same port when one was given, same keys).
pub struct Hub {
    emu: Option<Emulator>,
    rt: tokio::runtime::Runtime,
    opts: EmulatorOptions,
}

impl Hub {
    pub fn start(partitions: u32, mut opts: EmulatorOptions) -> Hub {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        opts.partitions = partitions;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let emu = rt.block_on(Emulator::start(opts.clone())).unwrap();
        Hub {
            emu: Some(emu),
            rt,
            opts,
        }
    }
    pub fn emu(&self) -> &Emulator {
        self.emu.as_ref().expect("the hub is running")
    }
    pub fn stop(&mut self) {
        if let Some(e) = self.emu.take() {
            self.rt.block_on(e.shutdown());
        }
    }
    pub fn restart(&mut self, mut opts: EmulatorOptions) {
        self.stop();
        opts.partitions = self.opts.partitions;
        self.emu = Some(self.rt.block_on(Emulator::start(opts)).unwrap());
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Hub events sent so far: `(hub partition, sequence number)` and each device's partition.
#[derive(Default)]
pub struct Sent {
    pub events: Vec<(u32, i64)>,
    pub partition_of: HashMap<String, u32>,
    next: usize,
}

impl Sent {
    /// Sends `n` events round-robin from `devices` devices (JSON bodies `{"i":…}`).
    pub fn send(&mut self, hub: &Hub, n: usize, devices: usize) {
        for i in self.next..self.next + n {
            let device = format!("dev-{}", i % devices);
            let e = hub
                .emu()
                .send_telemetry(&device, format!("{{\"i\":{i}}}").into_bytes(), None);
            self.events.push((e.partition, e.sequence_number));
            self.partition_of.insert(device, e.partition);
        }
        self.next += n;
    }
}

/// Sink records produced so far: message ids in production order.
#[derive(Default)]
pub struct C2dSent {
    pub ids: Vec<String>,
    pub index: HashMap<String, u64>,
    next: u64,
    next_device: usize,
}

impl C2dSent {
    /// Produces `per_device` tutorial-shaped records for each of `devices` new devices, keyed by
    /// device (one device = one Kafka partition, so its order is defined). Fresh devices each call:
    /// a device's queue (50 messages on IoT Hub) never fills, duplicates included.
    pub fn produce(&mut self, bootstrap: &str, topic: &str, devices: usize, per_device: usize) {
        let mut values = Vec::new();
        let base = self.next_device;
        self.next_device += devices;
        for _ in 0..per_device {
            for d in base..base + devices {
                let n = self.next;
                self.next += 1;
                let id = format!("m-{n}");
                let device = format!("cdev-{d}");
                values.push((
                    device.clone(),
                    format!(
                        r#"{{"messageId":"{id}","message":"chaos {n}","deviceId":"{device}"}}"#
                    ),
                ));
                self.index.insert(id.clone(), n);
                self.ids.push(id);
            }
        }
        let recs: Vec<(Option<&str>, &[u8])> = values
            .iter()
            .map(|(k, v)| (Some(k.as_str()), v.as_bytes()))
            .collect();
        produce(bootstrap, topic, &recs);
    }
}

/// The worker file (String converters; the source connector overrides its value converter) and its
/// REST port. Offsets in `dir/connect.offsets`.
pub fn worker_file(dir: &Path, bootstrap: &str, extra: &str) -> (PathBuf, u16) {
    worker_file_at(dir, bootstrap, &dir.join("connect.offsets"), extra)
}

pub fn worker_file_at(dir: &Path, bootstrap: &str, offsets: &Path, extra: &str) -> (PathBuf, u16) {
    let port = free_port();
    let path = write_file(
        dir,
        "worker.properties",
        &format!(
            "bootstrap.servers={bootstrap}\n\
             key.converter=org.apache.kafka.connect.storage.StringConverter\n\
             value.converter=org.apache.kafka.connect.storage.StringConverter\n\
             offset.storage.file.filename={}\n\
             consumer.session.timeout.ms=6000\n\
             consumer.heartbeat.interval.ms=1000\n\
             listeners=http://127.0.0.1:{port}\n{extra}",
            offsets.display()
        ),
    );
    (path, port)
}

pub fn source_file(dir: &Path, name: &str, topic: &str, hub: &Hub) -> PathBuf {
    source_file_extra(dir, name, topic, hub, "")
}

pub fn source_file_extra(dir: &Path, name: &str, topic: &str, hub: &Hub, extra: &str) -> PathBuf {
    let info = hub.emu().info();
    write_file(
        dir,
        &format!("{name}.properties"),
        &format!(
            "name={name}\n\
             connector.class=com.microsoft.azure.iot.kafka.connect.source.IotHubSourceConnector\n\
             tasks.max=1\n\
             Kafka.Topic={topic}\n\
             IotHub.ConnectionString={}\n\
             IotHub.CustomEndpoint={}\n\
             BatchSize=100\n\
             ReceiveTimeout=1\n\
             value.converter=org.apache.kafka.connect.json.JsonConverter\n\
             value.converter.schemas.enable=false\n{extra}",
            info.event_hub_connection_string.expose(),
            info.amqp_endpoint
        ),
    )
}

pub fn sink_file(dir: &Path, name: &str, topic: &str, hub: &Hub) -> PathBuf {
    let info = hub.emu().info();
    write_file(
        dir,
        &format!("{name}.properties"),
        &format!(
            "name={name}\n\
             connector.class=com.microsoft.azure.iot.kafka.connect.sink.IotHubSinkConnector\n\
             tasks.max=1\n\
             topics={topic}\n\
             IotHub.ConnectionString={}\n\
             IotHub.CustomEndpoint={}\n",
            info.service_connection_string.expose(),
            info.amqp_endpoint
        ),
    )
}

/// `iotconnect standalone WORKER CONNECTORS…`, waiting until it says it started.
pub fn start(worker: &Path, connectors: &[&Path]) -> Process {
    let mut args = vec!["standalone".to_string(), worker.display().to_string()];
    args.extend(connectors.iter().map(|c| c.display().to_string()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let p = Process::spawn(&refs, &[]);
    p.wait_for_log("Kafka Connect started", T);
    p
}

pub fn http_call(port: u16, method: &str, path: &str) -> (u16, String) {
    let c = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}{path}");
    let req = match method {
        "PUT" => c.put(&url),
        "POST" => c.post(&url),
        "DELETE" => c.delete(&url),
        _ => c.get(&url),
    };
    match req.send() {
        Ok(r) => {
            let code = r.status().as_u16();
            (code, r.text().unwrap_or_default())
        }
        Err(e) => (0, e.to_string()),
    }
}

pub fn http_get(port: u16, path: &str) -> (u16, String) {
    http_call(port, "GET", path)
}

/// Waits until every named connector and all of its tasks are RUNNING.
pub fn wait_tasks_running(port: u16, connectors: &[&str]) {
    wait_until("connectors and tasks RUNNING", T, || {
        connectors.iter().all(|c| {
            let (code, body) = http_get(port, &format!("/connectors/{c}/status"));
            if code != 200 {
                return false;
            }
            let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            let tasks = v["tasks"].as_array().cloned().unwrap_or_default();
            v["connector"]["state"] == "RUNNING"
                && !tasks.is_empty()
                && tasks.iter().all(|t| t["state"] == "RUNNING")
        })
    });
}

/// The committed offset of `group` per partition of `topic` (-1: none, -2: the broker did not
/// answer).
pub fn committed_offsets_or_down(
    bootstrap: &str,
    group: &str,
    topic: &str,
    partitions: i32,
) -> Vec<i64> {
    try_committed_offsets(bootstrap, group, topic, partitions)
        .unwrap_or_else(|_| vec![-2; partitions as usize])
}

/// The end (high watermark) of each partition of `topic`.
pub fn end_offsets(bootstrap: &str, topic: &str, partitions: i32) -> Vec<i64> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let c: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    (0..partitions)
        .map(|p| {
            c.fetch_watermarks(topic, p, Duration::from_secs(10))
                .map(|(_, hi)| hi)
                .unwrap_or(-2)
        })
        .collect()
}

/// Waits until `group` committed every partition of `topic` up to its end; on time-out the panic
/// shows both and the worker's last log lines.
pub fn wait_sink_committed(
    bootstrap: &str,
    group: &str,
    topic: &str,
    partitions: i32,
    p: &Process,
) {
    let deadline = std::time::Instant::now() + 2 * T;
    loop {
        let ends = end_offsets(bootstrap, topic, partitions);
        let committed = committed_offsets_or_down(bootstrap, group, topic, partitions);
        if committed
            .iter()
            .zip(&ends)
            .all(|(c, e)| *c == *e || (*c == -1 && *e == 0))
        {
            return;
        }
        if std::time::Instant::now() > deadline {
            let log = p.log();
            let tail: Vec<&str> = log.lines().rev().take(80).collect();
            panic!(
                "{group} did not commit all of {topic} within {:?}: committed {committed:?}, ends {ends:?}; last log lines:\n{}",
                2 * T,
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A broker of this test alone, stoppable and restartable on the same port and data directory.
pub struct RestartableBroker {
    pub bootstrap: String,
    port: u16,
    dir: tempfile::TempDir,
    pid: Option<u32>,
    exited: Option<mpsc::Receiver<()>>,
}

impl RestartableBroker {
    pub fn start() -> RestartableBroker {
        let port = free_port();
        let mut b = RestartableBroker {
            bootstrap: format!("127.0.0.1:{port}"),
            port,
            dir: tempfile::tempdir().unwrap(),
            pid: None,
            exited: None,
        };
        b.spawn();
        b
    }

    fn spawn(&mut self) {
        let bin = std::env::var("KAFKA_BROKER_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|_| {
                let out = Command::new(format!("{REPO}/scripts/kafka-broker.sh"))
                    .arg("bin")
                    .output()
                    .unwrap();
                PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
            });
        let (pid_tx, pid_rx) = mpsc::channel();
        let (exit_tx, exit_rx) = mpsc::channel();
        let dir = self.dir.path().to_path_buf();
        let port = self.port;
        // A thread that lives as long as the broker, so PR_SET_PDEATHSIG fires only when it ends.
        std::thread::spawn(move || {
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join("broker.log"))
                .unwrap();
            let listener = format!("tcp://127.0.0.1:{port}");
            let mut cmd = Command::new(&bin);
            cmd.current_dir(&dir)
                .env_remove("STORAGE_ENGINE")
                .env_remove("LISTENER_URL")
                .env_remove("ADVERTISED_LISTENER_URL")
                .args([
                    "broker",
                    "--listener-url",
                    &listener,
                    "--advertised-listener-url",
                    &listener,
                    "--storage-engine",
                    "sqlite://broker.db",
                ])
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log);
            unsafe {
                cmd.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                    Ok(())
                });
            }
            let mut child = cmd.spawn().expect("start the broker");
            pid_tx.send(child.id()).unwrap();
            let _ = child.wait();
            let _ = exit_tx.send(());
        });
        self.pid = Some(pid_rx.recv().unwrap());
        self.exited = Some(exit_rx);
        let bootstrap = self.bootstrap.clone();
        let c: rdkafka::consumer::BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("log_level", "3")
            .create()
            .unwrap();
        use rdkafka::consumer::Consumer;
        wait_until("the broker to answer Metadata", T, || {
            c.fetch_metadata(None, Duration::from_millis(500)).is_ok()
        });
    }

    /// SIGTERM, and wait until the process is gone.
    pub fn stop(&mut self) {
        if let Some(pid) = self.pid.take() {
            unsafe {
                libc::kill(pid as i32, libc::SIGTERM);
            }
            if let Some(rx) = self.exited.take() {
                if rx.recv_timeout(Duration::from_secs(20)).is_err() {
                    unsafe {
                        libc::kill(pid as i32, libc::SIGKILL);
                    }
                    let _ = rx.recv_timeout(Duration::from_secs(20));
                }
            }
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for RestartableBroker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A small tmpfs (root only) for the full-file-system scenario; unmounted on drop.
pub struct SmallTmpfs {
    pub path: PathBuf,
    _dir: tempfile::TempDir,
}

impl SmallTmpfs {
    pub fn mount(size: &str) -> Option<SmallTmpfs> {
        let dir = tempfile::tempdir().ok()?;
        let path = dir.path().join("fs");
        std::fs::create_dir(&path).ok()?;
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(SmallTmpfs { path, _dir: dir })
    }

    /// Writes a filler file until the file system is full.
    pub fn fill(&self) {
        use std::io::Write;
        let mut f = std::fs::File::create(self.path.join("filler")).unwrap();
        let block = vec![0u8; 4096];
        while f.write_all(&block).is_ok() {}
        let _ = f.sync_all();
    }

    pub fn free(&self) {
        let _ = std::fs::remove_file(self.path.join("filler"));
    }
}

impl Drop for SmallTmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}
