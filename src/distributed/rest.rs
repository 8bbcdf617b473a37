//! The REST API of a distributed worker: Connect's read-only paths, status from the status topic (so
//! every worker shows every task and the worker running it), `/metrics`, `/healthz`, `/readyz`.
//! Configuration changes come from the files given on the command line: Connect's config-changing
//! calls answer 405 with Connect's error JSON.

use super::group::Owned;
use super::status;
use crate::rest::metrics::METRICS;
use crate::worker::runtime::Worker;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::{Json, Router};
use rdkafka::ClientConfig;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One source connector as the REST API shows it.
pub struct SourceView {
    pub name: String,
    pub config: BTreeMap<String, String>,
    pub partitions: usize,
    pub owned: Arc<Owned>,
}

pub struct Api {
    pub worker_id: String,
    pub cluster_id: String,
    pub consumer_base: ClientConfig,
    pub status_topic: String,
    pub sources: Vec<SourceView>,
    /// Sink connectors run by the standalone runtime on every worker.
    pub sinks: Option<Arc<Worker>>,
    /// Why this worker is not ready (refused configuration, group not joined yet…); None = ready.
    pub not_ready: Mutex<Option<String>>,
}

impl Api {
    /// One line for systemd's STATUS=, e.g. `source iot: hub partitions [0, 2] of 4; sinks: 1 connector(s), 1/1 task(s) running`.
    pub fn summary(&self) -> String {
        let mut parts: Vec<String> = self
            .sources
            .iter()
            .map(|s| {
                let owned = s.owned.indexes.lock().unwrap().clone();
                format!(
                    "source {}: hub partitions {owned:?} of {}",
                    s.name, s.partitions
                )
            })
            .collect();
        if let Some(w) = &self.sinks {
            parts.push(format!("sinks: {}", crate::worker::systemd::summary(w)));
        }
        if let Some(why) = self.not_ready.lock().unwrap().as_deref() {
            parts.push(format!("not ready: {why}"));
        }
        if parts.is_empty() {
            return "no connectors".to_string();
        }
        parts.join("; ")
    }
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({"error_code": status.as_u16(), "message": message.into()})),
    )
        .into_response()
}

pub fn router(api: Arc<Api>) -> Router {
    Router::new()
        .route("/", get(root))
        .route("/healthz", get(|| async { (StatusCode::OK, "ok\n") }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/connectors", get(connectors).post(read_only))
        .route("/connectors/{name}", get(connector).delete(read_only))
        .route("/connectors/{name}/config", get(config).put(read_only))
        .route("/connectors/{name}/status", get(connector_status))
        .route("/connectors/{name}/restart", any(read_only))
        .route("/connectors/{name}/pause", any(read_only))
        .route("/connectors/{name}/resume", any(read_only))
        .route("/connectors/{name}/stop", any(read_only))
        .with_state(api)
}

async fn root(State(a): State<Arc<Api>>) -> Response {
    Json(json!({"version": env!("CARGO_PKG_VERSION"), "commit": "iotconnect", "kafka_cluster_id": a.cluster_id})).into_response()
}

async fn read_only() -> Response {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        "iotconnect's distributed mode takes connector configurations from the files on its command line; \
         change the files on every worker and restart them (config-changing REST calls are not supported)",
    )
}

async fn readyz(State(a): State<Arc<Api>>) -> Response {
    match a.not_ready.lock().unwrap().clone() {
        None => (StatusCode::OK, "ready\n").into_response(),
        Some(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        )
            .into_response(),
    }
}

async fn metrics() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        METRICS.render(),
    )
        .into_response()
}

fn names(a: &Api) -> Vec<String> {
    let mut n: Vec<String> = a.sources.iter().map(|s| s.name.clone()).collect();
    if let Some(w) = &a.sinks {
        n.extend(w.connectors.iter().map(|c| c.name().to_string()));
    }
    n
}

async fn connectors(State(a): State<Arc<Api>>) -> Response {
    Json(names(&a)).into_response()
}

async fn connector(State(a): State<Arc<Api>>, Path(name): Path<String>) -> Response {
    if let Some(s) = a.sources.iter().find(|s| s.name == name) {
        let tasks: Vec<_> = (0..s.partitions)
            .map(|i| json!({"connector": name, "task": i}))
            .collect();
        return Json(json!({"name": name, "config": s.config, "tasks": tasks, "type": "source"}))
            .into_response();
    }
    if let Some(c) = a.sinks.as_ref().and_then(|w| w.connector(&name)) {
        let tasks: Vec<_> = (0..c.tasks.len())
            .map(|i| json!({"connector": name, "task": i}))
            .collect();
        return Json(
            json!({"name": name, "config": c.config.file.masked(), "tasks": tasks, "type": "sink"}),
        )
        .into_response();
    }
    not_found(&name)
}

fn not_found(name: &str) -> Response {
    error(StatusCode::NOT_FOUND, format!("Connector {name} not found"))
}

async fn config(State(a): State<Arc<Api>>, Path(name): Path<String>) -> Response {
    if let Some(s) = a.sources.iter().find(|s| s.name == name) {
        return Json(s.config.clone()).into_response();
    }
    if let Some(c) = a.sinks.as_ref().and_then(|w| w.connector(&name)) {
        return Json(c.config.file.masked()).into_response();
    }
    not_found(&name)
}

async fn connector_status(State(a): State<Arc<Api>>, Path(name): Path<String>) -> Response {
    if let Some(s) = a.sources.iter().find(|s| s.name == name) {
        let base = a.consumer_base.clone();
        let topic = a.status_topic.clone();
        let entries = tokio::task::spawn_blocking(move || {
            status::read_all(&base, &topic, Duration::from_secs(10))
        })
        .await;
        return match entries {
            Ok(Ok(e)) => {
                Json(status::connector_status(&name, s.partitions as i32, &e)).into_response()
            }
            Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")),
            Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        };
    }
    if let Some(c) = a.sinks.as_ref().and_then(|w| w.connector(&name)) {
        // The sink's tasks run on every worker (one consumer group): this worker's view.
        let tasks: Vec<_> = c
            .tasks
            .iter()
            .map(|t| json!({"id": t.task_id, "state": t.state().name(), "worker_id": a.worker_id}))
            .collect();
        return Json(json!({
            "name": name,
            "connector": {"state": c.state_name(), "worker_id": a.worker_id},
            "tasks": tasks,
            "type": "sink",
        }))
        .into_response();
    }
    not_found(&name)
}
