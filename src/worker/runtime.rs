//! The running worker: connectors, their tasks, and the order things start and stop in.
//!
//! Invariants:
//! * The worker owns the offset store (opened once by the caller, e.g. `standalone`) and hands it
//!   to every task through its context; nothing else opens one.
//! * Connectors are found through [`Plugins`]; the runtime never names a connector kind.
//! * Lifecycle changes of one connector (pause, resume, stop) are serialized by the connector's
//!   lock, and those of one task by the task's (see `worker::task`): never two bodies per task.

use super::connector::{Connector, ConnectorContext, Plugins};
use super::task::{TargetState, TaskHandle};
use crate::config::{ConnectorConfig, Loaded, WorkerConfig};
use crate::offsets::OffsetBackingStore;
use anyhow::Context as _;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tracing::{error, info};

/// A connector and its tasks.
pub struct ConnectorRuntime {
    pub config: Arc<ConnectorConfig>,
    pub tasks: Vec<Arc<TaskHandle>>,
    pub plugin: Arc<dyn Connector>,
    target: Mutex<TargetState>,
    lifecycle: tokio::sync::Mutex<()>,
}

impl ConnectorRuntime {
    pub fn name(&self) -> &str {
        &self.config.name
    }
    pub fn target(&self) -> TargetState {
        *self.target.lock().unwrap()
    }
    fn set_target(&self, t: TargetState) {
        *self.target.lock().unwrap() = t;
        for task in &self.tasks {
            task.set_target(t);
        }
    }

    /// `PUT /connectors/{name}/pause`: tasks stop taking new data and keep their links.
    pub async fn pause(&self) {
        let _serial = self.lifecycle.lock().await;
        if self.target() != TargetState::Stopped {
            info!("Pausing connector {}", self.name());
            self.set_target(TargetState::Paused);
        }
    }

    /// `PUT /connectors/{name}/resume`: also starts the tasks of a stopped connector.
    pub async fn resume(&self) {
        let _serial = self.lifecycle.lock().await;
        let was = self.target();
        self.set_target(TargetState::Started);
        if was == TargetState::Stopped {
            for t in &self.tasks {
                t.start().await;
            }
        }
        info!("Resuming connector {}", self.name());
    }

    /// `PUT /connectors/{name}/stop`: tasks shut down (committing what was delivered).
    pub async fn stop(&self, timeout: std::time::Duration) {
        let _serial = self.lifecycle.lock().await;
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
    pub offsets: Arc<dyn OffsetBackingStore>,
    pub started: Instant,
}

impl Worker {
    /// Creates every connector and starts its tasks (Connect: `Created connector <name>`).
    pub async fn start(
        loaded: Loaded,
        cluster_id: String,
        plugins: &Plugins,
        offsets: Arc<dyn OffsetBackingStore>,
    ) -> anyhow::Result<Arc<Worker>> {
        let config = Arc::new(loaded.worker);
        let mut connectors = Vec::new();
        for c in loaded.connectors {
            let c = Arc::new(c);
            let plugin = plugins.find(&c)?;
            info!("Creating connector {} of type {}", c.name, c.class);
            plugin
                .validate(&config, &c)
                .with_context(|| format!("Failed to create connector {}", c.name))?;
            let plan = plugin
                .plan(ConnectorContext {
                    worker: config.clone(),
                    connector: c.clone(),
                    offsets: offsets.clone(),
                })
                .await?;
            let kind = plugin.task_kind();
            let tasks: Vec<Arc<TaskHandle>> = plan
                .into_iter()
                .enumerate()
                .map(|(i, p)| {
                    TaskHandle::new(config.clone(), c.clone(), offsets.clone(), i, p, kind)
                })
                .collect();
            for t in &tasks {
                info!("Creating task {}", t.id);
                t.start().await;
            }
            info!("Created connector {}", c.name);
            connectors.push(Arc::new(ConnectorRuntime {
                config: c,
                tasks,
                plugin,
                target: Mutex::new(TargetState::Started),
                lifecycle: tokio::sync::Mutex::new(()),
            }));
        }
        Ok(Arc::new(Worker {
            config,
            cluster_id,
            connectors,
            offsets,
            started: Instant::now(),
        }))
    }

    pub fn connector(&self, name: &str) -> Option<&Arc<ConnectorRuntime>> {
        self.connectors.iter().find(|c| c.name() == name)
    }

    /// Why the worker is not ready beyond its tasks (today: a failing offset store).
    pub fn problems(&self) -> Vec<String> {
        self.offsets
            .health()
            .map(|why| format!("offset store: {why}"))
            .into_iter()
            .collect()
    }

    /// Stops every task within `task.shutdown.graceful.timeout.ms` in total, as Connect does.
    /// `Err` lists what did not end cleanly: a task whose final run failed (e.g. its final commit)
    /// or an offset store whose last write failed; the process then exits non-zero.
    pub async fn stop(&self) -> Result<(), Vec<String>> {
        let deadline = tokio::time::Instant::now() + self.config.task_shutdown_graceful_timeout;
        let mut stops = Vec::new();
        for c in &self.connectors {
            for t in &c.tasks {
                let t = t.clone();
                stops.push(tokio::spawn(async move {
                    let failed = t.stop(deadline).await;
                    (t.id.clone(), failed)
                }));
            }
        }
        let mut problems = Vec::new();
        for s in stops {
            if let Ok((id, Some(trace))) = s.await {
                problems.push(format!("task {id} failed while stopping: {trace}"));
            }
        }
        for c in &self.connectors {
            info!("Stopping connector {}", c.name());
        }
        if let Some(why) = self.offsets.health() {
            problems.push(format!(
                "the final offset commit did not reach the offset store ({why})"
            ));
        }
        for p in &problems {
            error!("{p}");
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }
}

#[cfg(test)]
#[path = "runtime_tests.rs"]
mod tests;
