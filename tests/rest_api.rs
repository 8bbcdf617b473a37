//! Connect's REST API, metrics, health and systemd notify against a running worker (the `iotconnect`
//! binary) with a real broker and the emulator.

mod source_support;
mod support;

use serde_json::{json, Value};
use source_support::*;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::time::{Duration, Instant};
use support::*;

struct Rest {
    base: String,
    client: reqwest::blocking::Client,
}

impl Rest {
    fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .unwrap();
        let status = r.status().as_u16();
        let text = r.text().unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }
    fn text(&self, path: &str) -> (u16, String) {
        let r = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .unwrap();
        (r.status().as_u16(), r.text().unwrap())
    }
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let url = format!("{}{path}", self.base);
        let mut req = match method {
            "PUT" => self.client.put(url),
            "POST" => self.client.post(url),
            "DELETE" => self.client.delete(url),
            _ => unreachable!(),
        };
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().unwrap();
        let status = r.status().as_u16();
        let text = r.text().unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }
}

struct Setup {
    hub: Hub,
    dir: tempfile::TempDir,
    topic: String,
    worker: Process,
    rest: Rest,
}

const NAME: &str = "AzureIotHubConnector";

fn setup(source_extra: &str, envs: &[(&str, &str)]) -> Setup {
    let hub = Hub::start(4);
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("rest-iotin");
    create_topic(&broker().bootstrap, &topic, 4);
    let port = free_port();
    let w = write_file(
        dir.path(),
        "worker.properties",
        &format!(
            "bootstrap.servers={}\nkey.converter={STRING}\nvalue.converter={STRING}\n\
             offset.storage.file.filename={}\noffset.flush.interval.ms=500\n\
             task.shutdown.graceful.timeout.ms=10000\nlisteners=http://127.0.0.1:{port}\n",
            broker().bootstrap,
            offsets_path(dir.path()).display()
        ),
    );
    let s = source_file(dir.path(), NAME, &topic, &hub, source_extra);
    let worker = Process::spawn(
        &["standalone", w.to_str().unwrap(), s.to_str().unwrap()],
        envs,
    );
    worker.wait_for_log("Kafka Connect started", T);
    let rest = Rest {
        base: format!("http://127.0.0.1:{port}"),
        client: reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap(),
    };
    Setup {
        hub,
        dir,
        topic,
        worker,
        rest,
    }
}

fn secret_of(hub: &Hub) -> String {
    hub.emu().info().access_key_value.expose().to_string()
}

