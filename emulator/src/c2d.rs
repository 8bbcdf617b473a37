//! Cloud-to-device queues, lock/complete/reject/abandon, expiry and delivery feedback.
//!
//! Limits as IoT Hub documents them: 50 queued messages per device, 64 KB per message, lock of one
//! minute, maximum delivery count 10 (IoT Hub's default for `maxDeliveryCount`).

use serde::Serialize;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

use super::store::{now_ms, PropValue};

pub const MAX_QUEUE_DEPTH: usize = 50;
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
pub const MAX_DELIVERY_COUNT: u32 = 10;
pub const LOCK_DURATION: Duration = Duration::from_secs(60);

/// Why a C2D message was refused (the AMQP condition and description are in `amqp.rs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum C2dRefusal {
    /// `to` missing or not `/devices/{id}/messages/devicebound`.
    BadAddress(String),
    TooLarge(usize),
    DeviceNotFound(String),
    QueueDepthExceeded(String),
    Throttled,
}

/// Feedback acknowledgement requested by the sender (`iothub-ack`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Ack {
    None,
    Positive,
    Negative,
    Full,
}

impl Ack {
    /// Parses `iothub-ack`, including the Java SDK spellings `positiveonly` / `negativeonly`.
    pub fn parse(s: Option<&str>) -> Ack {
        match s.map(|s| s.trim().to_ascii_lowercase()).as_deref() {
            Some("positive") | Some("positiveonly") => Ack::Positive,
            Some("negative") | Some("negativeonly") => Ack::Negative,
            Some("full") => Ack::Full,
            _ => Ack::None,
        }
    }

    fn wants(self, status: FeedbackStatus) -> bool {
        match self {
            Ack::None => false,
            Ack::Full => true,
            Ack::Positive => status == FeedbackStatus::Success,
            Ack::Negative => status != FeedbackStatus::Success,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum FeedbackStatus {
    Success,
    Expired,
    DeliveryCountExceeded,
    Rejected,
    Purged,
}

impl FeedbackStatus {
    fn description(self) -> &'static str {
        match self {
            FeedbackStatus::Success => "Success",
            FeedbackStatus::Expired => "Message Expired",
            FeedbackStatus::DeliveryCountExceeded => "Message delivery count exceeded",
            FeedbackStatus::Rejected => "Message rejected",
            FeedbackStatus::Purged => "Message purged",
        }
    }
}

/// One feedback record, serialised exactly as IoT Hub's feedback JSON array entries.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FeedbackRecord {
    pub original_message_id: String,
    pub device_generation_id: String,
    pub device_id: String,
    pub enqueued_time_utc: String,
    pub status_code: FeedbackStatus,
    pub description: String,
}

/// A message as the service sent it.
#[derive(Clone, Debug, Default)]
pub struct IncomingC2d {
    pub to: Option<String>,
    pub message_id: Option<String>,
    pub correlation_id: Option<String>,
    pub user_id: Option<String>,
    pub content_type: Option<String>,
    pub content_encoding: Option<String>,
    /// Epoch milliseconds.
    pub absolute_expiry_ms: Option<i64>,
    pub ack: Option<String>,
    pub properties: Vec<(String, PropValue)>,
    pub body: Vec<u8>,
}

/// State of a received C2D message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum C2dState {
    Enqueued,
    Locked,
    Completed,
    Rejected,
    Expired,
    DeliveryCountExceeded,
}

/// A C2D message the emulator accepted, with everything it was sent with.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct C2dMessage {
    pub seq: u64,
    pub device_id: String,
    pub message_id: Option<String>,
    pub correlation_id: Option<String>,
    pub user_id: Option<String>,
    pub to: String,
    pub content_type: Option<String>,
    pub content_encoding: Option<String>,
    pub ack: Ack,
    /// Epoch milliseconds.
    pub expiry_ms: Option<i64>,
    /// Epoch milliseconds.
    pub enqueued_ms: i64,
    pub properties: Vec<(String, PropValue)>,
    /// The body, UTF-8 decoded lossily (see `body_base64` for the bytes).
    pub body: String,
    pub body_base64: String,
    pub delivery_count: u32,
    pub state: C2dState,
    #[serde(skip)]
    pub raw_body: Vec<u8>,
    #[serde(skip)]
    lock: Option<(String, Instant)>,
}

