//! iotconnect: Azure IoT Hub <-> Apache Kafka, a drop-in replacement for Kafka Connect standalone
//! running the toketi IoT Hub connectors.

pub mod config;
pub mod connect;
// [dist] distributed mode (issue 12)
pub mod distributed;
pub mod iothub;
pub mod offsets;
pub mod rest;
pub mod sink;
pub mod source;
pub mod worker;

/// The connector implementations this binary ships, handed to the worker by `main.rs` (the
/// worker itself never names a connector).
pub fn plugins() -> worker::connector::Plugins {
    worker::connector::Plugins::new(vec![
        std::sync::Arc::new(source::IotHubSource),
        std::sync::Arc::new(sink::IotHubSink),
    ])
}

/// Starts a worker as `iotconnect standalone` does after its checks: opens the offsets file store
/// of `offset.storage.file.filename` and runs every connector of `loaded` with [`plugins`]. For
/// benchmarks and tests that embed a worker.
pub async fn start_standalone_worker(
    loaded: config::Loaded,
    cluster_id: String,
) -> anyhow::Result<std::sync::Arc<worker::runtime::Worker>> {
    let offsets = offsets::FileOffsetBackingStore::open(&loaded.worker.offset_file)?;
    worker::runtime::Worker::start(loaded, cluster_id, &plugins(), offsets).await
}

/// Makes aws-lc-rs the process's rustls crypto provider (the one the Azure crates use). Without it a
/// build that also links rustls' `ring` backend cannot pick a default and panics at the first TLS or
/// AMQP connection. Safe to call any number of times.
pub fn init_tls() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}
