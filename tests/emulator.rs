//! The IoT Hub emulator (crate `iotconnect-emulator`) on its own: AMQP, C2D, CLI, Event Hubs clients,
//! faults, HTTP, WebSockets. No broker.
//!
//! One test binary for the area: each former test file is a module (its tests are named
//! `<file>::<test>`), the support modules are compiled once. The tests share one broker (started on
//! first use, [`support::broker`]), so each uses its own topics, consumer groups and connector names
//! (`support::unique`); tests that must not overlap serialize themselves.

/// Shared: AMQP clients for the emulator.
#[path = "emulator_support/mod.rs"]
mod emulator_support;
/// Shared: a broker per test binary, the binaries as child processes, Kafka helpers.
#[path = "support/mod.rs"]
mod support;

#[path = "emulator_amqp.rs"]
mod emulator_amqp;
#[path = "emulator_c2d.rs"]
mod emulator_c2d;
#[path = "emulator_cli.rs"]
mod emulator_cli;
#[path = "emulator_eventhubs.rs"]
mod emulator_eventhubs;
#[path = "emulator_faults.rs"]
mod emulator_faults;
#[path = "emulator_http.rs"]
mod emulator_http;
#[path = "emulator_throughput.rs"]
mod emulator_throughput;
#[path = "emulator_ws.rs"]
mod emulator_ws;
