//! fe2o3-amqp 0.18 client helpers shared by the emulator's integration tests.
#![allow(dead_code)]

use fe2o3_amqp::link::{Receiver, Sender};
use fe2o3_amqp::session::SessionHandle;
use fe2o3_amqp::types::messaging::{ApplicationProperties, Body, Message, Properties};
use fe2o3_amqp::types::primitives::{SimpleValue, Value};
use iotconnect::iothub::sas::{self, KeyEncoding};
use iotconnect_emulator::Emulator;
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

/// Opens a connection authorised for the Event Hub-compatible endpoint (put-token on the hub).
pub async fn eventhub_session(
    emu: &Emulator,
) -> (
    fe2o3_amqp::connection::ConnectionHandle<()>,
    fe2o3_amqp::session::SessionHandle<()>,
) {
    init();
    let mut conn = fe2o3_amqp::Connection::builder()
        .container_id(format!("test-{}", uuid::Uuid::new_v4()))
        .hostname("127.0.0.1")
        .sasl_profile(fe2o3_amqp::sasl_profile::SaslProfile::Anonymous)
        .open(emu.info().amqp_endpoint.as_str())
        .await
        .expect("connect");
    let mut session = fe2o3_amqp::Session::begin(&mut conn)
        .await
        .expect("session");
    let aud = format!(
        "sb://{}/{}",
        emu.info().iot_hub_host_name,
        emu.info().hub_name
    );
    assert_eq!(
        put_token(&mut session, &aud, &eventhub_token(emu, &aud)).await,
        202
    );
    (conn, session)
}

/// Attaches a partition receiver with an Event Hubs selector and an optional epoch.
pub async fn partition_receiver<R>(
    session: &mut SessionHandle<R>,
    emu: &Emulator,
    partition: u32,
    selector: &str,
    epoch: Option<i64>,
    credit: fe2o3_amqp::link::receiver::CreditMode,
) -> Result<Receiver, fe2o3_amqp::link::ReceiverAttachError> {
    use fe2o3_amqp::types::messaging::Source;
    use fe2o3_amqp::types::primitives::{Symbol, Value};
    use serde_amqp::described::Described;
    use serde_amqp::descriptor::Descriptor;
    let filter = Described {
        descriptor: Descriptor::Code(0x0000_468C_0000_0004),
        value: Value::String(selector.to_string()),
    };
    let source = Source::builder()
        .address(format!(
            "{}/ConsumerGroups/$Default/Partitions/{partition}",
            emu.info().hub_name
        ))
        .add_to_filter(Symbol::from("apache.org:selector-filter:string"), filter)
        .build();
    let mut b = Receiver::builder()
        .name(format!("p{partition}-{}", uuid::Uuid::new_v4()))
        .source(source)
        .target("receiver")
        .credit_mode(credit);
    if let Some(e) = epoch {
        let mut props = fe2o3_amqp::types::definitions::Fields::new();
        props.insert(Symbol::from("com.microsoft:epoch"), Value::Long(e));
        b = b.properties(props);
    }
    b.attach(session).await
}

/// The sequence number annotation of a received event.
pub fn seq_of<T>(d: &fe2o3_amqp::link::delivery::Delivery<T>) -> i64 {
    use fe2o3_amqp::types::messaging::annotations::OwnedKey;
    use fe2o3_amqp::types::primitives::{Symbol, Value};
    match d
        .message()
        .message_annotations
        .as_ref()
        .and_then(|a| a.get(&OwnedKey::Symbol(Symbol::from("x-opt-sequence-number"))))
    {
        Some(Value::Long(n)) => *n,
        other => panic!("x-opt-sequence-number missing: {other:?}"),
    }
}
