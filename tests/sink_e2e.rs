//! The IoT Hub sink end to end: the `iotconnect` binary (standalone) between a real broker and the
//! in-process IoT Hub emulator; the device side is read through the emulator's device API.

use crate::support;

use iotconnect_emulator::{Emulator, EmulatorOptions};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use support::*;

const TUTORIAL: &str = r#"{"messageId":"msg1","message":"Turn On","deviceId":"myDeviceId"}"#;
const ASSIGNED: &str = "Partitions assigned";

/// A broker, an emulator on its own runtime and a temp dir for the property files.
struct Env {
    rt: tokio::runtime::Runtime,
    emu: Option<Emulator>,
    dir: tempfile::TempDir,
    bootstrap: String,
}

impl Env {
    fn new(opts: EmulatorOptions) -> Env {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let emu = rt.block_on(Emulator::start(opts)).expect("emulator starts");
        Env {
            rt,
            emu: Some(emu),
            dir: tempfile::tempdir().unwrap(),
            bootstrap: broker().bootstrap.clone(),
        }
    }

    fn emu(&self) -> &Emulator {
        self.emu.as_ref().unwrap()
    }

    /// A new topic with a unique name starting with `prefix`.
    fn topic(&self, prefix: &str, partitions: i32) -> String {
        let topic = unique(prefix);
        create_topic(&self.bootstrap, &topic, partitions);
        topic
    }

    fn worker_file(&self, extra: &str) -> PathBuf {
        self.worker_file_port(extra).0
    }

    /// The worker file and its REST port.
    fn worker_file_port(&self, extra: &str) -> (PathBuf, u16) {
        let port = free_port();
        let path = write_file(
            self.dir.path(),
            "worker.properties",
            &format!(
                "bootstrap.servers={}\n\
                 key.converter=org.apache.kafka.connect.storage.StringConverter\n\
                 value.converter=org.apache.kafka.connect.storage.StringConverter\n\
                 offset.storage.file.filename={}/connect.offsets\n\
                 offset.flush.interval.ms=500\n\
                 consumer.session.timeout.ms=6000\n\
                 consumer.heartbeat.interval.ms=1000\n\
                 listeners=http://127.0.0.1:{}\n{extra}",
                self.bootstrap,
                self.dir.path().display(),
                port
            ),
        );
        (path, port)
    }

    /// A REST call to the worker: (status, body as JSON or Null).
    fn rest(&self, method: &str, port: u16, path: &str) -> (u16, serde_json::Value) {
        self.rt.block_on(async {
            let url = format!("http://127.0.0.1:{port}{path}");
            let c = reqwest::Client::new();
            let req = match method {
                "PUT" => c.put(&url),
                _ => c.get(&url),
            };
            let r = req.send().await.expect("REST call");
            let status = r.status().as_u16();
            let body = r.json().await.unwrap_or(serde_json::Value::Null);
            (status, body)
        })
    }

    /// A sink connector file `<name>.properties` reading `topic`.
    fn sink_file(&self, name: &str, topic: &str, extra: &str) -> PathBuf {
        let info = self.emu().info();
        write_file(
            self.dir.path(),
            &format!("{name}.properties"),
            &format!(
                "name={name}\n\
                 connector.class=com.microsoft.azure.iot.kafka.connect.sink.IotHubSinkConnector\n\
                 tasks.max=1\n\
                 topics={topic}\n\
                 IotHub.ConnectionString={}\n\
                 IotHub.CustomEndpoint={}\n{extra}",
                info.service_connection_string.expose(),
                info.amqp_endpoint
            ),
        )
    }

    fn start(&self, worker: &Path, connectors: &[PathBuf]) -> Process {
        let mut args = vec!["standalone".to_string(), worker.display().to_string()];
        args.extend(connectors.iter().map(|c| c.display().to_string()));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        Process::spawn(&refs, &[])
    }

    /// Messages the hub holds for `device`, in arrival order.
    fn device_messages(&self, device: &str) -> Vec<iotconnect_emulator::c2d::C2dMessage> {
        self.emu()
            .c2d_messages()
            .into_iter()
            .filter(|m| m.device_id == device)
            .collect()
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Some(e) = self.emu.take() {
            self.rt.block_on(e.shutdown());
        }
    }
}

