//! What every REST request passes before it reaches a handler, in this order:
//!
//! 1. **Origin** (Connect's `access.control.allow.origin` / `access.control.allow.methods`): a request
//!    that carries an `Origin` header (a browser's cross-origin request) is refused with 403 unless the
//!    origin is allowed, so a web page cannot drive the API (CSRF). Allowed origins get
//!    `Access-Control-Allow-Origin`; preflights (`OPTIONS` + `Access-Control-Request-Method`) are
//!    answered here. Requests without `Origin` (curl, scripts, `iotconnect status`) are unaffected.
//! 2. **Basic authentication** (Connect's `BasicAuthSecurityRestExtension`): every path except
//!    `/healthz` and `/readyz` (probes) needs a user of the credentials file; otherwise 401 with
//!    Connect's message `User cannot access the resource.` in Connect's JSON error shape.
//! 3. **Body size**: at most [`MAX_BODY_BYTES`]; a larger body is refused with 413 before it is read
//!    in full.
//!
//! Invariant: no response or log line repeats a password or an `Authorization` header.

use super::server::error;
use crate::config::rest::{BasicAuth, RestSecurity};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use std::sync::Arc;

/// Largest request body accepted (1 MiB): Connect's bodies are small JSON configs.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Connect's `JaasBasicAuthFilter` message.
pub const UNAUTHORIZED: &str = "User cannot access the resource.";

/// Paths that answer without credentials (liveness and readiness probes).
const OPEN_PATHS: &[&str] = &["/healthz", "/readyz"];

/// The guard's settings, shared by every listener.
#[derive(Debug, Default)]
pub struct Guard {
    pub security: RestSecurity,
}

impl Guard {
    pub fn new(security: RestSecurity) -> Arc<Guard> {
        Arc::new(Guard { security })
    }

    fn origin_allowed(&self, origin: &str) -> bool {
        self.security
            .allowed_origins
            .iter()
            .any(|o| o == "*" || o == origin || glob(o, origin))
    }

    fn method_allowed(&self, method: &str) -> bool {
        self.security
            .allowed_methods
            .iter()
            .any(|m| m.eq_ignore_ascii_case(method))
    }
}

/// `https://*.example.com` style patterns, as Jetty's CrossOriginFilter accepts.
fn glob(pattern: &str, origin: &str) -> bool {
    match pattern.split_once('*') {
        Some((pre, post)) => {
            origin.len() >= pre.len() + post.len()
                && origin.starts_with(pre)
                && origin.ends_with(post)
        }
        None => false,
    }
}

/// Compares without an early exit, so the time taken does not tell how much of a password matched.
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for (i, x) in a.iter().enumerate() {
        diff |= usize::from(x ^ b.get(i).copied().unwrap_or(!x));
    }
    diff == 0
}

/// The user of a valid `Authorization: Basic …` header, if any.
pub fn authenticate(auth: &BasicAuth, header: Option<&HeaderValue>) -> Option<String> {
    let value = header?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    let expected = auth.users.get(user)?;
    same_bytes(expected.expose().as_bytes(), password.as_bytes()).then(|| user.to_string())
}

/// The middleware (see the module documentation for the order of checks).
pub async fn guard(State(g): State<Arc<Guard>>, req: Request, next: Next) -> Response {
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .map(|o| String::from_utf8_lossy(o.as_bytes()).into_owned());
    if let Some(origin) = &origin {
        if !g.origin_allowed(origin) {
            return error(
                StatusCode::FORBIDDEN,
                format!("Cross-origin request from {} refused: the origin is not in access.control.allow.origin", shorten(origin)),
            );
        }
        let preflight = req
            .headers()
            .get(header::ACCESS_CONTROL_REQUEST_METHOD)
            .map(|m| String::from_utf8_lossy(m.as_bytes()).into_owned());
        if req.method() == Method::OPTIONS {
            if let Some(m) = preflight {
                if !g.method_allowed(&m) {
                    return error(
                        StatusCode::FORBIDDEN,
                        format!(
                            "Cross-origin {} requests are not in access.control.allow.methods",
                            shorten(&m)
                        ),
                    );
                }
                return preflight_answer(&g, origin);
            }
        }
        if !g.method_allowed(req.method().as_str()) {
            return error(
                StatusCode::FORBIDDEN,
                format!(
                    "Cross-origin {} requests are not in access.control.allow.methods",
                    req.method()
                ),
            );
        }
    }
    if let Some(auth) = &g.security.basic_auth {
        if !OPEN_PATHS.contains(&req.uri().path())
            && authenticate(auth, req.headers().get(header::AUTHORIZATION)).is_none()
        {
            tracing::debug!("Request failed authentication");
            let mut r = error(StatusCode::UNAUTHORIZED, UNAUTHORIZED);
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"KafkaConnect\""),
            );
            return r;
        }
    }
    let req = match bounded(req).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    let mut resp = next.run(req).await;
    if let Some(origin) = origin {
        if let Ok(v) = HeaderValue::from_str(&origin) {
            resp.headers_mut()
                .insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
            resp.headers_mut()
                .insert(header::VARY, HeaderValue::from_static("Origin"));
        }
    }
    resp
}

