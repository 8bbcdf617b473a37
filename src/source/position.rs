//! Where each hub partition starts reading (toketi.md §2.5, §2.6): the stored offset (exclusive), else
//! `IotHub.StartTime`, else `IotHub.Offsets[i]` (exclusive), else the start of the stream.

use azure_messaging_eventhubs::{StartLocation, StartPosition};
use std::time::SystemTime;

/// The start chosen for one partition, with the reason (for toketi's log line).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Start {
    /// The offset stored for this partition in the offsets file (exclusive).
    Saved(String),
    /// Events enqueued after `IotHub.StartTime`.
    Time(SystemTime),
    /// `IotHub.Offsets[i]`, or `-1` (start of stream) when absent. Exclusive.
    Offset(String),
}

impl Start {
    /// Resolves the start of `partition`: `saved` is the stored `EventHubOffset`, `initial` the partition's
    /// `IotHub.Offsets` entry (or `-1`).
    pub fn resolve(saved: Option<&str>, start_time: Option<SystemTime>, initial: &str) -> Start {
        if let Some(s) = saved.map(str::trim).filter(|s| !s.is_empty()) {
            return Start::Saved(s.to_string());
        }
        if let Some(t) = start_time {
            return Start::Time(t);
        }
        let o = initial.trim();
        Start::Offset(if o.is_empty() { "-1".into() } else { o.into() })
    }

    /// toketi's INFO line for this start (§2.11).
    pub fn log_line(&self, partition: &str) -> String {
        match self {
            Start::Saved(o) => {
                format!(
                    "Setting up partition receiver {partition} with previously saved offset {o}"
                )
            }
            Start::Time(t) => format!(
                "Setting up partition receiver {partition} with start time Some({})",
                instant_string(*t)
            ),
            Start::Offset(o) => {
                format!("Setting up partition receiver {partition} with offset {o}")
            }
        }
    }

    /// The Event Hubs position (offsets exclusive, as toketi's `EventPosition.fromOffset`).
    pub fn position(&self) -> StartPosition {
        let location = match self {
            Start::Saved(o) | Start::Offset(o) => offset_location(o),
            Start::Time(t) => StartLocation::EnqueuedTime(*t),
        };
        StartPosition {
            location,
            inclusive: false,
        }
    }
}

fn offset_location(o: &str) -> StartLocation {
    match o {
        "-1" => StartLocation::Earliest,
        "@latest" => StartLocation::Latest,
        other => StartLocation::Offset(other.to_string()),
    }
}

/// The position after the last event delivered (used when a link is reopened).
pub fn after_sequence(seq: i64) -> StartPosition {
    StartPosition {
        location: StartLocation::SequenceNumber(seq),
        inclusive: false,
    }
}

/// Java `Instant.toString()` of a time (`2016-12-01T08:00:00Z`, fractions only when non-zero).
pub fn instant_string(t: SystemTime) -> String {
    let dt = time::OffsetDateTime::from(t);
    let base = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        dt.year(),
        u8::from(dt.month()),
        dt.day(),
        dt.hour(),
        dt.minute(),
        dt.second()
    );
    let nanos = dt.nanosecond();
    if nanos == 0 {
        format!("{base}Z")
    } else if nanos % 1_000_000 == 0 {
        format!("{base}.{:03}Z", nanos / 1_000_000)
    } else if nanos % 1_000 == 0 {
        format!("{base}.{:06}Z", nanos / 1_000)
    } else {
        format!("{base}.{nanos:09}Z")
    }
}

/// toketi's round-robin split (§2.5): task `i` gets partitions `i, i+n, i+2n, …`; empty tasks are not
/// created. Each partition comes with its `IotHub.Offsets` entry (or `-1`).
pub fn assign(
    partitions: &[String],
    offsets: &[String],
    tasks_max: usize,
) -> Vec<Vec<(String, String)>> {
    let n = tasks_max.max(1);
    let mut tasks: Vec<Vec<(String, String)>> = vec![Vec::new(); n];
    for (i, p) in partitions.iter().enumerate() {
        let initial = offsets
            .get(i)
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
            .unwrap_or("-1")
            .to_string();
        tasks[i % n].push((p.clone(), initial));
    }
    tasks.retain(|t| !t.is_empty());
    tasks
}

