//! The sink's consumer: subscription, rebalance callbacks and offset commits.
//!
//! Invariants:
//! * Only the [`Tracker`]'s finished prefix of a partition is ever committed (offset + 1 of the last
//!   record of the prefix), so nothing unfinished is committed, whichever path commits.
//! * On revocation the finished prefix of the revoked partitions is committed synchronously before
//!   they go; on loss (`assignment_lost`) nothing is committed. Either way their bookkeeping is
//!   dropped, and late completions for them are ignored (generation check in the tracker).
//! * Newly assigned partitions are paused at once when the task wants its partitions paused
//!   (operator pause, backpressure, hub outage), so a rebalance never un-pauses them.
//! * `topics.regex` matches whole topic names, as Connect does (`iot` does not match `iotout`).

use super::tracker::{TopicPartition, Tracker};
use crate::config::connector::Topics;
use crate::rest::metrics::{Labels, METRICS};
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use tracing::{debug, info, warn};

/// State shared with the rebalance callbacks (which run inside the consumer's poll).
pub struct Shared {
    /// Connect's `<connector>-<task>` id, for log lines.
    pub id: String,
    pub tracker: Mutex<Tracker>,
    /// Whether assigned partitions must be paused (operator pause, backpressure, outage).
    pub paused: AtomicBool,
    pub labels: Labels,
}

/// The consumer context: rebalance callbacks with Connect's log lines.
pub struct SinkContext {
    pub shared: std::sync::Arc<Shared>,
}

impl ClientContext for SinkContext {}

/// The sink's consumer type.
pub type SinkConsumer = StreamConsumer<SinkContext>;

