//! Partition discovery through `$management` against the emulator (no broker needed).

use iotconnect::config::connector::{EventHubConnection, RecordFormat, RecordKey};
use iotconnect::config::{Secret, SourceConfig};
use iotconnect_emulator::{Emulator, EmulatorOptions};
use std::time::Duration;

fn source_config(emu: &Emulator, key: Option<&str>) -> SourceConfig {
    let info = emu.info();
    SourceConfig {
        topic: "t".into(),
        connection: EventHubConnection {
            endpoint: info.event_hub_compatible_endpoint.clone(),
            event_hub_name: info.event_hub_compatible_name.clone(),
            key_name: info.access_key_name.clone(),
            key: Secret::new(key.unwrap_or(info.access_key_value.expose())),
        },
        custom_endpoint: Some(info.amqp_endpoint.clone()),
        consumer_group: "$Default".into(),
        partitions: None,
        start_time: None,
        offsets: Vec::new(),
        batch_size: 100,
        receive_timeout: Duration::from_secs(60),
        record_key: RecordKey::None,
        record_format: RecordFormat::Struct,
        stall_timeout: Duration::from_secs(60),
        transport: Default::default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovers_every_partition_in_numeric_order() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let emu = Emulator::start(EmulatorOptions {
        partitions: 12,
        ..Default::default()
    })
    .await
    .unwrap();
    let ids = iotconnect::source::discover_partitions("c", &source_config(&emu, None))
        .await
        .unwrap();
    let want: Vec<String> = (0..12).map(|i| i.to_string()).collect();
    assert_eq!(ids, want);
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_key_fails_the_connector_with_a_clear_message_and_no_secret() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let emu = Emulator::start(EmulatorOptions::default()).await.unwrap();
    let wrong = "d3Jvbmcta2V5LXRoYXQtbXVzdC1ub3QtbGVhaw==";
    let t0 = std::time::Instant::now();
    let e = iotconnect::source::discover_partitions("conn", &source_config(&emu, Some(wrong)))
        .await
        .expect_err("refused");
    let e = format!("{e:#}");
    assert!(
        e.contains("Could not start IotHubSourceConnector conn"),
        "{e}"
    );
    // A refused key is not a transient error: no retry rounds, the cause stated.
    assert!(!e.contains("attempts"), "{e}");
    assert!(e.contains("IoT Hub refused the access key"), "{e}");
    assert!(e.contains("unauthorized"), "{e}");
    assert!(
        e.contains(&emu.info().amqp_endpoint),
        "names the address dialled: {e}"
    );
    assert!(
        t0.elapsed() < Duration::from_secs(15),
        "failed fast, not after retries: {:?}",
        t0.elapsed()
    );
    assert!(!e.contains(wrong), "the key must not appear: {e}");
    emu.shutdown().await;
}
