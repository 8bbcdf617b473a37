//! Benchmarks (release build):
//! * `bench source [--events N --size B --partitions P --devices D --rate R --paced-seconds S
//!   --no-tutorial --no-pin]`: iotconnect's source against a bare Event Hubs reader and a bare
//!   rdkafka producer, pinned (services on core 0, measured code on core 1) and unpinned; events/s,
//!   CPU µs per event, the single-core ceiling, latency and RSS (see `source.rs`);
//! * `bench sink [--messages N --devices D --limited-messages M --bootstrap HOST:PORT]` (see `sink.rs`);
//! * `bench soak` (or `bench --soak` / `bench --long`) `[--events N --rate R --c2d-messages M
//!   --c2d-devices D]`: memory over 1,000,000 source events and 200,000 C2D messages (see `soak.rs`).
//!
//! The broker (`scripts/kafka-broker.sh`, memory storage, a free port) and the IoT Hub emulator
//! (this binary in `emulator-child` mode) run as child processes, so their CPU and memory are not
//! counted as iotconnect's. Every mode prints a table and, as its last line, one JSON object. The
//! bench measures; it asserts nothing.

mod raw_c2d;
mod sink;
mod soak;
mod source;
mod sys;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::ClientConfig;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

#[derive(Clone)]
struct Opts {
    events: u64,
    size: usize,
    partitions: u32,
    devices: u32,
    rate: u64,
    paced_seconds: u64,
    /// Also run the tutorial's settings (StringConverter, BatchSize=5) in the pinned session.
    tutorial: bool,
    /// Skip the pinned session.
    no_pin: bool,
    /// Only iotconnect's pinned run (for a profiler attached to this process).
    only_iotconnect: bool,
    c2d_messages: u64,
    c2d_devices: u64,
}

fn parse(args: &[String], soak: bool) -> anyhow::Result<Opts> {
    let mut o = Opts {
        events: if soak { 1_000_000 } else { 200_000 },
        size: 1024,
        partitions: 4,
        devices: 64,
        rate: if soak { 20_000 } else { 10_000 },
        paced_seconds: 5,
        tutorial: true,
        no_pin: false,
        only_iotconnect: false,
        c2d_messages: 200_000,
        c2d_devices: 5_000,
    };
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--no-tutorial" => {
                o.tutorial = false;
                i += 1;
                continue;
            }
            "--no-pin" => {
                o.no_pin = true;
                i += 1;
                continue;
            }
            "--only-iotconnect" => {
                o.only_iotconnect = true;
                i += 1;
                continue;
            }
            "--soak" | "--long" => {
                i += 1;
                continue;
            }
            _ => {}
        }
        let v = args
            .get(i + 1)
            .ok_or_else(|| anyhow::anyhow!("{} needs a value", args[i]))?;
        match args[i].as_str() {
            "--events" => o.events = v.parse()?,
            "--size" => o.size = v.parse()?,
            "--partitions" => o.partitions = v.parse()?,
            "--devices" => o.devices = v.parse()?,
            "--rate" => o.rate = v.parse()?,
            "--paced-seconds" => o.paced_seconds = v.parse()?,
            "--c2d-messages" => o.c2d_messages = v.parse()?,
            "--c2d-devices" => o.c2d_devices = v.parse()?,
            other => anyhow::bail!("unknown option {other}"),
        }
        i += 2;
    }
    Ok(o)
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match args.first().map(String::as_str) {
        Some("source") if args.iter().any(|a| a == "--soak" || a == "--long") => {
            let o = parse(&args[1..], true)?;
            let s = soak::SoakOpts {
                events: o.events,
                rate: o.rate,
                c2d_messages: o.c2d_messages,
                c2d_devices: o.c2d_devices,
            };
            rt.block_on(soak::run(o, s))
        }
        Some("source") => rt.block_on(source::run(parse(&args[1..], false)?)),
        Some("soak" | "--soak" | "--long") => {
            let o = parse(&args[1..], true)?;
            let s = soak::SoakOpts {
                events: o.events,
                rate: o.rate,
                c2d_messages: o.c2d_messages,
                c2d_devices: o.c2d_devices,
            };
            rt.block_on(soak::run(o, s))
        }
        Some("sink") => {
            rt.block_on(sink::run());
            Ok(())
        }
        Some("emulator-child") => rt.block_on(emulator_child(parse(&args[1..], false)?)),
        _ => {
            eprintln!("usage: bench source [--events N --size B --partitions P --devices D --rate R --paced-seconds S --no-tutorial --no-pin --only-iotconnect]");
            eprintln!("       bench sink [--messages N --devices D --limited-messages M --bootstrap HOST:PORT]");
            eprintln!("       bench soak [--events N --rate R --c2d-messages M --c2d-devices D]");
            std::process::exit(1);
        }
    }
}

