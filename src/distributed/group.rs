//! Assignment of hub partitions through a Kafka consumer group.
//!
//! Each source connector has a compacted coordination topic `<group.id>-<connector>-partitions` with
//! one Kafka partition per hub partition; nothing is ever written to it. Every worker subscribes to
//! it in the consumer group `<group.id>-<connector>` with the cooperative-sticky assignor, and
//! **owning Kafka partition i means reading hub partition i**. The group coordinator (Kafka) decides
//! membership: a worker that dies or stops heartbeating is dropped after `session.timeout.ms`, and its
//! partitions move to the others; a joining worker takes some over; cooperative-sticky only moves what
//! must move.
//!
//! Invariants:
//! * The rebalance callback runs on this module's own thread (never a tokio worker). On revocation it
//!   blocks until each revoked partition's pipeline has ended (its transaction committed or aborted)
//!   before librdkafka releases the partition, bounded by `rebalance.timeout.ms`.
//! * One pipeline per owned partition at a time: the manager keeps one entry per index; a pipeline that
//!   ends fenced while the group still assigns the partition to us is restarted after
//!   `session.timeout.ms` (the group has had time to tell us if it moved).

use super::pipeline::{self, End, SourceJob};
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::ClientConfig;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub fn coordination_topic(group: &str, connector: &str) -> String {
    format!("{group}-{connector}-partitions")
}

pub fn coordination_group(group: &str, connector: &str) -> String {
    format!("{group}-{connector}")
}

enum Command {
    /// Partitions newly assigned in the group generation given.
    Assign(Vec<usize>, i32),
    Revoke(Vec<usize>, std::sync::mpsc::Sender<()>),
    Ended(usize, u64, End),
    /// A fenced pipeline's partition, to restart if it is still ours.
    Retry(usize),
    /// The group thread has left the group.
    Closed,
}

struct GroupContext {
    tx: mpsc::UnboundedSender<Command>,
    /// Partitions assigned by the last rebalance callback, not yet handed on.
    assigned: Mutex<Vec<usize>>,
    connector: String,
    revoke_timeout: Duration,
}

impl ClientContext for GroupContext {}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, c: &BaseConsumer<Self>, r: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = r {
            let parts: Vec<usize> = tpl
                .elements()
                .iter()
                .map(|e| e.partition() as usize)
                .collect();
            if parts.is_empty() {
                return;
            }
            let lost = c.assignment_lost();
            info!(
                "Connector {}: hub partitions {:?} revoked{}; stopping their tasks",
                self.connector,
                parts,
                if lost { " (assignment lost)" } else { "" }
            );
            let (done_tx, done_rx) = std::sync::mpsc::channel();
            if self.tx.send(Command::Revoke(parts, done_tx)).is_ok()
                && done_rx.recv_timeout(self.revoke_timeout).is_err()
            {
                warn!(
                    "Connector {}: revoked tasks did not stop within {:?}",
                    self.connector, self.revoke_timeout
                );
            }
        }
    }

    fn post_rebalance(&self, _c: &BaseConsumer<Self>, r: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = r {
            let parts: Vec<usize> = tpl
                .elements()
                .iter()
                .map(|e| e.partition() as usize)
                .collect();
            if !parts.is_empty() {
                // Handed on by the poll thread once the callback has returned: asking librdkafka
                // for the group's metadata from inside a rebalance callback can block.
                self.assigned.lock().unwrap().extend(parts);
            }
        }
    }
}

/// The consumer group's current generation id (what Connect writes as a status entry's
/// `generation`); 0 when librdkafka has none. rdkafka 0.39 keeps `ConsumerGroupMetadata`'s pointer
/// private, so this asks librdkafka directly.
fn group_generation<C: ConsumerContext>(c: &BaseConsumer<C>) -> i32 {
    use rdkafka::bindings as rd;
    // SAFETY: the client pointer is valid for `c`'s life; the metadata object returned is owned
    // here, read once and destroyed; a null result (no group) is checked first.
    unsafe {
        let md = rd::rd_kafka_consumer_group_metadata(c.client().native_ptr());
        if md.is_null() {
            return 0;
        }
        let g = rd::rd_kafka_consumer_group_metadata_generation_id(md);
        rd::rd_kafka_consumer_group_metadata_destroy(md);
        g.max(0)
    }
}

/// Owned partitions of one connector on this worker (for `/readyz` and the tests' logs).
#[derive(Default)]
pub struct Owned {
    pub indexes: Mutex<Vec<usize>>,
}