#[test]
fn endpoints_answer_with_connects_shapes_and_never_show_secrets() {
    let mut s = setup("", &[]);
    let r = &s.rest;
    let (code, root) = r.get("/");
    assert_eq!(code, 200);
    assert!(
        root["version"].is_string()
            && root["commit"].is_string()
            && root["kafka_cluster_id"].is_string(),
        "{root}"
    );

    assert_eq!(r.get("/connectors"), (200, json!([NAME])));
    let (_, info) = r.get(&format!("/connectors/{NAME}"));
    assert_eq!(info["name"], NAME);
    assert_eq!(info["type"], "source");
    assert_eq!(info["tasks"], json!([{"connector": NAME, "task": 0}]));
    assert_eq!(info["config"]["Kafka.Topic"], s.topic);
    assert_eq!(info["config"]["IotHub.ConnectionString"], "[hidden]");

    let (_, config) = r.get(&format!("/connectors/{NAME}/config"));
    assert_eq!(config, info["config"]);

    wait_until("the task to run with its links attached", T, || {
        r.text("/readyz").0 == 200
    });
    let (_, status) = r.get(&format!("/connectors/{NAME}/status"));
    let worker_id = status["connector"]["worker_id"].clone();
    assert!(worker_id.as_str().unwrap().starts_with("127.0.0.1:"));
    assert_eq!(
        status,
        json!({"name": NAME, "connector": {"state": "RUNNING", "worker_id": worker_id},
               "tasks": [{"id": 0, "state": "RUNNING", "worker_id": worker_id}], "type": "source"})
    );
    assert_eq!(
        r.get(&format!("/connectors/{NAME}/tasks/0/status")).1,
        status["tasks"][0]
    );
    let (_, tasks) = r.get(&format!("/connectors/{NAME}/tasks"));
    assert_eq!(tasks[0]["id"], json!({"connector": NAME, "task": 0}));
    assert!(tasks[0]["config"].is_object());

    let (_, expanded) = r.get("/connectors?expand=status&expand=info");
    assert_eq!(expanded[NAME]["status"], status);
    assert_eq!(expanded[NAME]["info"], info);

    let (_, plugins) = r.get("/connector-plugins");
    let classes: Vec<&str> = plugins
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["class"].as_str().unwrap())
        .collect();
    assert!(classes.contains(&"com.microsoft.azure.iot.kafka.connect.source.IotHubSourceConnector"));
    assert!(classes.contains(&"com.microsoft.azure.iot.kafka.connect.sink.IotHubSinkConnector"));

    assert_eq!(
        r.get("/health"),
        (
            200,
            json!({"status": "healthy", "message": "Worker has completed startup and is ready to handle requests."})
        )
    );
    assert_eq!(r.text("/healthz").0, 200);
    assert_eq!(
        r.get("/connectors/nope/status"),
        (
            404,
            json!({"error_code": 404, "message": "Connector nope not found"})
        )
    );

    // Offsets (KIP-875 shape) once something was committed.
    for i in 0..20 {
        s.hub.send(&format!("dev-{i}"), b"{\"t\":1}", None);
    }
    wait_all_committed(s.dir.path(), NAME, &s.hub);
    let (_, offsets) = r.get(&format!("/connectors/{NAME}/offsets"));
    let list = offsets["offsets"].as_array().unwrap();
    assert!(!list.is_empty());
    for o in list {
        assert_eq!(o["partition"]["EventHubName"], "myhub");
        assert!(o["partition"]["EventHubPartition"].is_string());
        assert!(o["offset"]["EventHubOffset"].is_string());
    }

    // Nothing secret in any answer or log line.
    let secret = secret_of(&s.hub);
    for path in [
        "/connectors?expand=status&expand=info",
        &format!("/connectors/{NAME}/tasks"),
    ] {
        assert!(!r.text(path).1.contains(&secret));
    }
    assert_eq!(s.worker.terminate(T), Some(0));
    let log = s.worker.log();
    assert!(!log.contains(&secret), "the access key appears in the log");
    assert!(
        !log.contains("SharedAccessKey="),
        "a connection string appears in the log"
    );
}

