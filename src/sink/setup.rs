//! Task set-up: the C2D client options from the connector config, the value converter, the
//! first connection (retried until shutdown unless the hub refuses the credentials), and when long
//! backpressure pauses the partitions.

use super::task::QUEUE_FACTOR;
use crate::config::connector::SinkConfig;
use crate::config::{ConnectorConfig, WorkerConfig};
use crate::connect::convert::Converter;
use crate::iothub::c2d::{AckMode, C2dClient, C2dOptions, ErrorClass};
use crate::iothub::connstr::IotHubConnectionString;
use crate::iothub::ratelimit::Backoff;
use crate::worker::task::TaskContext;
use anyhow::Context as _;
use std::time::Duration;
use tracing::warn;

/// Backpressure lasting this long pauses the partitions (shorter when `max.poll.interval.ms` is
/// short: half of it).
pub const BACKPRESSURE_PAUSE_AFTER: Duration = Duration::from_secs(10);

/// The C2D client options for a sink config (without connecting; reads `IotHub.TrustedCaFile`).
pub fn c2d_options(connector: &ConnectorConfig, sink: &SinkConfig) -> anyhow::Result<C2dOptions> {
    let cs = IotHubConnectionString::parse(&sink.connection_string)
        .with_context(|| format!("connector {}: IotHub.ConnectionString", connector.name))?;
    let mut o = C2dOptions::new(cs);
    o.endpoint = sink.hub.custom_endpoint.clone();
    o.transport = sink.hub.transport;
    o.proxy = sink.hub.proxy.clone();
    if let Some(path) = &sink.hub.trusted_ca_file {
        let pem = std::fs::read(path).with_context(|| {
            format!(
                "connector {}: IotHub.TrustedCaFile {}",
                connector.name,
                path.display()
            )
        })?;
        crate::iothub::c2d::transport::tls_connector(Some(&pem)).with_context(|| {
            format!(
                "connector {}: IotHub.TrustedCaFile {}",
                connector.name,
                path.display()
            )
        })?;
        o.ca_pem = Some(pem);
    }
    o.max_in_flight = sink.max_in_flight.max(1);
    o.max_sends_per_second = sink.max_sends_per_second;
    o.max_queued = o.max_in_flight * QUEUE_FACTOR;
    o.feedback = sink.ack != AckMode::None && sink.feedback_topic.is_some();
    if connector.errors.retry_timeout_ms > 0 {
        o.retry_timeout = Some(Duration::from_millis(
            connector.errors.retry_timeout_ms as u64,
        ));
    }
    Ok(o)
}

/// The value converter the sink reads records with.
pub fn value_converter(
    worker: &WorkerConfig,
    connector: &ConnectorConfig,
) -> anyhow::Result<Converter> {
    let spec = connector.effective_value_converter(&worker.value_converter);
    Converter::configure(&spec.class, &spec.props, false)
        .map_err(|e| anyhow::anyhow!("connector {}: {e}", connector.name))
}

/// When long backpressure pauses the partitions: 10 s, or half of `max.poll.interval.ms`.
pub fn pause_after(max_poll_interval: Option<Duration>) -> Duration {
    match max_poll_interval {
        Some(d) => BACKPRESSURE_PAUSE_AFTER.min(d / 2),
        None => BACKPRESSURE_PAUSE_AFTER,
    }
}

/// Connects the C2D client: network trouble is retried until shutdown (`Ok(None)`), refused
/// credentials fail the task.
pub(crate) async fn connect(
    ctx: &TaskContext,
    opts: &C2dOptions,
) -> anyhow::Result<Option<C2dClient>> {
    let backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
    let mut attempt = 0u32;
    loop {
        let r = tokio::select! {
            _ = ctx.shutdown.cancelled() => return Ok(None),
            r = C2dClient::connect(opts.clone()) => r,
        };
        match r {
            Ok(c) => return Ok(Some(c)),
            Err(e) if e.class() == ErrorClass::Fatal => {
                return Err(anyhow::Error::from(e)).context(format!(
                    "connector {}: IoT Hub refused the credentials of IotHub.ConnectionString or the endpoint settings",
                    ctx.connector.name
                ))
            }
            Err(e) => {
                let d = backoff.delay(attempt);
                attempt += 1;
                warn!(
                    "WorkerSinkTask{{id={}}} Could not connect to IoT Hub ({e}); retrying in {} ms",
                    ctx.id,
                    d.as_millis()
                );
                tokio::select! {
                    _ = ctx.shutdown.cancelled() => return Ok(None),
                    _ = tokio::time::sleep(d) => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pause_after_respects_max_poll_interval() {
        assert_eq!(pause_after(None), BACKPRESSURE_PAUSE_AFTER);
        assert_eq!(
            pause_after(Some(Duration::from_secs(300))),
            BACKPRESSURE_PAUSE_AFTER
        );
        assert_eq!(
            pause_after(Some(Duration::from_secs(7))),
            Duration::from_millis(3500)
        );
    }
}
