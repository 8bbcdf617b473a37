//! Connect's REST API, metrics, health and systemd notify against a running worker (the `iotconnect`
//! binary) with a real broker and the emulator.

use crate::source_support;
use crate::support;

use serde_json::{json, Value};
use source_support::*;
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
                .contains("cannot send a record")
            || st["trace"]
                .as_str()
                .unwrap()
                .contains("Kafka refused the record"),
        "{st}"
    );
    assert_eq!(r.text("/readyz").0, 503);
    // `iotconnect status` shows it and exits 1.
    let (code, out, err) = run_cli(&["status", "--url", &r.base], &[]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(out.contains("task 0  FAILED"), "{out}");
    assert!(out.contains("    error: "), "{out}");
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
    let mut notify = NotifySocket::bind();
    let mut s = setup("", &[notify.env(), ("WATCHDOG_USEC", "400000")]);
    notify.expect("READY=1", T);
    assert!(
        notify.seen.contains("STATUS=1 connector(s)"),
        "{}",
        notify.seen
    );
    notify.expect("WATCHDOG=1", T);
    s.worker.signal(libc::SIGTERM);
    notify.expect("STOPPING=1", T);
    assert_eq!(s.worker.wait(T), Some(0));
}

/// The key part of a connection string (`…;SharedAccessKey=<key>`).
fn key_of(connection_string: &str) -> String {
    connection_string
        .split(';')
        .find_map(|p| p.strip_prefix("SharedAccessKey="))
        .expect("a SharedAccessKey")
        .to_string()
}

