//! The receiving half of one hub partition's pipeline: owns its Event Hubs client and link, drops
//! redelivered events (by sequence number), builds the records of each received batch, submits them
//! to the partition's acker (one lock per batch) and enqueues them into librdkafka in hub order, each
//! with its ticket; the partition's [`Completer`] completes them from the delivery reports.
//!
//! Invariants:
//! * a link is always (re)opened after the last delivered sequence number (exclusive), so a reconnect
//!   or a stall recovery neither loses nor duplicates;
//! * every event is submitted to the partition's [`Acker`](super::acker::Acker) before anything
//!   later of the same partition, and before it is enqueued, so commits follow hub order;
//! * an event without `x-opt-offset`, an event the record builder refuses and a record Kafka refuses
//!   as a record (too large) are record errors: skipped under `errors.tolerance=all` (logged with hub
//!   partition and offset, counted), else the task fails; every other Kafka error fails the task
//!   whatever the tolerance (see [`produce`](super::produce)).

use super::acker::{Outcome, Position};
use super::position::{after_sequence, Start};
use super::produce::{Completer, NO_STAMP};
use super::record::OutRecord;
use super::stall::{has_newer, HubTail, Watchdog, CHECK_TIMEOUT, TICK};
use super::task::{open_client, Partition, SourceShared};
use crate::rest::metrics::{Labels, METRICS};
use crate::worker::backoff::{Attempts, Backoff};
use crate::worker::producer::Producer;
use crate::worker::task::{TargetState, TaskHealth};
use azure_messaging_eventhubs::error::ErrorKind as EhErrorKind;
use azure_messaging_eventhubs::models::ReceivedEventData;
use azure_messaging_eventhubs::{
    ConsumerClient, EventReceiver, OpenReceiverOptions, StartPosition,
};
use futures::StreamExt;
use prometheus_client::metrics::counter::Counter;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

/// AMQP link credit (prefetch) per partition.
pub const PREFETCH: u32 = 300;
/// First and longest wait between reconnect attempts.
pub const BACKOFF_MIN: Duration = Duration::from_millis(100);
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Wait after `amqp:link:stolen` (another reader holds the partition): slow on purpose.
pub const STOLEN_BACKOFF: Duration = Duration::from_secs(30);

/// The reconnect policy (the worker's one backoff).
pub fn reconnect_backoff() -> Attempts {
    Backoff::new(BACKOFF_MIN, BACKOFF_MAX).attempts()
}

/// One event of a batch: its record (with position and enqueued-time stamp) or a record error
/// (with the position it has, if any).
type Built = Result<(Position, i64, OutRecord), (Option<Position>, String)>;

/// Why a link session ended.
enum LinkEnd {
    Stop,
    Paused,
    Fatal,
    Transient(String),
    Stolen(String),
    Stalled(String),
}

/// The receiving half of one partition's pipeline.
pub struct Reader {
    /// `connector`, `task` metric labels.
    pub labels: Labels,
    /// `source_record_poll` of the task (counted once per batch).
    pub polled: Counter,
    pub shared: Arc<SourceShared>,
    pub producer: Producer,
    pub completer: Arc<Completer>,
    pub part: Arc<Partition>,
    pub start: Start,
    /// Sequence number of the last event handed on (for reconnects and dropping redeliveries).
    pub last_seq: Option<i64>,
    pub stop: CancellationToken,
    pub target: watch::Receiver<TargetState>,
    pub fatal: mpsc::Sender<anyhow::Error>,
    pub links_up: Arc<AtomicUsize>,
    pub total: usize,
    pub health: Arc<TaskHealth>,
}

/// Where an event is: its `x-opt-offset` (a non-empty string) and sequence number. `None` for an
/// event without an offset: it has no position to commit (a record error, never an empty offset).
pub fn event_position(ev: &ReceivedEventData) -> Option<Position> {
    let offset = ev.offset().clone().filter(|o| !o.is_empty())?;
    Some(Position {
        offset,
        seq: ev.sequence_number(),
    })
}

impl Reader {
    fn position(&self) -> StartPosition {
        match self.last_seq {
            Some(s) => after_sequence(s),
            None => self.start.position(),
        }
    }

    fn link(&self, up: bool) {
        let n = if up {
            self.links_up.fetch_add(1, Ordering::SeqCst) + 1
        } else {
            self.links_up.fetch_sub(1, Ordering::SeqCst) - 1
        };
        self.health.set_links_up(n == self.total);
    }

    async fn sleep(&self, d: Duration) -> bool {
        tokio::select! {
            _ = self.stop.cancelled() => false,
            _ = tokio::time::sleep(d) => true,
        }
    }

