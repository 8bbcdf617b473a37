//! In-memory partition logs of the Event Hub-compatible endpoint.
//!
//! Each partition is an append-only log with its own sequence numbers (from 0), byte-position-like
//! offsets (a running total of the stored body sizes plus a fixed per-event overhead, so offsets grow
//! strictly like Azure's byte offsets do) and enqueued times that never go backwards. Only the last
//! `retention` events are kept; sequence numbers and offsets keep growing after eviction.
//!
//! New events bump a `watch` channel per partition, which wakes waiting partition senders: nothing
//! polls.

use bytes::Bytes;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

/// Added to a body's length to advance the offset (an approximation of the per-event header bytes
/// Azure's byte offsets include).
const OFFSET_OVERHEAD: u64 = 64;

/// A value of an application property.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
pub enum PropValue {
    Bool(bool),
    Long(i64),
    Double(f64),
    String(String),
}

/// The system properties a device may set on a telemetry message.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TelemetryProps {
    pub message_id: Option<String>,
    pub correlation_id: Option<String>,
    pub content_type: Option<String>,
    pub content_encoding: Option<String>,
    /// Application properties, in the order given.
    pub app: Vec<(String, PropValue)>,
}

/// One stored event.
#[derive(Debug)]
pub struct Event {
    pub sequence_number: i64,
    pub offset: u64,
    /// Enqueued time, epoch milliseconds.
    pub enqueued_ms: i64,
    /// `Some(device id)` for IoT Hub telemetry (gets the `iothub-*` annotations); `None` for a plain
    /// Event Hub event.
    pub device_id: Option<Arc<str>>,
    pub props: Option<Box<TelemetryProps>>,
    pub body: Bytes,
}

/// Where a partition receiver starts, parsed from its selector filter.
#[derive(Clone, Debug, PartialEq)]
pub enum StartFilter {
    /// `x-opt-offset > '-1'` (or no filter).
    Earliest,
    /// `x-opt-offset > '@latest'`.
    Latest,
    Offset {
        value: u64,
        inclusive: bool,
    },
    Sequence {
        value: i64,
        inclusive: bool,
    },
    /// Epoch milliseconds.
    EnqueuedTime {
        value: i64,
        inclusive: bool,
    },
}

/// Parses an Event Hubs selector expression such as `amqp.annotation.x-opt-offset > '-1'` or
/// `amqp.annotation.x-opt-sequence-number >='5'` (spaces around the operator are optional).
pub fn parse_selector(expr: &str) -> Result<StartFilter, String> {
    let bad = || format!("unsupported selector filter expression: {expr}");
    let rest = expr
        .trim()
        .strip_prefix("amqp.annotation.")
        .ok_or_else(bad)?;
    let (field, rest) = [
        "x-opt-offset",
        "x-opt-sequence-number",
        "x-opt-enqueued-time",
    ]
    .iter()
    .find_map(|f| rest.strip_prefix(f).map(|r| (*f, r)))
    .ok_or_else(bad)?;
    let rest = rest.trim_start();
    let (inclusive, rest) = if let Some(r) = rest.strip_prefix(">=") {
        (true, r)
    } else if let Some(r) = rest.strip_prefix('>') {
        (false, r)
    } else {
        return Err(bad());
    };
    let value = rest
        .trim()
        .strip_prefix('\'')
        .and_then(|r| r.strip_suffix('\''))
        .ok_or_else(bad)?;
    match field {
        "x-opt-offset" => match value {
            "-1" => Ok(StartFilter::Earliest),
            "@latest" => Ok(StartFilter::Latest),
            v => v
                .parse::<u64>()
                .map(|value| StartFilter::Offset { value, inclusive })
                .map_err(|_| bad()),
        },
        "x-opt-sequence-number" => value
            .parse::<i64>()
            .map(|value| StartFilter::Sequence { value, inclusive })
            .map_err(|_| bad()),
        _ => value
            .parse::<i64>()
            .map(|value| StartFilter::EnqueuedTime { value, inclusive })
            .map_err(|_| bad()),
    }
}

