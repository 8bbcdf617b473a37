//! iotconnect: Azure IoT Hub <-> Apache Kafka, a drop-in replacement for Kafka Connect standalone
//! running the toketi IoT Hub connectors.

pub mod config;
pub mod connect;
pub mod emulator;
pub mod iothub;
pub mod offsets;
pub mod rest;
pub mod sink;
pub mod source;
pub mod worker;
