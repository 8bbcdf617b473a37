//! Benchmarks: `cargo run --release --example bench -- source [--events N --size B --partitions P]`.
//!
//! `source` mode:
//! 1. starts a Kafka-protocol broker with memory storage (`scripts/kafka-broker.sh`,
//!    `KAFKA_STORAGE=memory://bench/`, a free port) and the IoT Hub emulator (as a child process, so
//!    its event store does not count in iotconnect's memory), and fills the hub with N events;
//! 2. runs the IoT Hub source in-process (the library's standalone worker) until Kafka acknowledged
//!    all N events: events/s, MB/s (event bodies), peak RSS of this process;
//! 3. a paced run: new events at `--rate` (10k/s) for `--paced-seconds`, latency from the event's
//!    enqueued time to the Kafka acknowledgement (p50/p99);
//! 4. the two raw parts: a bare `azure_messaging_eventhubs` reader draining the N events (all
//!    partitions concurrently), and a bare rdkafka producer writing N records of the same size with the
//!    same producer settings;
//! 5. prints a table and, as its last line, one JSON object.
//!
//! The structure leaves room for a `sink` mode beside `source` (see `main`).

mod raw_c2d;
mod sink;

use azure_messaging_eventhubs::{
    ConsumerClient, OpenReceiverOptions, StartLocation, StartPosition,
};
use futures::StreamExt;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Opts {
    events: u64,
    size: usize,
    partitions: u32,
    devices: u32,
    rate: u64,
    paced_seconds: u64,
}

