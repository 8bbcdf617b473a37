//! `bench soak` (also `bench --soak` / `bench --long`): memory over a long run.
//!
//! * Source: N events (default 1,000,000) generated at a steady `--rate` (default 20,000/s) while
//!   iotconnect's source (in-process, JsonConverter without schemas) writes them to Kafka; this
//!   process's resident memory is sampled every 100 ms: peak (VmHWM), after 10% of the events and at
//!   the end. The emulator and the broker are separate processes and not counted.
//! * Sink: M C2D messages (default 200,000) to D devices (default 5,000, so 40 per device: under IoT
//!   Hub's 50-message device queue) through the sink, the emulator again in a child process.
//!
//! Prints a table and one JSON line with `soak_rss_mb` (the source's peak).

use crate::source::{run_iotconnect, write_configs, Conv, RunSpec};
use crate::sys;
use crate::{create_topic, Broker, EmulatorChild, Opts};
use std::time::{Duration, Instant};

pub struct SoakOpts {
    pub events: u64,
    pub rate: u64,
    pub c2d_messages: u64,
    pub c2d_devices: u64,
}

struct Rss {
    at_10pct: f64,
    end: f64,
    peak: f64,
}

async fn source_soak(o: &Opts, s: &SoakOpts) -> anyhow::Result<(Rss, sys::Measured)> {
    let dir = tempfile::tempdir()?;
    let broker = Broker::start(&dir.path().join("broker"))?;
    let eo = Opts {
        events: s.events,
        ..o.clone()
    };
    let emu = EmulatorChild::start(&eo)?;
    create_topic(&broker.addr, "soak-source", o.partitions as i32).await?;
    let spec = RunSpec {
        name: "soak",
        topic: "soak-source",
        conv: Conv::Json,
        batch: 500,
        extra: "",
    };
    let (w, c) = write_configs(dir.path(), &broker.addr, &emu, &spec)?;
    let emu_ref = &emu;
    let (rate, size, devices, total) = (s.rate, o.size, o.devices, s.events);
    let mut rss = Rss {
        at_10pct: 0.0,
        end: 0.0,
        peak: 0.0,
    };
    let sampler_stop = tokio_util::sync::CancellationToken::new();
    let stop2 = sampler_stop.clone();
    let sampler = tokio::spawn(async move {
        let mut max = 0.0f64;
        let mut t = tokio::time::interval(Duration::from_millis(100));
        loop {
            tokio::select! {
                _ = stop2.cancelled() => return max,
                _ = t.tick() => max = max.max(sys::rss_mb()),
            }
        }
    });
    sys::reset_peak_rss();
    eprintln!("source soak: {total} events at {rate}/s ...");
    let m = run_iotconnect(
        &w,
        &c,
        total,
        async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            // 10 ms steps; a step that falls behind is caught up by the next ones.
            let per_tick = (rate / 100).max(1);
            let t0 = Instant::now();
            let mut sent = 0u64;
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            while sent < total {
                tick.tick().await;
                let due = ((t0.elapsed().as_secs_f64() * rate as f64) as u64 + per_tick).min(total);
                if due > sent {
                    emu_ref.generate(due - sent, size, devices).await?;
                    sent = due;
                }
            }
            Ok(())
        },
        |acked| {
            if rss.at_10pct == 0.0 && acked >= total / 10 {
                rss.at_10pct = sys::rss_mb();
            }
            if acked >= total {
                rss.end = sys::rss_mb();
            }
        },
    )
    .await?;
    sampler_stop.cancel();
    let sampled = sampler.await.unwrap_or(0.0);
    rss.peak = sys::peak_rss_mb().max(sampled);
    drop(emu);
    drop(broker);
    Ok((rss, m))
}

async fn c2d_accepted(http: &str) -> anyhow::Result<u64> {
    let v: serde_json::Value = reqwest::get(format!("{http}/emulator/stats"))
        .await?
        .json()
        .await?;
    Ok(v.get("c2dAccepted")
        .or_else(|| v.get("c2d_accepted"))
        .and_then(|x| x.as_u64())
        .unwrap_or(0))
}

