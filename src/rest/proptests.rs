//! Property test of the REST server as a client sees it: arbitrary methods, paths, headers and
//! bodies sent as raw HTTP/1.1 to the real router and guard on a loopback listener. The server
//! must answer every request (never a dropped connection from a panic) and never with a 5xx.

use crate::config::rest::BasicAuth;
use crate::config::{properties::Properties, LoadedFile, Secret, WorkerConfig};
use crate::worker::runtime::Worker;
use proptest::prelude::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// A worker without connectors, served with Basic authentication on, on its own runtime.
fn server() -> SocketAddr {
    static ADDR: OnceLock<SocketAddr> = OnceLock::new();
    *ADDR.get_or_init(|| {
        let mut p = Properties::new();
        for (k, v) in [
            ("key.converter", crate::config::STRING_CONVERTER),
            ("value.converter", crate::config::STRING_CONVERTER),
            (
                "offset.storage.file.filename",
                "/nonexistent/iotconnect-proptest.offsets",
            ),
            ("access.control.allow.origin", "http://allowed.example"),
        ] {
            p.insert(k.into(), v.into());
        }
        let file = LoadedFile {
            path: "w.properties".into(),
            raw: p.clone(),
            resolved: p,
        };
        let mut config = WorkerConfig::from_file(&file).expect("valid worker config");
        config.rest.basic_auth = Some(BasicAuth {
            jaas_file: "j".into(),
            credentials_file: "c".into(),
            users: [("admin".to_string(), Secret::new("pw"))].into(),
        });
        let config = Arc::new(config);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let dir = tempfile::tempdir().unwrap();
                let offsets =
                    crate::offsets::FileOffsetBackingStore::open(&dir.path().join("o")).unwrap();
                let worker = Arc::new(Worker {
                    config,
                    cluster_id: "test".into(),
                    connectors: Vec::new(),
                    offsets,
                    started: Instant::now(),
                });
                let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send(l.local_addr().unwrap()).unwrap();
                axum::serve(l, super::app(worker)).await.unwrap();
            });
        });
        rx.recv().unwrap()
    })
}

/// Sends raw bytes and returns the status code of the answer (None: no parsable answer). With
/// `half_close` the client closes its side after sending (for incomplete requests; the server then
/// may close without answering).
fn send_raw(raw: &[u8], half_close: bool) -> Option<u16> {
    let mut s = TcpStream::connect(server()).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    s.write_all(raw).ok()?;
    if half_close {
        let _ = s.shutdown(std::net::Shutdown::Write);
    }
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out);
    text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

fn send(raw: &[u8]) -> Option<u16> {
    send_raw(raw, false)
}

fn method() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"
        ])
        .prop_map(str::to_string),
        "[A-Z]{1,10}",
    ]
}

fn path() -> impl Strategy<Value = String> {
    let seg = prop_oneof![
        prop::sample::select(vec![
            "connectors",
            "status",
            "tasks",
            "0",
            "restart",
            "pause",
            "resume",
            "stop",
            "offsets",
            "config",
            "admin",
            "loggers",
            "connector-plugins",
            "metrics",
            "readyz",
            "healthz",
            "health",
            "%2F",
            "..",
            "x?expand=status&expand=info",
            "%00",
            "99999999999999999999",
        ])
        .prop_map(str::to_string),
        "[a-zA-Z0-9%._~-]{0,12}",
    ];
    prop::collection::vec(seg, 0..6).prop_map(|s| format!("/{}", s.join("/")))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn any_request_gets_an_answer_and_never_a_5xx(
        method in method(),
        path in path(),
        auth in prop_oneof![
            Just(None),
            Just(Some("YWRtaW46cHc=".to_string())),
            Just(Some("YWRtaW46eA==".to_string())),
            "[A-Za-z0-9+/=]{0,20}".prop_map(Some),
        ],
        origin in prop::option::of(prop::sample::select(vec!["http://allowed.example", "http://evil.example"])),
        body in prop::collection::vec(any::<u8>(), 0..300),
        json in prop::bool::ANY,
    ) {
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
        if let Some(a) = auth {
            req.push_str(&format!("Authorization: Basic {a}\r\n"));
        }
        if let Some(o) = origin {
            req.push_str(&format!("Origin: {o}\r\n"));
        }
        if json {
            req.push_str("Content-Type: application/json\r\n");
        }
        req.push_str("\r\n");
        let mut raw = req.into_bytes();
        raw.extend_from_slice(&body);
        let code = send(&raw);
        prop_assert!(code.is_some(), "no answer to {} {}", method, path);
        let code = code.unwrap();
        prop_assert!(code < 500, "{} {} answered {}", method, path, code);
    }

    /// Arbitrary bytes as a request: the server answers 4xx or closes, and keeps serving.
    #[test]
    fn garbage_requests_do_not_hurt_the_server(raw in prop::collection::vec(any::<u8>(), 0..400)) {
        if let Some(code) = send_raw(&raw, true) {
            prop_assert!(code < 500, "answered {}", code);
        }
        prop_assert_eq!(send(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"), Some(200));
    }
}

#[test]
fn guard_answers_with_connects_shapes() {
    let get = |extra: &str| {
        let mut s = TcpStream::connect(server()).unwrap();
        s.write_all(
            format!("GET /connectors HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{extra}\r\n")
                .as_bytes(),
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    };
    let r = get("");
    assert!(r.starts_with("HTTP/1.1 401"), "{r}");
    assert!(
        r.ends_with(r#"{"error_code":401,"message":"User cannot access the resource."}"#),
        "{r}"
    );
    let r = get("Authorization: Basic YWRtaW46cHc=\r\n");
    assert!(r.starts_with("HTTP/1.1 200") && r.ends_with("[]"), "{r}");
    let r = get("Authorization: Basic YWRtaW46cHc=\r\nOrigin: http://evil.example\r\n");
    assert!(r.starts_with("HTTP/1.1 403"), "{r}");
    let r = get("Authorization: Basic YWRtaW46cHc=\r\nOrigin: http://allowed.example\r\n");
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert!(r
        .to_ascii_lowercase()
        .contains("access-control-allow-origin: http://allowed.example"));
    let big = format!(
        "Authorization: Basic YWRtaW46cHc=\r\nContent-Length: {}\r\n",
        2 * super::security::MAX_BODY_BYTES
    );
    let r = get(&big);
    assert!(r.starts_with("HTTP/1.1 413"), "{r}");
    assert_eq!(
        send(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        Some(200)
    );
}
