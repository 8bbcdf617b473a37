//! The state shared by every endpoint: partitions, consumer groups, receiver ownership (epochs), the
//! C2D side, fault injection and statistics.

use super::auth::Verifier;
use super::c2d::C2dHub;
use super::store::{partition_for, Partition, TelemetryProps};
use bytes::Bytes;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, watch};

/// Why a partition receiver must go (sent to its task).
#[derive(Debug, Clone)]
pub struct Eviction {
    pub condition: &'static str,
    pub description: String,
}

struct Member {
    id: u64,
    epoch: Option<i64>,
    kick: Option<oneshot::Sender<Eviction>>,
}

/// Receiver ownership per (consumer group, partition), with Event Hubs' epoch rules: a receiver with
/// an epoch greater than or equal to the current owner's takes over (the others are detached with
/// `amqp:link:stolen`); a lower epoch, or no epoch while an epoch receiver exists, is refused.
#[derive(Default)]
pub struct Ownership {
    next_id: AtomicU64,
    members: Mutex<HashMap<(String, u32), Vec<Member>>>,
}

/// Removes its receiver from [`Ownership`] when dropped.
pub struct OwnerGuard {
    hub: Arc<Hub>,
    key: (String, u32),
    /// The link's id (fault injection addresses links by it).
    pub id: u64,
}

impl Drop for OwnerGuard {
    fn drop(&mut self) {
        let mut m = self
            .hub
            .owners
            .members
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(v) = m.get_mut(&self.key) {
            v.retain(|x| x.id != self.id);
        }
    }
}

/// Which links a partition freeze stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FreezeScope {
    /// The links attached when the freeze starts; a link attached later delivers normally.
    Links,
    /// Every link of the partition, including links attached during the freeze.
    Partition,
}

/// What a partition sender must do before its next delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hold {
    Deliver,
    /// Deliver nothing until then (the link stays attached, no error).
    FrozenUntil(Instant),
    /// Wait this long, then deliver.
    Delay(Duration),
}

#[derive(Default)]
struct FaultState {
    refuse_tokens_until: Option<Instant>,
    server_busy_until: Option<Instant>,
    /// Per partition: frozen for every link until then.
    partition_frozen_until: HashMap<u32, Instant>,
    /// Link id → frozen until then (scope `links`).
    links_frozen_until: HashMap<u64, Instant>,
    /// Per partition: (delay per delivery, until).
    delayed: HashMap<u32, (Duration, Instant)>,
}

/// The longest fault injection accepted (longer requests are refused rather than overflowing).
pub const MAX_FAULT_DURATION: Duration = Duration::from_secs(7 * 24 * 3600);

/// Refuses durations beyond [`MAX_FAULT_DURATION`]; returns the deadline.
pub(crate) fn fault_deadline(d: Duration) -> Result<Instant, String> {
    if d > MAX_FAULT_DURATION {
        return Err(format!(
            "a fault lasts at most {} seconds",
            MAX_FAULT_DURATION.as_secs()
        ));
    }
    Instant::now()
        .checked_add(d)
        .ok_or_else(|| "the fault duration overflows the clock".to_string())
}

/// Counters reported by `stats()`.
#[derive(Default)]
pub struct Counters {
    pub connections_opened: AtomicU64,
    pub connections_open: AtomicU64,
    pub events_delivered: AtomicU64,
    pub tokens_accepted: AtomicU64,
    pub tokens_refused: AtomicU64,
    pub c2d_accepted: AtomicU64,
    pub c2d_refused: AtomicU64,
    pub feedback_messages_sent: AtomicU64,
}

/// A snapshot of the emulator's statistics.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    pub partitions: Vec<super::store::PartitionInfo>,
    pub events_enqueued: i64,
    pub events_delivered: u64,
    /// Partition receiver links accepted so far.
    pub partition_receivers_attached: u64,
    /// Partition receiver links attached now, per partition (index = partition id).
    pub receivers_attached: Vec<u64>,
    pub connections_opened: u64,
    pub connections_open: u64,
    pub tokens_accepted: u64,
    pub tokens_refused: u64,
    pub c2d_accepted: u64,
    pub c2d_refused: u64,
    pub c2d_pending: usize,
    pub feedback_messages_sent: u64,
}

