//! The source over TLS with a private CA and over AMQP-over-WebSockets (issues 13.3, 10.7): the
//! emulator serves amqps:// and wss:// with a certificate of a test CA; iotconnect trusts it only
//! through `SSL_CERT_FILE` (the Event Hubs library takes no TLS settings).

use crate::source_support;
use crate::support;

use iotconnect_emulator::EmulatorOptions;
use source_support::*;
use std::path::{Path, PathBuf};
use support::*;

fn tls_hub(dir: &Path) -> (Hub, PathBuf) {
    let pki = pki(dir);
    let hub = Hub::start_with(EmulatorOptions {
        partitions: 2,
        ws_listen: Some(([127, 0, 0, 1], 0).into()),
        tls_cert: Some(pki.cert),
        tls_key: Some(pki.key),
        ..Default::default()
    });
    (hub, pki.ca)
}

/// A source file for `endpoint` (`IotHub.CustomEndpoint`) with `extra` keys.
fn source(dir: &Path, topic: &str, hub: &Hub, endpoint: &str, extra: &str) -> PathBuf {
    let info = hub.emu().info();
    write_file(
        dir,
        "source.properties",
        &format!(
            "name=src\n\
             connector.class=IotHubSource\n\
             Kafka.Topic={topic}\n\
             IotHub.ConnectionString={}\n\
             IotHub.CustomEndpoint={endpoint}\n\
             {extra}",
            info.event_hub_connection_string.expose()
        ),
    )
}

fn run_and_read(dir: &Path, topic: &str, hub: &Hub, c: &Path, ca: &Path) {
    let sent: Vec<_> = (0..20)
        .map(|i| {
            hub.send(
                &format!("dev-{}", i % 4),
                format!("{{\"i\":{i}}}").as_bytes(),
                None,
            )
        })
        .collect();
    let w = worker_file(dir, JSON, JSON, "value.converter.schemas.enable=false\n");
    let mut p = start_env(&w, c, &[("SSL_CERT_FILE", ca.to_str().unwrap())]);
    let recs = read_topic(&broker().bootstrap, topic, sent.len(), T);
    wait_all_committed(dir, "src", hub);
    assert_eq!(p.terminate(T), Some(0), "{}", p.log());
    assert_eq!(recs.len(), sent.len());
    assert_eq!(topic_size(&broker().bootstrap, topic), sent.len() as i64);
}

#[test]
fn amqps_with_a_private_ca_trusted_through_ssl_cert_file() {
    let dir = tempfile::tempdir().unwrap();
    let (hub, ca) = tls_hub(dir.path());
    let topic = unique("src-amqps");
    create_topic(&broker().bootstrap, &topic, 1);
    let ep = hub.emu().info().amqp_endpoint.clone();
    assert!(ep.starts_with("amqps://"), "{ep}");
    let c = source(
        dir.path(),
        &topic,
        &hub,
        &ep,
        &format!("IotHub.TrustedCaFile={}\n", ca.display()),
    );
    run_and_read(dir.path(), &topic, &hub, &c, &ca);
}

#[test]
fn amqp_over_websockets_with_tls() {
    let dir = tempfile::tempdir().unwrap();
    let (hub, ca) = tls_hub(dir.path());
    let topic = unique("src-wss");
    create_topic(&broker().bootstrap, &topic, 1);
    // The WebSocket listener's port: the library dials wss://127.0.0.1:PORT/$servicebus/websocket/.
    let ws = hub.emu().info().ws_host_port.clone().unwrap();
    let c = source(
        dir.path(),
        &topic,
        &hub,
        &format!("amqps://{ws}"),
        "IotHub.TransportType=AmqpWebSockets\n",
    );
    run_and_read(dir.path(), &topic, &hub, &c, &ca);
}

#[test]
fn without_the_ca_the_connector_is_refused_naming_the_address() {
    let dir = tempfile::tempdir().unwrap();
    let (hub, _ca) = tls_hub(dir.path());
    let ws = hub.emu().info().ws_host_port.clone().unwrap();
    let c = source(
        dir.path(),
        "t",
        &hub,
        &format!("amqps://{ws}"),
        "IotHub.TransportType=AmqpWebSockets\n",
    );
    let w = worker_file(dir.path(), JSON, JSON, "");
    let mut p = Process::spawn(
        &["standalone", w.to_str().unwrap(), c.to_str().unwrap()],
        &[],
    );
    assert_eq!(
        p.wait(std::time::Duration::from_secs(240)),
        Some(3),
        "{}",
        p.log()
    );
    let log = p.log();
    assert!(
        log.contains(&format!("wss://{ws}/$servicebus/websocket/")),
        "the address dialled: {log}"
    );
}
