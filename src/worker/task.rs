//! Task supervision: one tokio task per Connect task, with Connect's states and controls.
//!
//! A task body is an async function that runs until its `shutdown` token fires (then it finishes its
//! in-flight work, commits and returns `Ok`) or until a non-retriable error (returned as `Err`, shown
//! as FAILED with the error chain as its trace; a REST restart runs the body again). Retriable errors
//! are the body's own business: it retries them with backoff and never returns them.
//!
//! Invariants:
//! * **Never two bodies.** Every lifecycle change of a task (start, stop, restart) holds the task's
//!   lifecycle lock for its whole duration, so a new body starts only after the old one has returned
//!   (and so committed) or was aborted at its deadline; a start while a body runs is a no-op.
//! * **Never silently dead.** A body that returns `Err` or panics leaves the task FAILED with the
//!   error chain or the panic message as its trace (REST status, `/readyz` 503, `task_running` 0,
//!   `task_failures_total` + 1).
//! * Each run gets a fresh [`TaskContext`]: its own shutdown token and its own producers (created on
//!   first use, dropped when the run ends), so a fenced producer never outlives a restart.

use super::connector::{TaskKind, TaskPlan};
use super::errors::{DeadLetterQueueReporter, LogReporter, ToleranceOperator};
use super::producer::Producer;
use crate::config::{ConnectorConfig, WorkerConfig};
use crate::offsets::OffsetBackingStore;
use crate::rest::metrics::{task_labels, METRICS};
use anyhow::Context as _;
use futures::FutureExt;
use serde::Serialize;
use std::collections::BTreeMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, Instrument};

/// What the operator asked for (REST pause/resume/stop).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum TargetState {
    Started,
    Paused,
    Stopped,
}

/// A task's state as Connect reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TaskState {
    Unassigned,
    Running,
    Paused,
    Failed(String),
    Restarting,
}

impl TaskState {
    pub fn name(&self) -> &'static str {
        match self {
            TaskState::Unassigned => "UNASSIGNED",
            TaskState::Running => "RUNNING",
            TaskState::Paused => "PAUSED",
            TaskState::Failed(_) => "FAILED",
            TaskState::Restarting => "RESTARTING",
        }
    }
}

/// The producers of one task run, created on first use.
#[derive(Default)]
struct RunProducers {
    records: Mutex<Option<Producer>>,
    dlq: Mutex<Option<Producer>>,
}

/// What a task body gets.
#[derive(Clone)]
pub struct TaskContext {
    pub worker: Arc<WorkerConfig>,
    pub connector: Arc<ConnectorConfig>,
    pub task_id: usize,
    /// Connect's `<connector>-<task>` id.
    pub id: String,
    pub target: watch::Receiver<TargetState>,
    pub shutdown: CancellationToken,
    pub health: Arc<TaskHealth>,
    /// The worker's offset store (Connect's `OffsetStorageReader` / `OffsetStorageWriter`).
    pub offsets: Arc<dyn OffsetBackingStore>,
    producers: Arc<RunProducers>,
}

impl TaskContext {
    pub fn is_paused(&self) -> bool {
        *self.target.borrow() == TargetState::Paused
    }

    /// The task's record producer (`acks=all`, idempotent, `producer.*` overrides), shared by the
    /// whole run.
    pub fn producer(&self) -> anyhow::Result<Producer> {
        let mut slot = self.producers.records.lock().unwrap();
        if let Some(p) = &*slot {
            return Ok(p.clone());
        }
        let s =
            crate::config::kafka::producer_settings(&self.worker, &self.connector, self.task_id)
                .context("producer settings")?;
        let p = Producer::create(&s.config).context("cannot create the Kafka producer")?;
        *slot = Some(p.clone());
        Ok(p)
    }

    /// The producer for dead letter queue and feedback records, shared by the whole run.
    pub fn dlq_producer(&self) -> anyhow::Result<Producer> {
        let mut slot = self.producers.dlq.lock().unwrap();
        if let Some(p) = &*slot {
            return Ok(p.clone());
        }
        let s = crate::config::kafka::dlq_producer_settings(
            &self.worker,
            &self.connector,
            self.task_id,
        )
        .context("dead letter queue producer settings")?;
        let p = Producer::create(&s.config)
            .context("cannot create the dead letter queue / feedback producer")?;
        *slot = Some(p.clone());
        Ok(p)
    }

    /// Connect's tolerance operator for this connector's `errors.*` settings.
    pub fn tolerance(&self) -> ToleranceOperator {
        ToleranceOperator::from_config(&self.connector.errors)
    }