pub struct Hub {
    pub hub_name: String,
    /// Host (with port) of the `sb://` Event Hub-compatible endpoint.
    pub eh_host: String,
    /// The IoT Hub `HostName`.
    pub iothub_host: String,
    pub consumer_groups: Vec<String>,
    pub partitions: Vec<Partition>,
    pub c2d: C2dHub,
    pub verifier: Arc<Verifier>,
    pub no_auth: bool,
    pub created_ms: i64,
    pub counters: Counters,
    pub owners: Ownership,
    faults: Mutex<FaultState>,
    /// Bumped to drop every AMQP connection.
    pub drop_connections: watch::Sender<u64>,
    /// Number of partition receivers accepted so far (tests wait on it).
    pub receivers_attached: watch::Sender<u64>,
    /// Bumped when a freeze or delay is injected (frozen senders re-check).
    pub fault_changed: watch::Sender<u64>,
}

pub struct HubConfig {
    pub hub_name: String,
    pub eh_host: String,
    pub iothub_host: String,
    pub consumer_groups: Vec<String>,
    pub partitions: u32,
    pub retention: usize,
    pub verifier: Verifier,
    pub no_auth: bool,
    pub devices: Option<Vec<String>>,
    pub c2d_rate_limit: Option<u32>,
}

impl Hub {
    pub fn new(c: HubConfig) -> Hub {
        Hub {
            hub_name: c.hub_name,
            eh_host: c.eh_host,
            iothub_host: c.iothub_host,
            consumer_groups: c.consumer_groups,
            partitions: (0..c.partitions.max(1))
                .map(|i| Partition::new(i, c.retention))
                .collect(),
            c2d: C2dHub::new(c.devices, c.c2d_rate_limit),
            verifier: Arc::new(c.verifier),
            no_auth: c.no_auth,
            created_ms: super::store::now_ms(),
            counters: Counters::default(),
            owners: Ownership::default(),
            faults: Mutex::new(FaultState::default()),
            drop_connections: watch::channel(0).0,
            receivers_attached: watch::channel(0).0,
            fault_changed: watch::channel(0).0,
        }
    }

    pub fn partition_of(&self, device_id: &str) -> u32 {
        partition_for(device_id, self.partitions.len() as u32)
    }

    /// Enqueues device telemetry on the device's partition; returns (partition, offset, sequence).
    pub fn send_telemetry(
        &self,
        device_id: &str,
        props: Option<TelemetryProps>,
        body: Bytes,
    ) -> (u32, String, i64) {
        let p = self.partition_of(device_id);
        let (seq, off) = self.partitions[p as usize].append([(
            Some(Arc::<str>::from(device_id)),
            props.map(Box::new),
            body,
        )])[0];
        (p, off.to_string(), seq)
    }

    pub fn consumer_group(&self, name: &str) -> Option<&str> {
        self.consumer_groups
            .iter()
            .find(|g| g.eq_ignore_ascii_case(name))
            .map(|s| s.as_str())
    }

    fn faults(&self) -> std::sync::MutexGuard<'_, FaultState> {
        self.faults.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn refuse_tokens_for(&self, d: Duration) -> Result<(), String> {
        self.faults().refuse_tokens_until = Some(fault_deadline(d)?);
        Ok(())
    }

    pub fn server_busy_for(&self, d: Duration) -> Result<(), String> {
        self.faults().server_busy_until = Some(fault_deadline(d)?);
        Ok(())
    }

    fn check_partition(&self, partition: u32) -> Result<(), String> {
        if (partition as usize) < self.partitions.len() {
            Ok(())
        } else {
            Err(format!(
                "no partition {partition} (the hub has {})",
                self.partitions.len()
            ))
        }
    }

