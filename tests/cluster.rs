//! Distributed mode with real worker processes: failover after kill -9 and SIGSTOP, scaling, the
//! standalone upgrade, a refused configuration, the sink through a killed worker.
//!
//! A binary of its own, so that it has a broker of its own and runs alone: its tests (serialized
//! among themselves, see `distributed_workers::serial`) measure failover against
//! `session.timeout.ms`, and sharing the broker and the cores with the other distributed tests made
//! them miss their 90 s deadlines (three failures in one full run on one shared broker, none alone).

/// Shared: an emulated hub, a worker running the source, offsets.
#[path = "source_support/mod.rs"]
mod source_support;
/// Shared: a broker per test binary, the binaries as child processes, Kafka helpers.
#[path = "support/mod.rs"]
mod support;

#[path = "distributed_workers.rs"]
mod distributed_workers;