    /// Connect's log reporter for this task.
    pub fn log_reporter(&self) -> LogReporter {
        LogReporter::new(self.id.clone(), &self.connector.errors)
    }

    /// Connect's dead letter queue reporter, when `errors.deadletterqueue.topic.name` is set.
    pub fn dlq_reporter(&self) -> anyhow::Result<Option<DeadLetterQueueReporter>> {
        if self.connector.errors.dlq_topic.is_none() {
            return Ok(None);
        }
        Ok(DeadLetterQueueReporter::new(
            self.dlq_producer()?,
            &self.connector.name,
            self.task_id,
            &self.connector.errors,
        ))
    }
}

/// Liveness of a task's external links, for `/readyz`.
#[derive(Default)]
pub struct TaskHealth {
    links_up: std::sync::atomic::AtomicBool,
    /// Hub partitions that stay stalled after a recovery attempt (source stall watchdog).
    stalled: Mutex<std::collections::BTreeSet<String>>,
}

impl TaskHealth {
    pub fn set_links_up(&self, up: bool) {
        self.links_up
            .store(up, std::sync::atomic::Ordering::Relaxed);
    }
    /// False while a link is down or a partition stays stalled.
    pub fn links_up(&self) -> bool {
        self.links_up.load(std::sync::atomic::Ordering::Relaxed)
            && self.stalled.lock().unwrap().is_empty()
    }
    pub fn set_stalled(&self, partition: &str, stalled: bool) {
        let mut s = self.stalled.lock().unwrap();
        if stalled {
            s.insert(partition.to_string());
        } else {
            s.remove(partition);
        }
    }
    /// The partitions that stay stalled, for `/readyz`.
    pub fn stalled(&self) -> Vec<String> {
        self.stalled.lock().unwrap().iter().cloned().collect()
    }
}

pub type TaskFuture = Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>;
/// Builds a fresh run of a task body (called again on restart).
pub type TaskBody = Arc<dyn Fn(TaskContext) -> TaskFuture + Send + Sync>;

struct Run {
    token: CancellationToken,
    /// Resolves to true when the run failed after its stop was asked for (a failed stop).
    join: JoinHandle<bool>,
}

/// One Connect task and its supervisor.
pub struct TaskHandle {
    pub task_id: usize,
    pub id: String,
    /// The task's configuration as `GET /connectors/{name}/tasks` shows it (secrets masked).
    pub config: BTreeMap<String, String>,
    worker: Arc<WorkerConfig>,
    connector: Arc<ConnectorConfig>,
    offsets: Arc<dyn OffsetBackingStore>,
    body: TaskBody,
    kind: TaskKind,
    state: Arc<Mutex<TaskState>>,
    target: watch::Sender<TargetState>,
    /// Held across every start / stop / restart (see the module invariants).
    lifecycle: tokio::sync::Mutex<()>,
    run: Mutex<Option<Run>>,
    pub health: Arc<TaskHealth>,
}

/// The text of a panic payload.
pub fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "(a panic without a message)".to_string()
    }
}

impl TaskHandle {
    pub fn new(
        worker: Arc<WorkerConfig>,
        connector: Arc<ConnectorConfig>,
        offsets: Arc<dyn OffsetBackingStore>,
        task_id: usize,
        plan: TaskPlan,
        kind: TaskKind,
    ) -> Arc<TaskHandle> {
        let (target, _) = watch::channel(TargetState::Started);
        Arc::new(TaskHandle {
            task_id,
            id: format!("{}-{task_id}", connector.name),
            config: plan.config,
            worker,
            connector,
            offsets,
            body: plan.body,
            kind,
            state: Arc::new(Mutex::new(TaskState::Unassigned)),
            target,
            lifecycle: tokio::sync::Mutex::new(()),
            run: Mutex::new(None),
            health: Arc::new(TaskHealth::default()),
        })
    }

    pub fn state(&self) -> TaskState {
        let s = self.state.lock().unwrap().clone();
        match s {
            TaskState::Running if *self.target.borrow() == TargetState::Paused => TaskState::Paused,
            other => other,
        }
    }

    pub fn kind(&self) -> TaskKind {
        self.kind
    }

    /// Starts the body unless one is running.
    pub async fn start(self: &Arc<Self>) {
        let _serial = self.lifecycle.lock().await;
        self.start_locked().await;
    }

