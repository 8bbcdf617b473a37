//! fe2o3-amqp 0.18 client helpers shared by the emulator's integration tests.
#![allow(dead_code)]

use fe2o3_amqp::link::{Receiver, Sender};
use fe2o3_amqp::session::SessionHandle;
use fe2o3_amqp::types::messaging::{ApplicationProperties, Body, Message, Properties};
use fe2o3_amqp::types::primitives::{SimpleValue, Value};
use iotconnect::emulator::Emulator;
use iotconnect::iothub::sas::{self, KeyEncoding};
use std::time::Duration;

pub const T: Duration = Duration::from_secs(20);

pub fn init() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// IoT Hub service token for the emulator (sr = its HostName, base64-decoded key).
pub fn service_token(emu: &Emulator, ttl: Duration) -> String {
    sas::generate_token(
        &emu.info().iot_hub_host_name,
        "service",
        emu.info().access_key_value.expose(),
        KeyEncoding::Base64Decoded,
        sas::expiry_in(ttl),
    )
    .unwrap()
}

/// Event Hubs token for `audience` (raw key bytes).
pub fn eventhub_token(emu: &Emulator, audience: &str) -> String {
    sas::generate_token(
        audience,
        "service",
        emu.info().access_key_value.expose(),
        KeyEncoding::Raw,
        sas::expiry_in(Duration::from_secs(600)),
    )
    .unwrap()
}

/// Sends one put-token on `$cbs` and returns the reply's status code.
pub async fn put_token<R>(session: &mut SessionHandle<R>, audience: &str, token: &str) -> i32 {
    let mut tx = Sender::attach(
        session,
        format!("cbs-sender-{}", uuid::Uuid::new_v4()),
        "$cbs",
    )
    .await
    .expect("attach $cbs sender");
    let mut rx = Receiver::builder()
        .name(format!("cbs-receiver-{}", uuid::Uuid::new_v4()))
        .source("$cbs")
        .target("cbs-reply")
        .attach(session)
        .await
        .expect("attach $cbs receiver");
    let msg = Message::builder()
        .properties(
            Properties::builder()
                .message_id(String::from("put-1"))
                .reply_to("cbs-reply")
                .to("$cbs")
                .build(),
        )
        .application_properties(
            ApplicationProperties::builder()
                .insert("operation", "put-token")
                .insert("type", "servicebus.windows.net:sastoken")
                .insert("name", audience)
                .build(),
        )
        .value(token.to_string())
        .build();
    tx.send(msg).await.expect("send put-token");
    let resp = tokio::time::timeout(T, rx.recv::<Body<Value>>())
        .await
        .expect("put-token reply timed out")
        .expect("put-token reply");
    rx.accept(&resp).await.unwrap();
    let m = resp.message();
    assert_eq!(
        m.properties.as_ref().and_then(|p| p.correlation_id.clone()),
        Some(fe2o3_amqp::types::messaging::MessageId::String(
            "put-1".into()
        ))
    );
    let status = m
        .application_properties
        .as_ref()
        .and_then(|a| a.get("status-code").cloned());
    tx.close().await.ok();
    rx.close().await.ok();
    match status {
        Some(SimpleValue::Int(n)) => n,
        other => panic!("status-code missing or not an int: {other:?}"),
    }
}

/// The AMQP symbol of an error condition (`amqp:not-found`, `com.microsoft:…`).
pub fn condition_symbol(c: &fe2o3_amqp::types::definitions::ErrorCondition) -> String {
    use fe2o3_amqp::types::definitions::ErrorCondition as C;
    use fe2o3_amqp::types::primitives::Symbol;
    match c {
        C::AmqpError(e) => Symbol::from(e).to_string(),
        C::ConnectionError(e) => Symbol::from(e).to_string(),
        C::SessionError(e) => Symbol::from(e).to_string(),
        C::LinkError(e) => Symbol::from(e).to_string(),
        C::Custom(s) => s.to_string(),
        #[allow(unreachable_patterns)]
        other => format!("{other:?}"),
    }
}