    /// Stops deliveries on `partition` for `d` without detaching (see [`FreezeScope`]).
    pub fn freeze_partition(
        &self,
        partition: u32,
        d: Duration,
        scope: FreezeScope,
    ) -> Result<(), String> {
        self.check_partition(partition)?;
        let until = fault_deadline(d)?;
        let links: Vec<u64> = match scope {
            FreezeScope::Partition => Vec::new(),
            FreezeScope::Links => self
                .owners
                .members
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .filter(|((_, p), _)| *p == partition)
                .flat_map(|(_, m)| m.iter().map(|m| m.id))
                .collect(),
        };
        let mut f = self.faults();
        let now = Instant::now();
        f.links_frozen_until.retain(|_, t| *t > now);
        match scope {
            FreezeScope::Partition => {
                f.partition_frozen_until.insert(partition, until);
            }
            FreezeScope::Links => {
                for id in links {
                    f.links_frozen_until.insert(id, until);
                }
            }
        }
        drop(f);
        self.fault_changed.send_modify(|n| *n += 1);
        Ok(())
    }

    /// Delays each delivery on `partition` by `delay`, for `d`.
    pub fn delay_partition(
        &self,
        partition: u32,
        delay: Duration,
        d: Duration,
    ) -> Result<(), String> {
        self.check_partition(partition)?;
        if delay > Duration::from_secs(3600) {
            return Err("a delivery delay is at most 3600000 ms".into());
        }
        let until = fault_deadline(d)?;
        self.faults().delayed.insert(partition, (delay, until));
        self.fault_changed.send_modify(|n| *n += 1);
        Ok(())
    }

    /// What the sender of link `link` on `partition` must do before its next delivery.
    pub fn hold(&self, partition: u32, link: u64) -> Hold {
        let f = self.faults();
        let now = Instant::now();
        let frozen = [
            f.partition_frozen_until.get(&partition),
            f.links_frozen_until.get(&link),
        ]
        .into_iter()
        .flatten()
        .filter(|t| **t > now)
        .max();
        if let Some(t) = frozen {
            return Hold::FrozenUntil(*t);
        }
        match f.delayed.get(&partition) {
            Some((d, until)) if *until > now && !d.is_zero() => Hold::Delay(*d),
            _ => Hold::Deliver,
        }
    }

