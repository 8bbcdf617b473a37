//! The device HTTP API (IoT Hub's device REST paths) and the control endpoints.

use crate::emulator_support;

use emulator_support::*;
use fe2o3_amqp::link::receiver::CreditMode;
use fe2o3_amqp::link::Sender;
use fe2o3_amqp::types::messaging::{ApplicationProperties, Body, Message, Outcome, Properties};
use fe2o3_amqp::types::primitives::{Binary, SimpleValue, Value};
use iotconnect::iothub::sas::{self, KeyEncoding};
use iotconnect_emulator::{C2dState, Emulator, EmulatorOptions};
use std::time::Duration;

fn device_token(emu: &Emulator, device: &str) -> String {
    sas::generate_token(
        &format!("{}/devices/{device}", emu.info().iot_hub_host_name),
        "service",
        emu.info().access_key_value.expose(),
        KeyEncoding::Base64Decoded,
        sas::expiry_in(Duration::from_secs(600)),
    )
    .unwrap()
}

async fn send_c2d(tx: &mut Sender, device: &str, id: &str, ack: &str) -> Outcome {
    let msg = Message::builder()
        .properties(
            Properties::builder()
                .to(format!("/devices/{device}/messages/devicebound"))
                .message_id(id.to_string())
                .build(),
        )
        .application_properties(
            ApplicationProperties::builder()
                .insert("iothub-ack", ack)
                .insert("k", "v")
                .build(),
        )
        .data(Binary::from(format!("payload-{id}").into_bytes()))
        .build();
    tx.send(msg).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_api_telemetry_and_cloud_to_device() {
    let emu = Emulator::start(EmulatorOptions::default()).await.unwrap();
    let http = reqwest::Client::new();
    let base = emu.info().http_endpoint.clone();
    let dev = "dev-h";

    // Telemetry: no Authorization → 401; a valid device-scoped SAS → 204.
    let url = format!("{base}/devices/{dev}/messages/events?api-version=2020-03-13");
    let r = http.post(&url).body("x").send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = http
        .post(&url)
        .header("Authorization", device_token(&emu, "someone-else"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = http
        .post(&url)
        .header("Authorization", device_token(&emu, dev))
        .header("iothub-messageid", "h-1")
        .header("iothub-correlationid", "hc-1")
        .header("iothub-contenttype", "application/json")
        .header("iothub-contentencoding", "utf-8")
        .header("iothub-app-temperature", "21.5")
        .body(vec![b'{', 0xff, b'}'])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);

    // The event arrives on the device's partition with its properties.
    let (mut conn, mut session) = eventhub_session(&emu).await;
    let p = emu.partition_of(dev);
    let mut rx = partition_receiver(
        &mut session,
        &emu,
        p,
        "amqp.annotation.x-opt-sequence-number >= '0'",
        None,
        CreditMode::Auto(10),
    )
    .await
    .unwrap();
    let d = tokio::time::timeout(T, rx.recv::<Body<Value>>())
        .await
        .unwrap()
        .unwrap();
    rx.accept(&d).await.unwrap();
    let m = d.message();
    match &m.body {
        Body::Data(b) => assert_eq!(
            b.iter()
                .flat_map(|d| d.0.iter().copied())
                .collect::<Vec<u8>>(),
            vec![b'{', 0xff, b'}']
        ),
        other => panic!("{other:?}"),
    }
    let props = m.properties.as_ref().unwrap();
    assert_eq!(format!("{:?}", props.message_id), "Some(String(\"h-1\"))");
    assert_eq!(
        props.content_type.as_ref().map(|s| s.as_str()),
        Some("application/json")
    );
    assert_eq!(
        m.application_properties
            .as_ref()
            .unwrap()
            .get("temperature"),
        Some(&SimpleValue::String("21.5".into()))
    );
    rx.close().await.ok();

    // Cloud-to-device through the service endpoint, then received by the device over HTTP.
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
    assert!(matches!(
        send_c2d(&mut tx, dev, "c-1", "full").await,
        Outcome::Accepted(_)
    ));
    assert!(matches!(
        send_c2d(&mut tx, dev, "c-2", "full").await,
        Outcome::Accepted(_)
    ));

    let recv_url = format!("{base}/devices/{dev}/messages/deviceBound?api-version=2020-03-13");
    let auth = device_token(&emu, dev);
    let r = http
        .get(&recv_url)
        .header("Authorization", &auth)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let h = r.headers().clone();
    assert_eq!(h["iothub-messageid"], "c-1");
    assert_eq!(
        h["iothub-to"],
        format!("/devices/{dev}/messages/devicebound").as_str()
    );
    assert_eq!(h["iothub-ack"], "full");
    assert_eq!(h["iothub-deliverycount"], "1");
    assert_eq!(h["iothub-app-k"], "v");
    assert!(h.contains_key("iothub-enqueuedtime"));
    let etag = h["etag"].to_str().unwrap().trim_matches('"').to_string();
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"payload-c-1");

    // A wrong lock token: 412; complete with the right one: 204.
    let settle = |etag: &str, q: &str| {
        format!("{base}/devices/{dev}/messages/deviceBound/{etag}?api-version=2020-03-13{q}")
    };
    let r = http
        .delete(settle("nope", ""))
        .header("Authorization", &auth)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 412);
    let r = http
        .delete(settle(&etag, ""))
        .header("Authorization", &auth)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);

    // Abandon puts it back (delivery count grows); then reject.
    let r = http
        .get(&recv_url)
        .header("Authorization", &auth)
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["iothub-messageid"], "c-2");
    let etag2 = r.headers()["etag"]
        .to_str()
        .unwrap()
        .trim_matches('"')
        .to_string();
    let r = http
        .post(format!(
            "{base}/devices/{dev}/messages/deviceBound/{etag2}/abandon?api-version=2020-03-13"
        ))
        .header("Authorization", &auth)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = http
        .get(&recv_url)
        .header("Authorization", &auth)
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["iothub-deliverycount"], "2");
    let etag3 = r.headers()["etag"]
        .to_str()
        .unwrap()
        .trim_matches('"')
        .to_string();
    let r = http
        .delete(settle(&etag3, "&reject"))
        .header("Authorization", &auth)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = http
        .get(&recv_url)
        .header("Authorization", &auth)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);

    let states: Vec<_> = emu.c2d_messages().iter().map(|m| m.state).collect();
    assert_eq!(states, vec![C2dState::Completed, C2dState::Rejected]);

    // Control endpoints. /emulator/c2d shows message bodies: a service token is required.
    let r = http
        .get(format!("{base}/emulator/c2d"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = http
        .get(format!("{base}/emulator/c2d"))
        .header("Authorization", &auth)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        401,
        "a device-scoped token does not open /emulator/c2d"
    );
    let r: serde_json::Value = http
        .get(format!("{base}/emulator/c2d"))
        .header(
            "Authorization",
            service_token(&emu, Duration::from_secs(60)),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r.as_array().unwrap().len(), 2);
    assert_eq!(r[0]["messageId"], "c-1");
    assert_eq!(r[0]["state"], "Completed");
    assert_eq!(r[1]["properties"][0][0], "k");
    let r: serde_json::Value = http
        .post(format!("{base}/emulator/generate"))
        .json(&serde_json::json!({"events": 1000, "size": 100, "devices": 4}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["events"], 1000);
    let stats: serde_json::Value = http
        .get(format!("{base}/emulator/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["eventsEnqueued"], 1001);
    assert_eq!(stats["c2dAccepted"], 2);
    let r = http
        .post(format!("{base}/emulator/faults"))
        .json(&serde_json::json!({"throttleC2dSeconds": 30}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(matches!(
        send_c2d(&mut tx, dev, "c-3", "none").await,
        Outcome::Rejected(_)
    ));

    tx.close().await.ok();
    conn.close().await.ok();
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_auth_accepts_requests_without_authorization() {
    let emu = Emulator::start(EmulatorOptions {
        no_auth: true,
        ..Default::default()
    })
    .await
    .unwrap();
    let r = reqwest::Client::new()
        .post(format!(
            "{}/devices/demo/messages/events",
            emu.info().http_endpoint
        ))
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(emu.stats().events_enqueued, 1);
    emu.shutdown().await;
}
