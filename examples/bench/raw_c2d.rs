//! The sink benchmark's base line: a bare fe2o3-amqp sender on `/messages/devicebound` with the
//! client's authentication, without any of `C2dClient`'s bookkeeping (no per-device ordering, no
//! rate limit, no retries). Moved out of the product crate; the C2D tests include this file too.

use futures::StreamExt;
use iotconnect::iothub::c2d::{
    AckMode, AmqpLink, C2dMessage, C2dOptions, ConnectError, DEVICEBOUND_ADDRESS,
};
use serde::Serialize;
use std::time::Duration;

/// Result of [`raw_send_rate`].
#[derive(Clone, Debug, Serialize)]
pub struct RawSendReport {
    pub messages: u64,
    pub accepted: u64,
    pub rejected: u64,
    pub elapsed_ms: f64,
    pub per_second: f64,
}

/// Opens a connection with the same authentication, attaches a sender to `/messages/devicebound`
/// and sends `messages` messages (device `devices[i % len]`, `body`) as fast as fe2o3-amqp allows,
/// keeping up to `window` transfers unsettled.
pub async fn raw_send_rate(
    opts: &C2dOptions,
    messages: u64,
    devices: &[String],
    body: &[u8],
    window: usize,
) -> Result<RawSendReport, ConnectError> {
    assert!(
        !devices.is_empty(),
        "raw_send_rate needs at least one device"
    );
    let mut link = AmqpLink::open(opts).await?;
    let mut sender = link
        .sender("raw-sender", DEVICEBOUND_ADDRESS, opts.operation_timeout)
        .await?;
    let window = window.max(1);
    let mut inflight = futures::stream::FuturesUnordered::new();
    let (mut accepted, mut rejected) = (0u64, 0u64);
    let mut tally =
        |r: Result<fe2o3_amqp::types::messaging::Outcome, fe2o3_amqp::link::SendError>| match r {
            Ok(fe2o3_amqp::types::messaging::Outcome::Accepted(_)) => accepted += 1,
            _ => rejected += 1,
        };
    let start = std::time::Instant::now();
    let run_id = uuid::Uuid::new_v4().simple().to_string();
    for i in 0..messages {
        while inflight.len() >= window {
            if let Some(r) = inflight.next().await {
                tally(r);
            }
        }
        let mut m = C2dMessage::new(
            devices[(i as usize) % devices.len()].clone(),
            format!("raw-{run_id}-{i}"),
            body.to_vec(),
        );
        m.ack = AckMode::None;
        let fut = sender
            .send_batchable(m.into_amqp())
            .await
            .map_err(|e| ConnectError::Amqp {
                stage: "send",
                msg: e.to_string(),
            })?;
        inflight.push(fut);
    }
    while let Some(r) = inflight.next().await {
        tally(r);
    }
    let elapsed = start.elapsed();
    let _ = tokio::time::timeout(Duration::from_secs(2), sender.close()).await;
    link.close().await;
    Ok(RawSendReport {
        messages,
        accepted,
        rejected,
        elapsed_ms: elapsed.as_secs_f64() * 1000.0,
        per_second: messages as f64 / elapsed.as_secs_f64().max(1e-9),
    })
}