fn too_large() -> Response {
    error(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("Request body larger than {MAX_BODY_BYTES} bytes"),
    )
}

/// Reads the body up to [`MAX_BODY_BYTES`] (refusing a larger declared length without reading it).
#[allow(clippy::result_large_err)]
async fn bounded(req: Request) -> Result<Request, Response> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(too_large());
    }
    let (parts, body) = req.into_parts();
    match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
        Ok(bytes) => Ok(Request::from_parts(parts, Body::from(bytes))),
        Err(_) => Err(too_large()),
    }
}

fn preflight_answer(g: &Guard, origin: &str) -> Response {
    let mut r = StatusCode::NO_CONTENT.into_response();
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(origin) {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
    }
    if let Ok(v) = HeaderValue::from_str(&g.security.allowed_methods.join(",")) {
        h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, v);
    }
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("X-Requested-With,Content-Type,Accept,Origin,Authorization"),
    );
    h.insert(header::VARY, HeaderValue::from_static("Origin"));
    r
}

/// Keeps echoed header text short and printable.
fn shorten(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    fn auth() -> BasicAuth {
        BasicAuth {
            jaas_file: "j".into(),
            credentials_file: "c".into(),
            users: [("admin".to_string(), Secret::new("pa:ss"))].into(),
        }
    }

    fn basic(user_pass: &str) -> HeaderValue {
        let enc = base64::engine::general_purpose::STANDARD.encode(user_pass);
        HeaderValue::from_str(&format!("Basic {enc}")).unwrap()
    }

    #[test]
    fn basic_credentials_are_checked_exactly() {
        let a = auth();
        assert_eq!(
            authenticate(&a, Some(&basic("admin:pa:ss"))).as_deref(),
            Some("admin")
        );
        assert_eq!(authenticate(&a, Some(&basic("admin:pa:s"))), None);
        assert_eq!(authenticate(&a, Some(&basic("admin:pa:sss"))), None);
        assert_eq!(authenticate(&a, Some(&basic("other:pa:ss"))), None);
        assert_eq!(authenticate(&a, Some(&basic("admin"))), None);
        assert_eq!(
            authenticate(&a, Some(&HeaderValue::from_static("Bearer x"))),
            None
        );
        assert_eq!(
            authenticate(&a, Some(&HeaderValue::from_static("Basic %%%"))),
            None
        );
        assert_eq!(authenticate(&a, None), None);
    }

    #[test]
    fn origins_and_methods() {
        let g = Guard {
            security: RestSecurity {
                basic_auth: None,
                allowed_origins: vec![
                    "https://ops.example.com".into(),
                    "https://*.corp.example".into(),
                ],
                allowed_methods: vec!["GET".into()],
            },
        };
        assert!(g.origin_allowed("https://ops.example.com"));
        assert!(g.origin_allowed("https://a.corp.example"));
        assert!(!g.origin_allowed("https://evil.example.com"));
        assert!(!g.origin_allowed("https://ops.example.com.evil"));
        assert!(g.method_allowed("get") && !g.method_allowed("PUT"));
        assert!(!Guard::default().origin_allowed("http://localhost"));
    }
}