    async fn start_locked(self: &Arc<Self>) {
        let previous = self.run.lock().unwrap().take();
        if let Some(run) = previous {
            if !run.join.is_finished() {
                // A body is running: never start a second one.
                *self.run.lock().unwrap() = Some(run);
                return;
            }
            let _ = run.join.await;
        }
        let token = CancellationToken::new();
        let ctx = TaskContext {
            worker: self.worker.clone(),
            connector: self.connector.clone(),
            task_id: self.task_id,
            id: self.id.clone(),
            target: self.target.subscribe(),
            shutdown: token.clone(),
            health: self.health.clone(),
            offsets: self.offsets.clone(),
            producers: Arc::new(RunProducers::default()),
        };
        *self.state.lock().unwrap() = TaskState::Running;
        let body = self.body.clone();
        let state = self.state.clone();
        let id = self.id.clone();
        let kind = self.kind;
        let health = self.health.clone();
        let labels = task_labels(&self.connector.name, self.task_id);
        let span = tracing::info_span!("task", ctx = %format!("{}|task-{}", self.connector.name, self.task_id));
        let stop_asked = token.clone();
        let join = tokio::spawn(
            async move {
                let (class, noun) = (kind.worker_class, kind.noun);
                info!("{class}{{id={id}}} {noun} task finished initialization and start");
                // The body is built inside the guarded future, so a panic while building it is
                // caught too.
                let outcome = AssertUnwindSafe(async move { body(ctx).await })
                    .catch_unwind()
                    .await;
                // Decided the moment the body ended: a failure before any stop request is the
                // task's own (FAILED, shown in REST), not a failure of a later stop.
                let while_stopping = stop_asked.is_cancelled();
                let failed = match outcome {
                    Ok(Ok(())) => {
                        info!("{class}{{id={id}}} stopped");
                        None
                    }
                    Ok(Err(e)) => {
                        error!("{class}{{id={id}}} Task threw an uncaught and unrecoverable exception. Task is being killed and will not recover until manually restarted. Error: {e:#}");
                        Some(format!("{e:?}"))
                    }
                    Err(panic) => {
                        let msg = panic_message(&*panic);
                        error!("{class}{{id={id}}} Task panicked and is being killed; it will not recover until manually restarted. Panic: {msg}");
                        Some(format!("the task panicked: {msg}"))
                    }
                };
                let failed_stop = failed.is_some() && while_stopping;
                *state.lock().unwrap() = match failed {
                    Some(trace) => {
                        METRICS.task_failures.get_or_create(&labels).inc();
                        TaskState::Failed(trace)
                    }
                    None => TaskState::Unassigned,
                };
                health.set_links_up(false);
                failed_stop
            }
            .instrument(span),
        );
        *self.run.lock().unwrap() = Some(Run { token, join });
    }

    pub fn set_target(&self, t: TargetState) {
        self.target.send_replace(t);
    }

    pub fn target(&self) -> TargetState {
        *self.target.borrow()
    }

    /// Asks the body to stop and waits until `deadline`; past it the body is aborted (its uncommitted
    /// work is re-read after restart: nothing is committed before it is delivered). Returns the
    /// failure trace when the body ended in error or panicked during this stop.
    pub async fn stop(&self, deadline: tokio::time::Instant) -> Option<String> {
        let _serial = self.lifecycle.lock().await;
        self.stop_locked(deadline).await
    }

    async fn stop_locked(&self, deadline: tokio::time::Instant) -> Option<String> {
        let run = self.run.lock().unwrap().take();
        let Run { token, mut join } = run?;
        let was_running = !join.is_finished();
        if was_running {
            info!("Stopping task {}", self.id);
        }
        token.cancel();
        let failed_stop = match tokio::time::timeout_at(deadline, &mut join).await {
            Ok(r) => r.unwrap_or(false),
            Err(_) => {
                error!("Graceful stop of task {} failed.", self.id);
                join.abort();
                let _ = join.await;
                false
            }
        };
        let mut s = self.state.lock().unwrap();
        match &*s {
            TaskState::Failed(trace) => Some(trace.clone()).filter(|_| was_running && failed_stop),
            _ => {
                *s = TaskState::Unassigned;
                None
            }
        }
    }

    /// Stops (bounded by `timeout`) and starts again; concurrent restarts run one after the other.
    pub async fn restart(self: &Arc<Self>, timeout: Duration) {
        let _serial = self.lifecycle.lock().await;
        *self.state.lock().unwrap() = TaskState::Restarting;
        self.stop_locked(tokio::time::Instant::now() + timeout)
            .await;
        self.start_locked().await;
    }
}

#[cfg(test)]
#[path = "task_tests.rs"]
pub(crate) mod tests;