/// Stable device → partition mapping: 32-bit FNV-1a of the device id's UTF-8 bytes, modulo the
/// partition count.
pub fn partition_for(device_id: &str, partitions: u32) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in device_id.as_bytes() {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h % partitions.max(1)
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A snapshot of a partition's state, as `$management` reports it.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PartitionInfo {
    pub id: u32,
    /// First retained sequence number (the next one when empty).
    pub beginning_sequence_number: i64,
    /// -1 when nothing was ever enqueued.
    pub last_enqueued_sequence_number: i64,
    /// "-1" when nothing was ever enqueued.
    pub last_enqueued_offset: String,
    pub last_enqueued_time_ms: i64,
    pub is_empty: bool,
    pub retained: usize,
    pub total_enqueued: i64,
}

struct Log {
    events: VecDeque<Arc<Event>>,
    next_seq: i64,
    next_offset: u64,
    last_offset: Option<u64>,
    last_enqueued_ms: i64,
}

/// One partition: its log and the wake-up channel carrying the next sequence number.
pub struct Partition {
    pub id: u32,
    retention: usize,
    log: Mutex<Log>,
    head: watch::Sender<i64>,
}

impl Partition {
    pub fn new(id: u32, retention: usize) -> Self {
        Partition {
            id,
            retention: retention.max(1),
            log: Mutex::new(Log {
                events: VecDeque::new(),
                next_seq: 0,
                next_offset: 0,
                last_offset: None,
                last_enqueued_ms: 0,
            }),
            head: watch::channel(0).0,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends events (all at the same instant); returns (sequence number, offset) of each.
    pub fn append(
        &self,
        items: impl IntoIterator<Item = (Option<Arc<str>>, Option<Box<TelemetryProps>>, Bytes)>,
    ) -> Vec<(i64, u64)> {
        let mut out = Vec::new();
        let next = {
            let mut log = self.lock();
            let now = now_ms().max(log.last_enqueued_ms);
            for (device_id, props, body) in items {
                let ev = Event {
                    sequence_number: log.next_seq,
                    offset: log.next_offset,
                    enqueued_ms: now,
                    device_id,
                    props,
                    body,
                };
                out.push((ev.sequence_number, ev.offset));
                log.last_offset = Some(ev.offset);
                log.next_seq += 1;
                log.next_offset += ev.body.len() as u64 + OFFSET_OVERHEAD;
                log.events.push_back(Arc::new(ev));
                if log.events.len() > self.retention {
                    log.events.pop_front();
                }
            }
            log.last_enqueued_ms = now;
            log.next_seq
        };
        self.head.send_replace(next);
        out
    }

    /// A receiver of the next sequence number to be assigned (changes on every append).
    pub fn subscribe(&self) -> watch::Receiver<i64> {
        self.head.subscribe()
    }

    /// The sequence number a receiver with `filter` starts at (it may not exist yet).
    pub fn resolve_start(&self, filter: &StartFilter) -> i64 {
        let log = self.lock();
        let first = log
            .events
            .front()
            .map_or(log.next_seq, |e| e.sequence_number);
        let find = |pred: &dyn Fn(&Event) -> bool| -> i64 {
            let idx = log.events.partition_point(|e| !pred(e));
            log.events
                .get(idx)
                .map_or(log.next_seq, |e| e.sequence_number)
        };
        match *filter {
            StartFilter::Earliest => first,
            StartFilter::Latest => log.next_seq,
            StartFilter::Offset { value, inclusive } => find(&|e| {
                if inclusive {
                    e.offset >= value
                } else {
                    e.offset > value
                }
            }),
            StartFilter::Sequence { value, inclusive } => {
                let s = if inclusive {
                    value
                } else {
                    value.saturating_add(1)
                };
                s.clamp(first, log.next_seq)
            }
            StartFilter::EnqueuedTime { value, inclusive } => find(&|e| {
                if inclusive {
                    e.enqueued_ms >= value
                } else {
                    e.enqueued_ms > value
                }
            }),
        }
    }

    /// Up to `max` retained events from sequence number `from` on (skipping evicted ones).
    pub fn read(&self, from: i64, max: usize) -> Vec<Arc<Event>> {
        let log = self.lock();
        let first = log
            .events
            .front()
            .map_or(log.next_seq, |e| e.sequence_number);
        let start = (from.max(first) - first) as usize;
        log.events.iter().skip(start).take(max).cloned().collect()
    }

    pub fn info(&self) -> PartitionInfo {
        let log = self.lock();
        let first = log
            .events
            .front()
            .map_or(log.next_seq, |e| e.sequence_number);
        PartitionInfo {
            id: self.id,
            beginning_sequence_number: first,
            last_enqueued_sequence_number: log.next_seq - 1,
            last_enqueued_offset: log
                .last_offset
                .map_or_else(|| "-1".to_string(), |o| o.to_string()),
            last_enqueued_time_ms: log.last_enqueued_ms,
            is_empty: log.events.is_empty(),
            retained: log.events.len(),
            total_enqueued: log.next_seq,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_with_and_without_spaces() {
        assert_eq!(
            parse_selector("amqp.annotation.x-opt-offset > '-1'"),
            Ok(StartFilter::Earliest)
        );
        assert_eq!(
            parse_selector("amqp.annotation.x-opt-offset > '@latest'"),
            Ok(StartFilter::Latest)
        );
        assert_eq!(
            parse_selector("amqp.annotation.x-opt-offset >'128'"),
            Ok(StartFilter::Offset {
                value: 128,
                inclusive: false
            })
        );
        assert_eq!(
            parse_selector("amqp.annotation.x-opt-sequence-number>='7'"),
            Ok(StartFilter::Sequence {
                value: 7,
                inclusive: true
            })
        );
        assert_eq!(
            parse_selector("amqp.annotation.x-opt-enqueued-time >= '1700000003000'"),
            Ok(StartFilter::EnqueuedTime {
                value: 1_700_000_003_000,
                inclusive: true
            })
        );
        assert!(parse_selector("amqp.annotation.x-opt-offset < '1'").is_err());
        assert!(parse_selector("amqp.annotation.x-opt-foo > '1'").is_err());
        assert!(parse_selector("amqp.annotation.x-opt-offset > 1").is_err());
    }

    #[test]
    fn fnv1a_is_stable() {
        // FNV-1a 32 of "a" is 0xe40c292c.
        assert_eq!(partition_for("a", u32::MAX), 0xe40c292c);
        assert_eq!(partition_for("dev-1", 4), partition_for("dev-1", 4));
        assert!(partition_for("anything", 4) < 4);
    }

    fn body(n: usize) -> Bytes {
        Bytes::from(vec![b'x'; n])
    }

    #[test]
    fn append_resolve_read_and_retention() {
        let p = Partition::new(0, 3);
        let info = p.info();
        assert!(info.is_empty);
        assert_eq!(info.last_enqueued_sequence_number, -1);
        assert_eq!(info.last_enqueued_offset, "-1");
        let ids: Vec<_> = (0..5)
            .map(|i| p.append([(None, None, body(10 + i))])[0])
            .collect();
        assert_eq!(ids[0], (0, 0));
        assert_eq!(ids[1], (1, 74));
        assert!(ids.windows(2).all(|w| w[1].1 > w[0].1));
        // retention 3: seq 2..4 remain
        let info = p.info();
        assert_eq!(info.beginning_sequence_number, 2);
        assert_eq!(info.last_enqueued_sequence_number, 4);
        assert_eq!(info.last_enqueued_offset, ids[4].1.to_string());
        assert_eq!(p.resolve_start(&StartFilter::Earliest), 2);
        assert_eq!(p.resolve_start(&StartFilter::Latest), 5);
        let off3 = ids[3].1;
        assert_eq!(
            p.resolve_start(&StartFilter::Offset {
                value: off3,
                inclusive: false
            }),
            4
        );
        assert_eq!(
            p.resolve_start(&StartFilter::Offset {
                value: off3,
                inclusive: true
            }),
            3
        );
        assert_eq!(
            p.resolve_start(&StartFilter::Sequence {
                value: 2,
                inclusive: false
            }),
            3
        );
        assert_eq!(
            p.resolve_start(&StartFilter::Sequence {
                value: 0,
                inclusive: true
            }),
            2
        );
        let r = p.read(0, 10);
        assert_eq!(
            r.iter().map(|e| e.sequence_number).collect::<Vec<_>>(),
            vec![2, 3, 4]
        );
        assert_eq!(p.read(4, 10).len(), 1);
        assert!(p.read(5, 10).is_empty());
        let t = r[0].enqueued_ms;
        assert_eq!(
            p.resolve_start(&StartFilter::EnqueuedTime {
                value: t - 1,
                inclusive: false
            }),
            2
        );
        assert_eq!(*p.subscribe().borrow(), 5);
    }
}