fn json(device: &str, id: &str, msg: &str) -> String {
    format!(r#"{{"messageId":"{id}","message":"{msg}","deviceId":"{device}"}}"#)
}

fn produce_strings(bootstrap: &str, topic: &str, values: &[String]) {
    let recs: Vec<(Option<&str>, &[u8])> = values.iter().map(|v| (None, v.as_bytes())).collect();
    produce(bootstrap, topic, &recs);
}

#[test]
fn tutorial_message_reaches_the_device_with_its_properties() {
    let env = Env::new(EmulatorOptions::default());
    let topic = env.topic("iotout", 1);
    produce(&env.bootstrap, &topic, &[(None, TUTORIAL.as_bytes())]);
    let name = unique("sink-tutorial");
    let w = env.worker_file("");
    let c = env.sink_file(
        &name,
        &topic,
        "IotHub.MessageDeliveryAcknowledgement=Full\n",
    );
    let mut p = env.start(&w, &[c]);
    wait_until(
        "the message reaches the hub",
        Duration::from_secs(30),
        || !env.device_messages("myDeviceId").is_empty(),
    );
    let m = &env.device_messages("myDeviceId")[0];
    assert_eq!(m.to, "/devices/myDeviceId/messages/devicebound");
    assert_eq!(m.message_id.as_deref(), Some("msg1"));
    assert_eq!(m.body, "Turn On");
    assert_eq!(format!("{:?}", m.ack), "Full");
    assert_eq!(m.expiry_ms, None);
    // the device receives it through the device API
    let got = env
        .emu()
        .device_receive("myDeviceId")
        .expect("device gets it");
    assert_eq!(got.body, "Turn On");
    // the offset is committed once accepted
    wait_until("offset committed", Duration::from_secs(15), || {
        committed_offsets(&env.bootstrap, &format!("connect-{name}"), &topic, 1) == vec![1]
    });
    assert_eq!(p.terminate(Duration::from_secs(30)), Some(0), "{}", p.log());
    let log = p.log();
    assert!(
        log.contains(&format!(
            "WorkerSinkTask{{id={name}-0}} Executing sink task"
        )),
        "{log}"
    );
    assert!(!log.contains("Turn On"), "payloads are not logged: {log}");
    assert!(!log.contains(env.emu().info().service_connection_string.expose()));
}

#[test]
fn every_input_form_and_both_expiry_spellings() {
    let env = Env::new(EmulatorOptions::default());
    let (t_str, t_struct, t_map) = (unique("in-str"), unique("in-struct"), unique("in-map"));
    for t in [&t_str, &t_struct, &t_map] {
        create_topic(&env.bootstrap, t, 1);
    }
    let future = "2099-01-19T19:25:50Z";
    let future_ms: i64 = 4_072_533_950_000;
    produce_strings(
        &env.bootstrap,
        &t_str,
        &[
            json("dev-str", "s1", "plain"),
            format!(
                r#"{{"messageId":"s2","message":"exp","deviceId":"dev-str","expiryTime":"{future}"}}"#
            ),
            r#"{"messageId":"s3","message":"exp2","deviceId":"dev-str","expiry":"2099-01-19T19:25:50.000Z"}"#.to_string(),
        ],
    );
    let schema = r#"{"type":"struct","name":"iothub.kafka.connect.cloud2device.message","fields":[{"field":"deviceId","type":"string"},{"field":"message","type":"string"},{"field":"messageId","type":"string"},{"field":"expiry","type":"string","optional":true}]}"#;
    produce_strings(
        &env.bootstrap,
        &t_struct,
        &[format!(
            r#"{{"schema":{schema},"payload":{{"deviceId":"dev-struct","message":"st","messageId":"t1","expiry":"{future}"}}}}"#
        )],
    );
    produce_strings(
        &env.bootstrap,
        &t_map,
        &[format!(
            r#"{{"deviceId":"dev-map","message":"mp","messageId":"m1","expiryTime":"{future}"}}"#
        )],
    );
    let w = env.worker_file("");
    let a = env.sink_file(&unique("sink-str"), &t_str, "");
    let b = env.sink_file(
        &unique("sink-struct"),
        &t_struct,
        "value.converter=org.apache.kafka.connect.json.JsonConverter\nvalue.converter.schemas.enable=true\n",
    );
    let c = env.sink_file(
        &unique("sink-map"),
        &t_map,
        "value.converter=org.apache.kafka.connect.json.JsonConverter\nvalue.converter.schemas.enable=false\n",
    );
    let mut p = env.start(&w, &[a, b, c]);
    wait_until("all five messages", Duration::from_secs(40), || {
        env.emu().c2d_messages().len() >= 5
    });
    let s = env.device_messages("dev-str");
    assert_eq!(
        s.iter().map(|m| m.body.as_str()).collect::<Vec<_>>(),
        ["plain", "exp", "exp2"]
    );
    assert_eq!(s[0].expiry_ms, None);
    assert_eq!(s[1].expiry_ms, Some(future_ms));
    assert_eq!(s[2].expiry_ms, Some(future_ms));
    let st = env.device_messages("dev-struct");
    assert_eq!(st[0].body, "st");
    assert_eq!(st[0].expiry_ms, Some(future_ms));
    let mp = env.device_messages("dev-map");
    assert_eq!(mp[0].body, "mp");
    assert_eq!(mp[0].expiry_ms, Some(future_ms));
    assert_eq!(p.terminate(Duration::from_secs(30)), Some(0), "{}", p.log());
}

#[test]
fn ack_modes_and_feedback_records() {
    let env = Env::new(EmulatorOptions::default());
    let (t_full, t_pos, t_neg, fb) = (
        unique("ack-full"),
        unique("ack-pos"),
        unique("ack-neg"),
        unique("feedback"),
    );
    for t in [&t_full, &t_pos, &t_neg, &fb] {
        create_topic(&env.bootstrap, t, 1);
    }
    produce_strings(
        &env.bootstrap,
        &t_full,
        &[json("dev-ok", "f-ok", "a"), json("dev-rej", "f-rej", "b")],
    );
    produce_strings(&env.bootstrap, &t_pos, &[json("dev-pos", "p1", "c")]);
    produce_strings(&env.bootstrap, &t_neg, &[json("dev-neg", "n1", "d")]);
    let w = env.worker_file("");
    let full = env.sink_file(
        &unique("sink-full"),
        &t_full,
        &format!("IotHub.MessageDeliveryAcknowledgement=Full\nIotHub.FeedbackTopic={fb}\n"),
    );
    let pos = env.sink_file(
        &unique("sink-pos"),
        &t_pos,
        "IotHub.MessageDeliveryAcknowledgement=PositiveOnly\n",
    );
    let neg = env.sink_file(
        &unique("sink-neg"),
        &t_neg,
        "IotHub.MessageDeliveryAcknowledgement=NegativeOnly\n",
    );
    let mut p = env.start(&w, &[full, pos, neg]);
    wait_until("four messages", Duration::from_secs(40), || {
        env.emu().c2d_messages().len() >= 4
    });
    assert_eq!(
        format!("{:?}", env.device_messages("dev-pos")[0].ack),
        "Positive"
    );
    assert_eq!(
        format!("{:?}", env.device_messages("dev-neg")[0].ack),
        "Negative"
    );
    // device side: complete one, reject the other
    let ok = env.emu().device_receive("dev-ok").unwrap();
    assert!(env.emu().device_settle("dev-ok", ok.etag().unwrap(), false));
    let rej = env.emu().device_receive("dev-rej").unwrap();
    assert!(env
        .emu()
        .device_settle("dev-rej", rej.etag().unwrap(), true));
    let recs = read_topic(&env.bootstrap, &fb, 2, Duration::from_secs(40));
    let mut by_id = HashMap::new();
    for r in &recs {
        let v: serde_json::Value = serde_json::from_slice(r.value.as_ref().unwrap()).unwrap();
        let key = String::from_utf8(r.key.clone().unwrap()).unwrap();
        assert_eq!(v["deviceId"].as_str(), Some(key.as_str()));
        by_id.insert(v["originalMessageId"].as_str().unwrap().to_string(), v);
    }
    assert_eq!(by_id["f-ok"]["statusCode"], "Success");
    assert_eq!(by_id["f-rej"]["statusCode"], "Rejected");
    assert_eq!(p.terminate(Duration::from_secs(30)), Some(0), "{}", p.log());
}

#[test]
fn expired_record_is_a_record_error_and_future_expiry_is_sent() {
    let env = Env::new(EmulatorOptions::default());
    let topic = env.topic("expiry", 1);
    let dlq = env.topic("expiry-dlq", 1);
    produce_strings(
        &env.bootstrap,
        &topic,
        &[
            r#"{"messageId":"old","message":"x","deviceId":"dev-e","expiryTime":"2017-01-19T19:25:50Z"}"#.to_string(),
            r#"{"messageId":"new","message":"y","deviceId":"dev-e","expiryTime":"2099-01-19T19:25:50.5Z"}"#.to_string(),
        ],
    );
    let name = unique("sink-expiry");
    let w = env.worker_file("");
    let c = env.sink_file(
        &name,
        &topic,
        &format!("errors.tolerance=all\nerrors.log.enable=true\nerrors.deadletterqueue.topic.name={dlq}\nerrors.deadletterqueue.context.headers.enable=true\n"),
    );
    let mut p = env.start(&w, &[c]);
    let d = read_topic(&env.bootstrap, &dlq, 1, Duration::from_secs(40));
    let h: HashMap<_, _> = d[0]
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), String::from_utf8(v.clone().unwrap()).unwrap()))
        .collect();
    assert_eq!(h["__connect.errors.stage"], "VALUE_CONVERTER");
    assert!(h["__connect.errors.exception.message"].contains("in the past"));
    wait_until("future message", Duration::from_secs(20), || {
        !env.device_messages("dev-e").is_empty()
    });
    let m = env.device_messages("dev-e");
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].message_id.as_deref(), Some("new"));
    assert_eq!(m[0].expiry_ms, Some(4_072_533_950_500));
    wait_until("both committed", Duration::from_secs(15), || {
        committed_offsets(&env.bootstrap, &format!("connect-{name}"), &topic, 1) == vec![2]
    });
    assert_eq!(p.terminate(Duration::from_secs(30)), Some(0), "{}", p.log());
    assert!(p.log().contains("Error encountered in task"), "{}", p.log());
}

