//! Device HTTP API (IoT Hub's device REST paths) and the emulator's control endpoints.

use super::c2d::C2dMessage;
use super::hub::Hub;
use super::store::{PropValue, TelemetryProps};
use axum::body::Bytes;
use axum::extract::{Path, Query, RawQuery, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone)]
pub(crate) struct HttpState {
    pub hub: Arc<Hub>,
    pub generate: Arc<dyn Fn(u64, usize, u32) -> u64 + Send + Sync>,
}

pub(crate) fn router(state: HttpState) -> Router {
    Router::new()
        .route("/devices/{id}/messages/events", post(device_event))
        .route("/devices/{id}/messages/deviceBound", get(device_receive))
        .route("/devices/{id}/messages/devicebound", get(device_receive))
        .route(
            "/devices/{id}/messages/deviceBound/{etag}",
            delete(device_settle),
        )
        .route(
            "/devices/{id}/messages/devicebound/{etag}",
            delete(device_settle),
        )
        .route(
            "/devices/{id}/messages/deviceBound/{etag}/abandon",
            post(device_abandon),
        )
        .route(
            "/devices/{id}/messages/devicebound/{etag}/abandon",
            post(device_abandon),
        )
        .route("/emulator/generate", post(generate))
        .route("/emulator/stats", get(stats))
        .route("/emulator/c2d", get(c2d))
        .route("/emulator/faults", post(faults))
        .with_state(state)
}

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    let body = serde_json::json!({
        "Message": format!("ErrorCode:{code};{}", message.into()),
        "ExceptionMessage": "",
    });
    (status, Json(body)).into_response()
}

/// Verifies the `Authorization` header: an IoT Hub SAS token signed with the hub's service policy
/// key (the emulator has no per-device keys), `sr` = the hub host or `<host>/devices/<id>`.
fn authorize(hub: &Hub, headers: &HeaderMap, device: &str) -> Result<(), Box<Response>> {
    if hub.no_auth {
        return Ok(());
    }
    let Some(value) = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return Err(Box::new(error(
            StatusCode::UNAUTHORIZED,
            "IotHubUnauthorizedAccess",
            "Authorization header missing (start the emulator with --no-auth to skip)",
        )));
    };
    let parsed = crate::iothub::sas::parse_token(value).map_err(|e| {
        error(
            StatusCode::UNAUTHORIZED,
            "IotHubUnauthorizedAccess",
            e.to_string(),
        )
    })?;
    let (host, path) = super::auth::split_resource(&parsed.resource);
    let path_ok = path.is_empty() || path == format!("devices/{}", device.to_ascii_lowercase());
    if !path_ok || !hub.verifier.iothub_hosts.contains(&host) {
        return Err(Box::new(error(
            StatusCode::UNAUTHORIZED,
            "IotHubUnauthorizedAccess",
            "the token's audience does not cover this device",
        )));
    }
    hub.verifier
        .verify_iothub_service(value)
        .map(|_| ())
        .map_err(|e| {
            Box::new(error(
                StatusCode::UNAUTHORIZED,
                "IotHubUnauthorizedAccess",
                e,
            ))
        })
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

async fn device_event(
    State(s): State<HttpState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = authorize(&s.hub, &headers, &id) {
        return *r;
    }
    if body.len() > 256 * 1024 {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "MessageTooLarge",
            "device-to-cloud messages are limited to 256 KB",
        );
    }
    let mut props = TelemetryProps {
        message_id: header(&headers, "iothub-messageid"),
        correlation_id: header(&headers, "iothub-correlationid"),
        content_type: header(&headers, "iothub-contenttype"),
        content_encoding: header(&headers, "iothub-contentencoding"),
        app: Vec::new(),
    };
    for (k, v) in headers.iter() {
        if let Some(name) = k.as_str().strip_prefix("iothub-app-") {
            if let Ok(v) = v.to_str() {
                props
                    .app
                    .push((name.to_string(), PropValue::String(v.to_string())));
            }
        }
    }
    let (p, off, seq) = s.hub.send_telemetry(&id, Some(props), body);
    tracing::debug!(device = %id, partition = p, offset = %off, seq, "telemetry via HTTP");
    StatusCode::NO_CONTENT.into_response()
}

