//! The stall watchdog of one hub partition (issue 13.1; anchors-2 C1: a link that stays attached but
//! delivers nothing, with no error, is the most common complaint about Event Hubs readers).
//!
//! Rule: when a partition's link has delivered nothing for `IotHub.StallTimeout` and the hub's
//! `$management` partition runtime information says events newer than the last delivered one exist,
//! the partition is stalled: the receiver logs it, counts it, tears the link down and reopens it from
//! the last delivered sequence number (exclusive: no loss, no duplicate). A partition whose reopened
//! link stalls again is reported by `/readyz` until an event arrives.
//!
//! Metrics (labels `connector`, `partition`), refreshed every [`TICK`]:
//! `iotconnect_source_partition_seconds_since_last_event`,
//! `iotconnect_source_partition_seconds_since_last_commit`,
//! `iotconnect_source_partition_stall_recoveries_total`, `iotconnect_source_partition_stalled`.

use super::position::Start;
use crate::rest::metrics::{Labels, METRICS};
use azure_messaging_eventhubs::models::EventHubPartitionProperties;
use azure_messaging_eventhubs::StartLocation;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

/// How often a receiver looks at its watchdog (and refreshes the age metrics).
pub const TICK: Duration = Duration::from_secs(1);
/// Longest wait for a `$management` answer during a stall check.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// What the hub says about a partition, reduced to what the rule needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HubTail {
    pub is_empty: bool,
    pub last_sequence: i64,
    pub last_offset: String,
    pub last_enqueued: Option<SystemTime>,
}

impl From<&EventHubPartitionProperties> for HubTail {
    fn from(p: &EventHubPartitionProperties) -> HubTail {
        HubTail {
            is_empty: p.is_empty,
            last_sequence: p.last_enqueued_sequence_number,
            last_offset: p.last_enqueued_offset.clone(),
            last_enqueued: p.last_enqueued_time_utc,
        }
    }
}

/// Does the hub hold events after what this link delivered? `last_seq` is the last delivered
/// sequence number; without one (nothing delivered since the start) the start position decides;
/// `baseline` is the tail seen when this link was opened, for starts that name no comparable
/// position (`@latest`, non-numeric offsets).
pub fn has_newer(
    tail: &HubTail,
    last_seq: Option<i64>,
    start: &Start,
    baseline: Option<i64>,
) -> bool {
    if tail.is_empty {
        return false;
    }
    if let Some(s) = last_seq {
        return tail.last_sequence > s;
    }
    let by_baseline = || baseline.is_some_and(|b| tail.last_sequence > b);
    match start.position().location {
        StartLocation::Earliest => true,
        StartLocation::Latest => by_baseline(),
        StartLocation::SequenceNumber(s) => tail.last_sequence > s,
        StartLocation::EnqueuedTime(t) => tail.last_enqueued.is_some_and(|e| e > t),
        StartLocation::Offset(o) => match (o.parse::<i64>(), tail.last_offset.parse::<i64>()) {
            (Ok(o), Ok(last)) => last > o,
            _ => by_baseline(),
        },
    }
}

/// Per-partition watchdog state (owned by the partition's receiver).
pub struct Watchdog {
    pub timeout: Duration,
    /// Last delivery on the current link (or when it opened).
    pub last_delivery: Instant,
    /// Consecutive recoveries without a delivery in between.
    pub attempts: u32,
}

impl Watchdog {
    pub fn new(timeout: Duration) -> Watchdog {
        Watchdog {
            timeout,
            last_delivery: Instant::now(),
            attempts: 0,
        }
    }

    pub fn enabled(&self) -> bool {
        !self.timeout.is_zero()
    }

    /// An event arrived.
    pub fn delivered(&mut self) {
        self.last_delivery = Instant::now();
        self.attempts = 0;
    }

    /// A (re)opened link: the silence is measured from now.
    pub fn link_opened(&mut self) {
        self.last_delivery = Instant::now();
    }

    /// Quiet for at least the stall timeout.
    pub fn due(&self) -> bool {
        self.enabled() && self.last_delivery.elapsed() >= self.timeout
    }
}