    pub async fn run(mut self) {
        let hub = self.shared.source.connection.event_hub_name.clone();
        let p = self.part.id.clone();
        let mut backoff = reconnect_backoff();
        let mut watchdog = Watchdog::new(self.shared.source.stall_timeout);
        loop {
            if self.stop.is_cancelled() {
                return;
            }
            if *self.target.borrow() != TargetState::Started {
                tokio::select! {
                    _ = self.stop.cancelled() => return,
                    r = self.target.changed() => { if r.is_err() { return; } continue; }
                }
            }
            let client = match tokio::select! {
                _ = self.stop.cancelled() => return,
                c = open_client(&self.shared.source) => c,
            } {
                Ok(c) => c,
                Err(e) => {
                    if super::auth::is_unauthorized(&e) {
                        let _ = self
                            .fatal
                            .send(super::auth::refused(&self.shared.source, &e))
                            .await;
                        return;
                    }
                    let d = backoff.step();
                    warn!(
                        "Cannot connect to eventHub {hub} for partition {p} at {}: {e}; retrying in {} ms",
                        super::auth::dialled(&self.shared.source),
                        d.as_millis()
                    );
                    if !self.sleep(d).await {
                        return;
                    }
                    continue;
                }
            };
            let opts = OpenReceiverOptions {
                start_position: Some(self.position()),
                prefetch: Some(PREFETCH),
                owner_level: None,
                receive_timeout: None,
            };
            let end = match client
                .open_receiver_on_partition(p.clone(), Some(opts))
                .await
            {
                Err(e) if super::auth::is_unauthorized(&e) => {
                    let _ = self
                        .fatal
                        .send(super::auth::refused(&self.shared.source, &e))
                        .await;
                    LinkEnd::Fatal
                }
                Err(e) => LinkEnd::Transient(format!("cannot open the receiver: {e}")),
                Ok(rx) => {
                    self.link(true);
                    watchdog.link_opened();
                    let end = self
                        .session(&client, &rx, &mut backoff, &mut watchdog)
                        .await;
                    self.link(false);
                    if matches!(end, LinkEnd::Stop | LinkEnd::Fatal) {
                        // Detach in the background: the final offset commit must not wait for it.
                        tokio::spawn(async move {
                            let _ = tokio::time::timeout(Duration::from_secs(5), rx.close()).await;
                            let _ =
                                tokio::time::timeout(Duration::from_secs(5), client.close()).await;
                        });
                        return;
                    }
                    let _ = tokio::time::timeout(Duration::from_secs(5), rx.close()).await;
                    end
                }
            };
            let _ = tokio::time::timeout(Duration::from_secs(5), client.close()).await;
            let wait = match end {
                LinkEnd::Stop | LinkEnd::Fatal => return,
                LinkEnd::Paused => continue,
                LinkEnd::Stalled(why) => {
                    watchdog.attempts += 1;
                    self.part.ages.recovery();
                    warn!(
                        "Partition {p} of eventHub {hub} is stalled: {why}; reopening its link after sequence number {} (stall recovery {})",
                        self.last_seq.map_or("(start)".to_string(), |s| s.to_string()),
                        watchdog.attempts
                    );
                    if watchdog.attempts >= 2 {
                        if watchdog.attempts == 2 {
                            error!(
                                "Partition {p} of eventHub {hub} stays stalled after {} recovery attempts; /readyz reports it until events flow again",
                                watchdog.attempts - 1
                            );
                        }
                        self.health.set_stalled(&p, true);
                        self.part.ages.set_stalled(true);
                    }
                    continue;
                }
                LinkEnd::Transient(why) => {
                    METRICS
                        .reconnects
                        .get_or_create(&vec![
                            ("connector".to_string(), self.shared.connector.name.clone()),
                            ("endpoint".to_string(), "eventhubs".to_string()),
                        ])
                        .inc();
                    let d = backoff.step();
                    warn!(
                        "Error while getting SourceRecords for eventHub {hub} partition {p}: {why}; reconnecting after sequence number {} in {} ms",
                        self.last_seq.map_or("(start)".to_string(), |s| s.to_string()),
                        d.as_millis()
                    );
                    d
                }
                LinkEnd::Stolen(why) => {
                    error!(
                        "Partition {p} of eventHub {hub} was taken by another reader in consumer group {} (amqp:link:stolen: {why}); give iotconnect its own consumer group. Retrying in {} s",
                        self.shared.source.consumer_group,
                        STOLEN_BACKOFF.as_secs()
                    );
                    STOLEN_BACKOFF
                }
            };
            if !self.sleep(wait).await {
                return;
            }
        }
    }

