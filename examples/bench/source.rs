//! `bench source`: iotconnect's IoT Hub source against the two raw parts it is made of.
//!
//! Two sessions, each with its own broker (memory storage) and emulator child filled with N events:
//! * **pinned** (machines with ≥ 2 cores): the broker and the emulator on core 0, everything measured
//!   on core 1: iotconnect's source (s), a bare `azure_messaging_eventhubs` reader draining the same
//!   events (r) and a bare rdkafka producer with the source's producer settings writing records of
//!   the same bytes (p). One core does all of iotconnect's work, so `1/(1/r + 1/p)` is what its parts
//!   allow on one core (the ceiling) and `s / ceiling` is iotconnect's own efficiency. The tutorial's
//!   settings (StringConverter, `BatchSize=5`) are run here too, against StringConverter with
//!   `BatchSize=500`.
//! * **unpinned**: everything on both cores (the figures the README always had) plus a paced run for
//!   the enqueue → Kafka-ack latency.
//!
//! CPU per event is this process's user + sys time (all threads) over the phase, divided by its
//! events; the emulator and the broker run in other processes and are not counted.

use crate::sys::{self, Measured, Meter};
use crate::{create_topic, Broker, EmulatorChild, Opts};
use azure_messaging_eventhubs::{
    ConsumerClient, OpenReceiverOptions, StartLocation, StartPosition,
};
use futures::StreamExt;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Which converter the worker file sets.
#[derive(Clone, Copy)]
pub enum Conv {
    /// JsonConverter, `schemas.enable=false` (the bench's default).
    Json,
    /// StringConverter for key and value (HDInsight tutorial).
    String,
}

pub struct RunSpec<'a> {
    pub name: &'a str,
    pub topic: &'a str,
    pub conv: Conv,
    pub batch: usize,
    pub extra: &'a str,
}

pub fn write_configs(
    dir: &Path,
    bootstrap: &str,
    emu: &EmulatorChild,
    spec: &RunSpec,
) -> anyhow::Result<(PathBuf, PathBuf)> {
    let name = spec.name;
    let w = dir.join(format!("{name}-worker.properties"));
    let conv = match spec.conv {
        Conv::Json => {
            "key.converter=org.apache.kafka.connect.json.JsonConverter\n\
             value.converter=org.apache.kafka.connect.json.JsonConverter\n\
             key.converter.schemas.enable=false\n\
             value.converter.schemas.enable=false\n"
        }
        Conv::String => {
            "key.converter=org.apache.kafka.connect.storage.StringConverter\n\
             value.converter=org.apache.kafka.connect.storage.StringConverter\n"
        }
    };
    std::fs::write(
        &w,
        format!(
            "bootstrap.servers={bootstrap}\n{conv}\
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
             Kafka.Topic={}\n\
             IotHub.ConnectionString={}\n\
             IotHub.CustomEndpoint={}\n\
             BatchSize={}\n\
             ReceiveTimeout=5\n{}",
            spec.topic,
            emu.get("eventHubConnectionString"),
            emu.get("amqpEndpoint"),
            spec.batch,
            spec.extra,
        ),
    )?;
    Ok((w, c))
}

/// Runs iotconnect's standalone worker in-process until `target` records were acknowledged; `during`
/// runs meanwhile (the paced generator). `on_progress` sees the acknowledged count every ~100 ms.
pub async fn run_iotconnect(
    worker: &Path,
    connector: &Path,
    target: u64,
    during: impl std::future::Future<Output = anyhow::Result<()>>,
    mut on_progress: impl FnMut(u64),
) -> anyhow::Result<Measured> {
    let loaded = iotconnect::config::load_all(worker, &[connector.to_path_buf()])
        .map_err(|e| anyhow::anyhow!("config: {}", e.problems))?;
    iotconnect::source::metrics::reset();
    let meter = Meter::start();
    let w = iotconnect::start_standalone_worker(loaded, "bench".into()).await?;
    during.await?;
    let deadline = Instant::now() + Duration::from_secs(1800);
    let mut last_report = Instant::now();
    while iotconnect::source::metrics::acked() < target {
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {} of {target} records acknowledged after 30 minutes",
            iotconnect::source::metrics::acked()
        );
        if last_report.elapsed() >= Duration::from_millis(100) {
            on_progress(iotconnect::source::metrics::acked());
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let m = meter.stop(target);
    on_progress(target);
    let _ = w.stop().await;
    Ok(m)
}

async fn raw_reader(emu: &EmulatorChild, partitions: u32, total: u64) -> anyhow::Result<Measured> {
    let count = Arc::new(AtomicU64::new(0));
    let meter = Meter::start();
    let mut tasks = Vec::new();
    for p in 0..partitions {
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
    Ok(meter.stop(count.load(Ordering::Relaxed).min(total)))
}

/// One value iotconnect wrote (the raw producer sends records of the same bytes).
async fn sample_value(bootstrap: &str, topic: &str) -> anyhow::Result<Vec<u8>> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{Message, Offset, TopicPartitionList};
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "bench-sample")
        .set("enable.auto.commit", "false")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)?;
    c.assign(&tpl)?;
    tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            match c.poll(Duration::from_millis(500)) {
                Some(Ok(m)) => return Ok(m.payload().unwrap_or_default().to_vec()),
                Some(Err(e)) => anyhow::bail!("sample read: {e}"),
                None => {}
            }
        }
        anyhow::bail!("no record to sample in 20 s")
    })
    .await?
}

