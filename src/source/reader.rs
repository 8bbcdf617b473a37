//! The receiving half of one hub partition's pipeline: owns its Event Hubs client and link, drops
//! redelivered events (by sequence number), builds each record, enqueues it into librdkafka in hub
//! order and passes the delivery future to the partition's acker.
//!
//! Invariants:
//! * a link is always (re)opened after the last delivered sequence number (exclusive), so a reconnect
//!   or a stall recovery neither loses nor duplicates;
//! * every event is submitted to the partition's [`Acker`](super::acker::Acker) before anything
//!   later of the same partition, so commits follow hub order;
//! * an event without `x-opt-offset`, an event the record builder refuses and a record Kafka refuses
//!   as a record (too large) are record errors: skipped under `errors.tolerance=all` (logged with hub
//!   partition and offset, counted), else the task fails; every other Kafka error fails the task
//!   whatever the tolerance (see [`produce`](super::produce)).

use super::acker::{Outcome, Position};
use super::position::{after_sequence, Start};
use super::produce::{self, ErrorClass};
use super::record::OutRecord;
use super::stall::{has_newer, HubTail, Watchdog, CHECK_TIMEOUT, TICK};
use super::task::{open_client, Partition, SourceShared};
use crate::rest::metrics::{Labels, METRICS};
use crate::worker::backoff::{Attempts, Backoff};
use crate::worker::task::{TargetState, TaskHealth};
use azure_messaging_eventhubs::error::ErrorKind as EhErrorKind;
use azure_messaging_eventhubs::models::ReceivedEventData;
use azure_messaging_eventhubs::{
    ConsumerClient, EventReceiver, OpenReceiverOptions, StartPosition,
};
use futures::StreamExt;
use rdkafka::error::KafkaError;
use rdkafka::producer::{DeliveryFuture, FutureProducer};
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

/// One record enqueued into librdkafka, in hub order, for the acker.
pub struct InFlight {
    pub ticket: super::acker::Ticket,
    pub delivery: DeliveryFuture,
    /// Kept to send it again after a retriable failure.
    pub record: OutRecord,
    pub offset: String,
    pub enqueued_ms: Option<i64>,
}

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
    pub shared: Arc<SourceShared>,
    pub producer: Arc<FutureProducer>,
    pub part: Arc<Partition>,
    pub start: Start,
    /// Sequence number of the last event handed on (for reconnects and dropping redeliveries).
    pub last_seq: Option<i64>,
    pub stop: CancellationToken,
    pub target: watch::Receiver<TargetState>,
    pub out: mpsc::Sender<InFlight>,
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

/// Sends `rec`, waiting while librdkafka's queue is full or another retriable condition holds.
/// `Err` carries a record or fatal error; `Ok(None)` means the task is stopping.
pub async fn send_retrying(
    producer: &FutureProducer,
    topic: &str,
    rec: &OutRecord,
    stop: &CancellationToken,
) -> Result<Option<DeliveryFuture>, KafkaError> {
    let mut backoff = reconnect_backoff();
    loop {
        match produce::send(producer, topic, rec) {
            Ok(d) => return Ok(Some(d)),
            Err(e) => {
                if produce::classify(&e) != ErrorClass::Retriable {
                    return Err(e);
                }
                // A full queue clears within milliseconds (librdkafka's I/O thread drains it).
                let d = if matches!(
                    e.rdkafka_error_code(),
                    Some(rdkafka::types::RDKafkaErrorCode::QueueFull)
                ) {
                    Duration::from_millis(2)
                } else {
                    backoff.step()
                };
                tokio::select! {
                    _ = stop.cancelled() => return Ok(None),
                    _ = tokio::time::sleep(d) => {}
                }
            }
        }
    }
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
            for item in items {
                let ev = match item {
                    Ok(ev) => ev,
                    Err(e) => {
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
                            EhErrorKind::ConsumerDisconnected(d) => {
                                LinkEnd::Stolen(format!("{d:?}"))
                            }
                            _ => LinkEnd::Transient(e.to_string()),
                        };
                    }
                };
                backoff.reset();
                if watchdog.attempts > 0 {
                    self.recovered(watchdog);
                }
                watchdog.delivered();
                self.part.ages.event();
                if let Some(seq) = ev.sequence_number() {
                    if self.last_seq.is_some_and(|last| seq <= last) {
                        dropped += 1;
                        continue;
                    }
                }
                if !self.hand_on(&ev).await {
                    return LinkEnd::Fatal;
                }
                if let Some(seq) = ev.sequence_number() {
                    self.last_seq = Some(seq);
                }
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

    /// A record error: skipped (tolerance all) or the end of the task. False when the task must stop.
    async fn record_error(&self, position: Option<Position>, what: String) -> bool {
        if self.shared.connector.errors.tolerate_all {
            error!("{what}; skipped (errors.tolerance=all)");
            METRICS.record_errors.get_or_create(&self.labels).inc();
            METRICS
                .partition_records_skipped
                .get_or_create(self.part.ages.labels())
                .inc();
            let mut a = self.part.acker.lock().unwrap();
            let t = a.submit(position);
            a.complete(t, Outcome::Skipped);
            return true;
        }
        let _ = self
            .fatal
            .send(anyhow::anyhow!(
                "{what} (errors.tolerance=none: the task stops; nothing after the last acknowledged record is committed)"
            ))
            .await;
        false
    }

    /// Builds, enqueues and passes one event to the acker. False when the task must stop.
    async fn hand_on(&mut self, ev: &ReceivedEventData) -> bool {
        let p = self.part.id.clone();
        let seq = ev.sequence_number();
        METRICS.source_record_poll.get_or_create(&self.labels).inc();
        let Some(position) = event_position(ev) else {
            return self
                .record_error(
                    None,
                    format!(
                        "The event with sequence number {} of hub partition {p} has no x-opt-offset: it has no position to commit",
                        seq.map_or("(none)".to_string(), |s| s.to_string())
                    ),
                )
                .await;
        };
        let offset = position.offset.clone();
        let enqueued_ms = ev.enqueued_time().map(|t| {
            t.duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0)
        });
        let rec = match self.shared.records.build(ev) {
            Ok(r) => r,
            Err(e) => {
                return self
                    .record_error(
                        Some(position),
                        format!(
                            "Error converting the event at offset {offset} of partition {p}: {e:#}"
                        ),
                    )
                    .await;
            }
        };
        let topic = self.shared.source.topic.as_str();
        let delivery = match send_retrying(&self.producer, topic, &rec, &self.stop).await {
            Ok(Some(d)) => d,
            Ok(None) => return false,
            Err(e) => {
                let what = format!(
                    "Kafka refused the record of hub partition {p} offset {offset} for topic {topic}: {e}"
                );
                if produce::classify(&e) == ErrorClass::Record {
                    return self.record_error(Some(position), what).await;
                }
                let _ = self
                    .fatal
                    .send(anyhow::anyhow!(
                        "{what}: not a record error, so the task stops whatever errors.tolerance says; nothing after the last acknowledged record is committed"
                    ))
                    .await;
                return false;
            }
        };
        let ticket = self.part.acker.lock().unwrap().submit(Some(position));
        let item = InFlight {
            ticket,
            delivery,
            record: rec,
            offset,
            enqueued_ms,
        };
        // Space for it first; a stop while the acker is full (Kafka slow or down) must not hang: the
        // record is then simply not committed, and read again after a restart.
        tokio::select! {
            biased;
            r = self.out.send(item) => r.is_ok(),
            _ = self.stop.cancelled() => false,
        }
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
