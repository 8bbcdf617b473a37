//! C2D client against the project's IoT Hub emulator (real AMQP over loopback).

use crate::raw_c2d;
use iotconnect::config::Secret;

use iotconnect::iothub::c2d::{
    AckMode, AuthMethod, C2dClient, C2dMessage, C2dOptions, ClientClosed, Completion, Outcome,
};
use iotconnect::iothub::connstr::IotHubConnectionString;
use iotconnect::iothub::ratelimit::Backoff;
use iotconnect_emulator::{Emulator, EmulatorOptions};
use raw_c2d::raw_send_rate;
use std::collections::HashMap;
use std::future::Future;
use std::time::{Duration, SystemTime};

const TEST_TIMEOUT: Duration = Duration::from_secs(90);

async fn bounded<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(TEST_TIMEOUT, f)
        .await
        .expect("test timed out")
}

async fn start(opts: EmulatorOptions) -> Emulator {
    Emulator::start(opts).await.expect("emulator starts")
}

fn client_opts(emu: &Emulator) -> C2dOptions {
    let cs =
        IotHubConnectionString::parse(&Secret::new(emu.info().service_connection_string.expose()))
            .unwrap();
    let mut o = C2dOptions::new(cs);
    o.endpoint = Some(emu.info().amqp_endpoint.clone());
    o.operation_timeout = Duration::from_secs(10);
    o.reconnect_backoff = Backoff::new(Duration::from_millis(50), Duration::from_millis(500));
    o.retry_backoff = Backoff::new(Duration::from_millis(20), Duration::from_millis(200));
    o.throttle_backoff = Backoff::new(Duration::from_millis(20), Duration::from_millis(200));
    o
}

/// Waits for `cond` (polled every 10 ms) for at most `limit`.
async fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Sends `n` messages round-robin over `devices` (ids `m-<i>`), returns the completions in order.
async fn send_all(client: &C2dClient, n: usize, devices: &[&str]) -> Vec<Completion> {
    let mut handles = Vec::with_capacity(n);
    for i in 0..n {
        let d = devices[i % devices.len()];
        let h = client
            .send(C2dMessage::new(d, format!("m-{i}"), format!("body {i}")))
            .await
            .unwrap();
        handles.push(h);
    }
    let mut out = Vec::with_capacity(n);
    for h in handles {
        out.push(h.await.expect("client open"));
    }
    out
}

/// For each device, the message ids in the order the hub enqueued them (first occurrence of
/// each id; a resend after a reconnection may duplicate a message).
fn per_device_order(emu: &Emulator) -> HashMap<String, Vec<usize>> {
    let mut msgs = emu.c2d_messages();
    msgs.sort_by_key(|m| m.seq);
    let mut out: HashMap<String, Vec<usize>> = HashMap::new();
    for m in msgs {
        let id: usize = m
            .message_id
            .as_deref()
            .and_then(|s| s.strip_prefix("m-"))
            .and_then(|s| s.parse().ok())
            .expect("test message id");
        let v = out.entry(m.device_id.clone()).or_default();
        if !v.contains(&id) {
            v.push(id);
        }
    }
    out
}