#[test]
fn unknown_device_with_tolerance_none_fails_and_commits_nothing_past_it() {
    let env = Env::new(EmulatorOptions {
        devices: Some(vec!["known".into()]),
        ..Default::default()
    });
    let topic = env.topic("unknown-none", 1);
    produce_strings(
        &env.bootstrap,
        &topic,
        &[
            json("known", "k1", "a"),
            json("ghost", "g1", "b"),
            json("known", "k2", "c"),
        ],
    );
    let name = unique("sink-none");
    let w = env.worker_file("");
    let c = env.sink_file(&name, &topic, "IotHub.C2D.MaxInFlight=1\n");
    let mut p = env.start(&w, &[c]);
    p.wait_for_log("Task threw an uncaught", Duration::from_secs(40));
    let log = p.log();
    assert!(
        log.contains(&format!("topic {topic}, partition 0, offset 1")),
        "{log}"
    );
    assert!(log.contains("device_not_found"), "{log}");
    let committed = committed_offsets(&env.bootstrap, &format!("connect-{name}"), &topic, 1)[0];
    assert!(
        committed <= 1,
        "committed {committed}: nothing past the failed record"
    );
    assert_eq!(p.terminate(Duration::from_secs(30)), Some(0), "{}", p.log());
}

#[test]
fn unknown_device_with_tolerance_all_goes_to_the_dead_letter_queue() {
    let env = Env::new(EmulatorOptions {
        devices: Some(vec!["known".into()]),
        ..Default::default()
    });
    let topic = env.topic("unknown-all", 1);
    let dlq = env.topic("dlq", 1);
    let bad = json("ghost", "g1", "b");
    produce(
        &env.bootstrap,
        &topic,
        &[
            (None, json("known", "k1", "a").as_bytes()),
            (Some("the-key"), bad.as_bytes()),
            (None, json("known", "k2", "c").as_bytes()),
            (None, b"not json at all"),
        ],
    );
    let name = unique("sink-all");
    let w = env.worker_file("");
    let c = env.sink_file(
        &name,
        &topic,
        &format!("errors.tolerance=all\nerrors.deadletterqueue.topic.name={dlq}\nerrors.deadletterqueue.context.headers.enable=true\n"),
    );
    let mut p = env.start(&w, &[c]);
    let recs = read_topic(&env.bootstrap, &dlq, 2, Duration::from_secs(40));
    let ghost = recs
        .iter()
        .find(|r| r.value.as_deref() == Some(bad.as_bytes()))
        .expect("the unknown device's record is dead-lettered as it was");
    assert_eq!(ghost.key.as_deref(), Some(&b"the-key"[..]));
    let h: HashMap<_, _> = ghost
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), String::from_utf8(v.clone().unwrap()).unwrap()))
        .collect();
    assert_eq!(h["__connect.errors.topic"], topic);
    assert_eq!(h["__connect.errors.partition"], "0");
    assert_eq!(h["__connect.errors.offset"], "1");
    assert_eq!(h["__connect.errors.connector.name"], name);
    assert_eq!(h["__connect.errors.task.id"], "0");
    assert_eq!(h["__connect.errors.stage"], "TASK_PUT");
    assert!(h["__connect.errors.exception.message"].contains("device_not_found"));
    assert!(h.contains_key("__connect.errors.exception.class.name"));
    assert!(recs
        .iter()
        .any(|r| r.value.as_deref() == Some(&b"not json at all"[..])));
    wait_until("known device got both", Duration::from_secs(20), || {
        env.device_messages("known").len() == 2
    });
    wait_until("all four committed", Duration::from_secs(15), || {
        committed_offsets(&env.bootstrap, &format!("connect-{name}"), &topic, 1) == vec![4]
    });
    assert_eq!(p.terminate(Duration::from_secs(30)), Some(0), "{}", p.log());
}

