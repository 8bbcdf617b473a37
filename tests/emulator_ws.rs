//! AMQP over WebSockets (`--ws-listen`): Microsoft's Rust Event Hubs clients with
//! `AmqpTransport::WebSocket` (wss, trusting a test CA through `SSL_CERT_FILE`, which is how that
//! transport finds its roots), the C2D service endpoint through fe2o3-amqp-ws (ws and wss), and
//! the upgrade's path and subprotocol checks.

use crate::emulator_support;

use azure_messaging_eventhubs::models::{AmqpSimpleValue, AmqpTransport, EventData};
use azure_messaging_eventhubs::{
    ConsumerClient, OpenReceiverOptions, ProducerClient, SendEventOptions, StartLocation,
    StartPosition,
};
use emulator_support::*;
use fe2o3_amqp::sasl_profile::SaslProfile;
use fe2o3_amqp::types::messaging::{Message, Outcome, Properties};
use fe2o3_amqp::types::primitives::Binary;
use fe2o3_amqp::{Connection, Sender, Session};
use futures::StreamExt;
use iotconnect_emulator::{Emulator, EmulatorOptions};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::OnceLock;

struct Tls {
    _dir: tempfile::TempDir,
    cert: PathBuf,
    key: PathBuf,
}

/// A test CA and a server certificate for 127.0.0.1; `SSL_CERT_FILE` points at the CA (set once,
/// before any client of this binary loads its roots).
fn tls() -> &'static Tls {
    static TLS: OnceLock<Tls> = OnceLock::new();
    TLS.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let pki = crate::support::pki(dir.path());
        std::env::set_var("SSL_CERT_FILE", &pki.ca);
        Tls {
            cert: pki.cert,
            key: pki.key,
            _dir: dir,
        }
    })
}

