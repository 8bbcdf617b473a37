//! `--write-config DIR`: the three files of Microsoft's HDInsight tutorial ("Use Apache Kafka on
//! HDInsight with Azure IoT Hub"), filled in for this emulator, so the tutorial can be followed by
//! hand: `connect-standalone.properties` (the worker), `connect-iothub-source.properties` and
//! `connect-iothub-sink.properties`.
//!
//! Keys and values are the tutorial's (StringConverter, topics `iotin`/`iotout`, connector names),
//! plus what a local run needs: `IotHub.CustomEndpoint` (the Event Hubs SDK drops the port of the
//! `sb://` endpoint), the offsets file inside DIR, and `consumer.session.timeout.ms=6000` (the test
//! broker makes a new consumer group wait half the session timeout before its first assignment).
//! The files hold the hub's key, so they are created owner-readable only (0600).

use super::ConnectionInfo;
use anyhow::Context;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The file names written, in tutorial order.
pub const FILES: [&str; 3] = [
    "connect-standalone.properties",
    "connect-iothub-source.properties",
    "connect-iothub-sink.properties",
];

fn worker(dir: &Path, bootstrap: &str) -> String {
    format!(
        "# Kafka Connect standalone worker (HDInsight tutorial), for the local broker and emulator.
bootstrap.servers={bootstrap}
key.converter=org.apache.kafka.connect.storage.StringConverter
value.converter=org.apache.kafka.connect.storage.StringConverter
key.converter.schemas.enable=true
value.converter.schemas.enable=true
offset.storage.file.filename={}
offset.flush.interval.ms=10000
consumer.max.poll.records=10
listeners=http://127.0.0.1:8083
# The test broker makes a new consumer group wait session.timeout.ms/2 before its first assignment.
consumer.session.timeout.ms=6000
consumer.heartbeat.interval.ms=2000
",
        dir.join("connect.offsets").display()
    )
}

fn source(info: &ConnectionInfo) -> String {
    format!(
        "# IoT Hub source (HDInsight tutorial): the hub's built-in Event Hub-compatible endpoint -> iotin.
connector.class=com.microsoft.azure.iot.kafka.connect.source.IotHubSourceConnector
name=AzureIotHubConnector
tasks.max=1
Kafka.Topic=iotin
IotHub.EventHubCompatibleName={}
IotHub.EventHubCompatibleEndpoint={}
IotHub.AccessKeyName={}
IotHub.AccessKeyValue={}
IotHub.ConsumerGroup=$Default
IotHub.Partitions={}
BatchSize=5
ReceiveTimeout=60
# The Event Hubs SDK drops the port of the sb:// endpoint: dial the emulator here.
IotHub.CustomEndpoint={}
",
        info.event_hub_compatible_name,
        info.event_hub_compatible_endpoint,
        info.access_key_name,
        info.access_key_value.expose(),
        info.partitions,
        info.amqp_endpoint,
    )
}

fn sink(info: &ConnectionInfo) -> String {
    format!(
        "# IoT Hub sink (HDInsight tutorial): iotout -> cloud-to-device messages.
connector.class=com.microsoft.azure.iot.kafka.connect.sink.IotHubSinkConnector
name=AzureIotHubSinkConnector
tasks.max=1
topics=iotout
IotHub.ConnectionString={}
IotHub.MessageDeliveryAcknowledgement=None
IotHub.CustomEndpoint={}
",
        info.service_connection_string.expose(),
        info.amqp_endpoint,
    )
}

/// Writes the three files into `dir` (created if missing); returns their paths.
pub fn write(dir: &Path, info: &ConnectionInfo, bootstrap: &str) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the directory {}", dir.display()))?;
    let dir = dir
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", dir.display()))?;
    let contents = [worker(&dir, bootstrap), source(info), sink(info)];
    let mut paths = Vec::new();
    for (name, text) in FILES.iter().zip(contents) {
        let path = dir.join(name);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("cannot write {}", path.display()))?;
        f.write_all(text.as_bytes())
            .with_context(|| format!("cannot write {}", path.display()))?;
        paths.push(path);
    }
    Ok(paths)
}