/// Produces `n` messages round-robin over `devices` devices (`dev-<i>`), ids `<prefix>-<j>`.
fn produce_many(env: &Env, topic: &str, prefix: &str, n: usize, devices: usize) {
    let values: Vec<String> = (0..n)
        .map(|j| {
            json(
                &format!("dev-{}", j % devices),
                &format!("{prefix}-{j}"),
                "x",
            )
        })
        .collect();
    produce_strings(&env.bootstrap, topic, &values);
}

/// Distinct message ids with `prefix` the hub received, and the total count.
fn delivered(env: &Env, prefix: &str) -> (usize, usize) {
    let all: Vec<String> = env
        .emu()
        .c2d_messages()
        .into_iter()
        .filter_map(|m| m.message_id)
        .filter(|id| id.starts_with(prefix))
        .collect();
    let total = all.len();
    let mut set = all;
    set.sort();
    set.dedup();
    (set.len(), total)
}

#[test]
fn throttling_slows_down_and_loses_nothing() {
    let env = Env::new(EmulatorOptions {
        c2d_rate_limit: Some(100),
        ..Default::default()
    });
    let topic = env.topic("throttle", 2);
    produce_many(&env, &topic, "th", 400, 40);
    let w = env.worker_file("");
    let c = env.sink_file(&unique("sink-throttle"), &topic, "");
    let mut p = env.start(&w, &[c]);
    wait_until("all 400 delivered", Duration::from_secs(60), || {
        delivered(&env, "th-").0 == 400
    });
    assert!(
        env.emu().stats().c2d_refused > 0,
        "the hub throttled some sends"
    );
    // and an injected throttling period on top
    env.emu().faults().throttle_c2d(Duration::from_secs(1));
    produce_many(&env, &topic, "th2", 50, 10);
    wait_until("50 more delivered", Duration::from_secs(60), || {
        delivered(&env, "th2-").0 == 50
    });
    assert_eq!(p.terminate(Duration::from_secs(30)), Some(0), "{}", p.log());
}

