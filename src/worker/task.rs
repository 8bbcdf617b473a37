//! Task supervision: one tokio task per Connect task, with Connect's states and controls.
//!
//! A task body is an async function that runs until its `shutdown` token fires (then it finishes its
//! in-flight work, commits and returns `Ok`) or until a non-retriable error (returned as `Err`, shown
//! as FAILED with the error chain as its trace; a REST restart runs the body again). Retriable errors
//! are the body's own business: it retries them with backoff and never returns them.

use crate::config::{ConnectorConfig, WorkerConfig};
use serde::Serialize;
use std::collections::BTreeMap;
use std::future::Future;
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
}

impl TaskContext {
    /// Waits while the connector is paused. Returns false when the task must stop instead.
    pub async fn wait_while_paused(&mut self) -> bool {
        loop {
            if self.shutdown.is_cancelled() {
                return false;
            }
            if *self.target.borrow() == TargetState::Started {
                return true;
            }
            tokio::select! {
                _ = self.shutdown.cancelled() => return false,
                r = self.target.changed() => if r.is_err() { return false; },
            }
        }
    }

    pub fn is_paused(&self) -> bool {
        *self.target.borrow() == TargetState::Paused
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

/// One Connect task and its supervisor.
pub struct TaskHandle {
    pub task_id: usize,
    pub id: String,
    /// The task's configuration as `GET /connectors/{name}/tasks` shows it (secrets masked).
    pub config: BTreeMap<String, String>,
    worker: Arc<WorkerConfig>,
    connector: Arc<ConnectorConfig>,
    body: TaskBody,
    state: Arc<Mutex<TaskState>>,
    target: watch::Sender<TargetState>,
    run: Mutex<Option<(CancellationToken, JoinHandle<()>)>>,
    pub health: Arc<TaskHealth>,
    kind: &'static str,
}

impl TaskHandle {
    pub fn new(
        worker: Arc<WorkerConfig>,
        connector: Arc<ConnectorConfig>,
        task_id: usize,
        config: BTreeMap<String, String>,
        body: TaskBody,
    ) -> Arc<TaskHandle> {
        let (target, _) = watch::channel(TargetState::Started);
        let kind = match connector.kind {
            crate::config::ConnectorKind::Source => "WorkerSourceTask",
            crate::config::ConnectorKind::Sink => "WorkerSinkTask",
        };
        Arc::new(TaskHandle {
            task_id,
            id: format!("{}-{task_id}", connector.name),
            config,
            worker,
            connector,
            body,
            state: Arc::new(Mutex::new(TaskState::Unassigned)),
            target,
            run: Mutex::new(None),
            health: Arc::new(TaskHealth::default()),
            kind,
        })
    }

    pub fn state(&self) -> TaskState {
        let s = self.state.lock().unwrap().clone();
        match s {
            TaskState::Running if *self.target.borrow() == TargetState::Paused => TaskState::Paused,
            other => other,
        }
    }

    /// Starts (or restarts) the body.
    pub fn start(self: &Arc<Self>) {
        let token = CancellationToken::new();
        let ctx = TaskContext {
            worker: self.worker.clone(),
            connector: self.connector.clone(),
            task_id: self.task_id,
            id: self.id.clone(),
            target: self.target.subscribe(),
            shutdown: token.clone(),
            health: self.health.clone(),
        };
        *self.state.lock().unwrap() = TaskState::Running;
        let fut = (self.body)(ctx);
        let state = self.state.clone();
        let id = self.id.clone();
        let kind = self.kind;
        let health = self.health.clone();
        let span = tracing::info_span!("task", ctx = %format!("{}|task-{}", self.connector.name, self.task_id));
        let join = tokio::spawn(
            async move {
                let what = if kind == "WorkerSourceTask" { "Source" } else { "Sink" };
                info!("{kind}{{id={id}}} {what} task finished initialization and start");
                match fut.await {
                    Ok(()) => {
                        info!("{kind}{{id={id}}} stopped");
                        *state.lock().unwrap() = TaskState::Unassigned;
                    }
                    Err(e) => {
                        let trace = format!("{e:?}");
                        error!("{kind}{{id={id}}} Task threw an uncaught and unrecoverable exception. Task is being killed and will not recover until manually restarted. Error: {e:#}");
                        *state.lock().unwrap() = TaskState::Failed(trace);
                    }
                }
                health.set_links_up(false);
            }
            .instrument(span),
        );
        *self.run.lock().unwrap() = Some((token, join));
    }

    pub fn set_target(&self, t: TargetState) {
        self.target.send_replace(t);
    }

    pub fn target(&self) -> TargetState {
        *self.target.borrow()
    }

    /// Asks the body to stop and waits until `deadline`; past it the body is aborted (its uncommitted
    /// work is re-read after restart: nothing is committed before it is delivered).
    pub async fn stop(&self, deadline: tokio::time::Instant) {
        let run = self.run.lock().unwrap().take();
        let Some((token, mut join)) = run else { return };
        info!("Stopping task {}", self.id);
        token.cancel();
        if tokio::time::timeout_at(deadline, &mut join).await.is_err() {
            error!("Graceful stop of task {} failed.", self.id);
            join.abort();
            let _ = join.await;
        }
        let mut s = self.state.lock().unwrap();
        if !matches!(*s, TaskState::Failed(_)) {
            *s = TaskState::Unassigned;
        }
    }

    /// Stops (bounded by `timeout`) and starts again.
    pub async fn restart(self: &Arc<Self>, timeout: Duration) {
        *self.state.lock().unwrap() = TaskState::Restarting;
        self.stop(tokio::time::Instant::now() + timeout).await;
        self.start();
    }
}
