//! The per-partition lag metric: every few seconds `$management` is asked for each partition's last
//! enqueued sequence number; lag = that − the last committed sequence number. Failures only skip a
//! refresh.

use super::stall::partition_labels;
use super::task::{open_client, SourceShared};
use crate::rest::metrics::{Labels, METRICS};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::debug;

/// Lag of a hub partition = last enqueued sequence number − last committed one (−1 when nothing is).
fn update_lag(labels: &Labels) {
    let last = METRICS
        .partition_last_enqueued_sequence
        .get_or_create(labels)
        .get();
    let committed = METRICS
        .partition_committed_sequence
        .get_or_create(labels)
        .get();
    METRICS
        .partition_lag
        .get_or_create(labels)
        .set((last - committed).max(0));
}

pub fn partition_committed(connector: &str, partition: &str, seq: i64) {
    let labels = partition_labels(connector, partition);
    METRICS
        .partition_committed_sequence
        .get_or_create(&labels)
        .set(seq);
    update_lag(&labels);
}

/// How often the hub is asked for its partitions' last enqueued sequence numbers.
const LAG_REFRESH: Duration = Duration::from_secs(5);

/// Keeps the lag metric current: every few seconds asks `$management` for each partition's last
/// enqueued sequence number. Failures only skip a refresh.
pub async fn refresh_lag(
    shared: Arc<SourceShared>,
    partitions: Vec<String>,
    stop: CancellationToken,
) {
    let name = shared.connector.name.clone();
    for p in &partitions {
        let labels = partition_labels(&name, p);
        // Nothing committed yet: the lag is everything since the start of the stream.
        METRICS
            .partition_committed_sequence
            .get_or_create(&labels)
            .set(-1);
    }
    let mut client = None;
    loop {
        if client.is_none() {
            client = open_client(&shared.source).await.ok();
        }
        if let Some(c) = &client {
            for p in &partitions {
                match c.get_partition_properties(p).await {
                    Ok(props) => {
                        let labels = partition_labels(&name, p);
                        let last = if props.is_empty {
                            -1
                        } else {
                            props.last_enqueued_sequence_number
                        };
                        METRICS
                            .partition_last_enqueued_sequence
                            .get_or_create(&labels)
                            .set(last);
                        update_lag(&labels);
                    }
                    Err(e) => {
                        debug!("lag refresh of partition {p} failed: {e}");
                        client = None;
                        break;
                    }
                }
            }
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(LAG_REFRESH) => {}
        }
    }
    if let Some(c) = client {
        let _ = tokio::time::timeout(Duration::from_secs(2), c.close()).await;
    }
}