#[test]
fn a_full_device_queue_does_not_block_other_devices() {
    let env = Env::new(EmulatorOptions::default());
    let topic = env.topic("fullq", 1);
    // 60 for "busy" (queue limit 50), then 30 for others
    let mut values: Vec<String> = (0..60)
        .map(|j| json("busy", &format!("b-{j}"), "x"))
        .collect();
    values.extend((0..30).map(|j| json(&format!("other-{}", j % 3), &format!("o-{j}"), "y")));
    produce_strings(&env.bootstrap, &topic, &values);
    let w = env.worker_file("");
    let c = env.sink_file(&unique("sink-fullq"), &topic, "");
    let mut p = env.start(&w, &[c]);
    wait_until(
        "others delivered while busy is full",
        Duration::from_secs(40),
        || delivered(&env, "o-").0 == 30 && delivered(&env, "b-").0 == 50,
    );
    assert_eq!(delivered(&env, "b-").0, 50, "busy's queue holds 50");
    // the device drains its queue: the rest follows
    for _ in 0..20 {
        let m = env.emu().device_receive("busy").unwrap();
        assert!(env.emu().device_settle("busy", m.etag().unwrap(), false));
    }
    wait_until(
        "busy gets the remaining 10",
        Duration::from_secs(40),
        || delivered(&env, "b-").0 == 60,
    );
    // per-device order held
    let ids: Vec<String> = env
        .device_messages("busy")
        .into_iter()
        .filter_map(|m| m.message_id)
        .collect();
    let expected: Vec<String> = (0..60).map(|j| format!("b-{j}")).collect();
    assert_eq!(ids, expected);
    assert_eq!(p.terminate(Duration::from_secs(30)), Some(0), "{}", p.log());
}

#[test]
fn dropped_connection_and_refused_tokens_lose_nothing() {
    let env = Env::new(EmulatorOptions::default());
    let topic = env.topic("drop", 2);
    let w = env.worker_file("");
    let c = env.sink_file(&unique("sink-drop"), &topic, "");
    let mut p = env.start(&w, &[c]);
    p.wait_for_log(ASSIGNED, Duration::from_secs(30));
    produce_many(&env, &topic, "d1", 300, 30);
    wait_until("some delivered", Duration::from_secs(30), || {
        delivered(&env, "d1-").0 >= 30
    });
    env.emu().faults().drop_connections();
    wait_until("all 300 after the drop", Duration::from_secs(60), || {
        delivered(&env, "d1-").0 == 300
    });
    // tokens refused for a while, connection dropped so the client must re-authenticate
    env.emu().faults().refuse_tokens(Duration::from_secs(3));
    env.emu().faults().drop_connections();
    produce_many(&env, &topic, "d2", 100, 20);
    wait_until("all 100 after the refusal", Duration::from_secs(60), || {
        delivered(&env, "d2-").0 == 100
    });
    let st = env.emu().stats();
    assert!(
        st.connections_opened >= 3,
        "reconnected twice: {}",
        st.connections_opened
    );
    assert!(st.tokens_refused >= 1, "a token was refused");
    assert_eq!(p.terminate(Duration::from_secs(30)), Some(0), "{}", p.log());
}

#[test]
fn killed_worker_loses_nothing_after_restart() {
    let env = Env::new(EmulatorOptions::default());
    let topic = env.topic("kill", 2);
    let n = 2000;
    produce_many(&env, &topic, "k", n, 100);
    let name = unique("sink-kill");
    let w = env.worker_file("");
    let c = env.sink_file(&name, &topic, "IotHub.C2D.MaxSendsPerSecond=400\n");
    let mut p = env.start(&w, std::slice::from_ref(&c));
    wait_until("some delivered", Duration::from_secs(40), || {
        delivered(&env, "k-").0 >= 300
    });
    p.signal(libc::SIGKILL);
    p.wait(Duration::from_secs(10));
    let (before, _) = delivered(&env, "k-");
    assert!(before < n, "killed mid-stream ({before} of {n})");
    let mut p2 = env.start(&w, &[c]);
    wait_until(
        "every record delivered after restart",
        Duration::from_secs(90),
        || delivered(&env, "k-").0 == n,
    );
    let (distinct, total) = delivered(&env, "k-");
    eprintln!(
        "kill -9: {distinct} distinct, {} duplicates",
        total - distinct
    );
    assert_eq!(distinct, n, "zero loss");
    wait_until("all committed", Duration::from_secs(20), || {
        committed_offsets(&env.bootstrap, &format!("connect-{name}"), &topic, 2)
            .iter()
            .sum::<i64>()
            == n as i64
    });
    assert_eq!(
        p2.terminate(Duration::from_secs(30)),
        Some(0),
        "{}",
        p2.log()
    );
}