fn assert_ordered(order: &HashMap<String, Vec<usize>>) {
    for (d, ids) in order {
        assert!(
            ids.windows(2).all(|w| w[0] < w[1]),
            "device {d} received out of order: {ids:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tutorial_message_reaches_device_with_properties() {
    bounded(async {
        let emu = start(EmulatorOptions::default()).await;
        let client = C2dClient::connect(client_opts(&emu)).await.unwrap();
        let expiry = SystemTime::now() + Duration::from_secs(3600);
        let mut m = C2dMessage::new("myDeviceId", "msg1", b"Turn On".to_vec());
        m.ack = AckMode::Full;
        m.expiry = Some(expiry);
        m.correlation_id = Some("corr-1".into());
        let done = client.send(m).await.unwrap().await.unwrap();
        assert_eq!(done.outcome, Outcome::Accepted);
        assert_eq!(done.attempts, 1);

        let got = emu.c2d_messages();
        assert_eq!(got.len(), 1);
        let g = &got[0];
        assert_eq!(g.device_id, "myDeviceId");
        assert_eq!(g.to, "/devices/myDeviceId/messages/devicebound");
        assert_eq!(g.message_id.as_deref(), Some("msg1"));
        assert_eq!(g.correlation_id.as_deref(), Some("corr-1"));
        assert_eq!(g.body, "Turn On");
        assert_eq!(format!("{:?}", g.ack), "Full");
        let want_ms = expiry
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        assert_eq!(g.expiry_ms, Some(want_ms));
        let m = client.metrics().snapshot();
        assert_eq!((m.sent, m.accepted, m.in_flight), (1, 1, 0));
        client.close(Duration::from_secs(5)).await;
        emu.shutdown().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_sends_keep_per_device_order() {
    bounded(async {
        let emu = start(EmulatorOptions::default()).await;
        let mut o = client_opts(&emu);
        o.max_in_flight = 16;
        let client = C2dClient::connect(o).await.unwrap();
        let devices: Vec<String> = (0..25).map(|i| format!("dev-{i}")).collect();
        let refs: Vec<&str> = devices.iter().map(|s| s.as_str()).collect();
        // 40 per device stays under the hub's queue depth of 50.
        let done = send_all(&client, 1000, &refs).await;
        assert!(done.iter().all(|c| c.outcome == Outcome::Accepted));
        let order = per_device_order(&emu);
        assert_eq!(order.len(), 25);
        assert!(order.values().all(|v| v.len() == 40));
        assert_ordered(&order);
        let m = client.metrics().snapshot();
        assert_eq!(m.accepted, 1000);
        assert_eq!(m.sent, 1000, "no resend without a fault");
        client.close(Duration::from_secs(5)).await;
        emu.shutdown().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_device_is_a_final_record_error() {
    bounded(async {
        let emu = start(EmulatorOptions {
            devices: Some(vec!["known".into()]),
            ..Default::default()
        })
        .await;
        let client = C2dClient::connect(client_opts(&emu)).await.unwrap();
        let ghost = client
            .send(C2dMessage::new("ghost", "m-0", "x"))
            .await
            .unwrap();
        let known = client
            .send(C2dMessage::new("known", "m-1", "y"))
            .await
            .unwrap();
        let ghost = ghost.await.unwrap();
        assert_eq!(ghost.outcome, Outcome::DeviceNotFound);
        assert!(ghost.outcome.is_record_error());
        assert_eq!(ghost.attempts, 1, "not retried");
        assert!(ghost.description.unwrap_or_default().contains("404001"));
        assert_eq!(known.await.unwrap().outcome, Outcome::Accepted);
        assert_eq!(client.metrics().snapshot().device_not_found, 1);
        client.close(Duration::from_secs(5)).await;
        emu.shutdown().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_message_is_too_large() {
    bounded(async {
        let emu = start(EmulatorOptions::default()).await;
        let client = C2dClient::connect(client_opts(&emu)).await.unwrap();
        let big = client
            .send(C2dMessage::new("d", "m-0", vec![b'x'; 70 * 1024]))
            .await
            .unwrap()
            .await
            .unwrap();
        assert_eq!(big.outcome, Outcome::TooLarge);
        let ok = client
            .send(C2dMessage::new("d", "m-1", vec![b'x'; 1024]))
            .await
            .unwrap()
            .await
            .unwrap();
        assert_eq!(ok.outcome, Outcome::Accepted);
        client.close(Duration::from_secs(5)).await;
        emu.shutdown().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_device_queue_is_retried_while_other_devices_flow() {
    bounded(async {
        let emu = start(EmulatorOptions::default()).await;
        let client = C2dClient::connect(client_opts(&emu)).await.unwrap();
        // 60 for the full device (queue depth is 50), 60 spread over others.
        let mut full = Vec::new();
        for i in 0..60 {
            full.push(
                client
                    .send(C2dMessage::new("full", format!("m-{i}"), "x"))
                    .await
                    .unwrap(),
            );
        }
        let others: Vec<&str> = vec!["o1", "o2", "o3"];
        let mut rest = Vec::new();
        for i in 60..120 {
            rest.push(
                client
                    .send(C2dMessage::new(others[i % 3], format!("m-{i}"), "y"))
                    .await
                    .unwrap(),
            );
        }
        // The other devices complete while "full" is stuck at 50.
        for h in rest {
            assert_eq!(h.await.unwrap().outcome, Outcome::Accepted);
        }
        wait_for("queue-full rejections", Duration::from_secs(10), || {
            client.metrics().snapshot().device_queue_full > 0
        })
        .await;
        let stuck = emu
            .c2d_messages()
            .iter()
            .filter(|m| m.device_id == "full")
            .count();
        assert_eq!(stuck, 50);
        // The device drains its queue; the remaining 10 get through, in order.
        let mut drained = 0;
        while drained < 60 {
            if let Some(m) = emu.device_receive("full") {
                assert!(emu.device_settle("full", m.etag().unwrap(), false));
                drained += 1;
            } else {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        for h in full {
            assert_eq!(h.await.unwrap().outcome, Outcome::Accepted);
        }
        let order = per_device_order(&emu);
        assert_eq!(order["full"], (0..60).collect::<Vec<_>>());
        assert_ordered(&order);
        client.close(Duration::from_secs(5)).await;
        emu.shutdown().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_slows_down_and_loses_nothing() {
    bounded(async {
        let emu = start(EmulatorOptions {
            c2d_rate_limit: Some(200),
            ..Default::default()
        })
        .await;
        let client = C2dClient::connect(client_opts(&emu)).await.unwrap();
        let devices: Vec<String> = (0..30).map(|i| format!("dev-{i}")).collect();
        let refs: Vec<&str> = devices.iter().map(|s| s.as_str()).collect();
        let done = send_all(&client, 600, &refs).await;
        assert!(done.iter().all(|c| c.outcome == Outcome::Accepted));
        let m = client.metrics().snapshot();
        assert!(m.throttled > 0, "the hub throttled: {m:?}");
        assert!(m.rate_limit.is_some(), "AIMD set a rate: {m:?}");
        assert_eq!(m.accepted, 600);
        let order = per_device_order(&emu);
        assert_eq!(order.values().map(|v| v.len()).sum::<usize>(), 600);
        assert_ordered(&order);
        client.close(Duration::from_secs(5)).await;
        emu.shutdown().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_throttling_is_retried() {
    bounded(async {
        let emu = start(EmulatorOptions::default()).await;
        let client = C2dClient::connect(client_opts(&emu)).await.unwrap();
        emu.faults().throttle_c2d(Duration::from_millis(700));
        let done = send_all(&client, 50, &["a", "b"]).await;
        assert!(done.iter().all(|c| c.outcome == Outcome::Accepted));
        assert!(done.iter().any(|c| c.attempts > 1));
        assert!(client.metrics().snapshot().throttled > 0);
        client.close(Duration::from_secs(5)).await;
        emu.shutdown().await;
    })
    .await
}

/// Sends `seconds` worth of messages at a fixed limit of `limit`/s and checks the send instants:
/// never more than `limit` in any 1-second window, and the achieved rate within 2% of it.
async fn check_fixed_rate(limit: u32, seconds: u32, devices: usize) {
    let emu = start(EmulatorOptions::default()).await;
    let mut o = client_opts(&emu);
    o.max_sends_per_second = limit;
    let client = C2dClient::connect(o).await.unwrap();
    let devices: Vec<String> = (0..devices).map(|i| format!("dev-{i}")).collect();
    let refs: Vec<&str> = devices.iter().map(|s| s.as_str()).collect();
    let n = (limit * seconds) as usize + limit as usize / 2;
    let done = send_all(&client, n, &refs).await;
    assert!(done.iter().all(|c| c.outcome == Outcome::Accepted));
    let mut at: Vec<std::time::Instant> = done.iter().map(|c| c.sent_at.unwrap()).collect();
    at.sort();
    let mut j = 0;
    let mut max_window = 0;
    for i in 0..at.len() {
        while at[i] - at[j] >= Duration::from_secs(1) {
            j += 1;
        }
        max_window = max_window.max(i - j + 1);
    }
    assert!(
        max_window <= limit as usize,
        "{max_window} sends within 1 s (limit {limit})"
    );
    let span = *at.last().unwrap() - at[0];
    let rate = (at.len() - 1) as f64 / span.as_secs_f64();
    let lim = f64::from(limit);
    assert!(
        (rate - lim).abs() <= lim * 0.02,
        "send rate {rate:.1}/s is not within 2% of {limit}"
    );
    assert_eq!(emu.c2d_messages().len(), n, "the hub saw them all");
    client.close(Duration::from_secs(5)).await;
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixed_rate_limit_holds_in_every_window() {
    bounded(check_fixed_rate(100, 2, 10)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixed_rate_500_per_second() {
    bounded(check_fixed_rate(500, 3, 40)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_connection_resends_unsettled_without_loss() {
    bounded(async {
        let emu = start(EmulatorOptions::default()).await;
        let mut o = client_opts(&emu);
        o.max_sends_per_second = 2000;
        // Long, so a loss noticed only by the stall timer would fail the timing check below.
        o.operation_timeout = Duration::from_secs(60);
        let client = std::sync::Arc::new(C2dClient::connect(o).await.unwrap());
        let devices: Vec<String> = (0..40).map(|i| format!("dev-{i}")).collect();
        let c2 = client.clone();
        let sender = tokio::spawn(async move {
            let refs: Vec<&str> = devices.iter().map(|s| s.as_str()).collect();
            send_all(&c2, 1600, &refs).await
        });
        wait_for("some messages accepted", Duration::from_secs(20), || {
            client.metrics().snapshot().accepted >= 300
        })
        .await;
        emu.faults().drop_connections();
        let dropped_at = std::time::Instant::now();
        let done = sender.await.unwrap();
        assert!(
            dropped_at.elapsed() < Duration::from_secs(30),
            "the forced close was noticed at once, not by the stall timer"
        );
        assert!(done.iter().all(|c| c.outcome == Outcome::Accepted));
        let m = client.metrics().snapshot();
        assert!(m.reconnects >= 1, "{m:?}");
        let order = per_device_order(&emu);
        assert_eq!(
            order.values().map(|v| v.len()).sum::<usize>(),
            1600,
            "every message reached the hub"
        );
        assert_ordered(&order);
        client.close(Duration::from_secs(5)).await;
        emu.shutdown().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_tokens_for_a_while_then_recovers() {
    bounded(async {
        let emu = start(EmulatorOptions::default()).await;
        let client = C2dClient::connect(client_opts(&emu)).await.unwrap();
        emu.faults().refuse_tokens(Duration::from_millis(1500));
        emu.faults().drop_connections();
        let done = send_all(&client, 20, &["a", "b"]).await;
        assert!(done.iter().all(|c| c.outcome == Outcome::Accepted));
        let m = client.metrics().snapshot();
        assert!(m.reconnects >= 1, "{m:?}");
        let st = emu.stats();
        assert!(
            st.tokens_refused >= 1,
            "reconnects were refused first: {st:?}"
        );
        assert!(st.connections_opened >= 3, "{st:?}");
        client.close(Duration::from_secs(5)).await;
        emu.shutdown().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_key_fails_fast_as_an_auth_error() {
    bounded(async {
        let emu = start(EmulatorOptions::default()).await;
        let info = emu.info();
        let bad = Secret::new(format!(
            "HostName={};SharedAccessKeyName=service;SharedAccessKey=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
            info.iot_hub_host_name
        ));
        let mut o = client_opts(&emu);
        o.connection = IotHubConnectionString::parse(&bad).unwrap();
        let e = C2dClient::connect(o).await.unwrap_err();
        assert!(e.is_auth(), "{e}");
        assert!(!e.to_string().contains("AAAAAAAA"), "{e}");
        emu.shutdown().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_is_renewed_without_dropping_the_link() {
    bounded(async {
        let emu = start(EmulatorOptions::default()).await;
        let mut o = client_opts(&emu);
        o.token_ttl = Duration::from_secs(3);
        let client = C2dClient::connect(o).await.unwrap();
        // Keep sending past two token lifetimes.
        let t0 = std::time::Instant::now();
        let mut i = 0;
        while t0.elapsed() < Duration::from_secs(7) {
            let c = client
                .send(C2dMessage::new(
                    format!("d{}", i % 5),
                    format!("m-{i}"),
                    "x",
                ))
                .await
                .unwrap()
                .await
                .unwrap();
            assert_eq!(c.outcome, Outcome::Accepted);
            assert_eq!(c.attempts, 1);
            i += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let m = client.metrics().snapshot();
        assert!(m.token_renewals >= 2, "{m:?}");
        assert_eq!(m.connects, 1, "the connection was never replaced: {m:?}");
        assert_eq!(m.reconnects, 0);
        let st = emu.stats();
        assert_eq!(st.connections_opened, 1, "{st:?}");
        assert!(
            st.tokens_accepted >= 3,
            "the hub took the renewed tokens: {st:?}"
        );
        client.close(Duration::from_secs(5)).await;
        emu.shutdown().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feedback_is_settled_only_when_acknowledged() {
    bounded(async {
        let emu = start(EmulatorOptions::default()).await;
        let mut o = client_opts(&emu);
        o.feedback = true;
        let client = C2dClient::connect(o).await.unwrap();
        let mut fb = client.take_feedback().expect("feedback enabled");
        assert!(client.take_feedback().is_none());
        let mut m = C2dMessage::new("dev-fb", "m-0", "hello");
        m.ack = AckMode::Full;
        assert_eq!(
            client.send(m).await.unwrap().await.unwrap().outcome,
            Outcome::Accepted
        );
        let mut m = C2dMessage::new("dev-fb", "m-1", "bye");
        m.ack = AckMode::Negative;
        assert_eq!(
            client.send(m).await.unwrap().await.unwrap().outcome,
            Outcome::Accepted
        );
        // The device completes the first and rejects the second.
        let first = emu.device_receive("dev-fb").unwrap();
        assert!(emu.device_settle("dev-fb", first.etag().unwrap(), false));
        let second = emu.device_receive("dev-fb").unwrap();
        assert!(emu.device_settle("dev-fb", second.etag().unwrap(), true));

        let mut seen = Vec::new();
        // First delivery: not acknowledged (dropped) -> released -> delivered again.
        let batch = fb.recv().await.unwrap();
        let first_ids: Vec<_> = batch
            .records
            .iter()
            .map(|r| r.original_message_id.clone().unwrap())
            .collect();
        drop(batch);
        let again = fb.recv().await.unwrap();
        let again_ids: Vec<_> = again
            .records
            .iter()
            .map(|r| r.original_message_id.clone().unwrap())
            .collect();
        assert_eq!(first_ids, again_ids[..first_ids.len().min(again_ids.len())]);
        seen.extend(again.records.clone());
        again.ack.accept();
        while seen.len() < 2 {
            let b = fb.recv().await.unwrap();
            seen.extend(b.records.clone());
            b.ack.accept();
        }
        let by_id: HashMap<_, _> = seen
            .iter()
            .map(|r| (r.original_message_id.clone().unwrap(), r.clone()))
            .collect();
        assert_eq!(by_id["m-0"].status_code.as_deref(), Some("Success"));
        assert_eq!(by_id["m-0"].device_id.as_deref(), Some("dev-fb"));
        assert_eq!(by_id["m-1"].status_code.as_deref(), Some("Rejected"));
        wait_for("feedback accepted", Duration::from_secs(5), || {
            client.metrics().snapshot().feedback_accepted >= 1
        })
        .await;
        client.close(Duration::from_secs(5)).await;
        emu.shutdown().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_endpoint_with_custom_ca() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let pki = crate::support::pki(dir.path());
        let emu = start(EmulatorOptions {
            tls_cert: Some(pki.cert),
            tls_key: Some(pki.key),
            ..Default::default()
        })
        .await;
        assert!(emu.info().amqp_endpoint.starts_with("amqps://"));
        let mut o = client_opts(&emu);
        o.ca_pem = Some(pki.ca_pem.into_bytes());
        let client = C2dClient::connect(o.clone()).await.unwrap();
        let c = client
            .send(C2dMessage::new("tls-dev", "m-0", "secure"))
            .await
            .unwrap()
            .await
            .unwrap();
        assert_eq!(c.outcome, Outcome::Accepted);
        client.close(Duration::from_secs(5)).await;
        // Without the CA the server is not trusted.
        o.ca_pem = None;
        let e = C2dClient::connect(o).await.unwrap_err();
        assert!(e.to_string().contains("TLS"), "{e}");
        emu.shutdown().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_sender_sends_everything() {
    bounded(async {
        let emu = start(EmulatorOptions::default()).await;
        let devices: Vec<String> = (0..20).map(|i| format!("raw-{i}")).collect();
        let r = raw_send_rate(&client_opts(&emu), 500, &devices, b"payload", 64)
            .await
            .unwrap();
        assert_eq!((r.messages, r.accepted, r.rejected), (500, 500, 0));
        assert!(r.per_second > 0.0);
        assert_eq!(emu.c2d_messages().len(), 500);
        emu.shutdown().await;
    })
    .await
}

/// Throughput of the client against the bare fe2o3 sender on the same emulator (prints both).
/// A measurement, not a check: run with
/// `cargo test --release -p iotconnect-tests --test sink -- --ignored --nocapture iothub_c2d::measure`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "timing measurement on a shared machine; run explicitly"]
async fn measure_client_against_raw_sender() {
    let n: usize = std::env::var("C2D_MEASURE_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let emu = start(EmulatorOptions::default()).await;
    let devices: Vec<String> = (0..1000).map(|i| format!("dev-{i}")).collect();
    let client = std::sync::Arc::new(C2dClient::connect(client_opts(&emu)).await.unwrap());
    let t0 = std::time::Instant::now();
    let c2 = client.clone();
    let devs = devices.clone();
    let collector = tokio::spawn(async move {
        let mut handles = futures::stream::FuturesUnordered::new();
        for i in 0..n {
            handles.push(
                c2.send(C2dMessage::new(
                    devs[i % devs.len()].clone(),
                    format!("m-{i}"),
                    vec![b'x'; 64],
                ))
                .await
                .unwrap(),
            );
        }
        use futures::StreamExt;
        let mut ok = 0;
        while let Some(c) = handles.next().await {
            if c.unwrap().outcome == Outcome::Accepted {
                ok += 1;
            }
        }
        ok
    });
    let ok = collector.await.unwrap();
    let rate = n as f64 / t0.elapsed().as_secs_f64();
    emu.shutdown().await;
    // A fresh emulator for the base, so both runs see the same hub state.
    let emu = start(EmulatorOptions::default()).await;
    let raw = raw_send_rate(&client_opts(&emu), n as u64, &devices, &[b'x'; 64], 64)
        .await
        .unwrap();
    emu.shutdown().await;
    // The same bare sender without pipelining (one unsettled transfer at a time).
    let emu = start(EmulatorOptions::default()).await;
    let one = raw_send_rate(&client_opts(&emu), (n / 5) as u64, &devices, &[b'x'; 64], 1)
        .await
        .unwrap();
    println!(
        "raw sender (64 unsettled): {:.0}/s; raw sender (1 unsettled): {:.0}/s; C2dClient: {rate:.0}/s ({ok} accepted); ratio {:.2}",
        raw.per_second,
        one.per_second,
        rate / raw.per_second
    );
    assert_eq!(ok, n);
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_timeout_gives_up_with_the_last_outcome() {
    bounded(async {
        let emu = start(EmulatorOptions::default()).await;
        let mut o = client_opts(&emu);
        o.retry_timeout = Some(Duration::from_millis(400));
        let client = C2dClient::connect(o).await.unwrap();
        let done = send_all(&client, 51, &["stuck"]).await;
        assert!(done[..50].iter().all(|c| c.outcome == Outcome::Accepted));
        let last = &done[50];
        assert_eq!(last.outcome, Outcome::DeviceQueueFull);
        assert!(last.attempts > 1, "retried before giving up: {last:?}");
        assert!(last
            .description
            .as_deref()
            .unwrap_or_default()
            .contains("403004"));
        client.close(Duration::from_secs(5)).await;
        emu.shutdown().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_and_positive_only_feedback() {
    bounded(async {
        let emu = start(EmulatorOptions::default()).await;
        let mut o = client_opts(&emu);
        o.feedback = true;
        let client = C2dClient::connect(o).await.unwrap();
        let mut fb = client.take_feedback().unwrap();
        // Expires unread: negative feedback "Expired".
        let mut m = C2dMessage::new("sleepy", "m-0", "late");
        m.ack = AckMode::Negative;
        m.expiry = Some(SystemTime::now() + Duration::from_millis(500));
        assert_eq!(
            client.send(m).await.unwrap().await.unwrap().outcome,
            Outcome::Accepted
        );
        // Positive-only: completion gives feedback, rejection gives none.
        for (id, reject) in [("m-1", false), ("m-2", true)] {
            let mut m = C2dMessage::new("pos", id, "p");
            m.ack = AckMode::Positive;
            assert_eq!(
                client.send(m).await.unwrap().await.unwrap().outcome,
                Outcome::Accepted
            );
            let got = emu.device_receive("pos").unwrap();
            assert!(emu.device_settle("pos", got.etag().unwrap(), reject));
        }
        let mut seen = HashMap::new();
        while seen.len() < 2 {
            let b = fb.recv().await.unwrap();
            for r in &b.records {
                seen.insert(r.original_message_id.clone().unwrap(), r.clone());
            }
            b.ack.accept();
        }
        assert_eq!(seen["m-0"].status_code.as_deref(), Some("Expired"));
        assert_eq!(seen["m-0"].device_id.as_deref(), Some("sleepy"));
        assert_eq!(seen["m-1"].status_code.as_deref(), Some("Success"));
        assert!(
            !seen.contains_key("m-2"),
            "no feedback for a rejection with positive-only"
        );
        client.close(Duration::from_secs(5)).await;
        emu.shutdown().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_drains_then_gives_up_on_stuck_messages() {
    bounded(async {
        let emu = start(EmulatorOptions::default()).await;
        let client = std::sync::Arc::new(C2dClient::connect(client_opts(&emu)).await.unwrap());
        let mut handles = Vec::new();
        for i in 0..52 {
            handles.push(
                client
                    .send(C2dMessage::new("stuck", format!("m-{i}"), "x"))
                    .await
                    .unwrap(),
            );
        }
        let ok = client
            .send(C2dMessage::new("fine", "m-52", "y"))
            .await
            .unwrap();
        wait_for("the device queue to fill", Duration::from_secs(10), || {
            client.metrics().snapshot().device_queue_full > 0
        })
        .await;
        // Drain for a while: the 2 messages over the queue depth cannot complete.
        let shared = client.clone();
        shared.close(Duration::from_millis(300)).await;
        assert_eq!(ok.await.unwrap().outcome, Outcome::Accepted);
        let mut accepted = 0;
        let mut closed = 0;
        for h in handles {
            match h.await {
                Ok(c) if c.outcome == Outcome::Accepted => accepted += 1,
                Err(ClientClosed) => closed += 1,
                Ok(other) => panic!("{other:?}"),
            }
        }
        assert_eq!((accepted, closed), (50, 2));
        assert_eq!(
            client
                .send(C2dMessage::new("fine", "late", "z"))
                .await
                .unwrap_err(),
            ClientClosed
        );
        client.close(Duration::from_secs(1)).await; // a second close returns at once
        emu.shutdown().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sasl_plain_reconnects_for_a_fresh_token_without_resending() {
    bounded(async {
        let emu = start(EmulatorOptions::default()).await;
        let mut o = client_opts(&emu);
        o.auth = AuthMethod::SaslPlain;
        o.hub_name = Some(emu.info().hub_name.clone());
        o.token_ttl = Duration::from_secs(3);
        let client = C2dClient::connect(o.clone()).await.unwrap();
        let t0 = std::time::Instant::now();
        let mut handles = Vec::new();
        let mut i = 0;
        while t0.elapsed() < Duration::from_secs(5) {
            handles.push(
                client
                    .send(C2dMessage::new(
                        format!("d{}", i % 10),
                        format!("m-{i}"),
                        "x",
                    ))
                    .await
                    .unwrap(),
            );
            i += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for h in handles {
            let c = h.await.unwrap();
            assert_eq!(c.outcome, Outcome::Accepted);
            assert_eq!(c.attempts, 1, "drained before reconnecting: nothing resent");
        }
        let m = client.metrics().snapshot();
        assert!(
            m.reconnects >= 1,
            "a fresh token needs a new connection: {m:?}"
        );
        assert_eq!(m.token_renewals, 0);
        client.close(Duration::from_secs(5)).await;
        // Wrong user name (hub) is refused as an authentication error.
        o.hub_name = Some("otherhub".into());
        let e = C2dClient::connect(o).await.unwrap_err();
        assert!(e.is_auth(), "{e}");
        emu.shutdown().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feedback_survives_a_reconnection() {
    bounded(async {
        let emu = start(EmulatorOptions::default()).await;
        let mut o = client_opts(&emu);
        o.feedback = true;
        let client = C2dClient::connect(o).await.unwrap();
        let mut fb = client.take_feedback().unwrap();
        let mut m = C2dMessage::new("dev-r", "m-0", "before");
        m.ack = AckMode::Full;
        assert_eq!(
            client.send(m).await.unwrap().await.unwrap().outcome,
            Outcome::Accepted
        );
        emu.faults().drop_connections();
        wait_for("the reconnection", Duration::from_secs(10), || {
            let m = client.metrics().snapshot();
            m.reconnects >= 1 && m.connected
        })
        .await;
        let got = emu.device_receive("dev-r").unwrap();
        assert!(emu.device_settle("dev-r", got.etag().unwrap(), false));
        let b = fb.recv().await.unwrap();
        assert_eq!(b.records[0].original_message_id.as_deref(), Some("m-0"));
        assert_eq!(b.records[0].status_code.as_deref(), Some("Success"));
        b.ack.accept();
        client.close(Duration::from_secs(5)).await;
        emu.shutdown().await;
    })
    .await
}
