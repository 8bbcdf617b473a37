//! Throughput of the Event Hub-compatible endpoint as a bare `azure_messaging_eventhubs` reader sees
//! it. Run in release:
//! `cargo test --release -p iotconnect-tests --test emulator -- --ignored --nocapture emulator_throughput::`.
//! Environment: `EMU_BENCH_EVENTS` (default 400000), `EMU_BENCH_SIZE` (default 1024),
//! `EMU_BENCH_PREFETCH` (link credit per partition receiver, default 1000).

use azure_messaging_eventhubs::{
    ConsumerClient, OpenReceiverOptions, StartLocation, StartPosition,
};
use futures::StreamExt;
use iotconnect_emulator::{Emulator, EmulatorOptions};
use std::time::{Duration, Instant};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run in release with --ignored"]
async fn sdk_reader_drains_four_partitions() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let events = env("EMU_BENCH_EVENTS", 400_000);
    let size = env("EMU_BENCH_SIZE", 1024) as usize;
    let emu = Emulator::start(EmulatorOptions::default()).await.unwrap();
    let t = Instant::now();
    emu.generate(events, size, 64);
    let gen_secs = t.elapsed().as_secs_f64();
    let totals: Vec<i64> = emu
        .stats()
        .partitions
        .iter()
        .map(|p| p.total_enqueued)
        .collect();
    let consumer = ConsumerClient::builder()
        .with_custom_endpoint(emu.info().amqp_endpoint.clone())
        .open_with_connection_string(emu.info().event_hub_connection_string.expose(), None)
        .await
        .unwrap();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (p, total) in totals.iter().copied().enumerate() {
        let rx = consumer
            .open_receiver_on_partition(
                p.to_string(),
                Some(OpenReceiverOptions {
                    start_position: Some(StartPosition {
                        location: StartLocation::Earliest,
                        inclusive: false,
                    }),
                    prefetch: Some(env("EMU_BENCH_PREFETCH", 1000) as u32),
                    ..Default::default()
                }),
            )
            .await
            .unwrap();
        tasks.push(tokio::spawn(async move {
            let mut n = 0i64;
            let mut bytes = 0usize;
            {
                let mut s = std::pin::pin!(rx.stream_events());
                while n < total {
                    let ev = tokio::time::timeout(Duration::from_secs(60), s.next())
                        .await
                        .expect("stalled")
                        .expect("stream ended")
                        .expect("receive error");
                    bytes += ev.event_data().body().map_or(0, |b| b.len());
                    n += 1;
                }
            }
            rx.close().await.ok();
            (n, bytes)
        }));
    }
    let mut n = 0;
    let mut bytes = 0;
    for t in tasks {
        let (a, b) = t.await.unwrap();
        n += a;
        bytes += b;
    }
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(n as u64, events);
    assert_eq!(bytes, events as usize * size);
    let rss = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(|l| l.split_whitespace().nth(1).unwrap_or("0").to_string())
        })
        .unwrap_or_default();
    println!(
        "{{\"events\":{n},\"size\":{size},\"generateSeconds\":{gen_secs:.3},\"drainSeconds\":{secs:.3},\"eventsPerSecond\":{:.0},\"peakRssKb\":{rss}}}",
        n as f64 / secs
    );
    consumer.close().await.ok();
    emu.shutdown().await;
}