impl C2dMessage {
    pub fn etag(&self) -> Option<&str> {
        self.lock.as_ref().map(|(e, _)| e.as_str())
    }
}

#[derive(Default)]
struct Inner {
    next_seq: u64,
    all: Vec<C2dMessage>,
    /// Indices into `all` of pending (enqueued or locked) messages per device, oldest first.
    queues: HashMap<String, VecDeque<usize>>,
    feedback: VecDeque<FeedbackRecord>,
    rate_window: Option<(Instant, u32)>,
    throttled_until: Option<Instant>,
    /// (expiry epoch ms, index) of messages with an expiry time, soonest first. Entries of messages
    /// that ended otherwise are skipped when they come up, so expiry costs O(log n) per message
    /// instead of a scan of every pending message on each send.
    expiries: BinaryHeap<Reverse<(i64, usize)>>,
}

/// The hub's C2D side.
pub struct C2dHub {
    devices: Option<HashSet<String>>,
    rate_limit: Option<u32>,
    inner: Mutex<Inner>,
    /// Wakes the feedback senders.
    pub feedback_ready: Notify,
    /// Wakes the expiry task when a message with an expiry time arrives.
    pub expiry_changed: Notify,
}

/// The device generation id IoT Hub assigns at registration; here a stable 18-digit number derived
/// from the device id.
pub fn generation_id(device_id: &str) -> String {
    let h = u64::from(super::store::partition_for(device_id, u32::MAX));
    format!("6370{:014}", h * 1000 + 7)
}

fn iso_ms(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::macros::format_description!(
                "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
            ))
            .ok()
        })
        .unwrap_or_default()
}

/// Parses `/devices/{id}/messages/devicebound` (the id may be percent-encoded).
pub fn device_from_to(to: &str) -> Option<String> {
    let rest = to.strip_prefix("/devices/")?;
    let id = rest.strip_suffix("/messages/devicebound")?;
    if id.is_empty() || id.contains('/') {
        return None;
    }
    percent_encoding::percent_decode_str(id)
        .decode_utf8()
        .ok()
        .map(|s| s.into_owned())
}

