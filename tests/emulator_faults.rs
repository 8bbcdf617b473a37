//! Fault injection over `POST /emulator/faults`: frozen and delayed partitions (links stay attached,
//! no error), receiver counts in `/emulator/stats`, and refusal of bad durations.

use crate::emulator_support;

use azure_messaging_eventhubs::ConsumerClient;
use emulator_support::*;
use fe2o3_amqp::link::receiver::CreditMode;
use fe2o3_amqp::link::Receiver;
use fe2o3_amqp::types::messaging::Body;
use fe2o3_amqp::types::primitives::Value;
use iotconnect_emulator::{Emulator, EmulatorOptions};
use std::time::{Duration, Instant};

/// Long enough to see that nothing arrives on a frozen link on this loaded machine, short enough
/// for the suite: deliveries on an idle loopback link take well under 100 ms.
const QUIET: Duration = Duration::from_millis(1500);

async fn post_faults(emu: &Emulator, body: serde_json::Value) -> (u16, serde_json::Value) {
    let r = reqwest::Client::new()
        .post(format!("{}/emulator/faults", emu.info().http_endpoint))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(serde_json::Value::Null))
}

async fn stats(emu: &Emulator) -> serde_json::Value {
    reqwest::Client::new()
        .get(format!("{}/emulator/stats", emu.info().http_endpoint))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn wait_receivers(emu: &Emulator, partition: usize, n: u64) {
    let deadline = Instant::now() + T;
    loop {
        let s = stats(emu).await;
        if s["receiversAttached"][partition] == n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "partition {partition} never had {n} receivers: {}",
            s["receiversAttached"]
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn next_seq(rx: &mut Receiver, within: Duration) -> Option<i64> {
    match tokio::time::timeout(within, rx.recv::<Body<Value>>()).await {
        Ok(d) => Some(seq_of(&d.expect("the link stays attached without error"))),
        Err(_) => None,
    }
}

async fn receiver(
    session: &mut fe2o3_amqp::session::SessionHandle<()>,
    emu: &Emulator,
    from: i64,
) -> Receiver {
    partition_receiver(
        session,
        emu,
        0,
        &format!("amqp.annotation.x-opt-sequence-number >= '{from}'"),
        None,
        CreditMode::Auto(100),
    )
    .await
    .expect("attach")
}

async fn sdk(emu: &Emulator) -> ConsumerClient {
    ConsumerClient::builder()
        .with_custom_endpoint(emu.info().amqp_endpoint.clone())
        .open_with_connection_string(emu.info().event_hub_connection_string.expose(), None)
        .await
        .expect("consumer client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn freeze_links_holds_attached_links_only() {
    let emu = Emulator::start(EmulatorOptions::default()).await.unwrap();
    let (_conn, mut session) = eventhub_session(&emu).await;
    let mut r1 = receiver(&mut session, &emu, 0).await;
    emu.send_event(0, &b"e0"[..], None).unwrap();
    assert_eq!(next_seq(&mut r1, T).await, Some(0));
    wait_receivers(&emu, 0, 1).await;

    let (status, _) = post_faults(
        &emu,
        serde_json::json!({"freezePartition": "0", "freezeSeconds": 4, "freezeScope": "links"}),
    )
    .await;
    assert_eq!(status, 200);
    let frozen_at = Instant::now();
    for i in 1..=3 {
        emu.send_event(0, format!("e{i}").into_bytes(), None)
            .unwrap();
    }
    // Events are accepted and $management reports them while deliveries are held.
    let pp = sdk(&emu).await.get_partition_properties("0").await.unwrap();
    assert_eq!(pp.last_enqueued_sequence_number, 3);
    assert_eq!(
        next_seq(&mut r1, QUIET).await,
        None,
        "a frozen link delivered"
    );

    // A link attached after the request delivers normally.
    let mut r2 = receiver(&mut session, &emu, 1).await;
    assert_eq!(next_seq(&mut r2, T).await, Some(1));
    wait_receivers(&emu, 0, 2).await;

    // After the freeze the old link resumes where it stopped: nothing lost, nothing repeated.
    let mut got = Vec::new();
    while got.len() < 3 {
        got.push(next_seq(&mut r1, T).await.expect("the link resumes"));
    }
    assert_eq!(got, vec![1, 2, 3]);
    assert!(
        frozen_at.elapsed() >= Duration::from_secs(3),
        "thawed early"
    );
    r2.close().await.unwrap();
    wait_receivers(&emu, 0, 1).await;
    r1.close().await.unwrap();
    wait_receivers(&emu, 0, 0).await;
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn freeze_partition_holds_new_links_too_and_delay_slows_each_delivery() {
    let emu = Emulator::start(EmulatorOptions::default()).await.unwrap();
    let (_conn, mut session) = eventhub_session(&emu).await;
    emu.send_event(0, &b"e0"[..], None).unwrap();
    let (status, _) = post_faults(
        &emu,
        serde_json::json!({"freezePartition": 0, "freezeSeconds": 3, "freezeScope": "partition"}),
    )
    .await;
    assert_eq!(status, 200);
    let frozen_at = Instant::now();
    let mut r = receiver(&mut session, &emu, 0).await;
    assert_eq!(
        next_seq(&mut r, QUIET).await,
        None,
        "a new link delivered during a partition freeze"
    );
    // Other partitions are not affected.
    emu.send_event(1, &b"p1"[..], None).unwrap();
    let mut other = partition_receiver(
        &mut session,
        &emu,
        1,
        "amqp.annotation.x-opt-offset > '-1'",
        None,
        CreditMode::Auto(10),
    )
    .await
    .unwrap();
    assert!(next_seq(&mut other, T).await.is_some());
    assert_eq!(next_seq(&mut r, T).await, Some(0));
    assert!(
        frozen_at.elapsed() >= Duration::from_secs(2),
        "thawed early"
    );

    // Delay: every delivery waits delayMs.
    let (status, _) = post_faults(
        &emu,
        serde_json::json!({"delayPartition": "0", "delayMs": 300, "delaySeconds": 30}),
    )
    .await;
    assert_eq!(status, 200);
    for i in 1..=4 {
        emu.send_event(0, format!("e{i}").into_bytes(), None)
            .unwrap();
    }
    let started = Instant::now();
    let mut got = Vec::new();
    while got.len() < 4 {
        got.push(next_seq(&mut r, T).await.expect("delayed, not lost"));
    }
    assert_eq!(got, vec![1, 2, 3, 4]);
    assert!(
        started.elapsed() >= Duration::from_millis(1100),
        "4 deliveries at 300 ms each took {:?}",
        started.elapsed()
    );
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_fault_requests_are_refused_with_400() {
    let emu = Emulator::start(EmulatorOptions::default()).await.unwrap();
    for body in [
        serde_json::json!({"refuseTokensSeconds": -1}),
        serde_json::json!({"serverBusySeconds": 1e300}),
        serde_json::json!({"throttleC2dSeconds": 18446744073709551616.0}),
        serde_json::json!({"refuseTokensSeconds": "NaN"}),
        serde_json::json!({"freezePartition": "0"}),
        serde_json::json!({"freezePartition": "9", "freezeSeconds": 1}),
        serde_json::json!({"freezePartition": "-1", "freezeSeconds": 1}),
        serde_json::json!({"freezePartition": "0", "freezeSeconds": 1, "freezeScope": "hub"}),
        serde_json::json!({"delayPartition": "0", "delayMs": -5, "delaySeconds": 1}),
        serde_json::json!({"delayPartition": "0", "delayMs": 5}),
        serde_json::json!({"freezeSecs": 1}),
    ] {
        let (status, reply) = post_faults(&emu, body.clone()).await;
        assert_eq!(status, 400, "{body} -> {reply}");
        assert!(reply["Message"]
            .as_str()
            .unwrap()
            .starts_with("ErrorCode:ArgumentInvalid;"));
    }
    // All or nothing: a bad field leaves the good one unapplied.
    let (status, _) = post_faults(
        &emu,
        serde_json::json!({"refuseTokensSeconds": 60, "serverBusySeconds": -1}),
    )
    .await;
    assert_eq!(status, 400);
    let (_conn, _session) = eventhub_session(&emu).await; // tokens still accepted
    let r = reqwest::Client::new()
        .post(format!("{}/emulator/faults", emu.info().http_endpoint))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = reqwest::Client::new()
        .post(format!("{}/emulator/generate", emu.info().http_endpoint))
        .json(&serde_json::json!({"events": u64::MAX}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    emu.shutdown().await;
}