/// Runs `iotconnect` to completion: (exit code, stdout, stderr).
fn run_cli(args: &[&str], envs: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = std::process::Command::new(iotconnect_bin());
    cmd.args(args);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A sink connector file for the emulator's service endpoint; `cs` is the value written for
/// `IotHub.ConnectionString` (a literal or a provider reference).
fn sink_file(
    dir: &Path,
    name: &str,
    topic: &str,
    hub: &Hub,
    cs: &str,
    extra: &str,
) -> std::path::PathBuf {
    write_file(
        dir,
        &format!("{name}.properties"),
        &format!(
            "name={name}\nconnector.class=IotHubSink\ntasks.max=1\ntopics={topic}\n\
             IotHub.ConnectionString={cs}\nIotHub.CustomEndpoint={}\n{extra}",
            hub.emu().info().amqp_endpoint
        ),
    )
}

#[test]
fn secrets_planted_in_every_input_never_leak() {
    let hub = Hub::start(2);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let info = hub.emu().info().clone();
    let topic = unique("leak-iotin");
    let sink_topic = unique("leak-iotout");
    create_topic(&broker().bootstrap, &topic, 2);
    create_topic(&broker().bootstrap, &sink_topic, 1);
    let port = free_port();
    // One distinct value per input; the hub's own keys come through providers.
    let plants = [
        "PLANTW1producerpassword",
        "PLANTW2jaaspassword",
        "PLANTW3sslkeypassword",
        "PLANTW4basicauthuserinfo",
        "PLANTW5envprovided",
        "PLANTW6converteruserinfo",
        "PLANTC1sastoken",
        "PLANTC2overridepassword",
        "PLANTC3sinkcredentials",
    ];
    let hub_keys = [
        info.access_key_value.expose().to_string(),
        key_of(info.service_connection_string.expose()),
    ];
    let secrets_file = write_file(
        d,
        "secrets.properties",
        &format!(
            "source={}\n",
            info.event_hub_connection_string
                .expose()
                .replace('\\', "\\\\")
        ),
    );
    let worker = write_file(
        d,
        "worker.properties",
        &format!(
            "bootstrap.servers={}\nkey.converter={STRING}\nvalue.converter={STRING}\n\
             value.converter.basic.auth.user.info={}\n\
             offset.storage.file.filename={}\noffset.flush.interval.ms=500\n\
             listeners=http://127.0.0.1:{port}\n\
             config.providers=file,env\n\
             config.providers.file.class=org.apache.kafka.common.config.provider.FileConfigProvider\n\
             config.providers.env.class=org.apache.kafka.common.config.provider.EnvVarConfigProvider\n\
             producer.sasl.password={}\n\
             consumer.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username=\"u\" password=\"{}\";\n\
             ssl.key.password={}\nbasic.auth.user.info={}\nsome.api.token=${{env:IOTCONNECT_PLANT_W5}}\n",
            broker().bootstrap,
            plants[5],
            offsets_path(d).display(),
            plants[0],
            plants[1],
            plants[2],
            plants[3],
        ),
    );
    let source = write_file(
        d,
        "source.properties",
        &format!(
            "name=src\nconnector.class=IotHubSource\ntasks.max=1\nKafka.Topic={topic}\n\
             IotHub.ConnectionString=${{file:{}:source}}\nIotHub.CustomEndpoint={}\n\
             IotHub.SasToken={}\nproducer.override.sasl.password={}\nReceiveTimeout=1\n",
            secrets_file.display(),
            info.amqp_endpoint,
            plants[6],
            plants[7],
        ),
    );
    let sink = sink_file(
        d,
        "snk-secrets",
        &sink_topic,
        &hub,
        "${env:IOTCONNECT_TEST_SINK_CS}",
        &format!("sink.credentials={}\n", plants[8]),
    );
    let envs = [
        ("IOTCONNECT_PLANT_W5", plants[4]),
        (
            "IOTCONNECT_TEST_SINK_CS",
            info.service_connection_string.expose(),
        ),
    ];
    let all: Vec<String> = plants
        .iter()
        .map(|s| s.to_string())
        .chain(hub_keys.iter().cloned())
        .collect();
    let assert_clean = |what: &str, text: &str| {
        for s in &all {
            assert!(
                !text.contains(s.as_str()),
                "{what} shows the secret {s}:\n{text}"
            );
        }
    };
    let files = [
        worker.to_str().unwrap(),
        source.to_str().unwrap(),
        sink.to_str().unwrap(),
    ];

    // validate: the effective configuration, warnings included.
    let mut args = vec!["validate"];
    args.extend(files);
    let (code, out, err) = run_cli(&args, &envs);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("producer.sasl.password=[hidden]"), "{out}");
    assert!(out.contains("IotHub.SasToken=[hidden]"), "{out}");
    assert_clean("validate", &format!("{out}\n{err}"));

    // A short standalone run: every log line, every REST answer, the status view.
    let mut args = vec!["standalone"];
    args.extend(files);
    let mut w = Process::spawn(&args, &envs);
    w.wait_for_log("Kafka Connect started", T);
    let rest = Rest {
        base: format!("http://127.0.0.1:{port}"),
        client: reqwest::blocking::Client::new(),
    };
    wait_until("both connectors ready", T, || rest.text("/readyz").0 == 200);
    hub.send("dev-1", b"{\"t\":1}", None);
    wait_all_committed(d, "src", &hub);
    for path in [
        "/",
        "/connectors",
        "/connectors?expand=status&expand=info",
        "/connectors/src",
        "/connectors/src/config",
        "/connectors/src/status",
        "/connectors/src/tasks",
        "/connectors/src/tasks/0/status",
        "/connectors/src/offsets",
        "/connectors/snk-secrets",
        "/connectors/snk-secrets/config",
        "/connectors/snk-secrets/tasks",
        "/connectors/snk-secrets/offsets",
        "/connector-plugins",
        "/admin/loggers",
        "/metrics",
        "/readyz",
    ] {
        let (code, body) = rest.text(path);
        assert!(code < 500, "{path}: {code} {body}");
        assert_clean(path, &body);
    }
    let (code, out, err) = run_cli(&["status", "--url", &rest.base], &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_clean("status", &format!("{out}\n{err}"));
    assert_eq!(w.terminate(T), Some(0));
    assert_clean("the worker's log", &w.log());

    // Errors: a damaged sink connection string is refused without echoing any of it.
    let bad = sink_file(
        d,
        "bad",
        &sink_topic,
        &hub,
        &format!(
            "HostName=bad host;SharedAccessKeyName=service;SharedAccessKey={}",
            plants[8]
        ),
        "",
    );
    let (code, out, err) = run_cli(&["validate", files[0], bad.to_str().unwrap()], &envs);
    assert_eq!(code, 78, "{out}\n{err}");
    assert!(out.contains("IotHub.ConnectionString"), "{out}");
    assert_clean("validate errors", &format!("{out}\n{err}"));
    let (code, out, err) = run_cli(&["standalone", files[0], bad.to_str().unwrap()], &envs);
    assert_eq!(code, 3, "{out}\n{err}");
    assert_clean("standalone errors", &format!("{out}\n{err}"));
}

/// The metric names a Grafana dashboard's queries use.
fn dashboard_metrics(dashboard: &Value) -> Vec<String> {
    let re = regex::Regex::new(r"\biotconnect_[a-z0-9_]+").unwrap();
    let mut out = Vec::new();
    for p in dashboard["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            for m in re.find_iter(t["expr"].as_str().unwrap()) {
                out.push(m.as_str().to_string());
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

#[test]
fn status_dashboard_and_rest_protection_against_a_live_worker() {
    let hub = Hub::start(2);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let topic = unique("status-iotin");
    let sink_topic = unique("status-iotout");
    create_topic(&broker().bootstrap, &topic, 2);
    create_topic(&broker().bootstrap, &sink_topic, 1);
    let creds = write_file(d, "creds.properties", "admin=Adm1n-pw\n");
    let jaas = write_file(
        d,
        "connect_jaas.conf",
        &format!(
            "KafkaConnect {{\n  org.apache.kafka.connect.rest.basic.auth.extension.PropertyFileLoginModule required\n  file=\"{}\";\n}};\n",
            creds.display()
        ),
    );
    let port = free_port();
    let worker = write_file(
        d,
        "worker.properties",
        &format!(
            "bootstrap.servers={}\nkey.converter={STRING}\nvalue.converter={STRING}\n\
             offset.storage.file.filename={}\noffset.flush.interval.ms=500\n\
             consumer.session.timeout.ms=6000\nconsumer.heartbeat.interval.ms=1000\n\
             listeners=http://127.0.0.1:{port}\n\
             rest.extension.classes=org.apache.kafka.connect.rest.basic.auth.extension.BasicAuthSecurityRestExtension\n\
             access.control.allow.origin=http://ops.example\naccess.control.allow.methods=GET,PUT\n",
            broker().bootstrap,
            offsets_path(d).display(),
        ),
    );
    let source = source_file(d, "src", &topic, &hub, "ReceiveTimeout=1\n");
    let sink = sink_file(
        d,
        "snk",
        &sink_topic,
        &hub,
        hub.emu().info().service_connection_string.expose(),
        "",
    );
    let opts = format!(
        "-Xmx256m -Djava.security.auth.login.config={}",
        jaas.display()
    );
    let mut w = Process::spawn(
        &[
            "standalone",
            worker.to_str().unwrap(),
            source.to_str().unwrap(),
            sink.to_str().unwrap(),
        ],
        &[("KAFKA_OPTS", opts.as_str())],
    );
    w.wait_for_log("Kafka Connect started", T);
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::blocking::Client::new();
    let get = |path: &str, user: Option<&str>, origin: Option<&str>| {
        let mut r = client.get(format!("{base}{path}"));
        if let Some(u) = user {
            let (u, p) = u.split_once(':').unwrap();
            r = r.basic_auth(u, Some(p));
        }
        if let Some(o) = origin {
            r = r.header("Origin", o);
        }
        let r = r.send().unwrap();
        let code = r.status().as_u16();
        let acao = r
            .headers()
            .get("access-control-allow-origin")
            .map(|v| v.to_str().unwrap().to_string());
        (code, r.text().unwrap(), acao)
    };
    let admin = Some("admin:Adm1n-pw");

    // Basic authentication, with Connect's JSON error shape; probes stay open.
    let (code, body, _) = get("/connectors", None, None);
    assert_eq!(code, 401);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"error_code": 401, "message": "User cannot access the resource."})
    );
    assert_eq!(get("/connectors", Some("admin:wrong"), None).0, 401);
    assert_eq!(get("/metrics", None, None).0, 401);
    assert_eq!(get("/healthz", None, None).0, 200);
    let (code, body, _) = get("/connectors", admin, None);
    assert_eq!(
        (code, serde_json::from_str::<Value>(&body).unwrap()),
        (200, json!(["src", "snk"]))
    );
    // Origins: refused unless allowed; allowed ones get the CORS header.
    let (code, body, acao) = get("/connectors", admin, Some("http://evil.example"));
    assert_eq!(code, 403, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["error_code"],
        403
    );
    assert_eq!(acao, None);
    let (code, _, acao) = get("/connectors", admin, Some("http://ops.example"));
    assert_eq!((code, acao.as_deref()), (200, Some("http://ops.example")));
    let pre = client
        .request(
            reqwest::Method::OPTIONS,
            format!("{base}/connectors/src/pause"),
        )
        .header("Origin", "http://ops.example")
        .header("Access-Control-Request-Method", "DELETE")
        .send()
        .unwrap();
    assert_eq!(
        pre.status().as_u16(),
        403,
        "DELETE is not in access.control.allow.methods"
    );
    // Bodies are bounded: a declared 2 MiB body is refused with 413 before it is sent...
    let mut tcp = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    std::io::Write::write_all(
        &mut tcp,
        format!(
            "PUT /admin/loggers/iotconnect HTTP/1.1\r\nHost: x\r\nAuthorization: Basic YWRtaW46QWRtMW4tcHc=\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            2 * 1024 * 1024
        )
        .as_bytes(),
    )
    .unwrap();
    let mut answer = String::new();
    let _ = std::io::Read::read_to_string(&mut tcp, &mut answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains(r#"{"error_code":413,"#), "{answer}");
    // ... and a streamed one (chunked, no length) once 1 MiB has arrived; the client may see the
    // connection closed under its upload instead of the answer.
    let uploader = reqwest::blocking::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    match uploader
        .put(format!("{base}/admin/loggers/iotconnect"))
        .basic_auth("admin", Some("Adm1n-pw"))
        .body(reqwest::blocking::Body::new(std::io::Cursor::new(
            vec![b'{'; 2 * 1024 * 1024],
        )))
        .send()
    {
        Ok(r) => assert_eq!(r.status().as_u16(), 413),
        Err(e) => assert!(e.is_body() || e.is_request(), "{e}"),
    }
    let (_, loggers, _) = get("/admin/loggers", admin, None);
    assert!(
        !loggers.contains("iotconnect\":{\"level\":\"{"),
        "{loggers}"
    );
    // Sink offsets through the worker's one client, repeatedly.
    for _ in 0..5 {
        let (code, body, _) = get("/connectors/snk/offsets", admin, None);
        assert_eq!(code, 200, "{body}");
    }

    // Traffic both ways, then the status view and the dashboard's metrics.
    wait_until("both connectors ready", T, || {
        get("/readyz", None, None).0 == 200
    });
    for i in 0..10 {
        hub.send(&format!("dev-{i}"), b"{\"t\":1}", None);
    }
    produce(
        &broker().bootstrap,
        &sink_topic,
        &[(
            None,
            br#"{"deviceId":"dev-1","message":"Turn On","messageId":"m1"}"#,
        )],
    );
    wait_all_committed(d, "src", &hub);
    wait_until("the C2D message accepted", T, || {
        get("/metrics", admin, None)
            .1
            .lines()
            .any(|l| l.starts_with("iotconnect_c2d_accepted_total{") && !l.ends_with(" 0"))
    });
    let (code, out, err) = run_cli(&["status", "--url", &base], &[]);
    assert_eq!(code, 2, "no credentials: {out}{err}");
    assert!(err.contains("401"), "{err}");
    let (code, out, err) = run_cli(
        &["status", "--url", &base, "--user", "admin"],
        &[("IOTCONNECT_REST_PASSWORD", "Adm1n-pw")],
    );
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("src (source) RUNNING"), "{out}");
    assert!(out.contains("snk (sink) RUNNING"), "{out}");
    assert!(out.contains("task 0  RUNNING"), "{out}");
    assert!(out.contains("C2D in flight "), "{out}");
    assert!(out.contains("accepted 1"), "{out}");
    let rows: Vec<&str> = out
        .lines()
        .filter(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            cols.len() >= 6 && cols[0].parse::<u32>().is_ok()
        })
        .collect();
    assert_eq!(rows.len(), 2, "one row per hub partition:\n{out}");
    assert!(
        rows.iter().all(|r| r.matches(" ago").count() == 2),
        "last event and last commit ages:\n{out}"
    );

    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(Path::new(REPO).join("config/grafana-iotconnect.json")).unwrap(),
    )
    .unwrap();
    let used = dashboard_metrics(&dashboard);
    assert!(used.len() >= 15, "{used:?}");
    let text = get("/metrics", admin, None).1;
    let exposed: Vec<String> = text
        .lines()
        .filter_map(|l| {
            if let Some(t) = l.strip_prefix("# TYPE ") {
                let mut it = t.split_whitespace();
                let (name, kind) = (it.next()?, it.next()?);
                Some(if kind == "counter" {
                    format!("{name}_total")
                } else {
                    name.to_string()
                })
            } else if !l.starts_with('#') {
                l.split(['{', ' ']).next().map(str::to_string)
            } else {
                None
            }
        })
        .collect();
    for m in &used {
        assert!(
            exposed.contains(m),
            "the dashboard queries {m}, which /metrics does not expose"
        );
    }

    // A worker that does not answer in time, or not at all, makes status exit 2.
    w.signal(libc::SIGSTOP);
    let (code, _, err) = run_cli(
        &[
            "status",
            "--url",
            &base,
            "--user",
            "admin:Adm1n-pw",
            "--timeout",
            "2",
        ],
        &[],
    );
    w.signal(libc::SIGCONT);
    assert_eq!(code, 2, "{err}");
    assert_eq!(w.terminate(T), Some(0));
    let (code, _, err) = run_cli(&["status", "--url", &base, "--user", "admin:Adm1n-pw"], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("cannot connect"), "{err}");
}