#[test]
fn pause_stops_sending_and_resume_continues_without_loss() {
    let env = Env::new(EmulatorOptions::default());
    let topic = env.topic("pause", 2);
    let name = unique("sink-pause");
    let (w, port) = env.worker_file_port("");
    let c = env.sink_file(&name, &topic, "");
    let mut p = env.start(&w, &[c]);
    p.wait_for_log(ASSIGNED, Duration::from_secs(30));
    produce_many(&env, &topic, "pa", 50, 10);
    wait_until("first 50", Duration::from_secs(30), || {
        delivered(&env, "pa-").0 == 50
    });
    let (code, _) = env.rest("PUT", port, &format!("/connectors/{name}/pause"));
    assert_eq!(code, 202);
    p.wait_for_log("Pausing: partitions paused", Duration::from_secs(10));
    wait_until("status PAUSED", Duration::from_secs(10), || {
        let (_, s) = env.rest("GET", port, &format!("/connectors/{name}/status"));
        s["tasks"][0]["state"] == "PAUSED"
    });
    produce_many(&env, &topic, "pb", 50, 10);
    // an observation window: nothing may be sent while paused
    let until = std::time::Instant::now() + Duration::from_secs(3);
    while std::time::Instant::now() < until {
        assert_eq!(delivered(&env, "pb-").0, 0, "sent while paused");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (code, _) = env.rest("PUT", port, &format!("/connectors/{name}/resume"));
    assert_eq!(code, 202);
    wait_until("the other 50 after resume", Duration::from_secs(30), || {
        delivered(&env, "pb-").0 == 50
    });
    wait_until("all committed", Duration::from_secs(15), || {
        committed_offsets(&env.bootstrap, &format!("connect-{name}"), &topic, 2)
            .iter()
            .sum::<i64>()
            == 100
    });
    // GET /connectors/{name}/offsets: the consumer group's committed offsets, KIP-875 shape.
    let (code, offsets) = env.rest("GET", port, &format!("/connectors/{name}/offsets"));
    assert_eq!(code, 200);
    let list = offsets["offsets"].as_array().expect("offsets list");
    let total: i64 = list
        .iter()
        .map(|o| {
            assert_eq!(o["partition"]["kafka_topic"], topic.as_str());
            assert!(o["partition"]["kafka_partition"].is_i64());
            o["offset"]["kafka_offset"].as_i64().expect("kafka_offset")
        })
        .sum();
    assert_eq!(total, 100, "{offsets}");
    assert_eq!(p.terminate(Duration::from_secs(30)), Some(0), "{}", p.log());
}

#[test]
fn two_tasks_share_the_partitions_and_lose_nothing() {
    let env = Env::new(EmulatorOptions::default());
    let topic = env.topic("two", 4);
    produce_many(&env, &topic, "tw", 800, 40);
    let name = unique("sink-two");
    let w = env.worker_file("");
    let c = env.sink_file(&name, &topic, "").display().to_string();
    let text = std::fs::read_to_string(&c)
        .unwrap()
        .replace("tasks.max=1", "tasks.max=2");
    std::fs::write(&c, text).unwrap();
    let mut p = env.start(&w, &[PathBuf::from(&c)]);
    wait_until("all 800", Duration::from_secs(60), || {
        delivered(&env, "tw-").0 == 800
    });
    wait_until("all committed", Duration::from_secs(20), || {
        committed_offsets(&env.bootstrap, &format!("connect-{name}"), &topic, 4)
            .iter()
            .sum::<i64>()
            == 800
    });
    let log = p.log();
    assert!(
        log.contains(&format!("WorkerSinkTask{{id={name}-1}}")),
        "{log}"
    );
    assert_eq!(p.terminate(Duration::from_secs(30)), Some(0), "{}", p.log());
}

#[test]
fn retry_timeout_turns_a_persistently_full_queue_into_a_dead_letter() {
    let env = Env::new(EmulatorOptions::default());
    let topic = env.topic("retry", 1);
    let dlq = env.topic("retry-dlq", 1);
    let values: Vec<String> = (0..52)
        .map(|j| json("stuck", &format!("r-{j}"), "x"))
        .collect();
    produce_strings(&env.bootstrap, &topic, &values);
    let name = unique("sink-retry");
    let w = env.worker_file("");
    let c = env.sink_file(
        &name,
        &topic,
        &format!("errors.retry.timeout=1000\nerrors.tolerance=all\nerrors.deadletterqueue.topic.name={dlq}\nerrors.deadletterqueue.context.headers.enable=true\n"),
    );
    let mut p = env.start(&w, &[c]);
    let d = read_topic(&env.bootstrap, &dlq, 2, Duration::from_secs(60));
    for r in &d {
        let h: HashMap<_, _> = r
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), String::from_utf8(v.clone().unwrap()).unwrap()))
            .collect();
        assert!(
            h["__connect.errors.exception.message"].contains("device_queue_full"),
            "{h:?}"
        );
    }
    assert_eq!(delivered(&env, "r-").0, 50, "the queue holds 50");
    wait_until("all 52 committed", Duration::from_secs(15), || {
        committed_offsets(&env.bootstrap, &format!("connect-{name}"), &topic, 1) == vec![52]
    });
    assert_eq!(p.terminate(Duration::from_secs(30)), Some(0), "{}", p.log());
}