impl C2dHub {
    pub fn new(devices: Option<Vec<String>>, rate_limit: Option<u32>) -> Self {
        C2dHub {
            devices: devices.map(|d| d.into_iter().collect()),
            rate_limit: rate_limit.filter(|r| *r > 0),
            inner: Mutex::new(Inner::default()),
            feedback_ready: Notify::new(),
            expiry_changed: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Refuses every message for `d` (fault injection).
    pub fn throttle_for(&self, d: Duration) -> Result<(), String> {
        self.lock().throttled_until = Some(crate::hub::fault_deadline(d)?);
        Ok(())
    }

    /// Validates and enqueues a message; expired ones are accepted, then dropped with feedback.
    pub fn enqueue(&self, m: IncomingC2d) -> Result<u64, C2dRefusal> {
        let to = m.to.clone().unwrap_or_default();
        let device_id = device_from_to(&to).ok_or_else(|| C2dRefusal::BadAddress(to.clone()))?;
        if m.body.len() > MAX_MESSAGE_BYTES {
            return Err(C2dRefusal::TooLarge(m.body.len()));
        }
        if let Some(devs) = &self.devices {
            if !devs.contains(&device_id) {
                return Err(C2dRefusal::DeviceNotFound(device_id));
            }
        }
        let now = Instant::now();
        let mut inner = self.lock();
        if inner.throttled_until.is_some_and(|t| t > now) {
            return Err(C2dRefusal::Throttled);
        }
        let depth = inner.queues.get(&device_id).map_or(0, |q| q.len());
        if depth >= MAX_QUEUE_DEPTH {
            return Err(C2dRefusal::QueueDepthExceeded(device_id));
        }
        if let Some(limit) = self.rate_limit {
            let window = match inner.rate_window {
                Some((start, n)) if now.duration_since(start) < Duration::from_secs(1) => {
                    (start, n)
                }
                _ => (now, 0),
            };
            if window.1 >= limit {
                inner.rate_window = Some(window);
                return Err(C2dRefusal::Throttled);
            }
            inner.rate_window = Some((window.0, window.1 + 1));
        }
        let seq = inner.next_seq;
        inner.next_seq += 1;
        let idx = inner.all.len();
        use base64::Engine;
        inner.all.push(C2dMessage {
            seq,
            device_id: device_id.clone(),
            message_id: m.message_id,
            correlation_id: m.correlation_id,
            user_id: m.user_id,
            to,
            content_type: m.content_type,
            content_encoding: m.content_encoding,
            ack: Ack::parse(m.ack.as_deref()),
            expiry_ms: m.absolute_expiry_ms,
            enqueued_ms: now_ms(),
            properties: m.properties,
            body: String::from_utf8_lossy(&m.body).into_owned(),
            body_base64: base64::engine::general_purpose::STANDARD.encode(&m.body),
            raw_body: m.body,
            delivery_count: 0,
            state: C2dState::Enqueued,
            lock: None,
        });
        inner.queues.entry(device_id).or_default().push_back(idx);
        if let Some(e) = m.absolute_expiry_ms {
            inner.expiries.push(Reverse((e, idx)));
        }
        let expired = Self::expire_locked(&mut inner, now_ms());
        drop(inner);
        if expired {
            self.feedback_ready.notify_waiters();
        }
        if m.absolute_expiry_ms.is_some() {
            self.expiry_changed.notify_one();
        }
        Ok(seq)
    }

    /// Ends a message's life with `status`, queuing feedback when its `iothub-ack` asks for it.
    fn finish(inner: &mut Inner, idx: usize, state: C2dState, status: FeedbackStatus) {
        let msg = &mut inner.all[idx];
        msg.state = state;
        msg.lock = None;
        let record = msg.ack.wants(status).then(|| FeedbackRecord {
            original_message_id: msg.message_id.clone().unwrap_or_default(),
            device_generation_id: generation_id(&msg.device_id),
            device_id: msg.device_id.clone(),
            enqueued_time_utc: iso_ms(now_ms()),
            status_code: status,
            description: status.description().to_string(),
        });
        let device = msg.device_id.clone();
        if let Some(q) = inner.queues.get_mut(&device) {
            q.retain(|i| *i != idx);
        }
        if let Some(r) = record {
            inner.feedback.push_back(r);
        }
    }

    /// Drops every pending message whose expiry passed. Returns whether feedback was queued.
    fn expire_locked(inner: &mut Inner, now: i64) -> bool {
        let before = inner.feedback.len();
        while let Some(Reverse((e, idx))) = inner.expiries.peek().copied() {
            if e > now {
                break;
            }
            inner.expiries.pop();
            if matches!(inner.all[idx].state, C2dState::Enqueued | C2dState::Locked) {
                Self::finish(inner, idx, C2dState::Expired, FeedbackStatus::Expired);
            }
        }
        inner.feedback.len() > before
    }

    /// Expires what is due; returns the next expiry instant (epoch ms) among pending messages.
    pub fn expire_due(&self) -> Option<i64> {
        let mut inner = self.lock();
        let fb = Self::expire_locked(&mut inner, now_ms());
        // Drop heap entries of messages that already ended, so the next one is a pending message's.
        while let Some(Reverse((_, idx))) = inner.expiries.peek().copied() {
            if matches!(inner.all[idx].state, C2dState::Enqueued | C2dState::Locked) {
                break;
            }
            inner.expiries.pop();
        }
        let next = inner.expiries.peek().map(|Reverse((e, _))| *e);
        drop(inner);
        if fb {
            self.feedback_ready.notify_waiters();
        }
        next
    }

    /// Locks and returns the next deliverable message for `device_id` (HTTP receive).
    pub fn receive(&self, device_id: &str) -> Option<C2dMessage> {
        let now = Instant::now();
        let mut inner = self.lock();
        let fb = Self::expire_locked(&mut inner, now_ms());
        let idx = inner.queues.get(device_id).and_then(|q| {
            q.iter()
                .copied()
                .find(|i| inner.all[*i].lock.as_ref().is_none_or(|(_, t)| *t <= now))
        });
        let out = idx.map(|idx| {
            let m = &mut inner.all[idx];
            m.lock = Some((uuid::Uuid::new_v4().to_string(), now + LOCK_DURATION));
            m.delivery_count += 1;
            m.state = C2dState::Locked;
            m.clone()
        });
        drop(inner);
        if fb {
            self.feedback_ready.notify_waiters();
        }
        out
    }

    fn find_locked(inner: &Inner, device_id: &str, etag: &str) -> Option<usize> {
        let etag = etag.trim_matches('"');
        inner.queues.get(device_id)?.iter().copied().find(|i| {
            inner.all[*i]
                .lock
                .as_ref()
                .is_some_and(|(e, t)| e == etag && *t > Instant::now())
        })
    }

    /// Completes (`Success`) or rejects (`Rejected`) a locked message. False when the lock token is
    /// unknown or its lock expired.
    pub fn settle(&self, device_id: &str, etag: &str, reject: bool) -> bool {
        let mut inner = self.lock();
        let Some(idx) = Self::find_locked(&inner, device_id, etag) else {
            return false;
        };
        if reject {
            Self::finish(
                &mut inner,
                idx,
                C2dState::Rejected,
                FeedbackStatus::Rejected,
            );
        } else {
            Self::finish(
                &mut inner,
                idx,
                C2dState::Completed,
                FeedbackStatus::Success,
            );
        }
        drop(inner);
        self.feedback_ready.notify_waiters();
        true
    }

    /// Abandons a locked message: back to the queue, or dead after the maximum delivery count.
    pub fn abandon(&self, device_id: &str, etag: &str) -> bool {
        let mut inner = self.lock();
        let Some(idx) = Self::find_locked(&inner, device_id, etag) else {
            return false;
        };
        if inner.all[idx].delivery_count >= MAX_DELIVERY_COUNT {
            Self::finish(
                &mut inner,
                idx,
                C2dState::DeliveryCountExceeded,
                FeedbackStatus::DeliveryCountExceeded,
            );
            drop(inner);
            self.feedback_ready.notify_waiters();
        } else {
            let m = &mut inner.all[idx];
            m.lock = None;
            m.state = C2dState::Enqueued;
        }
        true
    }

    /// Takes every queued feedback record (for one feedback message).
    pub fn take_feedback(&self) -> Vec<FeedbackRecord> {
        self.lock().feedback.drain(..).collect()
    }

    /// Puts records back at the front (the feedback message was not accepted).
    pub fn return_feedback(&self, records: Vec<FeedbackRecord>) {
        let mut inner = self.lock();
        for r in records.into_iter().rev() {
            inner.feedback.push_front(r);
        }
    }

    pub fn messages(&self) -> Vec<C2dMessage> {
        self.lock().all.clone()
    }

    pub fn pending(&self) -> usize {
        self.lock().queues.values().map(|q| q.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(dev: &str, ack: &str) -> IncomingC2d {
        IncomingC2d {
            to: Some(format!("/devices/{dev}/messages/devicebound")),
            message_id: Some("m1".into()),
            ack: Some(ack.into()),
            body: b"hi".to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn ack_spellings() {
        assert_eq!(Ack::parse(Some("positiveonly")), Ack::Positive);
        assert_eq!(Ack::parse(Some("NegativeOnly")), Ack::Negative);
        assert_eq!(Ack::parse(Some("full")), Ack::Full);
        assert_eq!(Ack::parse(None), Ack::None);
        assert!(Ack::Negative.wants(FeedbackStatus::Expired));
        assert!(!Ack::Negative.wants(FeedbackStatus::Success));
        assert!(!Ack::Positive.wants(FeedbackStatus::Rejected));
    }

    #[test]
    fn address_parsing() {
        assert_eq!(
            device_from_to("/devices/dev%201/messages/devicebound").as_deref(),
            Some("dev 1")
        );
        assert_eq!(device_from_to("/devices//messages/devicebound"), None);
        assert_eq!(device_from_to("/devices/a/messages/events"), None);
    }

    #[test]
    fn refusals() {
        let hub = C2dHub::new(Some(vec!["d1".into()]), None);
        assert_eq!(
            hub.enqueue(msg("nope", "none")),
            Err(C2dRefusal::DeviceNotFound("nope".into()))
        );
        let mut big = msg("d1", "none");
        big.body = vec![0; MAX_MESSAGE_BYTES + 1];
        assert_eq!(
            hub.enqueue(big),
            Err(C2dRefusal::TooLarge(MAX_MESSAGE_BYTES + 1))
        );
        let mut bad = msg("d1", "none");
        bad.to = Some("/devices/d1".into());
        assert!(matches!(hub.enqueue(bad), Err(C2dRefusal::BadAddress(_))));
        for _ in 0..MAX_QUEUE_DEPTH {
            hub.enqueue(msg("d1", "none")).unwrap();
        }
        assert_eq!(
            hub.enqueue(msg("d1", "none")),
            Err(C2dRefusal::QueueDepthExceeded("d1".into()))
        );
    }

    #[test]
    fn rate_limit() {
        let hub = C2dHub::new(None, Some(2));
        hub.enqueue(msg("a", "none")).unwrap();
        hub.enqueue(msg("b", "none")).unwrap();
        assert_eq!(hub.enqueue(msg("c", "none")), Err(C2dRefusal::Throttled));
    }

    #[test]
    fn lifecycle_and_feedback() {
        let hub = C2dHub::new(None, None);
        hub.enqueue(msg("d", "full")).unwrap();
        hub.enqueue(msg("d", "positive")).unwrap();
        hub.enqueue(msg("d", "negative")).unwrap();
        let m = hub.receive("d").unwrap();
        assert_eq!(m.delivery_count, 1);
        assert!(!hub.settle("d", "wrong", false));
        assert!(hub.settle("d", m.etag().unwrap(), false));
        let m2 = hub.receive("d").unwrap();
        assert!(hub.settle("d", m2.etag().unwrap(), true)); // positive + rejected: no feedback
        let m3 = hub.receive("d").unwrap();
        assert!(hub.settle("d", m3.etag().unwrap(), true)); // negative + rejected: feedback
        assert!(hub.receive("d").is_none());
        let fb = hub.take_feedback();
        assert_eq!(
            fb.iter().map(|r| r.status_code).collect::<Vec<_>>(),
            vec![FeedbackStatus::Success, FeedbackStatus::Rejected]
        );
        let json = serde_json::to_value(&fb[0]).unwrap();
        assert_eq!(json["statusCode"], "Success");
        assert_eq!(json["originalMessageId"], "m1");
        assert_eq!(json["deviceId"], "d");
        assert!(json["enqueuedTimeUtc"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn expiry_and_delivery_count() {
        let hub = C2dHub::new(None, None);
        let mut m = msg("d", "full");
        m.absolute_expiry_ms = Some(now_ms() - 1);
        hub.enqueue(m).unwrap();
        let fb = hub.take_feedback();
        assert_eq!(fb.len(), 1);
        assert_eq!(fb[0].status_code, FeedbackStatus::Expired);
        assert_eq!(hub.pending(), 0);
        hub.enqueue(msg("d", "negative")).unwrap();
        for i in 1..=MAX_DELIVERY_COUNT {
            let m = hub.receive("d").unwrap();
            assert_eq!(m.delivery_count, i);
            assert!(hub.abandon("d", m.etag().unwrap()));
        }
        assert!(hub.receive("d").is_none());
        assert_eq!(
            hub.take_feedback()[0].status_code,
            FeedbackStatus::DeliveryCountExceeded
        );
    }
}
