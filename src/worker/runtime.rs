//! The running worker: connectors, their tasks, and the order things start and stop in.

use super::task::{TargetState, TaskBody, TaskHandle};
use crate::config::{ConnectorConfig, ConnectorKind, Loaded, WorkerConfig};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tracing::info;

/// What a connector plans: one entry per task (its shown config and its body).
pub type TaskPlan = Vec<(BTreeMap<String, String>, TaskBody)>;

/// A connector and its tasks.
pub struct ConnectorRuntime {
    pub config: Arc<ConnectorConfig>,
    pub tasks: Vec<Arc<TaskHandle>>,
    target: Mutex<TargetState>,
}

impl ConnectorRuntime {
    pub fn name(&self) -> &str {
        &self.config.name
    }
    pub fn target(&self) -> TargetState {
        *self.target.lock().unwrap()
    }
    pub fn set_target(&self, t: TargetState) {
        *self.target.lock().unwrap() = t;
        for task in &self.tasks {
            task.set_target(t);
        }
    }

    /// `PUT /connectors/{name}/pause`: tasks stop taking new data and keep their links.
    pub fn pause(&self) {
        if self.target() != TargetState::Stopped {
            info!("Pausing connector {}", self.name());
            self.set_target(TargetState::Paused);
        }
    }

    /// `PUT /connectors/{name}/resume`: also starts the tasks of a stopped connector.
    pub async fn resume(&self) {
        let was = self.target();
        self.set_target(TargetState::Started);
        if was == TargetState::Stopped {
            for t in &self.tasks {
                t.start();
            }
        }
        info!("Resuming connector {}", self.name());
    }

    /// `PUT /connectors/{name}/stop`: tasks shut down (committing what was delivered).
    pub async fn stop(&self, timeout: std::time::Duration) {
        info!("Stopping connector {}", self.name());
        self.set_target(TargetState::Stopped);
        let deadline = tokio::time::Instant::now() + timeout;
        let stops: Vec<_> = self
            .tasks
            .iter()
            .map(|t| {
                let t = t.clone();
                tokio::spawn(async move { t.stop(deadline).await })
            })
            .collect();
        for s in stops {
            let _ = s.await;
        }
    }

    /// The connector's own state as Connect reports it.
    pub fn state_name(&self) -> &'static str {
        match self.target() {
            TargetState::Started => "RUNNING",
            TargetState::Paused => "PAUSED",
            TargetState::Stopped => "STOPPED",
        }
    }
}

/// The worker.
pub struct Worker {
    pub config: Arc<WorkerConfig>,
    pub cluster_id: String,
    pub connectors: Vec<Arc<ConnectorRuntime>>,
    pub started: Instant,
}

impl Worker {
    /// Creates every connector and starts its tasks (Connect: `Created connector <name>`).
    pub async fn start(loaded: Loaded, cluster_id: String) -> anyhow::Result<Arc<Worker>> {
        let config = Arc::new(loaded.worker);
        let mut connectors = Vec::new();
        for c in loaded.connectors {
            let c = Arc::new(c);
            info!("Creating connector {} of type {}", c.name, c.class);
            let plan: TaskPlan = match c.kind {
                ConnectorKind::Source => {
                    crate::source::plan_tasks(config.clone(), c.clone()).await?
                }
                ConnectorKind::Sink => crate::sink::plan_tasks(config.clone(), c.clone()).await?,
            };
            let tasks: Vec<Arc<TaskHandle>> = plan
                .into_iter()
                .enumerate()
                .map(|(i, (task_config, body))| {
                    TaskHandle::new(config.clone(), c.clone(), i, task_config, body)
                })
                .collect();
            for t in &tasks {
                info!("Creating task {}", t.id);
                t.start();
            }
            info!("Created connector {}", c.name);
            connectors.push(Arc::new(ConnectorRuntime {
                config: c,
                tasks,
                target: Mutex::new(TargetState::Started),
            }));
        }
        Ok(Arc::new(Worker {
            config,
            cluster_id,
            connectors,
            started: Instant::now(),
        }))
    }

    pub fn connector(&self, name: &str) -> Option<&Arc<ConnectorRuntime>> {
        self.connectors.iter().find(|c| c.name() == name)
    }

    /// Stops every task within `task.shutdown.graceful.timeout.ms` in total, as Connect does.
    pub async fn stop(&self) {
        let deadline = tokio::time::Instant::now() + self.config.task_shutdown_graceful_timeout;
        let mut stops = Vec::new();
        for c in &self.connectors {
            for t in &c.tasks {
                let t = t.clone();
                stops.push(tokio::spawn(async move { t.stop(deadline).await }));
            }
        }
        for s in stops {
            let _ = s.await;
        }
        for c in &self.connectors {
            info!("Stopping connector {}", c.name());
        }
    }
}
