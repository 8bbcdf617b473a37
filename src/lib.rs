//! iotconnect: Azure IoT Hub <-> Apache Kafka, a drop-in replacement for Kafka Connect standalone
//! running the toketi IoT Hub connectors.

pub mod config;
pub mod connect;
// [dist] distributed mode (issue 12)
pub mod distributed;
pub mod emulator;
pub mod iothub;
pub mod offsets;
pub mod rest;
pub mod sink;
pub mod source;
pub mod worker;

/// Makes aws-lc-rs the process's rustls crypto provider (the one the Azure crates use). Without it a
/// build that also links rustls' `ring` backend cannot pick a default and panics at the first TLS or
/// AMQP connection. Safe to call any number of times.
pub fn init_tls() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}