fn parse(args: &[String]) -> anyhow::Result<Opts> {
    let mut o = Opts {
        events: 200_000,
        size: 1024,
        partitions: 4,
        devices: 64,
        rate: 10_000,
        paced_seconds: 5,
    };
    let mut i = 0;
    while i < args.len() {
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
        Some("source") => rt.block_on(source(parse(&args[1..])?)),
        Some("sink") => {
            rt.block_on(sink::run());
            Ok(())
        }
        Some("emulator-child") => rt.block_on(emulator_child(parse(&args[1..])?)),
        _ => {
            eprintln!("usage: bench source [--events N --size B --partitions P --devices D --rate R --paced-seconds S]");
            eprintln!("       bench sink [--messages N --devices D --limited-messages M --bootstrap HOST:PORT]");
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
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/kafka-broker.sh");
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

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
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

fn write_configs(
    dir: &Path,
    name: &str,
    bootstrap: &str,
    emu: &EmulatorChild,
    topic: &str,
    extra: &str,
) -> anyhow::Result<(PathBuf, PathBuf)> {
    let w = dir.join(format!("{name}-worker.properties"));
    std::fs::write(
        &w,
        format!(
            "bootstrap.servers={bootstrap}\n\
             key.converter=org.apache.kafka.connect.json.JsonConverter\n\
             value.converter=org.apache.kafka.connect.json.JsonConverter\n\
             key.converter.schemas.enable=false\n\
             value.converter.schemas.enable=false\n\
             offset.storage.file.filename={}\n\
             offset.flush.interval.ms=1000\n\
             listeners=http://127.0.0.1:0\n",
            dir.join(format!("{name}.offsets")).display()
        ),
    )?;
    let c = dir.join(format!("{name}-source.properties"));
    std::fs::write(
        &c,
        format!(
            "name={name}\n\
             connector.class=com.microsoft.azure.iot.kafka.connect.source.IotHubSourceConnector\n\
             tasks.max=1\n\
             Kafka.Topic={topic}\n\
             IotHub.ConnectionString={}\n\
             IotHub.CustomEndpoint={}\n\
             BatchSize=500\n\
             ReceiveTimeout=5\n{extra}",
            emu.get("eventHubConnectionString"),
            emu.get("amqpEndpoint"),
        ),
    )?;
    Ok((w, c))
}

/// Runs iotconnect's standalone worker in-process until `target` records were acknowledged.
async fn run_iotconnect(
    worker: &Path,
    connector: &Path,
    target: u64,
    during: impl std::future::Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<Duration> {
    let loaded = iotconnect::config::load_all(worker, &[connector.to_path_buf()])
        .map_err(|e| anyhow::anyhow!("config: {}", e.problems))?;
    iotconnect::source::metrics::reset();
    let t0 = Instant::now();
    let w = iotconnect::start_standalone_worker(loaded, "bench".into()).await?;
    during.await?;
    let deadline = Instant::now() + Duration::from_secs(600);
    while iotconnect::source::metrics::acked() < target {
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {} of {target} records acknowledged after 10 minutes",
            iotconnect::source::metrics::acked()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let took = t0.elapsed();
    let _ = w.stop().await;
    Ok(took)
}

async fn raw_reader(emu: &EmulatorChild, o: &Opts, total: u64) -> anyhow::Result<Duration> {
    let count = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for p in 0..o.partitions {
        let cs = emu.get("eventHubConnectionString");
        let ep = emu.get("amqpEndpoint");
        let count = count.clone();
        tasks.push(tokio::spawn(async move {
            let client = ConsumerClient::builder()
                .with_custom_endpoint(ep)
                .open_with_connection_string(&cs, None)
                .await?;
            let rx = client
                .open_receiver_on_partition(
                    p.to_string(),
                    Some(OpenReceiverOptions {
                        start_position: Some(StartPosition {
                            location: StartLocation::Earliest,
                            inclusive: false,
                        }),
                        prefetch: Some(iotconnect::source::task::PREFETCH),
                        ..Default::default()
                    }),
                )
                .await?;
            let mut s = rx.stream_events();
            while count.load(Ordering::Relaxed) < total {
                match tokio::time::timeout(Duration::from_millis(500), s.next()).await {
                    Ok(Some(Ok(_))) => {
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Some(Err(e))) => return Err(anyhow::anyhow!("receive: {e}")),
                    Ok(None) => break,
                    Err(_) => {} // this partition is drained; others may still be reading
                }
            }
            drop(s);
            let _ = rx.close().await;
            let _ = client.close().await;
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(t0.elapsed())
}

async fn raw_producer(bootstrap: &str, topic: &str, o: &Opts) -> anyhow::Result<Duration> {
    let p: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("max.in.flight.requests.per.connection", "5")
        .set("linger.ms", "5")
        .create()?;
    let payload = vec![b'x'; o.size];
    let t0 = Instant::now();
    let (tx, mut rx) = tokio::sync::mpsc::channel(32_768);
    let waiter = tokio::spawn(async move {
        let mut n = 0u64;
        while let Some(d) = rx.recv().await {
            let d: rdkafka::producer::DeliveryFuture = d;
            d.await
                .map_err(|_| anyhow::anyhow!("canceled"))?
                .map_err(|(e, _)| anyhow::anyhow!("{e}"))?;
            n += 1;
        }
        anyhow::Ok(n)
    });
    for _ in 0..o.events {
        loop {
            match p.send_result(FutureRecord::<[u8], [u8]>::to(topic).payload(&payload)) {
                Ok(d) => {
                    tx.send(d).await?;
                    break;
                }
                Err((
                    rdkafka::error::KafkaError::MessageProduction(
                        rdkafka::types::RDKafkaErrorCode::QueueFull,
                    ),
                    _,
                )) => tokio::time::sleep(Duration::from_millis(1)).await,
                Err((e, _)) => anyhow::bail!("produce: {e}"),
            }
        }
    }
    drop(tx);
    let n = waiter.await??;
    anyhow::ensure!(n == o.events);
    Ok(t0.elapsed())
}

async fn source(o: Opts) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    eprintln!("starting the broker (memory storage) and the emulator ...");
    let broker = Broker::start(&dir.path().join("broker"))?;
    let emu = EmulatorChild::start(&o)?;
    eprintln!(
        "broker {} ; filling the hub with {} events of {} B over {} partitions ...",
        broker.addr, o.events, o.size, o.partitions
    );
    emu.generate(o.events, o.size, o.devices).await?;
    let mb = (o.events as f64 * o.size as f64) / 1e6;

    // 1. Throughput: drain the N events into Kafka.
    create_topic(&broker.addr, "bench-source", o.partitions as i32).await?;
    let (w, c) = write_configs(dir.path(), "bench", &broker.addr, &emu, "bench-source", "")?;
    let took = run_iotconnect(&w, &c, o.events, async { Ok(()) }).await?;
    let rss = peak_rss_mb();
    let eps = o.events as f64 / took.as_secs_f64();
    eprintln!(
        "iotconnect: {} events in {:.2} s = {:.0} events/s",
        o.events,
        took.as_secs_f64(),
        eps
    );

    // 2. Paced run for latency: start at the end of every partition, then send at `rate`.
    create_topic(&broker.addr, "bench-paced", o.partitions as i32).await?;
    let latest = vec!["@latest"; o.partitions as usize].join(",");
    let (w2, c2) = write_configs(
        dir.path(),
        "paced",
        &broker.addr,
        &emu,
        "bench-paced",
        &format!("IotHub.Offsets={latest}\n"),
    )?;
    let paced_total = o.rate * o.paced_seconds;
    iotconnect::source::metrics::enable_latency();
    let emu_ref = &emu;
    let rate = o.rate;
    let size = o.size;
    let devices = o.devices;
    let secs = o.paced_seconds;
    let _ = run_iotconnect(&w2, &c2, paced_total, async move {
        // Let the links attach (they start at @latest), then pace in 10 ms steps.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let per_tick = (rate / 100).max(1);
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        for _ in 0..(secs * 100) {
            tick.tick().await;
            emu_ref.generate(per_tick, size, devices).await?;
        }
        Ok(())
    })
    .await?;
    let p50 = iotconnect::source::metrics::latency_quantile_ms(0.50).unwrap_or(0);
    let p99 = iotconnect::source::metrics::latency_quantile_ms(0.99).unwrap_or(0);
    eprintln!("paced {rate}/s: p50 {p50} ms, p99 {p99} ms");

    // 3. The raw parts.
    let r = raw_reader(&emu, &o, o.events).await?;
    let reader_eps = o.events as f64 / r.as_secs_f64();
    create_topic(&broker.addr, "bench-raw", o.partitions as i32).await?;
    let p = raw_producer(&broker.addr, "bench-raw", &o).await?;
    let producer_eps = o.events as f64 / p.as_secs_f64();
    let ratio = eps / reader_eps.min(producer_eps);

    println!("| measure | value |");
    println!("|---|---|");
    println!(
        "| events ({} B, {} partitions) | {} |",
        o.size, o.partitions, o.events
    );
    println!("| iotconnect events/s (broker memory storage) | {eps:.0} |");
    println!(
        "| iotconnect MB/s (bodies) | {:.1} |",
        mb / took.as_secs_f64()
    );
    println!("| p50 / p99 enqueue→ack at {rate}/s | {p50} / {p99} ms |");
    println!("| peak RSS (worker in-process, emulator in a child) | {rss:.1} MB |");
    println!("| raw reader events/s | {reader_eps:.0} |");
    println!("| raw producer events/s (memory storage) | {producer_eps:.0} |");
    println!("| ratio to the slower raw part | {ratio:.2} |");
    let json = serde_json::json!({
        "bench": "source",
        "events": o.events,
        "events_per_s": eps.round(),
        "mb_per_s": (mb / took.as_secs_f64() * 10.0).round() / 10.0,
        "p50_ms": p50,
        "p99_ms": p99,
        "peak_rss_mb": (rss * 10.0).round() / 10.0,
        "raw_reader_events_per_s": reader_eps.round(),
        "raw_producer_events_per_s": producer_eps.round(),
        "ratio": (ratio * 100.0).round() / 100.0,
    });
    drop(emu);
    drop(broker);
    println!("{json}");
    Ok(())
}