/// Issue 10.4: the hub is unreachable for longer than `max.poll.interval.ms`. The sink keeps its
/// group membership (partitions paused, polling on), then SIGTERM stops it within
/// `task.shutdown.graceful.timeout.ms` with a final commit of what finished; after the hub is
/// back and the worker restarted, every record reaches the hub.
#[test]
fn hub_outage_longer_than_max_poll_interval_then_sigterm() {
    let amqp_port = free_port();
    let key = EmulatorOptions::default().service_key;
    let hub_opts = || EmulatorOptions {
        amqp_listen: std::net::SocketAddr::from(([127, 0, 0, 1], amqp_port)),
        service_key: key.clone(),
        ..Default::default()
    };
    let mut env = Env::new(hub_opts());
    let topic = env.topic("outage", 1);
    let name = unique("sink-outage");
    let w = env.worker_file(
        "consumer.max.poll.interval.ms=7000\n\
         task.shutdown.graceful.timeout.ms=5000\n",
    );
    let c = env.sink_file(&name, &topic, "IotHub.C2D.MaxInFlight=2\n");
    let mut p = env.start(&w, std::slice::from_ref(&c));
    produce_many(&env, &topic, "o", 10, 5);
    wait_until("the first 10 delivered", Duration::from_secs(40), || {
        delivered(&env, "o-").0 == 10
    });
    wait_until("the first 10 committed", Duration::from_secs(20), || {
        committed_offsets(&env.bootstrap, &format!("connect-{name}"), &topic, 1) == vec![10]
    });
    let mut before: Vec<String> = env
        .emu()
        .c2d_messages()
        .into_iter()
        .filter_map(|m| m.message_id)
        .collect();

    // Outage: the hub goes away; 200 more records arrive (more than the sink's 32 in flight).
    let emu = env.emu.take().unwrap();
    env.rt.block_on(emu.shutdown());
    let values: Vec<String> = (10..210)
        .map(|j| json(&format!("dev-{}", j % 5), &format!("o-{j}"), "x"))
        .collect();
    produce_strings(&env.bootstrap, &topic, &values);
    p.wait_for_log(
        "(hub unreachable): partitions paused",
        Duration::from_secs(30),
    );
    // Keep the hub away for longer than max.poll.interval.ms (7 s), watching the group membership.
    let outage = std::time::Instant::now();
    while outage.elapsed() < Duration::from_secs(10) {
        let log = p.log();
        assert!(
            !log.contains("maximum poll interval"),
            "the consumer left the group during the outage:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        committed_offsets(&env.bootstrap, &format!("connect-{name}"), &topic, 1),
        vec![10],
        "nothing unsent is committed"
    );
    let lines_before_stop = p.lines.lock().unwrap().len();
    let t0 = std::time::Instant::now();
    p.signal(libc::SIGTERM);
    assert_eq!(p.wait(Duration::from_secs(20)), Some(0), "{}", p.log());
    let took = t0.elapsed();
    let log = p.log();
    let after: String = log
        .lines()
        .skip(lines_before_stop)
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        took < Duration::from_millis(6500),
        "stopped in {took:?}, graceful timeout 5 s:\n{after}"
    );
    assert!(!after.contains("Graceful stop of task"), "{after}");
    assert!(
        after.contains("Committing offsets synchronously")
            || after.contains("Stopping IotHubSink Task"),
        "{after}"
    );
    assert!(!log.contains("maximum poll interval"), "{log}");

    // The hub is back; a restarted worker delivers the rest; nothing is lost.
    env.emu = Some(env.rt.block_on(Emulator::start(hub_opts())).unwrap());
    let mut p2 = env.start(&w, &[c]);
    wait_until("every record delivered", Duration::from_secs(90), || {
        let mut ids = before.clone();
        ids.extend(
            env.emu()
                .c2d_messages()
                .into_iter()
                .filter_map(|m| m.message_id),
        );
        ids.sort();
        ids.dedup();
        ids.len() == 210
    });
    wait_until("all committed", Duration::from_secs(30), || {
        committed_offsets(&env.bootstrap, &format!("connect-{name}"), &topic, 1) == vec![210]
    });
    before.clear();
    assert_eq!(
        p2.terminate(Duration::from_secs(30)),
        Some(0),
        "{}",
        p2.log()
    );
}

/// Issue 11.8: `topics.regex` matches whole topic names, as Connect does.
#[test]
fn topics_regex_matches_whole_topic_names() {
    let env = Env::new(EmulatorOptions::default());
    let base = unique("rx");
    let other = format!("{base}out");
    create_topic(&env.bootstrap, &base, 1);
    create_topic(&env.bootstrap, &other, 1);
    produce_strings(&env.bootstrap, &other, &[json("rx-dev", "rx-other", "no")]);
    produce_strings(&env.bootstrap, &base, &[json("rx-dev", "rx-mine", "yes")]);
    let name = unique("sink-regex");
    let w = env.worker_file("");
    let info = env.emu().info();
    let c = write_file(
        env.dir.path(),
        &format!("{name}.properties"),
        &format!(
            "name={name}\n\
             connector.class=IotHubSink\n\
             topics.regex={base}\n\
             IotHub.ConnectionString={}\n\
             IotHub.CustomEndpoint={}\n",
            info.service_connection_string.expose(),
            info.amqp_endpoint
        ),
    );
    let mut p = env.start(&w, &[c]);
    wait_until(
        "the matching topic's record arrives",
        Duration::from_secs(40),
        || !env.device_messages("rx-dev").is_empty(),
    );
    wait_until("committed", Duration::from_secs(20), || {
        committed_offsets(&env.bootstrap, &format!("connect-{name}"), &base, 1) == vec![1]
    });
    // The other topic's record was produced first; had it been subscribed it would be there too.
    let ids: Vec<Option<String>> = env
        .device_messages("rx-dev")
        .into_iter()
        .map(|m| m.message_id)
        .collect();
    assert_eq!(ids, vec![Some("rx-mine".to_string())]);
    assert_eq!(
        committed_offsets(&env.bootstrap, &format!("connect-{name}"), &other, 1),
        vec![-1]
    );
    assert!(!p.log().contains(&format!("{other}-0")), "{}", p.log());
    assert_eq!(p.terminate(Duration::from_secs(30)), Some(0), "{}", p.log());
}

