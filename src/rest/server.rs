//! Kafka Connect's REST API (kafka-connect.md §8), on the worker's `listeners`.
//!
//! Paths and JSON shapes are Connect's, so existing ops scripts keep working. Connector configs are
//! shown with secret keys as `[hidden]` and provider references as written. Standalone keeps configs in
//! its files, so the config-changing calls of distributed mode (POST/PUT/DELETE connectors) answer 405.

use super::metrics::METRICS;
use super::offsets::SinkOffsetClients;
use crate::config::connector::{SINK_CLASS, SOURCE_CLASS};
use crate::config::ConnectorKind;
use crate::worker::logging;
use crate::worker::runtime::{ConnectorRuntime, Worker};
use crate::worker::task::{TargetState, TaskState};
use axum::extract::{Path, Query, RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::sync::Arc;

/// Builds the router for a running worker.
pub fn router(worker: Arc<Worker>) -> Router {
    Router::new()
        .route("/", get(root))
        .route("/health", get(health))
        .route("/healthz", get(|| async { (StatusCode::OK, "ok\n") }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/connectors", get(connectors).post(not_in_standalone))
        .route(
            "/connectors/{name}",
            get(connector_info).delete(not_in_standalone),
        )
        .route(
            "/connectors/{name}/config",
            get(connector_config).put(not_in_standalone),
        )
        .route("/connectors/{name}/status", get(connector_status))
        .route("/connectors/{name}/tasks", get(connector_tasks))
        .route("/connectors/{name}/tasks/{task}/status", get(task_status))
        .route(
            "/connectors/{name}/tasks/{task}/restart",
            post(task_restart),
        )
        .route("/connectors/{name}/restart", post(connector_restart))
        .route("/connectors/{name}/pause", put(connector_pause))
        .route("/connectors/{name}/resume", put(connector_resume))
        .route("/connectors/{name}/stop", put(connector_stop))
        .route("/connectors/{name}/offsets", get(connector_offsets))
        .route("/connector-plugins", get(plugins))
        .route("/admin/loggers", get(loggers))
        .route("/admin/loggers/{logger}", get(logger).put(set_logger))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "HTTP 404 Not Found") })
        .method_not_allowed_fallback(|| async {
            error(
                StatusCode::METHOD_NOT_ALLOWED,
                "HTTP 405 Method Not Allowed",
            )
        })
        .layer(Extension(Arc::new(SinkOffsetClients::default())))
        .with_state(worker)
}

/// Connect's error body: `{"error_code":N,"message":"…"}`.
pub fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({"error_code": status.as_u16(), "message": message.into()})),
    )
        .into_response()
}

fn not_found(name: &str) -> Response {
    error(StatusCode::NOT_FOUND, format!("Connector {name} not found"))
}

#[allow(clippy::result_large_err)]
fn find<'a>(w: &'a Worker, name: &str) -> Result<&'a Arc<ConnectorRuntime>, Response> {
    w.connector(name).ok_or_else(|| not_found(name))
}

async fn root(State(w): State<Arc<Worker>>) -> Json<Value> {
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "commit": option_env!("IOTCONNECT_GIT_COMMIT").unwrap_or("unknown"),
        "kafka_cluster_id": w.cluster_id,
    }))
}

async fn health() -> Json<Value> {
    Json(
        json!({"status": "healthy", "message": "Worker has completed startup and is ready to handle requests."}),
    )
}

/// 200 only when every task of every started connector is RUNNING with its links attached.
async fn readyz(State(w): State<Arc<Worker>>) -> Response {
    let mut not_ready = w.problems();
    for c in &w.connectors {
        if c.target() == TargetState::Stopped {
            continue;
        }
        for t in &c.tasks {
            let state = t.state();
            if !matches!(state, TaskState::Running | TaskState::Paused) || !t.health.links_up() {
                let stalled = t.health.stalled();
                not_ready.push(format!(
                    "{} {} links_up={}{}",
                    t.id,
                    state.name(),
                    t.health.links_up(),
                    if stalled.is_empty() {
                        String::new()
                    } else {
                        format!(" stalled_partitions={}", stalled.join(","))
                    }
                ));
            }
        }
    }
    if not_ready.is_empty() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", not_ready.join(", ")),
        )
            .into_response()
    }
}

async fn metrics(State(w): State<Arc<Worker>>) -> Response {
    for c in &w.connectors {
        for t in &c.tasks {
            let running = matches!(t.state(), TaskState::Running);
            let labels = super::metrics::task_labels(c.name(), t.task_id);
            METRICS
                .task_running
                .get_or_create(&labels)
                .set(running as i64);
            METRICS.declare_task(&labels, c.config.kind == ConnectorKind::Sink);
        }
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        METRICS.render(),
    )
        .into_response()
}

async fn not_in_standalone() -> Response {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        "iotconnect runs connectors from the files given on its command line: edit the file and restart the service",
    )
}

fn config_json(c: &ConnectorRuntime) -> Map<String, Value> {
    c.config
        .file
        .masked()
        .into_iter()
        .map(|(k, v)| (k, Value::String(v)))
        .collect()
}

