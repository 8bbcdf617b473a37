//! The C2D client against a minimal peer of our own, for what the emulator cannot do:
//! - a hub that accepts transfers but never settles them (half dead): the client must notice the
//!   missing settlements within its operation timeout, reconnect and resend;
//! - a hub that settles instantly and keeps nothing, to measure the client's own overhead.
//!
//! The peer is a minimal fe2o3-amqp acceptor: SASL ANONYMOUS, `$cbs` put-token answered with 200,
//! `/messages/devicebound` received. Connections numbered below `settle_from` never settle.

use crate::raw_c2d;
use fe2o3_amqp::acceptor::{
    ConnectionAcceptor, LinkAcceptor, LinkEndpoint, SaslAnonymousMechanism, SessionAcceptor,
};
use fe2o3_amqp::link::{Receiver, Sender};
use fe2o3_amqp::types::messaging::{
    AmqpValue, ApplicationProperties, Body, Message, MessageId, Properties, TargetArchetype,
};
use fe2o3_amqp::types::primitives::{SimpleValue, Value};
use futures::FutureExt;
use iotconnect::config::Secret;

use iotconnect::iothub::c2d::{C2dClient, C2dMessage, C2dOptions, Outcome};
use iotconnect::iothub::connstr::IotHubConnectionString;
use iotconnect::iothub::ratelimit::Backoff;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

#[derive(Default)]
struct PeerState {
    /// Keep the message ids (off for the measurement).
    record: bool,
    connections: AtomicUsize,
    /// (connection number, message id) of every transfer received.
    received: Mutex<Vec<(usize, String)>>,
}

async fn cbs_requests(mut rx: Receiver, replies: mpsc::UnboundedSender<Message<AmqpValue<Value>>>) {
    while let Ok(d) = rx.recv::<Body<Value>>().await {
        let _ = rx.accept(&d).await;
        let id = d
            .message()
            .properties
            .as_ref()
            .and_then(|p| p.message_id.clone());
        let props = Properties {
            correlation_id: id,
            ..Default::default()
        };
        let reply = Message::builder()
            .properties(props)
            .application_properties(
                ApplicationProperties::builder()
                    .insert("status-code", SimpleValue::Int(200))
                    .insert("status-description", "OK")
                    .build(),
            )
            .value(Value::Null)
            .build();
        let _ = replies.send(reply);
    }
}

async fn cbs_replies(
    mut tx: Sender,
    mut replies: mpsc::UnboundedReceiver<Message<AmqpValue<Value>>>,
) {
    while let Some(m) = replies.recv().await {
        if tx.send(m).await.is_err() {
            return;
        }
    }
}

async fn devicebound(mut rx: Receiver, conn: usize, settle: bool, state: Arc<PeerState>) {
    let mut held = Vec::new();
    while let Ok(d) = rx.recv::<Body<Value>>().await {
        let id = match d
            .message()
            .properties
            .as_ref()
            .and_then(|p| p.message_id.clone())
        {
            Some(MessageId::String(s)) => s,
            other => format!("{other:?}"),
        };
        if state.record {
            state.received.lock().unwrap().push((conn, id));
        }
        if settle {
            let _ = rx.accept(&d).await;
        } else {
            held.push(d);
        }
    }
}