/// Issue 9.5: `iotconnect_c2d_sent_total` is current, not an `offset.flush.interval.ms` tick late.
#[test]
fn c2d_sent_metric_is_current() {
    let env = Env::new(EmulatorOptions::default());
    let topic = env.topic("metric", 1);
    let name = unique("sink-metric");
    // A flush tick far beyond the test's deadlines.
    let (w, port) = env.worker_file_port("offset.flush.interval.ms=600000\n");
    let c = env.sink_file(&name, &topic, "");
    let mut p = env.start(&w, &[c]);
    p.wait_for_log(ASSIGNED, Duration::from_secs(40));
    produce_many(&env, &topic, "met", 7, 3);
    wait_until("7 delivered", Duration::from_secs(40), || {
        delivered(&env, "met-").0 == 7
    });
    let sent = || -> f64 {
        let body = env.rt.block_on(async {
            reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        });
        body.lines()
            .filter(|l| l.starts_with("iotconnect_c2d_sent_total{") && l.contains(&name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    wait_until("the metric shows 7 sends", Duration::from_secs(5), || {
        sent() >= 7.0
    });
    assert_eq!(p.terminate(Duration::from_secs(30)), Some(0), "{}", p.log());
}

/// Issue 10.7 (sink): `amqp://` to a non-loopback host is refused unless `IotHub.AllowPlaintext=true`;
/// `IotHub.TrustedCaFile` makes an `amqps://` endpoint with a private CA work end to end.
#[test]
fn plaintext_needs_opt_in_and_a_private_ca_secures_amqps() {
    let dir = tempfile::tempdir().unwrap();
    let Pki {
        cert,
        key,
        ca: ca_file,
        ..
    } = pki(dir.path());
    let env = Env::new(EmulatorOptions {
        tls_cert: Some(cert),
        tls_key: Some(key),
        ..Default::default()
    });
    let info = env.emu().info();
    assert!(info.amqp_endpoint.starts_with("amqps://"));
    let w = env.worker_file("");
    let file = |name: &str, extra: &str| {
        write_file(
            env.dir.path(),
            &format!("{name}.properties"),
            &format!(
                "name={name}\nconnector.class=IotHubSink\ntopics=t\n\
                 IotHub.ConnectionString={}\n{extra}",
                info.service_connection_string.expose()
            ),
        )
    };
    let validate = |c: &Path| {
        let mut p = Process::spawn(
            &[
                "validate",
                &w.display().to_string(),
                &c.display().to_string(),
            ],
            &[],
        );
        let code = p.wait(Duration::from_secs(30));
        let out = format!("{}\n{}", p.stdout.lock().unwrap().join("\n"), p.log());
        (code, out)
    };
    let (code, out) = validate(&file(
        "plain",
        "IotHub.CustomEndpoint=amqp://10.20.30.40:5672\n",
    ));
    assert_eq!(code, Some(78), "{out}");
    assert!(
        out.contains("IotHub.CustomEndpoint") && out.contains("IotHub.AllowPlaintext"),
        "{out}"
    );
    let (code, out) = validate(&file(
        "plain-ok",
        "IotHub.CustomEndpoint=amqp://10.20.30.40:5672\nIotHub.AllowPlaintext=true\n",
    ));
    assert_eq!(code, Some(0), "{out}");
    let (code, out) = validate(&file(
        "loop",
        "IotHub.CustomEndpoint=amqp://127.0.0.1:5672\n",
    ));
    assert_eq!(code, Some(0), "loopback needs no opt-in: {out}");

    // amqps:// with the private CA: delivered.
    let topic = env.topic("tls", 1);
    produce(&env.bootstrap, &topic, &[(None, TUTORIAL.as_bytes())]);
    let name = unique("sink-tls");
    let c = env.sink_file(
        &name,
        &topic,
        &format!("IotHub.TrustedCaFile={}\n", ca_file.display()),
    );
    let mut p = env.start(&w, &[c]);
    wait_until("delivered over TLS", Duration::from_secs(40), || {
        !env.device_messages("myDeviceId").is_empty()
    });
    assert_eq!(p.terminate(Duration::from_secs(30)), Some(0), "{}", p.log());
}
