//! C2D over AMQP WebSockets (`IotHub.TransportType=AmqpWebSockets`) against the emulator's
//! WebSocket listener: plain `ws://`, and `wss://` with a private CA through an HTTP CONNECT proxy.

use iotconnect::config::connector::TransportType;
use iotconnect::config::Secret;
use iotconnect::iothub::c2d::{C2dClient, C2dMessage, C2dOptions, Outcome};
use iotconnect::iothub::connstr::IotHubConnectionString;
use iotconnect_emulator::{Emulator, EmulatorOptions};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const TEST_TIMEOUT: Duration = Duration::from_secs(90);

fn ws_opts(emu: &Emulator) -> C2dOptions {
    let cs =
        IotHubConnectionString::parse(&Secret::new(emu.info().service_connection_string.expose()))
            .unwrap();
    let mut o = C2dOptions::new(cs);
    o.endpoint = Some(emu.info().ws_endpoint.clone().expect("ws listener"));
    o.transport = TransportType::AmqpWebSockets;
    o.operation_timeout = Duration::from_secs(10);
    o
}

async fn send_and_check(client: &C2dClient, n: usize) {
    let mut handles = Vec::new();
    for i in 0..n {
        handles.push(
            client
                .send(C2dMessage::new(
                    format!("ws-dev-{}", i % 3),
                    format!("ws-{i}"),
                    format!("body {i}"),
                ))
                .await
                .unwrap(),
        );
    }
    for h in handles {
        assert_eq!(h.await.unwrap().outcome, Outcome::Accepted);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c2d_over_websockets() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let emu = Emulator::start(EmulatorOptions {
            ws_listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            ..Default::default()
        })
        .await
        .unwrap();
        let o = ws_opts(&emu);
        assert!(o.endpoint.as_deref().unwrap().starts_with("ws://"));
        let client = C2dClient::connect(o).await.unwrap();
        send_and_check(&client, 30).await;
        client.close(Duration::from_secs(5)).await;
        let got: Vec<_> = emu
            .c2d_messages()
            .into_iter()
            .filter(|m| m.device_id == "ws-dev-0")
            .collect();
        assert_eq!(got.len(), 10);
        assert_eq!(got[0].body, "body 0");
        emu.shutdown().await;
    })
    .await
    .expect("test timed out")
}

/// A minimal HTTP CONNECT proxy on loopback; records each tunnel's target.
async fn connect_proxy() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let s = s.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                while !head.ends_with(b"\r\n\r\n") {
                    let Ok(b) = client.read_u8().await else {
                        return;
                    };
                    head.push(b);
                }
                let text = String::from_utf8_lossy(&head).to_string();
                let target = text
                    .strip_prefix("CONNECT ")
                    .and_then(|r| r.split_whitespace().next())
                    .unwrap_or_default()
                    .to_string();
                s.lock().unwrap().push(target.clone());
                let Ok(mut upstream) = TcpStream::connect(&target).await else {
                    let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n").await;
                    return;
                };
                let _ = client
                    .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    .await;
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            });
        }
    });
    (addr, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c2d_over_secure_websockets_through_a_proxy_with_a_private_ca() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let dir = tempfile::tempdir().unwrap();
        let pki = crate::support::pki(dir.path());
        let emu = Emulator::start(EmulatorOptions {
            tls_cert: Some(pki.cert),
            tls_key: Some(pki.key),
            ws_listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            ..Default::default()
        })
        .await
        .unwrap();
        let (proxy, seen) = connect_proxy().await;
        let mut o = ws_opts(&emu);
        let ws = o.endpoint.clone().unwrap();
        assert!(ws.starts_with("wss://"), "{ws}");
        o.ca_pem = Some(pki.ca_pem.into_bytes());
        o.proxy = Some(format!("http://{proxy}"));
        let client = C2dClient::connect(o.clone()).await.unwrap();
        send_and_check(&client, 10).await;
        client.close(Duration::from_secs(5)).await;
        let host_port = ws
            .trim_start_matches("wss://")
            .split('/')
            .next()
            .unwrap()
            .to_string();
        assert_eq!(
            seen.lock().unwrap().clone(),
            vec![host_port],
            "one tunnel to the hub"
        );
        // Without the private CA the hub is not trusted, proxy or not.
        o.ca_pem = None;
        let e = C2dClient::connect(o).await.unwrap_err();
        assert!(e.to_string().contains("TLS"), "{e}");
        emu.shutdown().await;
    })
    .await
    .expect("test timed out")
}
