//! Microsoft's Rust Event Hubs client (`azure_messaging_eventhubs` 0.16) against the emulator.

use azure_messaging_eventhubs::models::{AmqpSimpleValue, AmqpValue, MessageId, ReceivedEventData};
use azure_messaging_eventhubs::{
    ConsumerClient, OpenReceiverOptions, RetryOptions, StartLocation, StartPosition,
};
use futures::StreamExt;
use iotconnect::config::secret::Secret;
use iotconnect_emulator::{Emulator, EmulatorOptions, PropValue, TelemetryProps};
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

/// Both rustls providers are in the dependency tree (dev-dependencies pull in ring), so the process
/// must choose one before a client builds its TLS config.
fn init() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

async fn consumer(
    emu: &Emulator,
    cs: &str,
    group: &str,
) -> azure_messaging_eventhubs::Result<ConsumerClient> {
    init();
    ConsumerClient::builder()
        .with_consumer_group(group.to_string())
        .with_custom_endpoint(emu.info().amqp_endpoint.clone())
        .with_retry_options(RetryOptions {
            max_retries: 1,
            initial_delay: azure_core::time::Duration::milliseconds(50),
            max_delay: azure_core::time::Duration::milliseconds(100),
            max_total_elapsed: azure_core::time::Duration::seconds(5),
        })
        .open_with_connection_string(cs, None)
        .await
}

async fn read(
    c: &ConsumerClient,
    partition: u32,
    start: StartLocation,
    inclusive: bool,
    n: usize,
) -> Vec<ReceivedEventData> {
    let rx = c
        .open_receiver_on_partition(
            partition.to_string(),
            Some(OpenReceiverOptions {
                start_position: Some(StartPosition {
                    location: start,
                    inclusive,
                }),
                ..Default::default()
            }),
        )
        .await
        .expect("open receiver");
    let mut out = Vec::new();
    {
        let mut s = std::pin::pin!(rx.stream_events());
        while out.len() < n {
            let ev = tokio::time::timeout(T, s.next())
                .await
                .expect("timed out waiting for events")
                .expect("stream ended")
                .expect("receive error");
            out.push(ev);
        }
    }
    rx.close().await.ok();
    out
}

fn seqs(evs: &[ReceivedEventData]) -> Vec<i64> {
    evs.iter().map(|e| e.sequence_number().unwrap()).collect()
}

