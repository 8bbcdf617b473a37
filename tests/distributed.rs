//! Distributed mode: what the test broker supports and the offsets topic. (The tests with worker
//! processes are the `cluster` binary, tests/cluster.rs: they need a broker of their own.)
//!
//! Each former test file is a module (its tests are named `<file>::<test>`), the support modules are
//! compiled once. The tests share one broker (started on first use, [`support::broker`]), so each uses
//! its own topics, consumer groups and connector names (`support::unique`).

/// Shared: a broker per test binary, the binaries as child processes, Kafka helpers.
#[path = "support/mod.rs"]
mod support;

#[path = "distributed_broker.rs"]
mod distributed_broker;
#[path = "distributed_offsets.rs"]
mod distributed_offsets;