async fn emulator(with_tls: bool) -> Emulator {
    init();
    let t = with_tls.then(tls);
    Emulator::start(EmulatorOptions {
        ws_listen: Some(([127, 0, 0, 1], 0).into()),
        tls_cert: t.map(|t| t.cert.clone()),
        tls_key: t.map(|t| t.key.clone()),
        ..Default::default()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_sdk_produces_and_consumes_over_wss() {
    let emu = emulator(true).await;
    let info = emu.info().clone();
    let ws = info.ws_endpoint.clone().unwrap();
    assert!(
        ws.starts_with("wss://127.0.0.1:") && ws.ends_with("/$servicebus/websocket"),
        "{ws}"
    );
    // The SDK keeps only host and port of the custom endpoint and dials wss://host:port/$servicebus/websocket/.
    let endpoint = format!("https://{}", info.ws_host_port.clone().unwrap());
    let cs = info.event_hub_connection_string.expose().to_string();
    emu.send_telemetry("ws-device", &b"from the device"[..], None);
    let p = emu.partition_of("ws-device");

    let producer = ProducerClient::builder()
        .with_transport(AmqpTransport::WebSocket)
        .with_custom_endpoint(endpoint.clone())
        .open_with_connection_string(&cs, None)
        .await
        .expect("producer over wss");
    let ev = EventData::builder()
        .with_body(b"from a producer".to_vec())
        .with_content_type("text/plain".into())
        .add_property(
            "cloudEvents:type".into(),
            AmqpSimpleValue::String("t.update".into()),
        )
        .build();
    producer
        .send_event(
            ev,
            Some(SendEventOptions {
                partition_id: Some(p.to_string()),
            }),
        )
        .await
        .expect("send over wss");
    producer.close().await.ok();

    let consumer = ConsumerClient::builder()
        .with_transport(AmqpTransport::WebSocket)
        .with_custom_endpoint(endpoint)
        .open_with_connection_string(&cs, None)
        .await
        .expect("consumer over wss");
    let props = consumer
        .get_partition_properties(&p.to_string())
        .await
        .unwrap();
    assert_eq!(props.last_enqueued_sequence_number, 1);
    let rx = consumer
        .open_receiver_on_partition(
            p.to_string(),
            Some(OpenReceiverOptions {
                start_position: Some(StartPosition {
                    location: StartLocation::Earliest,
                    inclusive: true,
                }),
                ..Default::default()
            }),
        )
        .await
        .unwrap();
    let mut got = Vec::new();
    {
        let mut s = std::pin::pin!(rx.stream_events());
        while got.len() < 2 {
            let ev = tokio::time::timeout(T, s.next())
                .await
                .expect("events over wss")
                .expect("stream open")
                .expect("event");
            got.push(ev);
        }
    }
    let first = got[0].event_data();
    assert_eq!(first.body(), Some(&b"from the device"[..]));
    let second = got[1].event_data();
    assert_eq!(second.body(), Some(&b"from a producer"[..]));
    assert_eq!(
        second
            .properties()
            .and_then(|p| p.get("cloudEvents:type"))
            .cloned(),
        Some(AmqpSimpleValue::String("t.update".into()))
    );
    // Producer events carry no IoT Hub annotations.
    assert!(got[1]
        .system_properties()
        .keys()
        .all(|k| !format!("{k:?}").contains("iothub-")));
    assert!(got[0]
        .system_properties()
        .keys()
        .any(|k| format!("{k:?}").contains("iothub-connection-device-id")));
    rx.close().await.ok();
    consumer.close().await.ok();
    emu.shutdown().await;
}

async fn c2d_over(emu: &Emulator, url: &str) {
    let ws = fe2o3_amqp_ws::WebSocketStream::connect(url)
        .await
        .expect("websocket upgrade");
    let mut conn = Connection::builder()
        .container_id(format!("ws-{}", uuid::Uuid::new_v4()))
        .hostname(emu.info().iot_hub_host_name.as_str())
        .sasl_profile(SaslProfile::Anonymous)
        .open_with_stream(ws)
        .await
        .expect("AMQP over the websocket");
    let mut session = Session::begin(&mut conn).await.unwrap();
    let host = emu.info().iot_hub_host_name.clone();
    assert_eq!(
        put_token(&mut session, &host, &service_token(emu, T)).await,
        200
    );
    let mut tx = Sender::attach(&mut session, "c2d", "/messages/devicebound")
        .await
        .unwrap();
    let id = uuid::Uuid::new_v4().to_string();
    let msg = Message::builder()
        .properties(
            Properties::builder()
                .to("/devices/ws-dev/messages/devicebound")
                .message_id(id.clone())
                .build(),
        )
        .data(Binary::from(b"Turn On".to_vec()))
        .build();
    assert!(matches!(tx.send(msg).await.unwrap(), Outcome::Accepted(_)));
    assert!(emu
        .c2d_messages()
        .iter()
        .any(|m| m.message_id.as_deref() == Some(id.as_str()) && m.raw_body == b"Turn On"));
    tx.close().await.ok();
    conn.close().await.ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c2d_service_endpoint_over_ws_and_wss() {
    let plain = emulator(false).await;
    let url = plain.info().ws_endpoint.clone().unwrap();
    assert!(url.starts_with("ws://"), "{url}");
    c2d_over(&plain, &url).await;
    plain.shutdown().await;
    let secure = emulator(true).await;
    let url = secure.info().ws_endpoint.clone().unwrap();
    c2d_over(&secure, &url).await;
    secure.shutdown().await;
}

/// Sends a WebSocket upgrade by hand and returns the status line.
fn upgrade(addr: &str, path: &str, protocol: Option<&str>) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    let proto = protocol
        .map(|p| format!("Sec-WebSocket-Protocol: {p}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{proto}\r\n"
    )
    .unwrap();
    let mut buf = [0u8; 512];
    let n = s.read(&mut buf).unwrap();
    let text = String::from_utf8_lossy(&buf[..n]).to_string();
    text.lines().next().unwrap_or_default().to_string()
        + if text
            .to_ascii_lowercase()
            .contains("sec-websocket-protocol: amqpwsb10")
        {
            " +AMQPWSB10"
        } else {
            ""
        }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_checks_path_and_subprotocol() {
    let emu = emulator(false).await;
    let addr = emu.info().ws_host_port.clone().unwrap();
    let (a, b, c, d) = tokio::task::spawn_blocking(move || {
        (
            upgrade(&addr, "/$servicebus/websocket", Some("AMQPWSB10")),
            upgrade(&addr, "/$servicebus/websocket/", Some("amqp, AMQPWSB10")),
            upgrade(&addr, "/other", Some("AMQPWSB10")),
            upgrade(&addr, "/$servicebus/websocket", None),
        )
    })
    .await
    .unwrap();
    assert_eq!(a, "HTTP/1.1 101 Switching Protocols +AMQPWSB10");
    assert_eq!(b, "HTTP/1.1 101 Switching Protocols +AMQPWSB10");
    assert!(c.starts_with("HTTP/1.1 404"), "{c}");
    assert!(d.starts_with("HTTP/1.1 400"), "{d}");
    emu.shutdown().await;
}
