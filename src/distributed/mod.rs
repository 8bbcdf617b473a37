//! `iotconnect distributed`: several workers share the hub partitions of each source connector,
//! coordinated by Kafka alone (issue 12). Design:
//!
//! * **Assignment** ([`group`]): one consumer group per source connector over a coordination topic
//!   with one Kafka partition per hub partition, cooperative-sticky: owning Kafka partition i = reading
//!   hub partition i. Kafka's group coordinator detects dead or paused workers
//!   (`session.timeout.ms`) and moves their partitions; revocation stops the partition's pipeline and
//!   finishes its transaction before librdkafka lets the partition go.
//! * **Offsets** ([`crate::offsets::kafka`]): `offset.storage.topic` in Connect's exact format,
//!   murmur2-partitioned, read read_committed to the end when a partition is taken over. First start
//!   of a connector without entries imports `offset.storage.file.filename` (standalone upgrade).
//! * **Exactly once** ([`pipeline`]): per owned hub partition a transactional producer
//!   (`transactional.id = <group.id>-<connector>-<hub partition>`), one transaction per batch holding
//!   the records and the offset record; the next owner's `init_transactions` fences the old one, and
//!   owner-level (epoch) receivers kick a stale reader off the hub.
//! * **Configs** ([`configs`]): every worker must run the same connector configuration, checked
//!   against `config.storage.topic`.
//! * **Status** ([`status`]): `status.storage.topic` in Connect's format; any worker's REST shows
//!   every hub partition with the worker that reads it.
//! * **Sinks** run on every worker through the standalone runtime: their consumer group
//!   `connect-<name>` already spreads the Kafka partitions.

pub mod configs;
pub mod group;
pub mod murmur2;
pub mod pipeline;
pub mod rest;
mod start;
pub mod status;
mod worker;

pub use worker::main;
