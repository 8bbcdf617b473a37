//! The worker: connectors, task supervision, the offset store's owner, Kafka clients, error
//! handling and shutdown (Kafka Connect's standalone runtime).
//!
//! * [`connector`]: the `Connector` trait and task plans (the only thing the runtime knows of a
//!   connector); [`task`]: task supervision and the `TaskContext` each body gets; [`runtime`]: the
//!   running worker.
//! * [`errors`]: error classes, tolerance, log and dead letter queue reporters (decided here only);
//!   [`producer`]: the one Kafka send path; [`backoff`]: the one backoff.
//! * [`process`]: runtime, exit codes and start/stop steps shared by both worker modes;
//!   [`standalone`], [`validate`], [`signals`], [`systemd`], [`logging`], [`kafka`]: the process.

pub mod backoff;
pub mod connector;
pub mod errors;
pub mod kafka;
pub mod logging;
pub mod process;
pub mod producer;
pub mod runtime;
pub mod signals;
pub mod standalone;
pub mod systemd;
pub mod task;
pub mod validate;