async fn serve(listener: TcpListener, settle_from: usize, state: Arc<PeerState>) {
    while let Ok((tcp, _)) = listener.accept().await {
        let state = state.clone();
        tokio::spawn(async move {
            let n = state.connections.fetch_add(1, Ordering::SeqCst);
            let acceptor = ConnectionAcceptor::builder()
                .container_id("stall-peer")
                .sasl_acceptor(SaslAnonymousMechanism::new())
                .build();
            let Ok(mut conn) = acceptor.accept(tcp).await else {
                return;
            };
            let Ok(mut session) = SessionAcceptor::new().accept(&mut conn).await else {
                return;
            };
            let links = LinkAcceptor::new();
            let (reply_tx, reply_rx) = mpsc::unbounded_channel();
            let mut reply_rx = Some(reply_rx);
            let mut tasks = tokio::task::JoinSet::new();
            while let Some(attach) = session.next_incoming_attach().await {
                let target = match attach.target.as_deref() {
                    Some(TargetArchetype::Target(t)) => t.address.clone().unwrap_or_default(),
                    #[allow(unreachable_patterns)]
                    _ => String::new(),
                };
                match links.accept_incoming_attach(attach, &mut session).await {
                    Ok(LinkEndpoint::Receiver(r)) if target == "$cbs" => {
                        tasks.spawn(cbs_requests(r, reply_tx.clone()));
                    }
                    Ok(LinkEndpoint::Receiver(r)) => {
                        tasks.spawn(devicebound(r, n, n >= settle_from, state.clone()));
                    }
                    Ok(LinkEndpoint::Sender(s)) => {
                        if let Some(rr) = reply_rx.take() {
                            tasks.spawn(cbs_replies(s, rr));
                        }
                    }
                    Err(_) => return,
                }
            }
            // Keep the connection up while its links run.
            while tasks.join_next().await.is_some() {}
            drop(conn);
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_settlements_trigger_reconnect_and_resend() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(PeerState {
            record: true,
            ..Default::default()
        });
        tokio::spawn(serve(listener, 1, state.clone()));

        let cs = IotHubConnectionString::parse(&Secret::new(format!(
            "HostName=127.0.0.1:{port};SharedAccessKeyName=service;SharedAccessKey=c2VjcmV0"
        )))
        .unwrap();
        let mut o = C2dOptions::new(cs);
        o.endpoint = Some(format!("amqp://127.0.0.1:{port}"));
        o.operation_timeout = Duration::from_millis(800);
        o.reconnect_backoff = Backoff::new(Duration::from_millis(20), Duration::from_millis(100));
        let client = C2dClient::connect(o).await.unwrap();
        let mut handles = Vec::new();
        for i in 0..3 {
            handles.push(
                client
                    .send(C2dMessage::new(format!("d{i}"), format!("m-{i}"), "x"))
                    .await
                    .unwrap(),
            );
        }
        for h in handles {
            let c = h.await.unwrap();
            assert_eq!(c.outcome, Outcome::Accepted);
            assert_eq!(c.attempts, 2, "sent on the stalled connection, then again");
        }
        let m = client.metrics().snapshot();
        assert_eq!(m.reconnects, 1, "{m:?}");
        assert_eq!(state.connections.load(Ordering::SeqCst), 2);
        let received = state.received.lock().unwrap().clone();
        for i in 0..3 {
            let id = format!("m-{i}");
            assert!(received.contains(&(0, id.clone())), "{received:?}");
            assert!(received.contains(&(1, id)), "{received:?}");
        }
        client.close(Duration::from_secs(2)).await;
    })
    .await
    .expect("test timed out");
}

fn options(port: u16) -> C2dOptions {
    let cs = IotHubConnectionString::parse(&Secret::new(format!(
        "HostName=127.0.0.1:{port};SharedAccessKeyName=service;SharedAccessKey=c2VjcmV0"
    )))
    .unwrap();
    let mut o = C2dOptions::new(cs);
    o.endpoint = Some(format!("amqp://127.0.0.1:{port}"));
    o
}

/// Client throughput against the bare fe2o3 sender, both against the instant-settling peer.
/// A measurement, not a check: `cargo test -p iotconnect-tests --test sink -- --ignored --nocapture iothub_c2d_peer::`
/// (add `--release` for meaningful absolute numbers).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "timing measurement on a shared machine; run explicitly"]
async fn measure_overhead_against_instant_peer() {
    use futures::StreamExt;
    let n: usize = std::env::var("C2D_MEASURE_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(serve(listener, 0, Arc::new(PeerState::default())));
    let devices: Vec<String> = (0..1000).map(|i| format!("dev-{i}")).collect();
    for round in 0..2 {
        let raw = raw_c2d::raw_send_rate(&options(port), n as u64, &devices, &[b'x'; 64], 64)
            .await
            .unwrap();
        let client = Arc::new(C2dClient::connect(options(port)).await.unwrap());
        let t0 = std::time::Instant::now();
        let c2 = client.clone();
        let devs = devices.clone();
        let ok = tokio::spawn(async move {
            let mut handles = futures::stream::FuturesUnordered::new();
            let mut ok = 0;
            for i in 0..n {
                let h = c2
                    .send(C2dMessage::new(
                        devs[i % devs.len()].clone(),
                        format!("m-{i}"),
                        vec![b'x'; 64],
                    ))
                    .await
                    .unwrap();
                handles.push(h);
                // Collect as we go, as a sink would.
                while let Some(Some(c)) = handles.next().now_or_never() {
                    ok += usize::from(c.unwrap().outcome == Outcome::Accepted);
                }
            }
            while let Some(c) = handles.next().await {
                ok += usize::from(c.unwrap().outcome == Outcome::Accepted);
            }
            ok
        })
        .await
        .unwrap();
        let rate = n as f64 / t0.elapsed().as_secs_f64();
        println!(
            "round {round}: bare fe2o3 sender {:.0}/s, C2dClient {rate:.0}/s, ratio {:.2}",
            raw.per_second,
            rate / raw.per_second
        );
        assert_eq!(ok, n);
        client.close(Duration::from_secs(2)).await;
    }
}