#[test]
fn pause_stops_producing_resume_continues_and_metrics_parse() {
    let mut s = setup("", &[]);
    let r = &s.rest;
    wait_until("links attached", T, || r.text("/readyz").0 == 200);
    send_many(&s.hub, 0, 40, 8);
    wait_until("40 records", T, || {
        topic_size(&broker().bootstrap, &s.topic) == 40
    });

    assert_eq!(
        r.call("PUT", &format!("/connectors/{NAME}/pause"), None).0,
        202
    );
    wait_until("PAUSED", T, || {
        r.get(&format!("/connectors/{NAME}/status")).1["tasks"][0]["state"] == "PAUSED"
    });
    assert_eq!(
        r.get(&format!("/connectors/{NAME}/status")).1["connector"]["state"],
        "PAUSED"
    );
    send_many(&s.hub, 40, 40, 8);
    // While paused nothing more reaches Kafka (observed over a bounded window).
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        assert_eq!(
            topic_size(&broker().bootstrap, &s.topic),
            40,
            "records were produced while paused"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        r.call("PUT", &format!("/connectors/{NAME}/resume"), None).0,
        202
    );
    wait_until("the rest after resume", T, || {
        topic_size(&broker().bootstrap, &s.topic) == 80
    });
    assert_eq!(
        r.get(&format!("/connectors/{NAME}/status")).1["tasks"][0]["state"],
        "RUNNING"
    );

    // /metrics parses as Prometheus text and counts what was written.
    let (code, text) = r.text("/metrics");
    assert_eq!(code, 200);
    let samples = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .unwrap()
        .samples;
    let sample_lines = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .count();
    assert_eq!(samples.len(), sample_lines, "every sample line parses");
    let value = |name: &str| -> f64 {
        samples
            .iter()
            .filter(|s| s.metric == name && s.labels.get("connector") == Some(NAME))
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => 0.0,
            })
            .sum()
    };
    assert_eq!(
        value("iotconnect_source_record_write_total"),
        80.0,
        "{text}"
    );
    assert_eq!(value("iotconnect_source_record_poll_total"), 80.0);
    assert!(value("iotconnect_offset_commit_success_total") >= 1.0);
    assert!(samples
        .iter()
        .any(|s| s.metric == "iotconnect_process_resident_memory_bytes"));
    // The hub partitions' lag reaches 0 once everything is committed.
    wait_all_committed(s.dir.path(), NAME, &s.hub);
    wait_until("lag 0 on every partition", T, || {
        let text = r.text("/metrics").1;
        let lags: Vec<f64> = text
            .lines()
            .filter(|l| l.starts_with("iotconnect_source_partition_lag_events{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
            .collect();
        lags.len() == 4 && lags.iter().all(|v| *v == 0.0)
    });
    assert_eq!(s.worker.terminate(T), Some(0));
}

#[test]
fn a_failed_task_shows_its_trace_and_restarts_through_the_api() {
    // A producer limit smaller than one event makes the send fail non-retriably.
    let mut s = setup("producer.override.message.max.bytes=1000\n", &[]);
    let r = &s.rest;
    s.hub.send("dev-big", vec![b'x'; 5000].as_slice(), None);
    wait_until("FAILED", T, || {
        r.get(&format!("/connectors/{NAME}/status")).1["tasks"][0]["state"] == "FAILED"
    });
    let (_, st) = r.get(&format!("/connectors/{NAME}/tasks/0/status"));
    assert!(
        st["trace"]
            .as_str()
            .unwrap()
            .contains("Unrecoverable exception from producer send callback")
            || st["trace"]
                .as_str()
                .unwrap()
                .contains("cannot send a record"),
        "{st}"
    );
    assert_eq!(r.text("/readyz").0, 503);
    let starts = |w: &Process| {
        w.log()
            .matches("Source task finished initialization and start")
            .count()
    };
    assert_eq!(starts(&s.worker), 1);
    let (code, body) = r.call(
        "POST",
        &format!("/connectors/{NAME}/restart?includeTasks=true&onlyFailed=true"),
        None,
    );
    assert_eq!(code, 202);
    assert_eq!(body["tasks"][0]["state"], "RESTARTING");
    wait_until("a second start of the task", T, || starts(&s.worker) == 2);
    // The same event fails it again (it is still first in line), and the single-task restart works too.
    wait_until("FAILED again", T, || {
        r.get(&format!("/connectors/{NAME}/status")).1["tasks"][0]["state"] == "FAILED"
    });
    assert_eq!(
        r.call("POST", &format!("/connectors/{NAME}/tasks/0/restart"), None)
            .0,
        204
    );
    wait_until("a third start", T, || starts(&s.worker) == 3);
    assert_eq!(s.worker.terminate(T), Some(0));
}

#[test]
fn logger_level_changes_take_effect() {
    let mut s = setup("", &[("IOTCONNECT_LOG", "info")]);
    let r = &s.rest;
    let (_, loggers) = r.get("/admin/loggers");
    assert_eq!(loggers["root"]["level"], "INFO");
    assert!(!s.worker.log().contains(" DEBUG "));
    let (code, body) = r.call(
        "PUT",
        "/admin/loggers/iotconnect",
        Some(json!({"level": "DEBUG"})),
    );
    assert_eq!((code, body), (200, json!(["iotconnect"])));
    assert_eq!(r.get("/admin/loggers/iotconnect").1["level"], "DEBUG");
    send_many(&s.hub, 0, 5, 2);
    s.worker.wait_for_log(" DEBUG ", T);
    assert_eq!(
        r.call(
            "PUT",
            "/admin/loggers/iotconnect",
            Some(json!({"level": "LOUD"}))
        )
        .0,
        400
    );
    assert_eq!(s.worker.terminate(T), Some(0));
}

#[test]
fn systemd_notify_ready_watchdog_and_stopping() {
    let sockdir = tempfile::tempdir().unwrap();
    let path = sockdir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut s = setup(
        "",
        &[
            ("NOTIFY_SOCKET", path.to_str().unwrap()),
            ("WATCHDOG_USEC", "400000"),
        ],
    );
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    let mut expect = |needle: &str, seen: &mut String| {
        let deadline = Instant::now() + T;
        while !seen.contains(needle) {
            assert!(
                Instant::now() < deadline,
                "no {needle} in notifications: {seen}"
            );
            let n = sock.recv(&mut buf).expect("a notification");
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
            seen.push('\n');
        }
    };
    expect("READY=1", &mut seen);
    assert!(seen.contains("STATUS=1 connector(s)"), "{seen}");
    expect("WATCHDOG=1", &mut seen);
    s.worker.signal(libc::SIGTERM);
    expect("STOPPING=1", &mut seen);
    assert_eq!(s.worker.wait(T), Some(0));
    let _ = Path::new(&path);
}
