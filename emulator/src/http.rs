//! Device HTTP API (IoT Hub's device REST paths) and the emulator's control endpoints.

use super::c2d::C2dMessage;
use super::hub::Hub;
use super::store::{PropValue, TelemetryProps};
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
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
    let unauthorized = |why: String| {
        Box::new(error(
            StatusCode::UNAUTHORIZED,
            "IotHubUnauthorizedAccess",
            why,
        ))
    };
    let (path, _) = hub.verifier.verify_iothub(value).map_err(unauthorized)?;
    if !(path.is_empty() || path == format!("devices/{}", device.to_ascii_lowercase())) {
        return Err(unauthorized(
            "the token's audience does not cover this device".into(),
        ));
    }
    Ok(())
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

/// Largest `events` of one `/emulator/generate` request, and most `devices`.
const MAX_GENERATE_EVENTS: u64 = 1_000_000;
const MAX_GENERATE_DEVICES: u32 = 1_000_000;

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

fn bad_request(message: impl Into<String>) -> Response {
    error(StatusCode::BAD_REQUEST, "ArgumentInvalid", message)
}

/// A JSON body, or 400 naming what is wrong (any malformed body is the client's error).
fn json_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Box<Response>> {
    serde_json::from_slice(body)
        .map_err(|e| Box::new(bad_request(format!("invalid request body: {e}"))))
}

async fn generate(State(s): State<HttpState>, body: Bytes) -> Response {
    let req: GenerateReq = match json_body(&body) {
        Ok(r) => r,
        Err(r) => return *r,
    };
    if req.events > MAX_GENERATE_EVENTS || req.devices > MAX_GENERATE_DEVICES {
        return bad_request(format!(
            "at most {MAX_GENERATE_EVENTS} events and {MAX_GENERATE_DEVICES} devices per request"
        ));
    }
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

/// Every C2D message with its body: with auth on, only for a service token (`Authorization`).
async fn c2d(State(s): State<HttpState>, headers: HeaderMap) -> Response {
    if !s.hub.no_auth {
        let token = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if let Err(e) = s.hub.verifier.verify_iothub_service(token) {
            return error(
                StatusCode::UNAUTHORIZED,
                "IotHubUnauthorizedAccess",
                format!("/emulator/c2d needs an IoT Hub service token in Authorization: {e}"),
            );
        }
    }
    Json(s.hub.c2d.messages()).into_response()
}

/// A partition id as Event Hubs names them (`"0"`), or a number.
#[derive(Deserialize)]
#[serde(untagged)]
enum PartitionId {
    Text(String),
    Number(u64),
}

impl PartitionId {
    fn get(&self) -> Result<u32, String> {
        match self {
            PartitionId::Text(t) => t.trim().parse::<u32>().ok(),
            PartitionId::Number(n) => u32::try_from(*n).ok(),
        }
        .ok_or_else(|| "a partition id is a non-negative integer such as \"0\"".to_string())
    }
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FaultReq {
    #[serde(default)]
    drop_connections: bool,
    refuse_tokens_seconds: Option<f64>,
    server_busy_seconds: Option<f64>,
    throttle_c2d_seconds: Option<f64>,
    freeze_partition: Option<PartitionId>,
    freeze_seconds: Option<f64>,
    freeze_scope: Option<super::hub::FreezeScope>,
    delay_partition: Option<PartitionId>,
    delay_ms: Option<f64>,
    delay_seconds: Option<f64>,
}

/// Seconds as a duration: finite, not negative, within [`super::hub::MAX_FAULT_DURATION`].
fn seconds(field: &str, x: f64) -> Result<Duration, String> {
    if !x.is_finite() || x < 0.0 {
        return Err(format!("{field} must be a finite number of seconds >= 0"));
    }
    Duration::try_from_secs_f64(x)
        .ok()
        .filter(|d| *d <= super::hub::MAX_FAULT_DURATION)
        .ok_or_else(|| {
            format!(
                "{field} must be at most {} seconds",
                super::hub::MAX_FAULT_DURATION.as_secs()
            )
        })
}

/// Applies every fault of the request, after checking all of them (all or nothing).
fn apply_faults(hub: &Hub, req: FaultReq) -> Result<(), String> {
    let opt = |field: &str, x: Option<f64>| x.map(|x| seconds(field, x)).transpose();
    let refuse = opt("refuseTokensSeconds", req.refuse_tokens_seconds)?;
    let busy = opt("serverBusySeconds", req.server_busy_seconds)?;
    let throttle = opt("throttleC2dSeconds", req.throttle_c2d_seconds)?;
    let freeze = match (req.freeze_partition, req.freeze_seconds) {
        (Some(p), Some(t)) => Some((
            p.get()?,
            seconds("freezeSeconds", t)?,
            req.freeze_scope
                .unwrap_or(super::hub::FreezeScope::Partition),
        )),
        (None, None) if req.freeze_scope.is_none() => None,
        _ => return Err("freezePartition and freezeSeconds go together".into()),
    };
    let delay = match (req.delay_partition, req.delay_ms, req.delay_seconds) {
        (Some(p), Some(ms), Some(t)) => Some((
            p.get()?,
            seconds("delayMs", ms / 1000.0)?,
            seconds("delaySeconds", t)?,
        )),
        (None, None, None) => None,
        _ => return Err("delayPartition, delayMs and delaySeconds go together".into()),
    };
    for p in [freeze.map(|f| f.0), delay.map(|d| d.0)]
        .into_iter()
        .flatten()
    {
        if p as usize >= hub.partitions.len() {
            return Err(format!(
                "no partition {p} (the hub has {})",
                hub.partitions.len()
            ));
        }
    }
    if let Some(d) = refuse {
        hub.refuse_tokens_for(d)?;
    }
    if let Some(d) = busy {
        hub.server_busy_for(d)?;
    }
    if let Some(d) = throttle {
        hub.c2d.throttle_for(d)?;
    }
    if let Some((p, d, scope)) = freeze {
        hub.freeze_partition(p, d, scope)?;
    }
    if let Some((p, delay, d)) = delay {
        hub.delay_partition(p, delay, d)?;
    }
    if req.drop_connections {
        hub.drop_connections.send_modify(|n| *n += 1);
    }
    Ok(())
}

async fn faults(State(s): State<HttpState>, body: Bytes) -> Response {
    let req: FaultReq = match json_body(&body) {
        Ok(r) => r,
        Err(r) => return *r,
    };
    match apply_faults(&s.hub, req) {
        Ok(()) => Json(serde_json::json!({"ok": true})).into_response(),
        Err(e) => bad_request(e),
    }
}

#[cfg(test)]
#[path = "http_props.rs"]
mod props;