async fn sink_soak(o: &Opts, s: &SoakOpts) -> anyhow::Result<(Rss, sys::Measured)> {
    let dir = tempfile::tempdir()?;
    let broker = Broker::start(&dir.path().join("broker"))?;
    let emu = EmulatorChild::start(o)?;
    let topic = "iotout-soak";
    create_topic(&broker.addr, topic, 4).await?;
    eprintln!(
        "sink soak: filling {topic} with {} records for {} devices ...",
        s.c2d_messages, s.c2d_devices
    );
    crate::sink::fill(&broker.addr, topic, s.c2d_messages, s.c2d_devices, "k").await;
    let w = dir.path().join("sink-worker.properties");
    std::fs::write(
        &w,
        format!(
            "bootstrap.servers={}\n\
             key.converter=org.apache.kafka.connect.storage.StringConverter\n\
             value.converter=org.apache.kafka.connect.storage.StringConverter\n\
             offset.storage.file.filename={}/connect.offsets\n\
             offset.flush.interval.ms=1000\n\
             listeners=http://127.0.0.1:0\n",
            broker.addr,
            dir.path().display()
        ),
    )?;
    let c = dir.path().join("sink.properties");
    std::fs::write(
        &c,
        format!(
            "name=soak-sink\nconnector.class=IotHubSinkConnector\ntasks.max=1\ntopics={topic}\n\
             IotHub.ConnectionString={}\nIotHub.CustomEndpoint={}\n",
            emu.get("serviceConnectionString"),
            emu.get("amqpEndpoint")
        ),
    )?;
    let loaded = iotconnect::config::load_all(&w, &[c])
        .map_err(|e| anyhow::anyhow!("config: {}", e.problems))?;
    let http = emu.get("httpEndpoint");
    let base = c2d_accepted(&http).await?;
    sys::reset_peak_rss();
    let meter = sys::Meter::start();
    let worker = iotconnect::start_standalone_worker(loaded, "soak".into()).await?;
    let mut rss = Rss {
        at_10pct: 0.0,
        end: 0.0,
        peak: 0.0,
    };
    let deadline = Instant::now() + Duration::from_secs(1800);
    loop {
        let done = c2d_accepted(&http).await? - base;
        let now = sys::rss_mb();
        rss.peak = rss.peak.max(now);
        if rss.at_10pct == 0.0 && done >= s.c2d_messages / 10 {
            rss.at_10pct = now;
        }
        if done >= s.c2d_messages {
            rss.end = now;
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "sink soak: {done} of {} after 30 minutes",
            s.c2d_messages
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let m = meter.stop(s.c2d_messages);
    let _ = worker.stop().await;
    rss.peak = rss.peak.max(sys::peak_rss_mb());
    drop(emu);
    drop(broker);
    Ok((rss, m))
}

pub async fn run(o: Opts, s: SoakOpts) -> anyhow::Result<()> {
    let (src, sm) = source_soak(&o, &s).await?;
    eprintln!(
        "source soak: {:.0} events/s, RSS {:.1} MB at 10%, {:.1} MB at the end, peak {:.1} MB",
        sm.per_s(),
        src.at_10pct,
        src.end,
        src.peak
    );
    let (snk, km) = sink_soak(&o, &s).await?;
    println!("| soak | messages | rate/s | RSS at 10% | RSS at the end | peak RSS | load |");
    println!("|---|---|---|---|---|---|---|");
    println!(
        "| source (steady {}/s offered) | {} | {:.0} | {:.1} MB | {:.1} MB | {:.1} MB | {:.2} |",
        s.rate,
        s.events,
        sm.per_s(),
        src.at_10pct,
        src.end,
        src.peak,
        sm.load
    );
    println!(
        "| sink ({} devices) | {} | {:.0} | {:.1} MB | {:.1} MB | {:.1} MB | {:.2} |",
        s.c2d_devices,
        s.c2d_messages,
        km.per_s(),
        snk.at_10pct,
        snk.end,
        snk.peak,
        km.load
    );
    let r1 = |x: f64| (x * 10.0).round() / 10.0;
    let json = serde_json::json!({
        "bench": "soak",
        "events": s.events,
        "rate": s.rate,
        "events_per_s": sm.per_s().round(),
        "soak_rss_mb": r1(src.peak),
        "soak_rss_10pct_mb": r1(src.at_10pct),
        "soak_rss_end_mb": r1(src.end),
        "c2d_messages": s.c2d_messages,
        "c2d_devices": s.c2d_devices,
        "c2d_per_s": km.per_s().round(),
        "sink_soak_rss_mb": r1(snk.peak),
        "sink_soak_rss_10pct_mb": r1(snk.at_10pct),
        "sink_soak_rss_end_mb": r1(snk.end),
    });
    println!("{json}");
    Ok(())
}
