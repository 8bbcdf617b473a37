//! The IoT Hub source: partition discovery, records, errors, restarts, stalls, TLS, any Event Hub.
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

#[path = "source_discovery.rs"]
mod source_discovery;
#[path = "source_errors.rs"]
mod source_errors;
#[path = "source_eventhub.rs"]
mod source_eventhub;
#[path = "source_records.rs"]
mod source_records;
#[path = "source_restart.rs"]
mod source_restart;
#[path = "source_stall.rs"]
mod source_stall;
#[path = "source_tls.rs"]
mod source_tls;
