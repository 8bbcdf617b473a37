//! Where an owned hub partition starts: fencing the previous owner, then reading the partition's
//! committed offset.
//!
//! Invariants:
//! * Exactly-once: `init_transactions` runs first (it fences the previous owner's producer and aborts
//!   its open transaction); the offset is read only after it, and only once no transaction opened
//!   before the offsets topic's end is still open (bounded by `session.timeout.ms`, then a warning),
//!   so the offset read is the last one committed.
//! * Failures are classified by [`crate::worker::errors`]: a fatal one fails the task, anything else
//!   is retried with [`SETUP_BACKOFF`] until it succeeds or the pipeline is stopped.

use super::pipeline::{blocking, SourceJob};
use crate::offsets::kafka::{load_store, wait_until_stable};
use crate::offsets::OffsetStore;
use crate::source::position::Start;
use crate::worker::backoff::Backoff;
use crate::worker::errors::{classify_kafka, ErrorClass};
use crate::worker::producer::Producer;
use anyhow::Context;
use rdkafka::producer::Producer as _;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// Retries of a pipeline's start (fencing, reading its offset).
pub const SETUP_BACKOFF: Backoff =
    Backoff::new(Duration::from_millis(200), Duration::from_secs(10));

/// `init_transactions`: fences the previous owner and aborts its open transaction. librdkafka
/// allows it once per producer, and again only after it failed (a timeout), so a caller retries it
/// only until it has succeeded.
async fn fence(
    job: &Arc<SourceJob>,
    producer: &Producer,
) -> Result<(), (ErrorClass, anyhow::Error)> {
    let t = job.cfg.worker.kafka_check_timeout;
    blocking(producer, move |pr| pr.init_transactions(t))
        .await
        .map_err(|e| {
            (
                classify_kafka(&e),
                anyhow::Error::new(e).context("init_transactions (fencing the previous owner)"),
            )
        })
}

/// The start of a partition: its committed offset in the topic, else the connector's settings.
/// Waits (up to `session.timeout.ms`) for transactions still open in the offsets topic to end, so
/// the offset read is the last one committed, not one before it; past that it warns and reads what
/// is committed (a batch may then be read again, never skipped).
async fn start_of(job: &Arc<SourceJob>, p: &str) -> anyhow::Result<Start> {
    let base = job.consumer_base.clone();
    let topic = job.cfg.offset_topic.name.clone();
    let bound = job.cfg.session_timeout;
    let timeout = job.cfg.worker.kafka_check_timeout;
    let (b, t) = (base.clone(), topic.clone());
    let unstable = tokio::task::spawn_blocking(move || wait_until_stable(&b, &t, bound))
        .await
        .expect("offsets reader panicked")
        .with_context(|| format!("reading the end of {topic}"))?;
    if !unstable.is_empty() {
        let parts: Vec<String> = unstable
            .iter()
            .map(|u| {
                format!(
                    "{topic}-{} (stable to {} of {})",
                    u.partition, u.stable, u.high
                )
            })
            .collect();
        warn!(
            "Hub partition {p}: transactions in {} are still open after {} ms; starting from what is committed (a batch may be read again)",
            parts.join(", "),
            bound.as_millis()
        );
    }
    let store: OffsetStore =
        tokio::task::spawn_blocking(move || load_store(&base, &topic, timeout))
            .await
            .expect("offsets reader panicked")
            .with_context(|| format!("reading {}", job.cfg.offset_topic.name))?;
    let sp = job.source_partition(p);
    let borrowed: Vec<(&str, &str)> = sp.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let saved = store.get(&job.connector.name, &borrowed).and_then(|m| {
        m.into_iter().find_map(|(k, v)| match v {
            crate::connect::Value::String(s) if k == "EventHubOffset" => Some(s),
            _ => None,
        })
    });
    let initial = job
        .source
        .offsets
        .get(job.index_of(p))
        .cloned()
        .unwrap_or_else(|| "-1".into());
    Ok(Start::resolve(
        saved.as_deref(),
        job.source.start_time,
        &initial,
    ))
}

/// Fences the previous owner and finds where to start, retrying transient failures.
/// `None`: stopped; `Some(Err)`: a fatal failure.
pub async fn start_with(
    job: &Arc<SourceJob>,
    p: &str,
    producer: &Producer,
    eos: bool,
    stop: &CancellationToken,
) -> Option<anyhow::Result<Start>> {
    let mut attempts = SETUP_BACKOFF.attempts();
    let mut fenced = !eos;
    loop {
        let step = if fenced {
            match start_of(job, p).await {
                Ok(s) => return Some(Ok(s)),
                Err(e) => Err((ErrorClass::Retriable, e)),
            }
        } else {
            fence(job, producer).await
        };
        match step {
            Ok(()) => fenced = true,
            Err((ErrorClass::Fatal, e)) => return Some(Err(e)),
            Err((_, e)) => {
                let wait = attempts.step();
                warn!(
                    "Cannot start hub partition {p} yet: {e:#}; retrying in {} ms",
                    wait.as_millis()
                );
                tokio::select! {
                    _ = stop.cancelled() => return None,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
}