/// Sorts partition ids numerically when they are numbers (Event Hubs ids are "0", "1", …).
pub fn sort_partition_ids(ids: &mut [String]) {
    ids.sort_by(|a, b| match (a.parse::<u64>(), b.parse::<u64>()) {
        (Ok(x), Ok(y)) => x.cmp(&y),
        _ => a.cmp(b),
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn ids(n: usize) -> Vec<String> {
        (0..n).map(|i| i.to_string()).collect()
    }

    #[test]
    fn round_robin_as_toketi() {
        let t = assign(&ids(5), &[], 3);
        let p: Vec<Vec<&str>> = t
            .iter()
            .map(|v| v.iter().map(|(p, _)| p.as_str()).collect())
            .collect();
        assert_eq!(p, vec![vec!["0", "3"], vec!["1", "4"], vec!["2"]]);
        assert_eq!(assign(&ids(4), &[], 8).len(), 4, "no empty tasks");
        assert_eq!(
            assign(&ids(4), &[], 1),
            vec![ids(4)
                .into_iter()
                .map(|p| (p, "-1".to_string()))
                .collect::<Vec<_>>()]
        );
    }

    #[test]
    fn offsets_entries_by_partition_index() {
        let offs: Vec<String> = "-1,5,10,15,-1".split(',').map(String::from).collect();
        let t = assign(&ids(4), &offs, 1);
        let o: Vec<&str> = t[0].iter().map(|(_, o)| o.as_str()).collect();
        assert_eq!(o, vec!["-1", "5", "10", "15"]);
        let offs = vec!["".to_string(), " 7 ".to_string()];
        let t = assign(&ids(3), &offs, 1);
        let o: Vec<&str> = t[0].iter().map(|(_, o)| o.as_str()).collect();
        assert_eq!(o, vec!["-1", "7", "-1"]);
    }

    #[test]
    fn saved_beats_start_time_beats_offsets() {
        let t = UNIX_EPOCH + Duration::from_millis(1_480_579_200_123);
        assert_eq!(
            Start::resolve(Some(" 42 "), Some(t), "5"),
            Start::Saved("42".into())
        );
        assert_eq!(Start::resolve(Some(""), Some(t), "5"), Start::Time(t));
        assert_eq!(Start::resolve(None, None, "5"), Start::Offset("5".into()));
        assert_eq!(Start::resolve(None, None, ""), Start::Offset("-1".into()));
    }

    #[test]
    fn log_lines_are_toketis() {
        let t = UNIX_EPOCH + Duration::from_secs(1_480_579_200);
        assert_eq!(
            Start::Time(t).log_line("2"),
            "Setting up partition receiver 2 with start time Some(2016-12-01T08:00:00Z)"
        );
        assert_eq!(
            Start::Saved("8589934592".into()).log_line("0"),
            "Setting up partition receiver 0 with previously saved offset 8589934592"
        );
        assert_eq!(
            Start::Offset("-1".into()).log_line("1"),
            "Setting up partition receiver 1 with offset -1"
        );
        assert_eq!(
            instant_string(UNIX_EPOCH + Duration::from_millis(1_504_037_746_112)),
            "2017-08-29T20:15:46.112Z"
        );
    }

    #[test]
    fn positions_are_exclusive_and_map_special_offsets() {
        let p = Start::Offset("-1".into()).position();
        assert!(matches!(p.location, StartLocation::Earliest));
        let p = Start::Offset("@latest".into()).position();
        assert!(matches!(p.location, StartLocation::Latest));
        let p = Start::Saved("100".into()).position();
        assert!(matches!(p.location, StartLocation::Offset(ref o) if o == "100"));
        assert!(!p.inclusive);
        let p = after_sequence(9);
        assert!(matches!(p.location, StartLocation::SequenceNumber(9)));
        assert!(!p.inclusive);
    }

    #[test]
    fn numeric_partition_sort() {
        let mut v: Vec<String> = ["10", "2", "1", "0"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        sort_partition_ids(&mut v);
        assert_eq!(v, vec!["0", "1", "2", "10"]);
    }
}