fn info_json(c: &ConnectorRuntime) -> Value {
    let tasks: Vec<Value> = if c.target() == TargetState::Stopped {
        vec![]
    } else {
        c.tasks
            .iter()
            .map(|t| json!({"connector": c.name(), "task": t.task_id}))
            .collect()
    };
    json!({"name": c.name(), "config": config_json(c), "tasks": tasks, "type": c.config.kind.as_str()})
}

fn task_status_json(
    w: &Worker,
    c: &ConnectorRuntime,
    t: &crate::worker::task::TaskHandle,
) -> Value {
    let state = t.state();
    let mut v = json!({"id": t.task_id, "state": state.name(), "worker_id": w.config.worker_id});
    if let TaskState::Failed(trace) = state {
        v["trace"] = Value::String(trace);
    }
    let _ = c;
    v
}

fn status_json(w: &Worker, c: &ConnectorRuntime) -> Value {
    let tasks: Vec<Value> = if c.target() == TargetState::Stopped {
        vec![]
    } else {
        c.tasks.iter().map(|t| task_status_json(w, c, t)).collect()
    };
    json!({
        "name": c.name(),
        "connector": {"state": c.state_name(), "worker_id": w.config.worker_id},
        "tasks": tasks,
        "type": c.config.kind.as_str(),
    })
}

async fn connectors(State(w): State<Arc<Worker>>, RawQuery(q): RawQuery) -> Json<Value> {
    let expand: Vec<String> = q
        .unwrap_or_default()
        .split('&')
        .filter_map(|kv| kv.strip_prefix("expand=").map(str::to_string))
        .collect();
    if expand.is_empty() {
        return Json(json!(w
            .connectors
            .iter()
            .map(|c| c.name())
            .collect::<Vec<_>>()));
    }
    let mut out = Map::new();
    for c in &w.connectors {
        let mut entry = Map::new();
        if expand.iter().any(|e| e == "status") {
            entry.insert("status".into(), status_json(&w, c));
        }
        if expand.iter().any(|e| e == "info") {
            entry.insert("info".into(), info_json(c));
        }
        out.insert(c.name().to_string(), Value::Object(entry));
    }
    Json(Value::Object(out))
}

async fn connector_info(State(w): State<Arc<Worker>>, Path(name): Path<String>) -> Response {
    match find(&w, &name) {
        Ok(c) => Json(info_json(c)).into_response(),
        Err(r) => r,
    }
}

async fn connector_config(State(w): State<Arc<Worker>>, Path(name): Path<String>) -> Response {
    match find(&w, &name) {
        Ok(c) => Json(Value::Object(config_json(c))).into_response(),
        Err(r) => r,
    }
}

async fn connector_status(State(w): State<Arc<Worker>>, Path(name): Path<String>) -> Response {
    match find(&w, &name) {
        Ok(c) => Json(status_json(&w, c)).into_response(),
        Err(r) => r,
    }
}

async fn connector_tasks(State(w): State<Arc<Worker>>, Path(name): Path<String>) -> Response {
    match find(&w, &name) {
        Ok(c) => Json(json!(c
            .tasks
            .iter()
            .map(|t| json!({"id": {"connector": c.name(), "task": t.task_id}, "config": t.config}))
            .collect::<Vec<_>>()))
        .into_response(),
        Err(r) => r,
    }
}

async fn task_status(
    State(w): State<Arc<Worker>>,
    Path((name, task)): Path<(String, usize)>,
) -> Response {
    let c = match find(&w, &name) {
        Ok(c) => c,
        Err(r) => return r,
    };
    match c.tasks.get(task) {
        Some(t) => Json(task_status_json(&w, c, t)).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            format!("Task {name}-{task} not found"),
        ),
    }
}

