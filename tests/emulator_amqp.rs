//! Partition receivers at the AMQP level (fe2o3-amqp 0.18 client): epoch stealing, credit flow,
//! faults, and the TLS listener with a test CA.

use crate::emulator_support;

use emulator_support::*;
use fe2o3_amqp::link::receiver::CreditMode;
use fe2o3_amqp::link::Sender;
use fe2o3_amqp::sasl_profile::SaslProfile;
use fe2o3_amqp::types::messaging::{Body, Message, Outcome, Properties};
use fe2o3_amqp::types::primitives::{Binary, Value};
use fe2o3_amqp::{Connection, Session};
use iotconnect_emulator::{Emulator, EmulatorOptions};
use std::sync::Arc;
use std::time::Duration;

const EARLIEST: &str = "amqp.annotation.x-opt-offset > '-1'";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn higher_epoch_steals_the_partition() {
    let emu = Emulator::start(EmulatorOptions::default()).await.unwrap();
    emu.send_event(0, &b"e0"[..], None).unwrap();
    let (mut conn, mut session) = eventhub_session(&emu).await;

    let mut a = partition_receiver(
        &mut session,
        &emu,
        0,
        EARLIEST,
        Some(1),
        CreditMode::Auto(10),
    )
    .await
    .unwrap();
    let d = tokio::time::timeout(T, a.recv::<Body<Value>>())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(seq_of(&d), 0);
    a.accept(&d).await.unwrap();

    // Epoch 2 takes over: A is detached with amqp:link:stolen.
    let mut b = partition_receiver(
        &mut session,
        &emu,
        0,
        EARLIEST,
        Some(2),
        CreditMode::Auto(10),
    )
    .await
    .unwrap();
    let err = tokio::time::timeout(T, a.recv::<Body<Value>>())
        .await
        .expect("old receiver was not detached")
        .expect_err("old receiver must fail");
    assert!(
        format!("{err:?}").to_lowercase().contains("stolen"),
        "{err:?}"
    );
    let d = tokio::time::timeout(T, b.recv::<Body<Value>>())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(seq_of(&d), 0);
    b.accept(&d).await.unwrap();

    // A lower epoch and a receiver without epoch are refused while B owns the partition.
    for epoch in [Some(1), None] {
        let refused =
            partition_receiver(&mut session, &emu, 0, EARLIEST, epoch, CreditMode::Auto(10)).await;
        match refused {
            Err(e) => assert!(format!("{e:?}").to_lowercase().contains("stolen"), "{e:?}"),
            Ok(mut r) => {
                let err = tokio::time::timeout(T, r.recv::<Body<Value>>())
                    .await
                    .expect("refused receiver was not detached")
                    .expect_err("refused receiver must fail");
                assert!(
                    format!("{err:?}").to_lowercase().contains("stolen"),
                    "{err:?}"
                );
            }
        }
    }

    // B still works and is woken by a new event.
    emu.send_event(0, &b"e1"[..], None).unwrap();
    let d = tokio::time::timeout(T, b.recv::<Body<Value>>())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(seq_of(&d), 1);
    b.accept(&d).await.unwrap();
    b.close().await.ok();
    session.end().await.ok();
    conn.close().await.ok();
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_more_than_link_credit() {
    let emu = Emulator::start(EmulatorOptions::default()).await.unwrap();
    for i in 0..10 {
        emu.send_event(1, format!("e{i}").into_bytes(), None)
            .unwrap();
    }
    let (mut conn, mut session) = eventhub_session(&emu).await;
    let mut r = partition_receiver(&mut session, &emu, 1, EARLIEST, None, CreditMode::Manual)
        .await
        .unwrap();
    r.set_credit(3).await.unwrap();
    for i in 0..3 {
        let d = tokio::time::timeout(T, r.recv::<Body<Value>>())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(seq_of(&d), i);
        r.accept(&d).await.unwrap();
    }
    // Credit is exhausted: nothing more may arrive, and the emulator has sent exactly 3.
    let more = tokio::time::timeout(Duration::from_millis(500), r.recv::<Body<Value>>()).await;
    assert!(more.is_err(), "a delivery arrived beyond the link credit");
    assert_eq!(emu.stats().events_delivered, 3);
    r.set_credit(5).await.unwrap();
    for i in 3..8 {
        let d = tokio::time::timeout(T, r.recv::<Body<Value>>())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(seq_of(&d), i);
        r.accept(&d).await.unwrap();
    }
    let more = tokio::time::timeout(Duration::from_millis(500), r.recv::<Body<Value>>()).await;
    assert!(more.is_err(), "a delivery arrived beyond the link credit");
    assert_eq!(emu.stats().events_delivered, 8);
    r.close().await.ok();
    conn.close().await.ok();
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_refuse_tokens_server_busy_and_drop_connections() {
    let emu = Emulator::start(EmulatorOptions::default()).await.unwrap();
    let (mut conn, mut session) = eventhub_session(&emu).await;
    let aud = format!(
        "sb://{}/{}",
        emu.info().iot_hub_host_name,
        emu.info().hub_name
    );

    emu.faults().refuse_tokens(Duration::from_secs(60));
    assert_eq!(
        put_token(&mut session, &aud, &eventhub_token(&emu, &aud)).await,
        401
    );

    emu.faults().server_busy(Duration::from_secs(60));
    let busy =
        partition_receiver(&mut session, &emu, 0, EARLIEST, None, CreditMode::Auto(10)).await;
    let text = match busy {
        Err(e) => format!("{e:?}"),
        Ok(mut r) => format!(
            "{:?}",
            tokio::time::timeout(T, r.recv::<Body<Value>>())
                .await
                .expect("not detached")
                .expect_err("must fail")
        ),
    };
    assert!(text.contains("server-busy"), "{text}");

    emu.faults().drop_connections();
    let closed = tokio::time::timeout(T, conn.on_close())
        .await
        .expect("connection was not dropped");
    assert!(
        format!("{closed:?}").to_lowercase().contains("forced"),
        "{closed:?}"
    );
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_listener_with_test_ca() {
    init();
    let dir = tempfile::tempdir().unwrap();
    let pki = crate::support::pki(dir.path());

    let emu = Emulator::start(EmulatorOptions {
        tls_cert: Some(pki.cert),
        tls_key: Some(pki.key),
        ..Default::default()
    })
    .await
    .unwrap();
    assert!(emu.info().amqp_endpoint.starts_with("amqps://"));

    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca_der).unwrap();
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    // TLS first, no AMQP TLS header: how Azure clients connect.
    let mut conn = Connection::builder()
        .container_id("tls-test")
        .hostname(emu.info().iot_hub_host_name.as_str())
        .alt_tls_establishment(true)
        .rustls_connector(connector)
        .sasl_profile(SaslProfile::Anonymous)
        .open(emu.info().amqp_endpoint.as_str())
        .await
        .expect("amqps connection with the test CA");
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
    let msg = Message::builder()
        .properties(
            Properties::builder()
                .to("/devices/d/messages/devicebound")
                .message_id(String::from("tls-1"))
                .build(),
        )
        .data(Binary::from(b"over tls".to_vec()))
        .build();
    assert!(matches!(tx.send(msg).await.unwrap(), Outcome::Accepted(_)));
    assert_eq!(emu.c2d_messages()[0].raw_body, b"over tls".to_vec());
    conn.close().await.ok();

    // A client that does not trust the CA is refused by TLS.
    let untrusted = rustls::ClientConfig::builder()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let bad = Connection::builder()
        .container_id("tls-bad")
        .alt_tls_establishment(true)
        .rustls_connector(tokio_rustls::TlsConnector::from(Arc::new(untrusted)))
        .sasl_profile(SaslProfile::Anonymous)
        .open(emu.info().amqp_endpoint.as_str())
        .await;
    assert!(bad.is_err());
    emu.shutdown().await;
}
