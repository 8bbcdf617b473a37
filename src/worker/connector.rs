//! The connector interface between the worker and connector implementations (Connect's
//! `Connector` + `Task` classes, Vector's `SourceConfig::build(context)`).
//!
//! Invariants:
//! * The runtime knows only this trait: `main.rs` hands the list of implementations to the worker
//!   ([`Plugins`]); the worker picks the one that [`Connector::accepts`] a connector's
//!   configuration. Nothing in `worker` names a concrete connector, and `worker` never imports
//!   `source` or `sink` (they import `worker`).
//! * Planning ([`Connector::plan`]) may do I/O (partition discovery) and runs once per connector
//!   start; a task body ([`TaskBody`]) is called again for every (re)start of its task and gets
//!   everything it shares with the worker (offset store, producers, error handling) through its
//!   [`TaskContext`].

use super::task::{TaskBody, TaskContext};
use crate::config::{ConnectorConfig, WorkerConfig};
use crate::offsets::OffsetBackingStore;
use futures::future::BoxFuture;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Connect's task class names as they appear in log lines (`WorkerSourceTask{id=…}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskKind {
    /// `WorkerSourceTask` / `WorkerSinkTask`.
    pub worker_class: &'static str,
    /// `Source` / `Sink` (in "… task finished initialization and start").
    pub noun: &'static str,
}

/// One planned task: its configuration as `GET /connectors/{name}/tasks` shows it (secrets
/// masked) and its body.
#[derive(Clone)]
pub struct TaskPlan {
    pub config: BTreeMap<String, String>,
    pub body: TaskBody,
}

/// What planning gets from the worker.
#[derive(Clone)]
pub struct ConnectorContext {
    pub worker: Arc<WorkerConfig>,
    pub connector: Arc<ConnectorConfig>,
    /// The worker's offset store (read-only use while planning: e.g. to log stored positions).
    pub offsets: Arc<dyn OffsetBackingStore>,
}

/// A connector implementation (one per connector class).
pub trait Connector: Send + Sync + 'static {
    /// Connect's connector class name, for logs (`Creating connector … of type …`).
    fn class_name(&self) -> &'static str;

    /// Whether this implementation runs `connector` (decided on its parsed configuration).
    fn accepts(&self, connector: &ConnectorConfig) -> bool;

    /// The task kind of this connector's tasks.
    fn task_kind(&self) -> TaskKind;

    /// Offline checks beyond key parsing (converter classes, connection strings): an error here
    /// means the connector cannot be created (standalone exit 3).
    fn validate(&self, worker: &WorkerConfig, connector: &ConnectorConfig) -> anyhow::Result<()>;

    /// Plans the tasks (may talk to external systems).
    fn plan(&self, ctx: ConnectorContext) -> BoxFuture<'static, anyhow::Result<Vec<TaskPlan>>>;
}

/// The connector implementations a worker can run, in the order they are asked.
#[derive(Clone, Default)]
pub struct Plugins(pub Vec<Arc<dyn Connector>>);

impl Plugins {
    pub fn new(list: Vec<Arc<dyn Connector>>) -> Plugins {
        Plugins(list)
    }

    /// The implementation for `connector`, or an error naming its class.
    pub fn find(&self, connector: &ConnectorConfig) -> anyhow::Result<Arc<dyn Connector>> {
        self.0
            .iter()
            .find(|c| c.accepts(connector))
            .cloned()
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "Failed to find any class that implements Connector and which name matches {} (connector {})",
                    connector.class,
                    connector.name
                )
            })
    }
}

/// Builds a [`TaskBody`] from an async function of the context (helper for implementations).
pub fn body<F, Fut>(f: F) -> TaskBody
where
    F: Fn(TaskContext) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
{
    Arc::new(move |ctx| Box::pin(f(ctx)))
}
