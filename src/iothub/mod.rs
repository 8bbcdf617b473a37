//! IoT Hub service side: SAS tokens, connection strings, AMQP CBS, cloud-to-device client,
//! delivery feedback.

pub mod c2d;
pub mod cbs;
pub mod connstr;
pub mod feedback;
pub mod ratelimit;
pub mod sas;
