//! Property test: the HTTP API on arbitrary method, path, headers and body never answers 500 and
//! never panics (requests go through the real router, in memory).

use super::*;
use crate::auth::Verifier;
use crate::hub::HubConfig;
use crate::sas::{self, KeyUse};
use crate::Secret;
use axum::body::Body;
use axum::http::{Method, Request};
use proptest::prelude::*;
use tower::ServiceExt;

const KEY: &str = "c2VjcmV0a2V5";
const HOST: &str = "127.0.0.1:5671";

fn state() -> HttpState {
    let hub = Arc::new(Hub::new(HubConfig {
        hub_name: "myhub".into(),
        eh_host: HOST.into(),
        iothub_host: HOST.into(),
        consumer_groups: vec!["$Default".into()],
        partitions: 2,
        retention: 100,
        verifier: Verifier {
            key_name: "service".into(),
            key: Secret::new(KEY),
            iothub_hosts: vec![HOST.into()],
        },
        no_auth: false,
        devices: None,
        c2d_rate_limit: None,
    }));
    HttpState {
        hub,
        // Counting only: this test is about the HTTP layer, not the payload pool.
        generate: Arc::new(|n, _, _| n),
    }
}

fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("devices".to_string()),
        Just("messages".to_string()),
        Just("events".to_string()),
        Just("deviceBound".to_string()),
        Just("devicebound".to_string()),
        Just("abandon".to_string()),
        Just("emulator".to_string()),
        Just("faults".to_string()),
        Just("generate".to_string()),
        Just("stats".to_string()),
        Just("c2d".to_string()),
        "[a-zA-Z0-9%._~-]{0,12}",
    ]
}

/// A query string, or none.
fn query() -> impl Strategy<Value = String> {
    prop::option::of("[a-z=&?%0-9-]{0,12}")
        .prop_map(|q| q.map(|q| format!("?{q}")).unwrap_or_default())
}

/// Mostly the API's own routes (with arbitrary ids), sometimes arbitrary segments.
fn path() -> impl Strategy<Value = String> {
    let id = "[a-zA-Z0-9%._~-]{0,12}";
    let known = prop_oneof![
        Just("/emulator/faults".to_string()),
        Just("/emulator/generate".to_string()),
        Just("/emulator/stats".to_string()),
        Just("/emulator/c2d".to_string()),
        id.prop_map(|d| format!("/devices/{d}/messages/events")),
        id.prop_map(|d| format!("/devices/{d}/messages/deviceBound")),
        (id, id).prop_map(|(d, e)| format!("/devices/{d}/messages/devicebound/{e}")),
        (id, id).prop_map(|(d, e)| format!("/devices/{d}/messages/deviceBound/{e}/abandon")),
    ];
    let random =
        prop::collection::vec(segment(), 0..6).prop_map(|segs| format!("/{}", segs.join("/")));
    (prop_oneof![4 => known, 1 => random], query()).prop_map(|(p, q)| p + &q)
}

fn number() -> impl Strategy<Value = serde_json::Value> {
    prop_oneof![
        (-5i64..5).prop_map(serde_json::Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f)
            .map_or(serde_json::Value::Null, serde_json::Value::Number)),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<u64>().prop_map(|n| serde_json::Value::from(n.saturating_add(2_000_000))),
        Just(serde_json::Value::String("NaN".into())),
        "[0-9a-z-]{0,3}".prop_map(serde_json::Value::String),
    ]
}

fn object(keys: &'static [&'static str]) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec((prop::sample::select(keys), number()), 0..4).prop_map(|kv| {
        let m: serde_json::Map<String, serde_json::Value> =
            kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        serde_json::to_vec(&m).unwrap()
    })
}

const FAULT_KEYS: &[&str] = &[
    "dropConnections",
    "refuseTokensSeconds",
    "serverBusySeconds",
    "throttleC2dSeconds",
    "freezePartition",
    "freezeSeconds",
    "freezeScope",
    "delayPartition",
    "delayMs",
    "delaySeconds",
];
const GENERATE_KEYS: &[&str] = &["events", "size", "devices"];
const ANY_KEYS: &[&str] = &["freezeSeconds", "delayMs", "events", "devices", "other"];

/// JSON objects with the fault keys, the generate keys, or a mix, and awkward values.
fn json_body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => object(FAULT_KEYS),
        2 => object(GENERATE_KEYS),
        1 => object(ANY_KEYS),
    ]
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        6 => json_body(),
        1 => prop::collection::vec(any::<u8>(), 0..64),
        1 => Just(br#"{"freezePartition":"0","freezeSeconds":0.01,"freezeScope":"links"}"#.to_vec()),
        1 => Just(br#"{"events":3,"size":10,"devices":2}"#.to_vec()),
    ]
}

fn auth() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        Just(None),
        Just(Some(
            sas::sign(HOST, Some("service"), KEY, KeyUse::Base64, sas::now() + 600).unwrap()
        )),
        ".{0,40}".prop_map(Some),
        "SharedAccessSignature [a-z=&%0-9]{0,40}".prop_map(Some),
    ]
}

fn method() -> impl Strategy<Value = Method> {
    prop_oneof![
        3 => Just(Method::GET),
        6 => Just(Method::POST),
        2 => Just(Method::DELETE),
        1 => Just(Method::PUT),
        1 => Just(Method::PATCH),
        1 => Just(Method::HEAD),
        1 => Just(Method::OPTIONS),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]
    #[test]
    fn never_500_never_panics(m in method(), p in path(), b in body(), a in auth()) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let status = rt.block_on(async {
            let app = router(state());
            let mut req = Request::builder().method(m.clone()).uri(p.as_str());
            if let Some(a) = &a {
                if let Ok(v) = HeaderValue::from_str(a) {
                    req = req.header("authorization", v);
                }
            }
            // A path the URI parser refuses never reaches a server: nothing to check.
            let Ok(req) = req.header("content-type", "application/json").body(Body::from(b.clone())) else {
                return axum::http::StatusCode::OK;
            };
            app.oneshot(req).await.unwrap().status()
        });
        prop_assert!(status.as_u16() < 500, "{m} {p} {:?} -> {status}", String::from_utf8_lossy(&b));
    }
}
