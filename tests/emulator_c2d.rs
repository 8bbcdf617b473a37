//! The emulator's cloud-to-device endpoint, driven by a fe2o3-amqp 0.18 client as a service would.

use crate::emulator_support;

use emulator_support::*;
use fe2o3_amqp::link::{Receiver, Sender};
use fe2o3_amqp::sasl_profile::SaslProfile;
use fe2o3_amqp::types::messaging::{ApplicationProperties, Body, Message, Outcome, Properties};
use fe2o3_amqp::types::primitives::{Binary, Timestamp, Value};
use fe2o3_amqp::{Connection, Session};
use iotconnect_emulator::{C2dState, Emulator, EmulatorOptions};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn c2d_message(
    device: &str,
    id: &str,
    ack: &str,
    body: Vec<u8>,
    expiry_ms: Option<i64>,
) -> Message<fe2o3_amqp::types::messaging::Data> {
    let mut p = Properties::builder()
        .to(format!("/devices/{device}/messages/devicebound"))
        .message_id(id.to_string())
        .correlation_id(format!("corr-{id}"))
        .build();
    p.absolute_expiry_time = expiry_ms.map(Timestamp::from_milliseconds);
    Message::builder()
        .properties(p)
        .application_properties(
            ApplicationProperties::builder()
                .insert("iothub-ack", ack)
                .insert("color", "red")
                .build(),
        )
        .data(Binary::from(body))
        .build()
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn rejected(outcome: Outcome) -> (String, String) {
    match outcome {
        Outcome::Rejected(r) => {
            let e = r.error.expect("rejection carries an error");
            let cond = condition_symbol(&e.condition);
            (cond, e.description.unwrap_or_default())
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
}

async fn connect(
    emu: &Emulator,
    profile: SaslProfile,
) -> Result<fe2o3_amqp::connection::ConnectionHandle<()>, fe2o3_amqp::connection::OpenError> {
    init();
    Connection::builder()
        .container_id("c2d-test")
        .hostname(emu.info().iot_hub_host_name.as_str())
        .sasl_profile(profile)
        .open(emu.info().amqp_endpoint.as_str())
        .await
}

/// Reads feedback records until `n` have arrived.
async fn feedback(rx: &mut Receiver, n: usize) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    while out.len() < n {
        let d = tokio::time::timeout(T, rx.recv::<Body<Value>>())
            .await
            .expect("feedback timed out")
            .expect("feedback receive");
        rx.accept(&d).await.unwrap();
        let m = d.message();
        let ct = m.properties.as_ref().and_then(|p| p.content_type.clone());
        assert_eq!(
            ct.map(|s| s.as_str().to_string()).as_deref(),
            Some("application/vnd.microsoft.iothub.feedback.json")
        );
        let bytes: Vec<u8> = match &m.body {
            Body::Data(b) => b.iter().flat_map(|d| d.0.iter().copied()).collect(),
            other => panic!("feedback body is not data: {other:?}"),
        };
        let records: Vec<serde_json::Value> = serde_json::from_slice(&bytes).unwrap();
        for r in &records {
            for k in [
                "originalMessageId",
                "deviceGenerationId",
                "deviceId",
                "enqueuedTimeUtc",
                "statusCode",
                "description",
            ] {
                assert!(r.get(k).is_some(), "feedback record lacks {k}: {r}");
            }
        }
        out.extend(records);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cbs_put_token_rejections_and_acceptance() {
    let emu = Emulator::start(EmulatorOptions {
        devices: Some(vec!["dev-1".into(), "dev-2".into()]),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut conn = connect(&emu, SaslProfile::Anonymous).await.unwrap();
    let mut session = Session::begin(&mut conn).await.unwrap();
    let host = emu.info().iot_hub_host_name.clone();

    // A token signed with the raw key (Event Hubs convention) is refused: 401.
    let wrong = eventhub_token(&emu, &host);
    assert_eq!(put_token(&mut session, &host, &wrong).await, 401);
    // Without a valid token the devicebound attach is refused.
    let mut unauth = Sender::attach(&mut session, "c2d-unauth", "/messages/devicebound")
        .await
        .unwrap();
    let r = tokio::time::timeout(
        Duration::from_secs(5),
        unauth.send(c2d_message("dev-1", "x", "none", b"x".to_vec(), None)),
    )
    .await;
    assert!(
        !matches!(r, Ok(Ok(Outcome::Accepted(_)))),
        "send on a refused link must not be accepted: {r:?}"
    );
    assert!(emu.c2d_messages().is_empty());
    drop(unauth);

    // The IoT Hub service token: 200.
    assert_eq!(
        put_token(
            &mut session,
            &host,
            &service_token(&emu, Duration::from_secs(600))
        )
        .await,
        200
    );
    let mut tx = Sender::attach(&mut session, "c2d", "/messages/devicebound")
        .await
        .unwrap();
    let ok = tx
        .send(c2d_message(
            "dev-1",
            "m-1",
            "full",
            vec![0, 1, 2, 255],
            None,
        ))
        .await
        .unwrap();
    assert!(matches!(ok, Outcome::Accepted(_)), "{ok:?}");
    let got = emu.c2d_messages();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].device_id, "dev-1");
    assert_eq!(got[0].message_id.as_deref(), Some("m-1"));
    assert_eq!(got[0].correlation_id.as_deref(), Some("corr-m-1"));
    assert_eq!(got[0].raw_body, vec![0, 1, 2, 255]);
    assert_eq!(
        got[0].properties,
        vec![(
            "color".to_string(),
            iotconnect_emulator::PropValue::String("red".into())
        )]
    );

    // Unknown device: DeviceNotFound (404001) as amqp:not-found.
    let (cond, desc) = rejected(
        tx.send(c2d_message("ghost", "m-2", "none", b"x".to_vec(), None))
            .await
            .unwrap(),
    );
    assert!(cond.contains("amqp:not-found"), "{cond}");
    assert!(
        desc.contains("DeviceNotFound") && desc.contains("404001"),
        "{desc}"
    );

    // Over 64 KB.
    let (cond, desc) = rejected(
        tx.send(c2d_message(
            "dev-1",
            "m-3",
            "none",
            vec![7; 65 * 1024],
            None,
        ))
        .await
        .unwrap(),
    );
    assert!(cond.contains("message-size-exceeded"), "{cond}");
    assert!(desc.contains("MessageTooLarge"), "{desc}");

    // Bad `to`.
    let mut bad = c2d_message("dev-1", "m-4", "none", b"x".to_vec(), None);
    bad.properties.as_mut().unwrap().to = Some("/devices/dev-1/messages/events".into());
    let (cond, _) = rejected(tx.send(bad).await.unwrap());
    assert!(cond.contains("argument-error"), "{cond}");

    // Queue depth: 50 pending for dev-2, the 51st is refused (403004).
    for i in 0..50 {
        let o = tx
            .send(c2d_message(
                "dev-2",
                &format!("q-{i}"),
                "none",
                b"q".to_vec(),
                None,
            ))
            .await
            .unwrap();
        assert!(matches!(o, Outcome::Accepted(_)));
    }
    let (cond, desc) = rejected(
        tx.send(c2d_message("dev-2", "q-50", "none", b"q".to_vec(), None))
            .await
            .unwrap(),
    );
    assert!(cond.contains("amqp:resource-limit-exceeded"), "{cond}");
    assert!(
        desc.contains("DeviceMaximumQueueDepthExceeded") && desc.contains("403004"),
        "{desc}"
    );

    // Throttling (fault injection): 429 as com.microsoft:device-container-throttled.
    emu.faults().throttle_c2d(Duration::from_secs(60));
    let (cond, desc) = rejected(
        tx.send(c2d_message("dev-1", "m-5", "none", b"x".to_vec(), None))
            .await
            .unwrap(),
    );
    assert!(
        cond.contains("com.microsoft:device-container-throttled"),
        "{cond}"
    );
    assert!(desc.contains("429"), "{desc}");

    let s = emu.stats();
    assert_eq!(s.c2d_accepted, 51);
    assert_eq!(s.c2d_refused, 5);
    tx.close().await.ok();
    session.end().await.ok();
    conn.close().await.ok();
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_throttles() {
    let emu = Emulator::start(EmulatorOptions {
        c2d_rate_limit: Some(3),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut conn = connect(&emu, SaslProfile::Anonymous).await.unwrap();
    let mut session = Session::begin(&mut conn).await.unwrap();
    let host = emu.info().iot_hub_host_name.clone();
    assert_eq!(
        put_token(
            &mut session,
            &host,
            &service_token(&emu, Duration::from_secs(600))
        )
        .await,
        200
    );
    let mut tx = Sender::attach(&mut session, "c2d", "/messages/devicebound")
        .await
        .unwrap();
    let mut throttled = 0;
    for i in 0..10 {
        if let Outcome::Rejected(_) = tx
            .send(c2d_message(
                "d",
                &format!("r-{i}"),
                "none",
                b"x".to_vec(),
                None,
            ))
            .await
            .unwrap()
        {
            throttled += 1;
        }
    }
    // 3 per second: sending 10 back to back cannot all pass.
    assert!(throttled >= 1, "nothing was throttled");
    assert!(throttled <= 7);
    conn.close().await.ok();
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sasl_plain_and_feedback_of_every_kind() {
    let emu = Emulator::start(EmulatorOptions::default()).await.unwrap();
    // Wrong password: the SASL outcome is auth failure.
    let bad = connect(
        &emu,
        SaslProfile::Plain {
            username: "service@sas.root.myhub".into(),
            password: eventhub_token(&emu, &emu.info().iot_hub_host_name),
        },
    )
    .await;
    assert!(bad.is_err(), "a wrong SASL PLAIN password must fail");
    let mut conn = connect(
        &emu,
        SaslProfile::Plain {
            username: "service@sas.root.myhub".into(),
            password: service_token(&emu, Duration::from_secs(600)),
        },
    )
    .await
    .expect("SASL PLAIN with a service token");
    let mut session = Session::begin(&mut conn).await.unwrap();
    let mut fb = Receiver::attach(&mut session, "feedback", "/messages/servicebound/feedback")
        .await
        .unwrap();
    let mut tx = Sender::attach(&mut session, "c2d", "/messages/devicebound")
        .await
        .unwrap();
    let send = |id: &'static str, ack: &'static str, expiry: Option<i64>| {
        c2d_message("dev-f", id, ack, id.as_bytes().to_vec(), expiry)
    };

    // Expired while queued: the expiry timer drops it and reports "Expired".
    let o = tx
        .send(send("exp", "full", Some(now_ms() + 300)))
        .await
        .unwrap();
    assert!(matches!(o, Outcome::Accepted(_)));
    let recs = feedback(&mut fb, 1).await;
    assert_eq!(recs[0]["statusCode"], "Expired");
    assert_eq!(recs[0]["originalMessageId"], "exp");
    assert_eq!(recs[0]["deviceId"], "dev-f");
    assert!(emu
        .c2d_messages()
        .iter()
        .any(|m| m.message_id.as_deref() == Some("exp") && m.state == C2dState::Expired));

    // Device completes / rejects: Success for positive and full, Rejected for negative and full,
    // nothing for none, positive-only rejection, negative-only completion.
    for (id, ack) in [
        ("c-none", "none"),
        ("c-pos", "positive"),
        ("c-neg", "negativeonly"),
        ("c-full", "full"),
    ] {
        tx.send(send(id, ack, None)).await.unwrap();
        let m = emu.device_receive("dev-f").unwrap();
        assert_eq!(m.message_id.as_deref(), Some(id));
        assert!(emu.device_settle("dev-f", m.etag().unwrap(), false));
    }
    for (id, ack) in [
        ("r-none", "none"),
        ("r-pos", "positiveonly"),
        ("r-neg", "negative"),
        ("r-full", "full"),
    ] {
        tx.send(send(id, ack, None)).await.unwrap();
        let m = emu.device_receive("dev-f").unwrap();
        assert!(emu.device_settle("dev-f", m.etag().unwrap(), true));
    }
    let recs = feedback(&mut fb, 4).await;
    let got: Vec<(String, String)> = recs
        .iter()
        .map(|r| {
            (
                r["originalMessageId"].as_str().unwrap().to_string(),
                r["statusCode"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("c-pos".into(), "Success".into()),
            ("c-full".into(), "Success".into()),
            ("r-neg".into(), "Rejected".into()),
            ("r-full".into(), "Rejected".into()),
        ]
    );
    assert!(emu.stats().feedback_messages_sent >= 2);
    conn.close().await.ok();
    emu.shutdown().await;
}