async fn task_restart(
    State(w): State<Arc<Worker>>,
    Path((name, task)): Path<(String, usize)>,
) -> Response {
    let c = match find(&w, &name) {
        Ok(c) => c,
        Err(r) => return r,
    };
    match c.tasks.get(task) {
        Some(t) => {
            t.restart(w.config.task_shutdown_graceful_timeout).await;
            StatusCode::NO_CONTENT.into_response()
        }
        None => error(
            StatusCode::NOT_FOUND,
            format!("Task {name}-{task} not found"),
        ),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RestartParams {
    #[serde(default)]
    include_tasks: bool,
    #[serde(default)]
    only_failed: bool,
}

async fn connector_restart(
    State(w): State<Arc<Worker>>,
    Path(name): Path<String>,
    Query(p): Query<RestartParams>,
) -> Response {
    let c = match w.connector(&name) {
        Some(c) => c.clone(),
        None => return error(StatusCode::NOT_FOUND, format!("Unknown connector: {name}")),
    };
    if !p.include_tasks {
        // The connector object itself has no state of its own to restart in iotconnect.
        return StatusCode::NO_CONTENT.into_response();
    }
    let targets: Vec<_> = c
        .tasks
        .iter()
        .filter(|t| !p.only_failed || matches!(t.state(), TaskState::Failed(_)))
        .cloned()
        .collect();
    let mut body = status_json(&w, &c);
    if let Some(tasks) = body["tasks"].as_array_mut() {
        for t in tasks.iter_mut() {
            if targets
                .iter()
                .any(|x| Some(x.task_id as u64) == t["id"].as_u64())
            {
                t["state"] = Value::String("RESTARTING".into());
            }
        }
    }
    body["connector"]["state"] = Value::String("RESTARTING".into());
    let timeout = w.config.task_shutdown_graceful_timeout;
    tokio::spawn(async move {
        for t in targets {
            t.restart(timeout).await;
        }
    });
    (StatusCode::ACCEPTED, Json(body)).into_response()
}

async fn connector_pause(State(w): State<Arc<Worker>>, Path(name): Path<String>) -> Response {
    match find(&w, &name) {
        Ok(c) => {
            c.pause().await;
            StatusCode::ACCEPTED.into_response()
        }
        Err(r) => r,
    }
}

async fn connector_resume(State(w): State<Arc<Worker>>, Path(name): Path<String>) -> Response {
    match find(&w, &name) {
        Ok(c) => {
            c.resume().await;
            StatusCode::ACCEPTED.into_response()
        }
        Err(r) => r,
    }
}

async fn connector_stop(State(w): State<Arc<Worker>>, Path(name): Path<String>) -> Response {
    match find(&w, &name) {
        Ok(c) => {
            c.stop(w.config.task_shutdown_graceful_timeout).await;
            StatusCode::NO_CONTENT.into_response()
        }
        Err(r) => r,
    }
}

async fn connector_offsets(
    State(w): State<Arc<Worker>>,
    Extension(clients): Extension<Arc<SinkOffsetClients>>,
    Path(name): Path<String>,
) -> Response {
    let c = match find(&w, &name) {
        Ok(c) => c.clone(),
        Err(r) => return r,
    };
    let result = match c.config.kind {
        ConnectorKind::Source => super::offsets::source_offsets(&w, &c.config).await,
        ConnectorKind::Sink => super::offsets::sink_offsets(&w, &c.config, &clients).await,
    };
    match result {
        Ok(offsets) => Json(json!({"offsets": offsets})).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")),
    }
}

async fn plugins() -> Json<Value> {
    let v = env!("CARGO_PKG_VERSION");
    Json(json!([
        {"class": SINK_CLASS, "type": "sink", "version": v},
        {"class": SOURCE_CLASS, "type": "source", "version": v},
    ]))
}

/// log4j level names ↔ tracing levels.
fn to_log4j(level: &str) -> String {
    match level.to_ascii_lowercase().as_str() {
        "trace" => "TRACE",
        "debug" => "DEBUG",
        "info" => "INFO",
        "warn" => "WARN",
        "error" => "ERROR",
        "off" => "OFF",
        _ => "INFO",
    }
    .to_string()
}

/// The loggers of the current filter: `root` (the default directive) plus one per target directive.
fn logger_levels() -> Vec<(String, String)> {
    let spec = logging::current_filter();
    let mut out = vec![("root".to_string(), "INFO".to_string())];
    for d in spec.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        match d.split_once('=') {
            Some((target, level)) => out.push((target.to_string(), to_log4j(level))),
            None => out[0].1 = to_log4j(d),
        }
    }
    out
}

async fn loggers() -> Json<Value> {
    let mut m = Map::new();
    for (name, level) in logger_levels() {
        m.insert(name, json!({"level": level, "last_modified": null}));
    }
    Json(Value::Object(m))
}

async fn logger(Path(name): Path<String>) -> Response {
    match logger_levels().into_iter().find(|(n, _)| *n == name) {
        Some((_, level)) => Json(json!({"level": level, "last_modified": null})).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("Logger {name} not found.")),
    }
}

#[derive(Deserialize)]
struct LevelBody {
    level: String,
}

async fn set_logger(Path(name): Path<String>, Json(body): Json<LevelBody>) -> Response {
    let level = match body.level.to_ascii_uppercase().as_str() {
        "TRACE" | "DEBUG" | "INFO" | "WARN" | "ERROR" | "OFF" => body.level.to_ascii_lowercase(),
        "FATAL" => "error".to_string(),
        other => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("Invalid log level '{other}'."),
            )
        }
    };
    if name.contains([',', '=', ' ']) {
        return error(
            StatusCode::BAD_REQUEST,
            format!("Invalid logger name '{name}'."),
        );
    }
    let mut directives: Vec<(String, String)> = logger_levels()
        .into_iter()
        .map(|(n, l)| (n, l.to_ascii_lowercase()))
        .filter(|(n, _)| *n != name)
        .collect();
    directives.push((name.clone(), level));
    let spec: Vec<String> = directives
        .iter()
        .map(|(n, l)| {
            if n == "root" {
                l.clone()
            } else {
                format!("{n}={l}")
            }
        })
        .collect();
    match logging::set_filter(&spec.join(",")) {
        Ok(()) => Json(json!([name])).into_response(),
        Err(e) => error(StatusCode::BAD_REQUEST, e),
    }
}