fn iso(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

fn c2d_response(m: &C2dMessage) -> Response {
    let mut h = HeaderMap::new();
    let mut put = |k: &str, v: String| {
        if let (Ok(k), Ok(v)) = (HeaderName::try_from(k), HeaderValue::from_str(&v)) {
            h.insert(k, v);
        }
    };
    if let Some(id) = &m.message_id {
        put("iothub-messageid", id.clone());
    }
    if let Some(id) = &m.correlation_id {
        put("iothub-correlationid", id.clone());
    }
    if let Some(u) = &m.user_id {
        put("iothub-userid", u.clone());
    }
    put("iothub-to", m.to.clone());
    if let Some(e) = m.expiry_ms {
        put("iothub-expiry", iso(e));
    }
    put(
        "iothub-ack",
        serde_json::to_value(m.ack)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default(),
    );
    put("iothub-deliverycount", m.delivery_count.to_string());
    put("iothub-enqueuedtime", iso(m.enqueued_ms));
    put("iothub-sequencenumber", m.seq.to_string());
    if let Some(ct) = &m.content_type {
        put("content-type", ct.clone());
    }
    if let Some(ce) = &m.content_encoding {
        put("content-encoding", ce.clone());
    }
    for (k, v) in &m.properties {
        let v = match v {
            PropValue::String(s) => s.clone(),
            PropValue::Bool(b) => b.to_string(),
            PropValue::Long(n) => n.to_string(),
            PropValue::Double(d) => d.to_string(),
        };
        put(&format!("iothub-app-{k}"), v);
    }
    put("etag", format!("\"{}\"", m.etag().unwrap_or_default()));
    (StatusCode::OK, h, m.raw_body.clone()).into_response()
}

async fn device_receive(
    State(s): State<HttpState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = authorize(&s.hub, &headers, &id) {
        return *r;
    }
    match s.hub.c2d.receive(&id) {
        Some(m) => c2d_response(&m),
        None => StatusCode::NO_CONTENT.into_response(),
    }
}

fn lock_lost() -> Response {
    error(
        StatusCode::PRECONDITION_FAILED,
        "DeviceMessageLockLost",
        "412002 the message lock token is unknown or its lock expired",
    )
}

async fn device_settle(
    State(s): State<HttpState>,
    Path((id, etag)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = authorize(&s.hub, &headers, &id) {
        return *r;
    }
    let reject = query
        .unwrap_or_default()
        .split('&')
        .any(|kv| kv == "reject" || kv.starts_with("reject="));
    if s.hub.c2d.settle(&id, &etag, reject) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        lock_lost()
    }
}

async fn device_abandon(
    State(s): State<HttpState>,
    Path((id, etag)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = authorize(&s.hub, &headers, &id) {
        return *r;
    }
    if s.hub.c2d.abandon(&id, &etag) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        lock_lost()
    }
}

#[derive(Deserialize)]
struct GenerateReq {
    events: u64,
    #[serde(default = "default_size")]
    size: usize,
    #[serde(default = "default_devices")]
    devices: u32,
}

fn default_size() -> usize {
    1024
}

fn default_devices() -> u32 {
    16
}

async fn generate(State(s): State<HttpState>, Json(req): Json<GenerateReq>) -> Response {
    let g = s.generate.clone();
    let started = std::time::Instant::now();
    let res = tokio::task::spawn_blocking(move || g(req.events, req.size, req.devices)).await;
    match res {
        Ok(n) => Json(serde_json::json!({
            "events": n,
            "seconds": started.elapsed().as_secs_f64(),
        }))
        .into_response(),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            e.to_string(),
        ),
    }
}

async fn stats(State(s): State<HttpState>) -> Response {
    Json(s.hub.stats()).into_response()
}

async fn c2d(State(s): State<HttpState>, Query(_q): Query<Vec<(String, String)>>) -> Response {
    Json(s.hub.c2d.messages()).into_response()
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct FaultReq {
    #[serde(default)]
    drop_connections: bool,
    refuse_tokens_seconds: Option<f64>,
    server_busy_seconds: Option<f64>,
    throttle_c2d_seconds: Option<f64>,
}

async fn faults(State(s): State<HttpState>, Json(req): Json<FaultReq>) -> Response {
    let secs = |x: f64| Duration::from_secs_f64(x.max(0.0));
    if let Some(t) = req.refuse_tokens_seconds {
        s.hub.refuse_tokens_for(secs(t));
    }
    if let Some(t) = req.server_busy_seconds {
        s.hub.server_busy_for(secs(t));
    }
    if let Some(t) = req.throttle_c2d_seconds {
        s.hub.c2d.throttle_for(secs(t));
    }
    if req.drop_connections {
        s.hub.drop_connections.send_modify(|n| *n += 1);
    }
    Json(serde_json::json!({"ok": true})).into_response()
}