fn tpl_names(tpl: &TopicPartitionList) -> String {
    tpl.elements()
        .iter()
        .map(|e| format!("{}-{}", e.topic(), e.partition()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn offsets_tpl(offsets: &[(TopicPartition, i64)]) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    for ((t, p), o) in offsets {
        let _ = tpl.add_partition_offset(t, *p, Offset::Offset(*o));
    }
    tpl
}

/// Connect's rendering of committed offsets.
pub fn show_offsets(offsets: &[(TopicPartition, i64)]) -> String {
    let parts: Vec<String> = offsets
        .iter()
        .map(|((t, p), o)| {
            format!("{t}-{p}=OffsetAndMetadata{{offset={o}, leaderEpoch=null, metadata=''}}")
        })
        .collect();
    format!("{{{}}}", parts.join(", "))
}

/// The pattern librdkafka subscribes with for `topics.regex`: anchored at both ends, as Connect
/// matches (`Pattern.matcher(topic).matches()`). librdkafka treats a subscription starting
/// with `^` as a regex; its regex engine (POSIX extended) has no `(?:…)`, so a plain group.
pub fn regex_subscription(re: &str) -> String {
    format!("^({re})$")
}

/// Subscribes to the configured topics.
pub fn subscribe(consumer: &SinkConsumer, topics: &Topics) -> anyhow::Result<()> {
    use anyhow::Context as _;
    match topics {
        Topics::List(list) => {
            let refs: Vec<&str> = list.iter().map(String::as_str).collect();
            consumer.subscribe(&refs).context("subscribing")
        }
        Topics::Regex(re) => consumer
            .subscribe(&[regex_subscription(re).as_str()])
            .context("subscribing to topics.regex"),
    }
}

/// Commits the finished prefix of every partition (all known ones with `all`, else those that
/// moved). Failures are logged and counted; the next commit carries the same offsets again.
pub fn commit(consumer: &SinkConsumer, shared: &Shared, all: bool, mode: CommitMode) -> bool {
    let offsets = shared.tracker.lock().unwrap().committable(all, |_| true);
    if offsets.is_empty() {
        return true;
    }
    let shown = show_offsets(&offsets);
    match mode {
        CommitMode::Sync => info!(
            "WorkerSinkTask{{id={}}} Committing offsets synchronously: {shown}",
            shared.id
        ),
        CommitMode::Async => debug!(
            "WorkerSinkTask{{id={}}} Committing offsets asynchronously: {shown}",
            shared.id
        ),
    }
    match consumer.commit(&offsets_tpl(&offsets), mode) {
        Ok(()) => {
            METRICS.commit_succeeded(&shared.labels);
            true
        }
        Err(e) => {
            METRICS
                .offset_commit_failure
                .get_or_create(&shared.labels)
                .inc();
            warn!(
                "WorkerSinkTask{{id={}}} Offset commit failed: {e}",
                shared.id
            );
            false
        }
    }
}

impl ConsumerContext for SinkContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(tpl) => {
                let lost = consumer.assignment_lost();
                let revoked: Vec<TopicPartition> = tpl
                    .elements()
                    .iter()
                    .map(|e| (e.topic().to_string(), e.partition()))
                    .collect();
                let mut tracker = self.shared.tracker.lock().unwrap();
                if lost {
                    warn!(
                        "WorkerSinkTask{{id={}}} Partitions lost: {} (not committing; their records will be re-read)",
                        self.shared.id,
                        tpl_names(tpl)
                    );
                } else {
                    let offsets = tracker.committable(true, |tp| revoked.contains(tp));
                    if !offsets.is_empty() {
                        info!(
                            "WorkerSinkTask{{id={}}} Committing offsets synchronously using sequence number on revocation: {}",
                            self.shared.id,
                            show_offsets(&offsets)
                        );
                        match consumer.commit(&offsets_tpl(&offsets), CommitMode::Sync) {
                            Ok(()) => METRICS.commit_succeeded(&self.shared.labels),
                            Err(e) => {
                                METRICS
                                    .offset_commit_failure
                                    .get_or_create(&self.shared.labels)
                                    .inc();
                                warn!(
                                    "WorkerSinkTask{{id={}}} Offset commit on revocation failed: {e}",
                                    self.shared.id
                                );
                            }
                        }
                    }
                    info!(
                        "WorkerSinkTask{{id={}}} Partitions revoked: {}",
                        self.shared.id,
                        tpl_names(tpl)
                    );
                }
                for tp in &revoked {
                    tracker.drop_partition(tp);
                }
            }
            Rebalance::Assign(_) => {}
            Rebalance::Error(e) => {
                warn!(
                    "WorkerSinkTask{{id={}}} Rebalance error: {e}",
                    self.shared.id
                )
            }
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            info!(
                "WorkerSinkTask{{id={}}} Partitions assigned: {}",
                self.shared.id,
                tpl_names(tpl)
            );
            {
                let mut tracker = self.shared.tracker.lock().unwrap();
                for e in tpl.elements() {
                    tracker.assign((e.topic().to_string(), e.partition()));
                }
            }
            if self.shared.paused.load(Ordering::SeqCst) {
                if let Err(e) = consumer.pause(tpl) {
                    warn!(
                        "WorkerSinkTask{{id={}}} Could not pause newly assigned partitions: {e}",
                        self.shared.id
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// librdkafka uses POSIX extended regexes; the `regex` crate has the same semantics for these
    /// patterns, so check the anchoring with it.
    #[test]
    fn topics_regex_matches_whole_names() {
        let m = |re: &str, t: &str| {
            regex::Regex::new(&regex_subscription(re))
                .unwrap()
                .is_match(t)
        };
        assert!(m("iot", "iot"));
        assert!(!m("iot", "iotout"));
        assert!(!m("iot", "myiot"));
        assert!(m("iot.*", "iotout"));
        assert!(m("a|b", "b"));
        assert!(!m("a|b", "ab"), "alternation stays inside the anchors");
        assert!(m("^iot.*$", "iotout"), "anchors the user wrote still work");
    }

    #[test]
    fn offsets_are_shown_as_connect_does() {
        assert_eq!(
            show_offsets(&[(("t".into(), 0), 5), (("t".into(), 1), 7)]),
            "{t-0=OffsetAndMetadata{offset=5, leaderEpoch=null, metadata=''}, t-1=OffsetAndMetadata{offset=7, leaderEpoch=null, metadata=''}}"
        );
    }
}
