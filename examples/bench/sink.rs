//! Sink benchmark: `cargo run --release -p iotconnect-tests --example bench -- sink [--messages N] [--devices D]
//! [--bootstrap HOST:PORT] [--limited-messages M]`.
//!
//! 1. Starts the IoT Hub emulator in-process and, without `--bootstrap`, a broker
//!    (`scripts/kafka-broker.sh bin`, SQLite storage in a temp dir).
//! 2. Fills a fresh `iotout-…` topic (4 partitions) with N tutorial-shaped JSON records for D devices.
//! 3. Base: `raw_c2d::raw_send_rate` (bare fe2o3-amqp sender, same authentication, same window)
//!    sends N messages to D other devices.
//! 4. Runs the sink connector (the real worker, in-process) from the first to the last accepted
//!    message: sends/s, p50/p99 send latency (last transfer → settlement), peak RSS.
//! 5. Runs it again with `IotHub.C2D.MaxSendsPerSecond=500` over M records: the achieved rate and
//!    the most messages the hub received in any 1-second window.
//!
//! The last line is one JSON object.

use crate::raw_c2d::raw_send_rate;
use iotconnect::config::load_all;
use iotconnect::iothub::c2d::C2dOptions;
use iotconnect::iothub::connstr::IotHubConnectionString;
use iotconnect::sink::stats;
use iotconnect_emulator::{Emulator, EmulatorOptions};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Args {
    messages: u64,
    devices: u64,
    limited_messages: u64,
    bootstrap: Option<String>,
}

fn parse_args() -> Args {
    let mut a = Args {
        messages: 20_000,
        devices: 1_000,
        limited_messages: 3_000,
        bootstrap: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || it.next().unwrap_or_else(|| panic!("{k} needs a value"));
        match k.as_str() {
            "sink" => {}
            "--messages" => a.messages = v().parse().expect("--messages N"),
            "--devices" => a.devices = v().parse().expect("--devices D"),
            "--limited-messages" => a.limited_messages = v().parse().expect("--limited-messages M"),
            "--bootstrap" => a.bootstrap = Some(v()),
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

/// Peak resident set size of this process (VmHWM), MB.
fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A broker child process (ended by PID when dropped).
struct BrokerProc(Child, PathBuf);

impl Drop for BrokerProc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = std::fs::remove_dir_all(&self.1);
    }
}

fn start_broker() -> (String, BrokerProc) {
    let out = Command::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../scripts/kafka-broker.sh"
    ))
    .arg("bin")
    .stderr(Stdio::inherit())
    .output()
    .expect("scripts/kafka-broker.sh bin");
    assert!(out.status.success(), "scripts/kafka-broker.sh bin failed");
    let bin = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("iotconnect-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("tcp://127.0.0.1:{port}");
    let child = Command::new(bin)
        .current_dir(&dir)
        .args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
            "--storage-engine",
            "sqlite://broker.db",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the broker");
    (format!("127.0.0.1:{port}"), BrokerProc(child, dir))
}