fn props() -> TelemetryProps {
    TelemetryProps {
        message_id: Some("msg-1".into()),
        correlation_id: Some("corr-1".into()),
        content_type: Some("application/json".into()),
        content_encoding: Some("utf-8".into()),
        app: vec![
            ("color".into(), PropValue::String("blue".into())),
            ("count".into(), PropValue::Long(3)),
        ],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_sdk_reads_management_and_every_start_position() {
    let emu = Emulator::start(EmulatorOptions {
        consumer_groups: vec!["other".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let cs = emu.info().event_hub_connection_string.expose().to_string();
    let c = consumer(&emu, &cs, "$Default").await.expect("connect");

    let props_eh = c
        .get_eventhub_properties()
        .await
        .expect("eventhub properties");
    assert_eq!(props_eh.name, "myhub");
    assert_eq!(props_eh.partition_ids, vec!["0", "1", "2", "3"]);

    let dev = "dev-1";
    let p = emu.partition_of(dev);
    let empty = c
        .get_partition_properties(&p.to_string())
        .await
        .expect("partition properties");
    assert!(empty.is_empty);

    // Five events, binary body on the first, properties on the second.
    let mut sent = Vec::new();
    sent.push(emu.send_telemetry(dev, vec![0u8, 159, 146, 150, 255], None));
    sent.push(emu.send_telemetry(dev, &b"{\"t\":21.5}"[..], Some(props())));
    for i in 2..5 {
        // enqueued times are in milliseconds: make them differ
        tokio::time::sleep(Duration::from_millis(3)).await;
        sent.push(emu.send_telemetry(dev, format!("event-{i}").into_bytes(), None));
    }

    let pp = c.get_partition_properties(&p.to_string()).await.unwrap();
    assert_eq!(pp.id, p.to_string());
    assert_eq!(pp.eventhub, "myhub");
    assert!(!pp.is_empty);
    assert_eq!(pp.beginning_sequence_number, 0);
    assert_eq!(pp.last_enqueued_sequence_number, 4);
    assert_eq!(pp.last_enqueued_offset, sent[4].offset);

    // Earliest: everything, with the IoT Hub annotations and properties.
    let all = read(&c, p, StartLocation::Earliest, false, 5).await;
    assert_eq!(seqs(&all), vec![0, 1, 2, 3, 4]);
    assert_eq!(
        all[0].event_data().body(),
        Some(&[0u8, 159, 146, 150, 255][..])
    );
    for (e, s) in all.iter().zip(&sent) {
        assert_eq!(e.offset().as_deref(), Some(s.offset.as_str()));
        assert!(e.enqueued_time().is_some());
        let sys = e.system_properties();
        assert_eq!(
            sys.get("iothub-connection-device-id"),
            Some(&AmqpValue::String(dev.into()))
        );
        assert_eq!(
            sys.get("iothub-message-source"),
            Some(&AmqpValue::String("Telemetry".into()))
        );
        match sys.get("iothub-connection-auth-method") {
            Some(AmqpValue::String(s)) => {
                let v: serde_json::Value = serde_json::from_str(s).unwrap();
                assert_eq!(v["scope"], "device");
                assert_eq!(v["type"], "sas");
            }
            other => panic!("auth method: {other:?}"),
        }
        assert!(matches!(
            sys.get("iothub-enqueuedtime"),
            Some(AmqpValue::TimeStamp(_))
        ));
        assert!(matches!(
            sys.get("iothub-connection-auth-generation-id"),
            Some(AmqpValue::String(_))
        ));
    }
    let e1 = all[1].event_data();
    assert_eq!(e1.body(), Some(&b"{\"t\":21.5}"[..]));
    assert_eq!(e1.message_id(), Some(&MessageId::String("msg-1".into())));
    assert_eq!(
        e1.correlation_id(),
        Some(&MessageId::String("corr-1".into()))
    );
    assert_eq!(e1.content_type(), Some("application/json"));
    let ap = e1.properties().unwrap();
    assert_eq!(
        ap.get("color"),
        Some(&AmqpSimpleValue::String("blue".into()))
    );
    assert_eq!(ap.get("count"), Some(&AmqpSimpleValue::Long(3)));
    let raw = all[1].raw_amqp_message();
    let enc = raw
        .properties
        .as_ref()
        .and_then(|p| p.content_encoding.clone());
    assert!(format!("{enc:?}").contains("utf-8"), "{enc:?}");

    // Offset (exclusive and inclusive), sequence number, enqueued time.
    let from_off = read(
        &c,
        p,
        StartLocation::Offset(sent[1].offset.clone()),
        false,
        3,
    )
    .await;
    assert_eq!(seqs(&from_off), vec![2, 3, 4]);
    let from_off_incl = read(
        &c,
        p,
        StartLocation::Offset(sent[1].offset.clone()),
        true,
        4,
    )
    .await;
    assert_eq!(seqs(&from_off_incl), vec![1, 2, 3, 4]);
    let from_seq = read(&c, p, StartLocation::SequenceNumber(2), false, 2).await;
    assert_eq!(seqs(&from_seq), vec![3, 4]);
    let t3 = all[3].enqueued_time().unwrap();
    let from_time = read(&c, p, StartLocation::EnqueuedTime(t3), false, 1).await;
    assert_eq!(seqs(&from_time), vec![4]);

    // Latest: only what arrives after the attach; the receiver is woken by the new event. The SDK
    // may attach lazily, so the event is sent once the emulator has seen the attach, while the
    // stream is being polled.
    let attached_before = emu.stats().partition_receivers_attached;
    let rx = c
        .open_receiver_on_partition(
            p.to_string(),
            Some(OpenReceiverOptions {
                start_position: Some(StartPosition {
                    location: StartLocation::Latest,
                    inclusive: false,
                }),
                ..Default::default()
            }),
        )
        .await
        .unwrap();
    {
        let mut s = std::pin::pin!(rx.stream_events());
        let send_after_attach = async {
            assert!(
                emu.wait_receivers_attached(attached_before + 1, T).await,
                "receiver never attached"
            );
            emu.send_telemetry(dev, &b"late"[..], None);
        };
        let (ev, ()) = tokio::join!(tokio::time::timeout(T, s.next()), send_after_attach);
        let ev = ev.unwrap().unwrap().unwrap();
        assert_eq!(ev.sequence_number(), Some(5));
        assert_eq!(ev.event_data().body(), Some(&b"late"[..]));
    }
    rx.close().await.ok();

    // A second consumer group reads the same events.
    let c2 = consumer(&emu, &cs, "other").await.unwrap();
    assert_eq!(
        seqs(&read(&c2, p, StartLocation::Earliest, false, 6).await),
        vec![0, 1, 2, 3, 4, 5]
    );

    // Plain Event Hub event: no iothub annotations.
    let plain = emu.send_event(0, &b"plain"[..], None).unwrap();
    let evs = read(
        &c,
        0,
        StartLocation::SequenceNumber(plain.sequence_number),
        true,
        1,
    )
    .await;
    assert_eq!(evs[0].event_data().body(), Some(&b"plain"[..]));
    assert!(!evs[0]
        .system_properties()
        .contains_key("iothub-connection-device-id"));

    c.close().await.ok();
    c2.close().await.ok();
    let expected_deliveries: u64 = 5 + 3 + 4 + 2 + 1 + 1 + 6 + 1;
    assert!(emu.stats().events_delivered >= expected_deliveries);
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_sdk_wrong_key_is_an_authorization_error() {
    let emu = Emulator::start(EmulatorOptions::default()).await.unwrap();
    let good = emu.info().event_hub_connection_string.expose().to_string();
    let key = emu.info().access_key_value.expose().to_string();
    let bad = Secret::new(good.replace(&key, "d3Jvbmcta2V5LXdyb25nLWtleQ=="));
    let result: azure_messaging_eventhubs::Result<()> = async {
        let c = consumer(&emu, bad.expose(), "$Default").await?;
        c.get_eventhub_properties().await?;
        let rx = c.open_receiver_on_partition("0".into(), None).await?;
        let mut s = std::pin::pin!(rx.stream_events());
        match tokio::time::timeout(T, s.next()).await {
            Ok(Some(Err(e))) => Err(e),
            other => panic!(
                "expected an error, got {:?}",
                other.map(|o| o.map(|r| r.map(|_| ())))
            ),
        }
    }
    .await;
    let err = result.expect_err("a wrong key must fail");
    let mut text = format!("{err:?}");
    let mut source = std::error::Error::source(&err);
    while let Some(s) = source {
        text.push_str(&format!(" / {s}"));
        source = s.source();
    }
    let lower = text.to_ascii_lowercase();
    assert!(
        lower.contains("401") || lower.contains("unauthorized") || lower.contains("authoriz"),
        "not an authorization error: {text}"
    );
    assert!(emu.stats().tokens_refused >= 1);
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_consumer_group_is_not_found() {
    let emu = Emulator::start(EmulatorOptions::default()).await.unwrap();
    let cs = emu.info().event_hub_connection_string.expose().to_string();
    let c = consumer(&emu, &cs, "nosuchgroup").await.unwrap();
    emu.send_telemetry("d", &b"x"[..], None);
    let r: azure_messaging_eventhubs::Result<()> = async {
        let rx = c
            .open_receiver_on_partition(emu.partition_of("d").to_string(), None)
            .await?;
        let mut s = std::pin::pin!(rx.stream_events());
        match tokio::time::timeout(T, s.next()).await {
            Ok(Some(Err(e))) => Err(e),
            other => panic!(
                "expected an error, got {:?}",
                other.map(|o| o.map(|r| r.map(|_| ())))
            ),
        }
    }
    .await;
    let err = r.expect_err("unknown consumer group must fail");
    let text = format!("{err:?}");
    assert!(
        text.contains("not-found")
            || text.contains("NotFound")
            || text.contains("could not be found"),
        "{text}"
    );
    emu.shutdown().await;
}
