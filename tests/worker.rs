//! The worker: command line, REST API, the compatibility checks against the JDK (Java renderings,
//! Jackson, the offsets file), and the test layout itself.
//!
//! One test binary for the area: each former test file is a module (its tests are named
//! `<file>::<test>`), the support modules are compiled once. The tests share one broker (started on
//! first use, [`support::broker`]), so each uses its own topics, consumer groups and connector names
//! (`support::unique`); tests that must not overlap serialize themselves.

/// Shared: the installed JDK (tests skip with a notice without one).
#[path = "java/harness.rs"]
mod harness;
/// Shared: an emulated hub, a worker running the source, offsets.
#[path = "source_support/mod.rs"]
mod source_support;
/// Shared: a broker per test binary, the binaries as child processes, Kafka helpers.
#[path = "support/mod.rs"]
mod support;

#[path = "convert_jackson.rs"]
mod convert_jackson;
#[path = "convert_java.rs"]
mod convert_java;
#[path = "offsets_java.rs"]
mod offsets_java;
#[path = "rest_api.rs"]
mod rest_api;
#[path = "worker_cli.rs"]
mod worker_cli;
#[path = "worker_layout.rs"]
mod worker_layout;