async fn create_topic(bootstrap: &str, topic: &str) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = admin
            .create_topics(
                &[NewTopic::new(topic, 4, TopicReplication::Fixed(1))],
                &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
            )
            .await;
        match r {
            Ok(v) if v.iter().all(|x| x.is_ok()) => return,
            other if Instant::now() > deadline => panic!("create topic {topic}: {other:?}"),
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

pub(crate) async fn fill(bootstrap: &str, topic: &str, n: u64, devices: u64, prefix: &str) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "20")
        .set("enable.idempotence", "true")
        .create()
        .unwrap();
    let mut pending = futures::stream::FuturesUnordered::new();
    use futures::StreamExt;
    for j in 0..n {
        let v = format!(
            r#"{{"messageId":"{prefix}-{j}","message":"Turn On {j}","deviceId":"{prefix}-dev-{}"}}"#,
            j % devices
        );
        let key = format!("{prefix}-dev-{}", j % devices);
        let p = producer.clone();
        pending.push(async move {
            p.send(
                FutureRecord::to(topic).key(&key).payload(&v),
                Duration::from_secs(60),
            )
            .await
            .map(|_| ())
            .map_err(|(e, _)| e)
        });
        if pending.len() >= 2000 {
            pending.next().await.unwrap().expect("produce");
        }
    }
    while let Some(r) = pending.next().await {
        r.expect("produce");
    }
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// Runs one sink connector until the hub accepted `expect` more messages. Returns (first, last)
/// instants of progress as seen by polling the hub every 2 ms.
async fn run_sink(
    emu: &Emulator,
    dir: &Path,
    bootstrap: &str,
    name: &str,
    topic: &str,
    expect: u64,
    extra: &str,
) -> (Duration, u64) {
    let info = emu.info();
    let w = write(
        dir,
        &format!("{name}-worker.properties"),
        &format!(
            "bootstrap.servers={bootstrap}\n\
             key.converter=org.apache.kafka.connect.storage.StringConverter\n\
             value.converter=org.apache.kafka.connect.storage.StringConverter\n\
             offset.storage.file.filename={}/connect.offsets\n\
             offset.flush.interval.ms=1000\n\
             consumer.session.timeout.ms=6000\n\
             consumer.heartbeat.interval.ms=1000\n\
             listeners=http://127.0.0.1:{}\n",
            dir.display(),
            free_port()
        ),
    );
    let c = write(
        dir,
        &format!("{name}.properties"),
        &format!(
            "name={name}\nconnector.class=IotHubSinkConnector\ntasks.max=1\ntopics={topic}\n\
             IotHub.ConnectionString={}\nIotHub.CustomEndpoint={}\n{extra}",
            info.service_connection_string.expose(),
            info.amqp_endpoint
        ),
    );
    let loaded = load_all(&w, &[c]).unwrap_or_else(|e| panic!("config: {:?}", e.problems));
    let base = emu.stats().c2d_accepted;
    let worker = iotconnect::start_standalone_worker(loaded, "bench".into())
        .await
        .expect("worker starts");
    let mut first = None;
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let done = emu.stats().c2d_accepted - base;
        if done > 0 && first.is_none() {
            first = Some((Instant::now(), done));
        }
        if done >= expect {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "sink did not finish: {done} of {expect}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let end = Instant::now();
    let _ = worker.stop().await;
    let (t0, d0) = first.unwrap();
    (end - t0, expect - d0)
}

/// Enqueue times (epoch ms, sorted) of the hub's messages whose id starts with `prefix`.
fn hub_times(emu: &Emulator, prefix: &str) -> Vec<i64> {
    let mut t: Vec<i64> = emu
        .c2d_messages()
        .into_iter()
        .filter(|m| {
            m.message_id
                .as_deref()
                .is_some_and(|id| id.starts_with(prefix))
        })
        .map(|m| m.enqueued_ms)
        .collect();
    t.sort_unstable();
    t
}

/// How fast a bare consumer (same settings as the sink's) reads the topic: records/s.
async fn consumer_rate(bootstrap: &str, topic: &str, n: u64) -> f64 {
    use rdkafka::consumer::{Consumer, StreamConsumer};
    let c: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("bench-reader-{}", uuid::Uuid::new_v4()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "6000")
        .create()
        .unwrap();
    c.subscribe(&[topic]).unwrap();
    let mut got = 0u64;
    let mut t0 = None;
    while got < n {
        let m = c.recv().await.expect("read");
        let _ = m;
        if t0.is_none() {
            t0 = Some(Instant::now());
        }
        got += 1;
    }
    (n - 1) as f64 / t0.unwrap().elapsed().as_secs_f64()
}

/// `bench sink …`: the sink benchmark (runs inside the bench binary's runtime).
pub async fn run() {
    let args = parse_args();
    let (bootstrap, _broker) = match &args.bootstrap {
        Some(b) => (b.clone(), None),
        None => {
            let (b, p) = start_broker();
            (b, Some(p))
        }
    };
    let emu = Emulator::start(EmulatorOptions::default())
        .await
        .expect("emulator");
    let dir = tempfile::tempdir().unwrap();
    let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
    let topic = format!("iotout-bench-{run}");
    create_topic(&bootstrap, &topic).await;
    let t = Instant::now();
    fill(&bootstrap, &topic, args.messages, args.devices, "s").await;
    eprintln!(
        "filled {topic} with {} records in {:.1} s",
        args.messages,
        t.elapsed().as_secs_f64()
    );

    let read_rate = consumer_rate(&bootstrap, &topic, args.messages).await;
    eprintln!("bare Kafka consumer reads the topic at {read_rate:.0} records/s");

    // base: bare fe2o3-amqp sender, same endpoint and window
    let cs = IotHubConnectionString::parse(&iotconnect::config::Secret::new(
        emu.info().service_connection_string.expose(),
    ))
    .unwrap();
    let mut opts = C2dOptions::new(cs);
    opts.endpoint = Some(emu.info().amqp_endpoint.clone());
    let raw_devices: Vec<String> = (0..args.devices).map(|i| format!("raw-dev-{i}")).collect();
    let body = b"Turn On 12345".to_vec();
    let raw = raw_send_rate(&opts, args.messages, &raw_devices, &body, 64)
        .await
        .expect("raw sender");
    eprintln!(
        "raw fe2o3 sender: {} messages, {:.0}/s",
        raw.messages, raw.per_second
    );

    stats::record_latencies(true);
    let (elapsed, counted) = run_sink(
        &emu,
        dir.path(),
        &bootstrap,
        &format!("bench-sink-{run}"),
        &topic,
        args.messages,
        &std::env::var("BENCH_SINK_EXTRA")
            .unwrap_or_default()
            .replace(';', "\n"),
    )
    .await;
    stats::record_latencies(false);
    let _ = (elapsed, counted);
    // the rate between the first and the last message the hub enqueued
    let st = hub_times(&emu, "s-");
    let sends_per_s = (st.len() - 1) as f64 / ((st[st.len() - 1] - st[0]) as f64 / 1000.0);
    let mut lat = stats::take_latencies();
    let p50 = stats::quantile_ms(&mut lat, 0.5);
    let p99 = stats::quantile_ms(&mut lat, 0.99);
    let ratio = sends_per_s / raw.per_second;
    // The sink can go no faster than the slower of its two raw parts, measured in this same run.
    let slower = read_rate.min(raw.per_second);
    let ratio_to_slower = sends_per_s / slower;
    eprintln!(
        "sink: {} messages, {sends_per_s:.0} sends/s, p50 {p50:.2} ms, p99 {p99:.2} ms, ratio {ratio:.2}, to the slower raw part ({}) {ratio_to_slower:.2}",
        args.messages,
        if read_rate < raw.per_second { "Kafka consumer" } else { "C2D sender" }
    );

    // rate-limited run
    let ltopic = format!("iotout-limited-{run}");
    create_topic(&bootstrap, &ltopic).await;
    fill(
        &bootstrap,
        &ltopic,
        args.limited_messages,
        args.devices,
        "l",
    )
    .await;
    let before = emu.stats().c2d_accepted;
    let _ = before;
    run_sink(
        &emu,
        dir.path(),
        &bootstrap,
        &format!("bench-limited-{run}"),
        &ltopic,
        args.limited_messages,
        "IotHub.C2D.MaxSendsPerSecond=500\n",
    )
    .await;
    let times = hub_times(&emu, "l-");
    let span_s = (times[times.len() - 1] - times[0]) as f64 / 1000.0;
    let limited_rate = (times.len() - 1) as f64 / span_s;
    let mut max_window = 0usize;
    let mut lo = 0usize;
    for hi in 0..times.len() {
        while times[hi] - times[lo] >= 1000 {
            lo += 1;
        }
        max_window = max_window.max(hi - lo + 1);
    }
    eprintln!(
        "limited: {} messages at {limited_rate:.1}/s, max in any 1 s window {max_window}",
        times.len()
    );
    let peak = peak_rss_mb();
    eprintln!("peak RSS (whole bench process: emulator + broker clients + sink) {peak:.1} MB");
    let out = serde_json::json!({
        "bench": "sink",
        "messages": args.messages,
        "devices": args.devices,
        "sends_per_s": (sends_per_s * 10.0).round() / 10.0,
        "p50_ms": p50,
        "p99_ms": p99,
        "peak_rss_mb": (peak * 10.0).round() / 10.0,
        "raw_sender_per_s": (raw.per_second * 10.0).round() / 10.0,
        "ratio": (ratio * 1000.0).round() / 1000.0,
        "raw_consumer_per_s": read_rate.round(),
        "ratio_to_slower": (ratio_to_slower * 1000.0).round() / 1000.0,
        "load1": crate::sys::load1(),
        "limited_rate": (limited_rate * 10.0).round() / 10.0,
        "max_1s_window": max_window,
    });
    emu.shutdown().await;
    println!("| measure | value |");
    println!("|---|---|");
    println!("| sends/s accepted by the hub | {sends_per_s:.0} |");
    println!("| p50 / p99 send → accept | {p50:.2} / {p99:.2} ms |");
    println!("| bare Kafka consumer (same run) | {read_rate:.0} records/s |");
    println!(
        "| bare fe2o3 C2D sender (same run) | {:.0} /s |",
        raw.per_second
    );
    println!("| ratio to the slower raw part | {ratio_to_slower:.2} |");
    println!("| ratio to the bare sender | {ratio:.2} |");
    println!(
        "| MaxSendsPerSecond=500: rate / most in any 1 s | {limited_rate:.1} / {max_window} |"
    );
    println!("| peak RSS (bench process incl. emulator) | {peak:.1} MB |");
    println!("| load (1 min) | {:.2} |", crate::sys::load1());
    println!("{out}");
}
