//! The worker: task supervision, Kafka clients, shutdown (Kafka Connect's standalone runtime).

pub mod kafka;
pub mod logging;
// [source] the worker's offset store actor (src/worker/offsets.rs)
pub mod offsets;
pub mod runtime;
pub mod signals;
pub mod standalone;
pub mod systemd;
pub mod task;
pub mod validate;