/// Metric labels of a hub partition.
pub fn partition_labels(connector: &str, partition: &str) -> Labels {
    vec![
        ("connector".to_string(), connector.to_string()),
        ("partition".to_string(), partition.to_string()),
    ]
}

/// Times of the last event received and the last commit of one partition (shared by its receiver
/// and the task's committer), exported as ages.
pub struct Ages {
    labels: Labels,
    last_event: Mutex<Instant>,
    last_commit: Mutex<Instant>,
}

impl Ages {
    pub fn new(connector: &str, partition: &str) -> Ages {
        let now = Instant::now();
        let a = Ages {
            labels: partition_labels(connector, partition),
            last_event: Mutex::new(now),
            last_commit: Mutex::new(now),
        };
        a.refresh();
        METRICS
            .partition_stall_recoveries
            .get_or_create(&a.labels)
            .inc_by(0);
        METRICS.partition_stalled.get_or_create(&a.labels).set(0);
        a
    }
    pub fn event(&self) {
        *self.last_event.lock().unwrap() = Instant::now();
    }
    pub fn committed(&self) {
        *self.last_commit.lock().unwrap() = Instant::now();
    }
    pub fn refresh(&self) {
        let e = self.last_event.lock().unwrap().elapsed().as_secs_f64();
        let c = self.last_commit.lock().unwrap().elapsed().as_secs_f64();
        METRICS
            .partition_seconds_since_last_event
            .get_or_create(&self.labels)
            .set(e);
        METRICS
            .partition_seconds_since_last_commit
            .get_or_create(&self.labels)
            .set(c);
    }
    pub fn recovery(&self) {
        METRICS
            .partition_stall_recoveries
            .get_or_create(&self.labels)
            .inc();
    }
    pub fn set_stalled(&self, stalled: bool) {
        METRICS
            .partition_stalled
            .get_or_create(&self.labels)
            .set(stalled as i64);
    }
    pub fn labels(&self) -> &Labels {
        &self.labels
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn tail(seq: i64, off: &str) -> HubTail {
        HubTail {
            is_empty: false,
            last_sequence: seq,
            last_offset: off.into(),
            last_enqueued: Some(UNIX_EPOCH + Duration::from_secs(100)),
        }
    }

    #[test]
    fn newer_events_after_the_last_delivered_one() {
        let s = Start::Offset("-1".into());
        assert!(has_newer(&tail(10, "100"), Some(9), &s, None));
        assert!(!has_newer(&tail(10, "100"), Some(10), &s, None));
        let empty = HubTail {
            is_empty: true,
            ..tail(-1, "-1")
        };
        assert!(!has_newer(&empty, None, &s, None));
        assert!(has_newer(&tail(0, "0"), None, &s, None), "from the start");
    }

    #[test]
    fn without_a_delivery_the_start_position_decides() {
        assert!(has_newer(
            &tail(10, "100"),
            None,
            &Start::Saved("90".into()),
            None
        ));
        assert!(!has_newer(
            &tail(10, "100"),
            None,
            &Start::Saved("100".into()),
            None
        ));
        let t = Start::Time(UNIX_EPOCH + Duration::from_secs(50));
        assert!(has_newer(&tail(10, "100"), None, &t, None));
        let t = Start::Time(UNIX_EPOCH + Duration::from_secs(100));
        assert!(!has_newer(&tail(10, "100"), None, &t, None));
        let latest = Start::Offset("@latest".into());
        assert!(!has_newer(&tail(10, "100"), None, &latest, None));
        assert!(!has_newer(&tail(10, "100"), None, &latest, Some(10)));
        assert!(has_newer(&tail(11, "110"), None, &latest, Some(10)));
    }

    #[test]
    fn watchdog_is_due_after_the_timeout_only() {
        let mut w = Watchdog::new(Duration::from_millis(30));
        assert!(!w.due());
        w.last_delivery = Instant::now() - Duration::from_millis(31);
        assert!(w.due());
        w.delivered();
        assert!(!w.due());
        assert!(!Watchdog::new(Duration::ZERO).due(), "0 disables it");
    }
}
