//! Distributed mode: what the test broker supports, the offsets topic, worker processes.
//!
//! One test binary for the area: each former test file is a module (its tests are named
//! `<file>::<test>`), the support modules are compiled once. The tests share one broker (started on
//! first use, [`support::broker`]), so each uses its own topics, consumer groups and connector names
//! (`support::unique`); tests that must not overlap serialize themselves.

/// Shared: an emulated hub, a worker running the source, offsets.
#[path = "source_support/mod.rs"]
mod source_support;
/// Shared: a broker per test binary, the binaries as child processes, Kafka helpers.
#[path = "support/mod.rs"]
mod support;

#[path = "distributed_broker.rs"]
mod distributed_broker;
#[path = "distributed_offsets.rs"]
mod distributed_offsets;
#[path = "distributed_workers.rs"]
mod distributed_workers;