/// A bare rdkafka producer with the source task's producer settings (the same layering function),
/// sending `n` copies of `payload`.
async fn raw_producer(
    worker: &Path,
    connector: &Path,
    topic: &str,
    n: u64,
    payload: &[u8],
) -> anyhow::Result<Measured> {
    let loaded = iotconnect::config::load_all(worker, &[connector.to_path_buf()])
        .map_err(|e| anyhow::anyhow!("config: {}", e.problems))?;
    let settings =
        iotconnect::config::kafka::producer_settings(&loaded.worker, &loaded.connectors[0], 0)
            .map_err(|e| anyhow::anyhow!("producer settings: {e}"))?;
    let p: FutureProducer = settings.config.create()?;
    let meter = Meter::start();
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
    for _ in 0..n {
        loop {
            match p.send_result(FutureRecord::<[u8], [u8]>::to(topic).payload(payload)) {
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
    let got = waiter.await??;
    anyhow::ensure!(got == n);
    Ok(meter.stop(n))
}

/// The figures of one session.
#[derive(Default)]
pub struct Session {
    pub s: Measured,
    pub r: Measured,
    pub p: Measured,
    pub value_bytes: usize,
    /// StringConverter with BatchSize=500 and =5 (pinned session only).
    pub string_500: Option<Measured>,
    pub string_5: Option<Measured>,
    pub p50_ms: u64,
    pub p99_ms: u64,
    pub peak_rss_mb: f64,
}

impl Session {
    pub fn ceiling(&self) -> f64 {
        1.0 / (1.0 / self.r.per_s() + 1.0 / self.p.per_s())
    }
    pub fn raw_cpu_us(&self) -> f64 {
        self.r.cpu_us() + self.p.cpu_us()
    }
}

fn show(what: &str, m: &Measured) {
    eprintln!(
        "  {what}: {} in {:.2} s = {:.0}/s, {:.1} µs CPU each (load {:.2})",
        m.events,
        m.wall.as_secs_f64(),
        m.per_s(),
        m.cpu_us(),
        m.load
    );
}

/// One session: services on `service_cores`, measured code on `measured_cores`.
pub async fn session(
    o: &Opts,
    service_cores: &[usize],
    measured_cores: &[usize],
    pinned: bool,
) -> anyhow::Result<Session> {
    let dir = tempfile::tempdir()?;
    sys::pin_self(service_cores)?;
    let broker = Broker::start(&dir.path().join("broker"))?;
    let emu = EmulatorChild::start(o)?;
    sys::pin_self(measured_cores)?;
    eprintln!(
        "[{}] services on cores {service_cores:?}, measured on {measured_cores:?}; filling the hub with {} events of {} B over {} partitions ...",
        if pinned { "pinned" } else { "unpinned" },
        o.events,
        o.size,
        o.partitions
    );
    emu.generate(o.events, o.size, o.devices).await?;
    let mut out = Session::default();
    let np = o.partitions as i32;

    // iotconnect, JsonConverter without schemas, BatchSize=500 (plus `BENCH_SOURCE_EXTRA`: connector
    // properties separated by `;`, e.g. `producer.override.linger.ms=20`).
    create_topic(&broker.addr, "bench-source", np).await?;
    let extra = std::env::var("BENCH_SOURCE_EXTRA")
        .map(|e| format!("{}\n", e.replace(';', "\n")))
        .unwrap_or_default();
    let main_spec = RunSpec {
        name: "bench",
        topic: "bench-source",
        conv: Conv::Json,
        batch: 500,
        extra: &extra,
    };
    let (w, c) = write_configs(dir.path(), &broker.addr, &emu, &main_spec)?;
    sys::reset_peak_rss();
    out.s = run_iotconnect(&w, &c, o.events, async { Ok(()) }, |_| {}).await?;
    out.peak_rss_mb = sys::peak_rss_mb();
    show("iotconnect", &out.s);
    if o.only_iotconnect {
        return Ok(out);
    }

    if pinned && o.tutorial {
        for (batch, slot) in [(500usize, 0), (5, 1)] {
            let topic = format!("bench-string-{batch}");
            create_topic(&broker.addr, &topic, np).await?;
            let spec = RunSpec {
                name: &format!("string{batch}"),
                topic: &topic,
                conv: Conv::String,
                batch,
                extra: "",
            };
            let (w, c) = write_configs(dir.path(), &broker.addr, &emu, &spec)?;
            let m = run_iotconnect(&w, &c, o.events, async { Ok(()) }, |_| {}).await?;
            show(&format!("iotconnect StringConverter BatchSize={batch}"), &m);
            if slot == 0 {
                out.string_500 = Some(m);
            } else {
                out.string_5 = Some(m);
            }
        }
    }

    if !pinned && o.paced_seconds > 0 {
        // Paced run for latency: start at the end of every partition, then send at `rate`.
        create_topic(&broker.addr, "bench-paced", np).await?;
        let latest = vec!["@latest"; o.partitions as usize].join(",");
        let extra = format!("IotHub.Offsets={latest}\n");
        let spec = RunSpec {
            name: "paced",
            topic: "bench-paced",
            conv: Conv::Json,
            batch: 500,
            extra: &extra,
        };
        let (w2, c2) = write_configs(dir.path(), &broker.addr, &emu, &spec)?;
        let paced_total = o.rate * o.paced_seconds;
        iotconnect::source::metrics::enable_latency();
        let emu_ref = &emu;
        let (rate, size, devices, secs) = (o.rate, o.size, o.devices, o.paced_seconds);
        run_iotconnect(
            &w2,
            &c2,
            paced_total,
            async move {
                // Let the links attach (they start at @latest), then pace in 10 ms steps.
                tokio::time::sleep(Duration::from_secs(2)).await;
                let per_tick = (rate / 100).max(1);
                let mut tick = tokio::time::interval(Duration::from_millis(10));
                for _ in 0..(secs * 100) {
                    tick.tick().await;
                    emu_ref.generate(per_tick, size, devices).await?;
                }
                Ok(())
            },
            |_| {},
        )
        .await?;
        out.p50_ms = iotconnect::source::metrics::latency_quantile_ms(0.50).unwrap_or(0);
        out.p99_ms = iotconnect::source::metrics::latency_quantile_ms(0.99).unwrap_or(0);
        eprintln!(
            "  paced {rate}/s: p50 {} ms, p99 {} ms",
            out.p50_ms, out.p99_ms
        );
    }

    // The raw parts.
    out.r = raw_reader(&emu, o.partitions, o.events).await?;
    show("raw reader", &out.r);
    let payload = match sample_value(&broker.addr, "bench-source").await {
        Ok(v) => v,
        Err(e) => {
            eprintln!(
                "  (could not read back a record, {e:#}; the raw producer sends {} B)",
                o.size
            );
            vec![b'x'; o.size]
        }
    };
    out.value_bytes = payload.len();
    create_topic(&broker.addr, "bench-raw", np).await?;
    out.p = raw_producer(&w, &c, "bench-raw", o.events, &payload).await?;
    show(
        &format!("raw producer ({} B values)", payload.len()),
        &out.p,
    );
    drop(emu);
    drop(broker);
    sys::pin_self(&sys::all_cores())?;
    Ok(out)
}

fn r0(x: f64) -> f64 {
    x.round()
}
fn r1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}
fn r2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn table(title: &str, s: &Session) {
    println!("\n**{title}**\n");
    println!("| measure | events/s | CPU µs/event | load (1 min) |");
    println!("|---|---|---|---|");
    let row = |what: &str, m: &Measured| {
        println!(
            "| {what} | {:.0} | {:.1} | {:.2} |",
            m.per_s(),
            m.cpu_us(),
            m.load
        )
    };
    row("iotconnect source (JsonConverter, BatchSize=500)", &s.s);
    if let Some(m) = &s.string_500 {
        row("iotconnect source (StringConverter, BatchSize=500)", m);
    }
    if let Some(m) = &s.string_5 {
        row(
            "iotconnect source (tutorial: StringConverter, BatchSize=5)",
            m,
        );
    }
    row("bare azure_messaging_eventhubs reader (r)", &s.r);
    row(
        &format!(
            "bare rdkafka producer, source settings, {} B values (p)",
            s.value_bytes
        ),
        &s.p,
    );
    println!(
        "| ceiling 1/(1/r+1/p) | {:.0} | {:.1} (r+p) | |",
        s.ceiling(),
        s.raw_cpu_us()
    );
    println!(
        "| iotconnect / ceiling | {:.2} | {:.2}× the raw parts' CPU | |",
        s.s.per_s() / s.ceiling(),
        s.s.cpu_us() / s.raw_cpu_us()
    );
}

pub async fn run(o: Opts) -> anyhow::Result<()> {
    let n = sys::cores();
    if o.only_iotconnect {
        let s = session(&o, &[0], &[1.min(n - 1)], true).await?;
        println!(
            "{}",
            serde_json::json!({"bench": "source-only", "events_per_s": r0(s.s.per_s()), "cpu_us_per_event": r1(s.s.cpu_us()), "load1": r2(s.s.load)})
        );
        return Ok(());
    }
    let pinned = if n >= 2 && !o.no_pin {
        Some(session(&o, &[0], &[1], true).await?)
    } else {
        eprintln!("(fewer than 2 cores or --no-pin: no pinned session)");
        None
    };
    let all = sys::all_cores();
    let un = session(&o, &all, &all, false).await?;
    let mb = (o.events as f64 * o.size as f64) / 1e6;

    if let Some(p) = &pinned {
        table(
            "Pinned: broker + emulator on core 0, the measured code on core 1",
            p,
        );
    }
    table("Unpinned: everything on both cores", &un);
    println!(
        "\n| p50 / p99 enqueue→ack at {}/s (unpinned) | {} / {} ms |",
        o.rate, un.p50_ms, un.p99_ms
    );
    println!(
        "| peak RSS of the bench process during the unpinned iotconnect run (incl. heap kept from earlier phases) | {:.1} MB |",
        un.peak_rss_mb
    );
    let eps = un.s.per_s();
    let ratio = eps / un.r.per_s().min(un.p.per_s());
    let base = pinned.as_ref().unwrap_or(&un);
    let mut json = serde_json::json!({
        "bench": "source",
        "events": o.events,
        "events_per_s": r0(eps),
        "mb_per_s": r1(mb / un.s.wall.as_secs_f64()),
        "p50_ms": un.p50_ms,
        "p99_ms": un.p99_ms,
        "peak_rss_mb": r1(un.peak_rss_mb),
        "raw_reader_events_per_s": r0(un.r.per_s()),
        "raw_producer_events_per_s": r0(un.p.per_s()),
        "ratio": r2(ratio),
        "pinned": pinned.is_some(),
        "pinned_events_per_s": r0(base.s.per_s()),
        "pinned_raw_reader_events_per_s": r0(base.r.per_s()),
        "pinned_raw_producer_events_per_s": r0(base.p.per_s()),
        "ceiling": r0(base.ceiling()),
        "ratio_to_ceiling": r2(base.s.per_s() / base.ceiling()),
        "cpu_us_per_event": r1(base.s.cpu_us()),
        "raw_cpu_us_per_event": r1(base.raw_cpu_us()),
        "raw_reader_cpu_us_per_event": r1(base.r.cpu_us()),
        "raw_producer_cpu_us_per_event": r1(base.p.cpu_us()),
        "unpinned_cpu_us_per_event": r1(un.s.cpu_us()),
        "load1": r2(base.s.load),
        "soak_rss_mb": serde_json::Value::Null,
    });
    if let (Some(a), Some(b)) = (base.string_500.as_ref(), base.string_5.as_ref()) {
        json["string_batch500_events_per_s"] = r0(a.per_s()).into();
        json["tutorial_events_per_s"] = r0(b.per_s()).into();
        json["tutorial_cpu_us_per_event"] = r1(b.cpu_us()).into();
    }
    println!("{json}");
    Ok(())
}