/// Joins the group for `job` and runs its partitions until `stop`; returns when everything stopped.
pub async fn run(
    job: Arc<SourceJob>,
    consumer_base: ClientConfig,
    owned: Arc<Owned>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let cfg = &job.cfg;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut c = consumer_base.clone();
    c.set(
        "group.id",
        coordination_group(&cfg.group_id, &job.connector.name),
    )
    .set("partition.assignment.strategy", "cooperative-sticky")
    .set(
        "session.timeout.ms",
        cfg.session_timeout.as_millis().to_string(),
    )
    .set(
        "heartbeat.interval.ms",
        cfg.heartbeat_interval.as_millis().to_string(),
    )
    .set("enable.auto.commit", "false")
    .set(
        "client.id",
        format!("{}-{}-coordinator", cfg.group_id, job.connector.name),
    );
    let ctx = GroupContext {
        tx: tx.clone(),
        assigned: Mutex::new(Vec::new()),
        connector: job.connector.name.clone(),
        revoke_timeout: cfg.rebalance_timeout,
    };
    let consumer: BaseConsumer<GroupContext> = c.create_with_context(ctx)?;
    let topic = coordination_topic(&cfg.group_id, &job.connector.name);
    consumer.subscribe(&[topic.as_str()])?;
    let polling = Arc::new(AtomicBool::new(true));
    let poll_flag = polling.clone();
    let closed_tx = tx.clone();
    let revoke_timeout = cfg.rebalance_timeout;
    let thread = std::thread::Builder::new()
        .name(format!("group-{}", job.connector.name))
        .spawn(move || {
            while poll_flag.load(Ordering::SeqCst) {
                // The topic is empty: poll only serves the group protocol and rebalance callbacks.
                let _ = consumer.poll(Duration::from_millis(100));
                let parts = std::mem::take(&mut *consumer.context().assigned.lock().unwrap());
                if !parts.is_empty() {
                    let generation = group_generation(&consumer);
                    info!(
                        "Connector {}: hub partitions {parts:?} assigned to this worker (group generation {generation})",
                        consumer.context().connector
                    );
                    let _ = consumer.context().tx.send(Command::Assign(parts, generation));
                }
            }
            // Leaving: revoke everything (the callback stops the pipelines), then LeaveGroup on drop.
            consumer.unsubscribe();
            let deadline = std::time::Instant::now() + revoke_timeout;
            while std::time::Instant::now() < deadline
                && consumer
                    .assignment()
                    .map(|a| a.count() > 0)
                    .unwrap_or(false)
            {
                let _ = consumer.poll(Duration::from_millis(100));
            }
            drop(consumer);
            let _ = closed_tx.send(Command::Closed);
        })?;

    let mut running: HashMap<usize, (CancellationToken, u64)> = HashMap::new();
    let mut assigned: Vec<usize> = Vec::new();
    // Pipeline instances (an `Ended` of an older instance of the same partition is ignored).
    let mut instance: u64 = 0;
    // The group generation of the latest assignment (written into status entries).
    let mut group_gen: i32 = 0;
    let mut revokes: Vec<(HashSet<usize>, std::sync::mpsc::Sender<()>)> = Vec::new();
    let start = |i: usize,
                 running: &mut HashMap<usize, (CancellationToken, u64)>,
                 instance: &mut u64,
                 group_gen: i32| {
        if running.contains_key(&i) || i >= job.partitions.len() {
            return;
        }
        *instance += 1;
        let token = CancellationToken::new();
        running.insert(i, (token.clone(), *instance));
        let j = job.clone();
        let tx = tx.clone();
        let n = *instance;
        tokio::spawn(async move {
            let end = pipeline::run(j, i, group_gen, token).await;
            let _ = tx.send(Command::Ended(i, n, end));
        });
    };
    let mut stopping = false;
    let mut closed = false;
    loop {
        let cmd = tokio::select! {
            _ = stop.cancelled(), if !stopping => {
                stopping = true;
                polling.store(false, Ordering::SeqCst);
                continue;
            }
            c = rx.recv() => c,
        };
        let Some(cmd) = cmd else { break };
        match cmd {
            Command::Assign(parts, g) => {
                group_gen = g;
                for i in parts {
                    if !assigned.contains(&i) {
                        assigned.push(i);
                    }
                    start(i, &mut running, &mut instance, group_gen);
                }
            }
            Command::Retry(i) => {
                if assigned.contains(&i) && !stopping {
                    start(i, &mut running, &mut instance, group_gen);
                }
            }
            Command::Revoke(parts, done) => {
                assigned.retain(|i| !parts.contains(i));
                let pending: HashSet<usize> = parts
                    .iter()
                    .copied()
                    .filter(|i| running.contains_key(i))
                    .collect();
                for i in &pending {
                    running[i].0.cancel();
                }
                if pending.is_empty() {
                    let _ = done.send(());
                } else {
                    revokes.push((pending, done));
                }
            }
            Command::Ended(i, g, end) => {
                if running.get(&i).is_some_and(|(_, rg)| *rg == g) {
                    running.remove(&i);
                }
                for (pending, _) in revokes.iter_mut() {
                    pending.remove(&i);
                }
                revokes.retain(|(pending, done)| {
                    if pending.is_empty() {
                        let _ = done.send(());
                    }
                    !pending.is_empty()
                });
                if matches!(end, End::Fenced(_)) && assigned.contains(&i) && !stopping {
                    let tx = tx.clone();
                    let delay = job.cfg.session_timeout;
                    tokio::spawn(async move {
                        tokio::time::sleep(delay).await;
                        let _ = tx.send(Command::Retry(i));
                    });
                }
            }
            Command::Closed => {
                closed = true;
                // Whatever the revocation did not stop (it should have stopped everything).
                for (t, _) in running.values() {
                    t.cancel();
                }
            }
        }
        {
            let mut o = owned.indexes.lock().unwrap();
            *o = running.keys().copied().collect();
            o.sort_unstable();
        }
        if stopping && closed && running.is_empty() {
            break;
        }
    }
    // A callback during the consumer's final close must not wait for this loop any more.
    drop(rx);
    let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    Ok(())
}
