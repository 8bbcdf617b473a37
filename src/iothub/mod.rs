//! IoT Hub service side: SAS tokens, connection strings, AMQP CBS, cloud-to-device client.

pub mod sas;