    /// Partition receiver links attached now, per partition (every consumer group).
    pub fn receivers_per_partition(&self) -> Vec<u64> {
        let mut n = vec![0u64; self.partitions.len()];
        for ((_, p), m) in self
            .owners
            .members
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            if let Some(slot) = n.get_mut(*p as usize) {
                *slot += m.len() as u64;
            }
        }
        n
    }

    pub fn refusing_tokens(&self) -> bool {
        self.faults()
            .refuse_tokens_until
            .is_some_and(|t| t > Instant::now())
    }

    pub fn server_busy(&self) -> bool {
        self.faults()
            .server_busy_until
            .is_some_and(|t| t > Instant::now())
    }

    /// Registers a partition receiver. On success returns the guard and the channel on which an
    /// eviction (a newer owner) arrives.
    pub fn claim(
        self: &Arc<Self>,
        group: &str,
        partition: u32,
        epoch: Option<i64>,
    ) -> Result<(OwnerGuard, oneshot::Receiver<Eviction>), Eviction> {
        let key = (group.to_ascii_lowercase(), partition);
        let mut all = self
            .owners
            .members
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let members = all.entry(key.clone()).or_default();
        let current = members.iter().filter_map(|m| m.epoch).max();
        match (epoch, current) {
            (Some(e), Some(c)) if e < c => {
                return Err(Eviction {
                    condition: "amqp:link:stolen",
                    description: format!(
                        "Receiver 'nil' with a higher epoch '{c}' already exists. Receiver 'nil' with epoch {e} cannot be created. Make sure you are creating receiver with increasing epoch value to ensure connectivity, or ensure all old epoch receivers are closed or disconnected."
                    ),
                })
            }
            (None, Some(c)) => {
                return Err(Eviction {
                    condition: "amqp:link:stolen",
                    description: format!(
                        "Receiver 'nil' with a higher epoch '{c}' already exists. A receiver without an epoch cannot be created on this partition while an epoch receiver is active."
                    ),
                })
            }
            _ => {}
        }
        if let Some(e) = epoch {
            for m in members.iter_mut() {
                if let Some(kick) = m.kick.take() {
                    let old = m
                        .epoch
                        .map_or_else(|| "(none)".to_string(), |x| x.to_string());
                    let _ = kick.send(Eviction {
                        condition: "amqp:link:stolen",
                        description: format!(
                            "New receiver 'nil' with higher epoch of '{e}' is created hence current receiver 'nil' with epoch '{old}' is getting disconnected. If you are recreating the receiver, make sure a higher epoch is used."
                        ),
                    });
                }
            }
        }
        let id = self.owners.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        members.push(Member {
            id,
            epoch,
            kick: Some(tx),
        });
        Ok((
            OwnerGuard {
                hub: self.clone(),
                key,
                id,
            },
            rx,
        ))
    }

    pub fn stats(&self) -> Stats {
        let partitions: Vec<_> = self.partitions.iter().map(|p| p.info()).collect();
        let c = &self.counters;
        Stats {
            events_enqueued: partitions.iter().map(|p| p.total_enqueued).sum(),
            partitions,
            events_delivered: c.events_delivered.load(Ordering::Relaxed),
            partition_receivers_attached: *self.receivers_attached.borrow(),
            receivers_attached: self.receivers_per_partition(),
            connections_opened: c.connections_opened.load(Ordering::Relaxed),
            connections_open: c.connections_open.load(Ordering::Relaxed),
            tokens_accepted: c.tokens_accepted.load(Ordering::Relaxed),
            tokens_refused: c.tokens_refused.load(Ordering::Relaxed),
            c2d_accepted: c.c2d_accepted.load(Ordering::Relaxed),
            c2d_refused: c.c2d_refused.load(Ordering::Relaxed),
            c2d_pending: self.c2d.pending(),
            feedback_messages_sent: c.feedback_messages_sent.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Secret;

    fn hub() -> Arc<Hub> {
        Arc::new(Hub::new(HubConfig {
            hub_name: "h".into(),
            eh_host: "127.0.0.1:1".into(),
            iothub_host: "127.0.0.1:1".into(),
            consumer_groups: vec!["$Default".into()],
            partitions: 2,
            retention: 10,
            verifier: Verifier {
                key_name: "service".into(),
                key: Secret::new("a2V5"),
                iothub_hosts: vec![],
            },
            no_auth: false,
            devices: None,
            c2d_rate_limit: None,
        }))
    }

    #[test]
    fn epochs_steal_and_refuse() {
        let h = hub();
        let (g0, mut k0) = h.claim("$default", 0, None).unwrap();
        let (_g1, mut k1) = h.claim("$Default", 0, Some(1)).unwrap();
        assert_eq!(k0.try_recv().unwrap().condition, "amqp:link:stolen");
        drop(g0);
        assert!(h.claim("$Default", 0, Some(0)).is_err());
        assert!(h.claim("$Default", 0, None).is_err());
        assert!(h.claim("$Default", 1, None).is_ok());
        let (_g2, _k2) = h.claim("$Default", 0, Some(2)).unwrap();
        assert!(k1.try_recv().unwrap().description.contains("epoch of '2'"));
    }

    #[test]
    fn telemetry_goes_to_the_device_partition() {
        let h = hub();
        let (p, off, seq) = h.send_telemetry("dev-1", None, Bytes::from_static(b"x"));
        assert_eq!(p, h.partition_of("dev-1"));
        assert_eq!((off.as_str(), seq), ("0", 0));
        assert_eq!(h.stats().events_enqueued, 1);
    }
}