/// The emulator in its own process: prints its connection info as one JSON line, runs until stdin
/// closes (the parent exited or is done).
async fn emulator_child(o: Opts) -> anyhow::Result<()> {
    let opts = iotconnect_emulator::EmulatorOptions {
        partitions: o.partitions,
        retention_events: (o.events as usize / o.partitions.max(1) as usize) * 2 + 1_000_000,
        ..Default::default()
    };
    let emu = iotconnect_emulator::Emulator::start(opts).await?;
    let info = serde_json::to_value(emu.info())?;
    println!("{info}");
    std::io::stdout().flush()?;
    tokio::task::spawn_blocking(|| {
        let mut s = String::new();
        while std::io::stdin()
            .read_line(&mut s)
            .map(|n| n > 0)
            .unwrap_or(false)
        {
            s.clear();
        }
    })
    .await?;
    emu.shutdown().await;
    Ok(())
}

struct Broker {
    data: PathBuf,
    script: PathBuf,
    addr: String,
}

impl Broker {
    fn start(data: &Path) -> anyhow::Result<Broker> {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/kafka-broker.sh");
        let out = Command::new("bash")
            .arg(&script)
            .arg("start")
            .env("KAFKA_PORT", "0")
            .env("KAFKA_STORAGE", "memory://bench/")
            .env("KAFKA_DATA_DIR", data)
            .stderr(Stdio::inherit())
            .output()?;
        anyhow::ensure!(out.status.success(), "the broker did not start");
        let addr = String::from_utf8(out.stdout)?.trim().to_string();
        Ok(Broker {
            data: data.to_path_buf(),
            script,
            addr,
        })
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(&self.script)
            .arg("stop")
            .env("KAFKA_DATA_DIR", &self.data)
            .status();
    }
}

struct EmulatorChild {
    child: Child,
    info: serde_json::Value,
}

impl EmulatorChild {
    fn start(o: &Opts) -> anyhow::Result<EmulatorChild> {
        let mut child = Command::new(std::env::current_exe()?)
            .args([
                "emulator-child",
                "--partitions",
                &o.partitions.to_string(),
                "--events",
                &o.events.to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line)?;
        let info: serde_json::Value = serde_json::from_str(&line)?;
        Ok(EmulatorChild { child, info })
    }
    fn get(&self, k: &str) -> String {
        self.info[k].as_str().unwrap_or_default().to_string()
    }
    async fn generate(&self, n: u64, size: usize, devices: u32) -> anyhow::Result<()> {
        let url = format!("{}/emulator/generate", self.get("httpEndpoint"));
        let c = reqwest::Client::new();
        let mut left = n;
        while left > 0 {
            let k = left.min(100_000);
            let r = c
                .post(&url)
                .json(&serde_json::json!({"events": k, "size": size, "devices": devices}))
                .send()
                .await?;
            anyhow::ensure!(r.status().is_success(), "generate failed: {}", r.status());
            left -= k;
        }
        Ok(())
    }
}

impl Drop for EmulatorChild {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

async fn create_topic(bootstrap: &str, topic: &str, partitions: i32) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()?;
    let r = admin
        .create_topics(
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        )
        .await?;
    for x in r {
        if let Err((t, e)) = x {
            anyhow::bail!("cannot create topic {t}: {e}");
        }
    }
    Ok(())
}
