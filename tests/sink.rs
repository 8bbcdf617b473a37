//! The C2D client (against the emulator, over WebSockets, against a minimal peer of our own) and the
//! IoT Hub sink end to end.
//!
//! One test binary for the area: each former test file is a module (its tests are named
//! `<file>::<test>`), the support modules are compiled once. The tests share one broker (started on
//! first use, [`support::broker`]), so each uses its own topics, consumer groups and connector names
//! (`support::unique`); tests that must not overlap serialize themselves.

/// Shared: the benchmark's raw C2D sender, the baseline the client is compared with.
#[path = "../examples/bench/raw_c2d.rs"]
mod raw_c2d;
/// Shared: a broker per test binary, the binaries as child processes, Kafka helpers.
#[path = "support/mod.rs"]
mod support;

#[path = "iothub_c2d.rs"]
mod iothub_c2d;
#[path = "iothub_c2d_peer.rs"]
mod iothub_c2d_peer;
#[path = "iothub_c2d_ws.rs"]
mod iothub_c2d_ws;
#[path = "sink_e2e.rs"]
mod sink_e2e;