    /// Asks `$management` whether the hub holds events newer than the last delivered one. `None`
    /// when it cannot tell (no answer).
    async fn newer_events(
        &self,
        client: &ConsumerClient,
        baseline: &mut Option<i64>,
    ) -> Option<(bool, HubTail)> {
        let props = tokio::time::timeout(
            CHECK_TIMEOUT,
            client.get_partition_properties(&self.part.id),
        )
        .await;
        let tail = match props {
            Ok(Ok(p)) => HubTail::from(&p),
            Ok(Err(e)) => {
                warn!(
                    "Stall check of partition {}: $management did not answer: {e}",
                    self.part.id
                );
                return None;
            }
            Err(_) => {
                warn!(
                    "Stall check of partition {}: $management did not answer within {} s",
                    self.part.id,
                    CHECK_TIMEOUT.as_secs()
                );
                return None;
            }
        };
        let newer = has_newer(&tail, self.last_seq, &self.start, *baseline);
        if baseline.is_none() {
            *baseline = Some(tail.last_sequence);
        }
        Some((newer, tail))
    }

    /// Receives on one open link until it fails, stalls, the task stops or pauses.
    async fn session(
        &mut self,
        client: &ConsumerClient,
        rx: &EventReceiver,
        backoff: &mut Attempts,
        watchdog: &mut Watchdog,
    ) -> LinkEnd {
        let hub = self.shared.source.connection.event_hub_name.clone();
        let p = self.part.id.clone();
        let batch = self.shared.source.batch_size.max(1);
        let mut stream = rx.stream_events().ready_chunks(batch);
        let mut dropped = 0u64;
        let stop = self.stop.clone();
        let mut target = self.target.clone();
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut baseline: Option<i64> = None;
        loop {
            let got = tokio::select! {
                biased;
                _ = stop.cancelled() => return LinkEnd::Stop,
                r = target.changed() => {
                    if r.is_err() { return LinkEnd::Stop; }
                    if *target.borrow() != TargetState::Started { return LinkEnd::Paused; }
                    continue;
                }
                _ = tick.tick() => {
                    self.part.ages.refresh();
                    if watchdog.due() {
                        let silent = watchdog.last_delivery.elapsed().as_secs();
                        match self.newer_events(client, &mut baseline).await {
                            Some((true, tail)) => {
                                return LinkEnd::Stalled(format!(
                                    "nothing delivered for {silent} s (IotHub.StallTimeout={} s) while the hub's last enqueued sequence number is {}",
                                    watchdog.timeout.as_secs(),
                                    tail.last_sequence
                                ));
                            }
                            Some((false, _)) => {
                                debug!("Finished processing all messages from eventHub {hub} partition {p}");
                                if watchdog.attempts > 0 {
                                    self.recovered(watchdog);
                                }
                            }
                            None => {}
                        }
                        // Look again after another stall timeout.
                        watchdog.link_opened();
                    }
                    continue;
                }
                n = stream.next() => n,
            };
            let items = match got {
                None => return LinkEnd::Transient("the receive stream ended".into()),
                Some(items) => items,
            };
            debug!(
                "Received {} messages from eventHub {hub} partition {p} (requested {batch} batch)",
                items.len()
            );
            let mut ready = Vec::with_capacity(items.len());
            let mut failed = None;
            let mut received = false;
            for item in items {
                match item {
                    Ok(ev) => {
                        received = true;
                        if let Some(seq) = ev.sequence_number() {
                            if self.last_seq.is_some_and(|last| seq <= last) {
                                dropped += 1;
                                continue;
                            }
                            self.last_seq = Some(seq);
                        }
                        ready.push(ev);
                    }
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
            if received {
                backoff.reset();
                if watchdog.attempts > 0 {
                    self.recovered(watchdog);
                }
                watchdog.delivered();
                self.part.ages.event();
            }
            // The events before a receive error are handed on first. `last_seq` already names the
            // last of them: if handing on fails, the task ends and nothing reopens after it.
            if !ready.is_empty() && !self.hand_on(&ready).await {
                return LinkEnd::Fatal;
            }
            if let Some(e) = failed {
                if dropped > 0 {
                    debug!("partition {p}: dropped {dropped} redelivered events");
                }
                if super::auth::is_unauthorized(&e) {
                    let _ = self
                        .fatal
                        .send(super::auth::refused(&self.shared.source, &e))
                        .await;
                    return LinkEnd::Fatal;
                }
                return match e.kind {
                    EhErrorKind::ConsumerDisconnected(d) => LinkEnd::Stolen(format!("{d:?}")),
                    _ => LinkEnd::Transient(e.to_string()),
                };
            }
        }
    }

    fn recovered(&self, watchdog: &mut Watchdog) {
        info!(
            "Partition {} of eventHub {} recovered from its stall after {} recovery attempt(s)",
            self.part.id, self.shared.source.connection.event_hub_name, watchdog.attempts
        );
        watchdog.attempts = 0;
        self.health.set_stalled(&self.part.id, false);
        self.part.ages.set_stalled(false);
    }

    /// Builds the records of `evs` (in hub order), submits them to the acker under one lock and
    /// enqueues them. A record error (no `x-opt-offset`, unconvertible) is skipped under
    /// `errors.tolerance=all`, else ends the task after the records before it are enqueued. False
    /// when the task must stop.
    async fn hand_on(&mut self, evs: &[ReceivedEventData]) -> bool {
        self.polled.inc_by(evs.len() as u64);
        if !self.part.room.wait(&self.part.acker, &self.stop).await {
            return false;
        }
        let p = &self.part.id;
        let tolerate = self.shared.connector.errors.tolerate_all;
        // Built outside the lock.
        let mut built: Vec<Built> = Vec::with_capacity(evs.len());
        for ev in evs {
            let Some(position) = event_position(ev) else {
                built.push(Err((None, format!(
                    "The event with sequence number {} of hub partition {p} has no x-opt-offset: it has no position to commit",
                    ev.sequence_number().map_or("(none)".to_string(), |s| s.to_string())
                ))));
                continue;
            };
            let stamp = ev.enqueued_time().map_or(NO_STAMP, |t| {
                t.duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis() as i64)
                    .unwrap_or(0)
            });
            match self.shared.records.build(ev) {
                Ok(rec) => built.push(Ok((position, stamp, rec))),
                Err(e) => {
                    let what = format!(
                        "Error converting the event at offset {} of partition {p}: {e:#}",
                        position.offset
                    );
                    built.push(Err((Some(position), what)));
                }
            }
        }
        let mut sends = Vec::with_capacity(built.len());
        let mut skipped = Vec::new();
        let mut refused = None;
        {
            let mut a = self.part.acker.lock().unwrap();
            for b in built {
                match b {
                    Ok((position, stamp, rec)) => {
                        sends.push((a.submit(Some(position)), stamp, rec));
                    }
                    Err((position, what)) if tolerate => {
                        let t = a.submit(position);
                        a.complete(t, Outcome::Skipped);
                        skipped.push(what);
                    }
                    Err((_, what)) => {
                        refused = Some(what);
                        break;
                    }
                }
            }
        }
        for what in skipped {
            error!("{what}; skipped (errors.tolerance=all)");
            METRICS.record_errors.get_or_create(&self.labels).inc();
            METRICS
                .partition_records_skipped
                .get_or_create(self.part.ages.labels())
                .inc();
        }
        for (ticket, stamp, rec) in &sends {
            if !self
                .completer
                .send(&self.producer, *ticket, *stamp, rec)
                .await
            {
                return false;
            }
        }
        if let Some(what) = refused {
            let _ = self
                .fatal
                .send(anyhow::anyhow!(
                    "{what} (errors.tolerance=none: the task stops; nothing after the last acknowledged record is committed)"
                ))
                .await;
            return false;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use azure_core_amqp::{AmqpMessage, AmqpSymbol, AmqpValue};

    fn event(annotations: &[(&str, AmqpValue)]) -> ReceivedEventData {
        let mut m = AmqpMessage::default();
        for (k, v) in annotations {
            m.add_message_annotation(AmqpSymbol::from(*k), v.clone());
        }
        ReceivedEventData::from(m)
    }

    #[test]
    fn an_event_without_x_opt_offset_has_no_position() {
        assert_eq!(event_position(&event(&[])), None);
        let no_offset = event(&[("x-opt-sequence-number", AmqpValue::Long(7))]);
        assert_eq!(event_position(&no_offset), None);
        let empty = event(&[("x-opt-offset", AmqpValue::String(String::new()))]);
        assert_eq!(event_position(&empty), None, "never an empty offset");
        let ok = event(&[
            ("x-opt-offset", AmqpValue::String("4096".into())),
            ("x-opt-sequence-number", AmqpValue::Long(7)),
        ]);
        assert_eq!(
            event_position(&ok),
            Some(Position {
                offset: "4096".into(),
                seq: Some(7)
            })
        );
    }
}
