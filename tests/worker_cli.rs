//! The command line against real files and a real broker: `validate` and `standalone` start/stop.

use crate::harness::hex;
use crate::support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;
use support::*;

const SECRET_KEY: &str = "c2VjcmV0LWtleS10aGF0LW11c3Qtbm90LWxlYWs=";

fn validate(args: &[&Path]) -> (i32, String, String) {
    let out = Command::new(iotconnect_bin())
        .arg("validate")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn worker_file(dir: &Path, bootstrap: &str, extra: &str) -> std::path::PathBuf {
    write_file(
        dir,
        "worker.properties",
        &format!(
            "bootstrap.servers={bootstrap}\n\
             key.converter=org.apache.kafka.connect.storage.StringConverter\n\
             value.converter=org.apache.kafka.connect.storage.StringConverter\n\
             offset.storage.file.filename={}/connect.offsets\n\
             offset.flush.interval.ms=1000\n\
             listeners=http://127.0.0.1:{}\n{extra}",
            dir.display(),
            free_port()
        ),
    )
}

#[test]
fn shipped_tutorial_files_report_every_placeholder() {
    let cfg = Path::new(REPO).join("config");
    let (code, out, _) = validate(&[
        &cfg.join("connect-standalone.properties"),
        &cfg.join("connect-iothub-source.properties"),
        &cfg.join("connect-iothub-sink.properties"),
    ]);
    assert_eq!(code, 78, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    assert!(lines[0].ends_with("connect-iothub-source.properties:IotHub.EventHubCompatibleName: still PLACEHOLDER: fill it in from the hub's Built-in endpoints page"));
    assert!(out.contains("connect-iothub-source.properties:IotHub.AccessKeyValue:"));
    assert!(out.contains("connect-iothub-sink.properties:IotHub.ConnectionString:"));
}

#[test]
fn filled_tutorial_files_are_valid_and_secrets_stay_hidden() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = Path::new(REPO).join("config");
    let fill = |name: &str, pairs: &[(&str, &str)]| {
        let mut text = std::fs::read_to_string(cfg.join(name)).unwrap();
        for (k, v) in pairs {
            text = text.replace(&format!("{k}=PLACEHOLDER"), &format!("{k}={v}"));
        }
        write_file(dir.path(), name, &text)
    };
    let w = fill("connect-standalone.properties", &[]);
    let s = fill(
        "connect-iothub-source.properties",
        &[
            ("IotHub.EventHubCompatibleName", "iothub-ehub-myhub"),
            (
                "IotHub.EventHubCompatibleEndpoint",
                "sb://iothub-ns-myhub.servicebus.windows.net/",
            ),
            ("IotHub.AccessKeyValue", SECRET_KEY),
        ],
    );
    let k = fill(
        "connect-iothub-sink.properties",
        &[(
            "IotHub.ConnectionString",
            &format!("HostName=myhub.azure-devices.net;SharedAccessKeyName=service;SharedAccessKey={SECRET_KEY}"),
        )],
    );
    let (code, out, err) = validate(&[&w, &s, &k]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("IotHub.AccessKeyValue=[hidden]"), "{out}");
    assert!(out.contains("IotHub.ConnectionString=[hidden]"), "{out}");
    assert!(out.contains("Kafka.Topic=iotin"));
    assert!(!out.contains(SECRET_KEY) && !err.contains(SECRET_KEY));
    // The tutorial's consumer.max.poll.records is accepted (no unknown-key warning) and noted as unneeded.
    assert!(!err.contains("known config"), "{err}");
    assert!(
        err.contains("consumer.max.poll.records=10 is no longer needed"),
        "{err}"
    );
}

#[test]
fn every_problem_is_reported_with_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let w = worker_file(
        dir.path(),
        "127.0.0.1:9",
        "config.providers=file\nconfig.providers.file.class=org.apache.kafka.common.config.provider.FileConfigProvider\n",
    );
    let secrets = write_file(
        dir.path(),
        "secrets.properties",
        &format!("key={SECRET_KEY}\n"),
    );
    let s = write_file(
        dir.path(),
        "source.properties",
        &format!(
            "name=src\nconnector.class=IotHubSource\n\
             IotHub.EventHubCompatibleName=hub\nIotHub.EventHubCompatibleEndpoint=sb://ns/\n\
             IotHub.AccessKeyName=service\nIotHub.AccessKeyValue=${{file:{}:nokey}}\n\
             BatchSize=many\n",
            secrets.display()
        ),
    );
    let k = write_file(
        dir.path(),
        "sink.properties",
        "name=snk\nconnector.class=com.example.NotAConnector\n",
    );
    let (code, out, _) = validate(&[&w, &s, &k]);
    assert_eq!(code, 78, "{out}");
    let src = s.display().to_string();
    let snk = k.display().to_string();
    let expected = [
        format!("{src}:IotHub.AccessKeyValue: ${{file:{}:nokey}}: {} has no key nokey", secrets.display(), secrets.display()),
        format!("{snk}:connector.class: Failed to find any class that implements Connector and which name matches com.example.NotAConnector"),
    ];
    for e in &expected {
        assert!(
            out.lines().any(|l| l.starts_with(e.as_str())),
            "missing {e:?} in:\n{out}"
        );
    }
    // Unresolvable references stop that file early; a second run without it shows the typed checks.
    let s2 = write_file(
        dir.path(),
        "source2.properties",
        "name=src\nconnector.class=IotHubSource\nIotHub.EventHubCompatibleName=hub\nIotHub.EventHubCompatibleEndpoint=sb://ns/\nIotHub.AccessKeyName=service\nIotHub.AccessKeyValue=k\nBatchSize=many\n",
    );
    let (code, out, _) = validate(&[&w, &s2]);
    assert_eq!(code, 78);
    let src2 = s2.display().to_string();
    assert!(out.contains(&format!("{src2}:Kafka.Topic: Missing required configuration \"Kafka.Topic\" which has no default value.")), "{out}");
    assert!(out.contains(&format!("{src2}:BatchSize: Invalid value many for configuration BatchSize: Not a number of type INT")), "{out}");
    assert!(!out.contains(SECRET_KEY));
}

#[test]
fn standalone_connects_and_stops_cleanly_on_sigterm() {
    let broker = broker();
    let dir = tempfile::tempdir().unwrap();
    let w = worker_file(dir.path(), &broker.bootstrap, "");
    let mut p = Process::spawn(&["standalone", w.to_str().unwrap()], &[]);
    p.wait_for_log("Kafka cluster ID:", Duration::from_secs(30));
    p.wait_for_log("Kafka Connect started", Duration::from_secs(30));
    // `offsets reset` on a live worker's file fails clearly (the worker holds the file's lock).
    let out = Command::new(iotconnect_bin())
        .args(["offsets", "reset"])
        .arg(dir.path().join("connect.offsets"))
        .args(["--connector", "AzureIotHubConnector"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in use by another process"), "{err}");
    assert_eq!(p.terminate(Duration::from_secs(20)), Some(0), "{}", p.log());
    assert!(p.log().contains("Kafka Connect stopped"));
}

#[test]
fn standalone_exits_2_when_kafka_is_unreachable() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port(); // nothing listens there
    let w = worker_file(
        dir.path(),
        &format!("127.0.0.1:{port}"),
        "default.api.timeout.ms=2000\n",
    );
    let mut p = Process::spawn(&["standalone", w.to_str().unwrap()], &[]);
    assert_eq!(p.wait(Duration::from_secs(30)), Some(2), "{}", p.log());
    let log = p.log();
    assert!(
        log.contains(&format!(
            "Kafka cluster at 127.0.0.1:{port} did not answer within 2000 ms"
        )),
        "{log}"
    );
    assert!(log.contains("Stopping due to error"));
}

#[test]
fn standalone_exits_3_on_a_bad_connector_file() {
    let dir = tempfile::tempdir().unwrap();
    let w = worker_file(dir.path(), "127.0.0.1:9", "");
    let c = write_file(
        dir.path(),
        "c.properties",
        "name=x\nconnector.class=IotHubSource\n",
    );
    let mut p = Process::spawn(
        &["standalone", w.to_str().unwrap(), c.to_str().unwrap()],
        &[],
    );
    assert_eq!(p.wait(Duration::from_secs(30)), Some(3), "{}", p.log());
    assert!(p.log().contains("Stopping after connector error"));
}

#[test]
fn usage_errors_exit_1_and_version_prints() {
    let out = Command::new(iotconnect_bin())
        .arg("standalone")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let out = Command::new(iotconnect_bin())
        .arg("--version")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("iotconnect "));
}

#[test]
fn json_log_format_writes_one_json_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let w = worker_file(
        dir.path(),
        &format!("127.0.0.1:{port}"),
        "default.api.timeout.ms=1000\n",
    );
    let mut p = Process::spawn(
        &["--log-format", "json", "standalone", w.to_str().unwrap()],
        &[],
    );
    assert_eq!(p.wait(Duration::from_secs(30)), Some(2));
    let lines = p.lines.lock().unwrap().clone();
    assert!(!lines.is_empty());
    for l in &lines {
        let v: serde_json::Value =
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
        assert!(v["level"].is_string() && v["timestamp"].is_string(), "{l}");
    }
    assert!(lines.iter().any(|l| l.contains("Stopping due to error")));
}

fn source_connector(dir: &Path, name: &str, body: &str) -> std::path::PathBuf {
    write_file(
        dir,
        name,
        &format!("name=src\nconnector.class=IotHubSource\n{body}"),
    )
}

#[test]
fn validate_suggests_misspelled_keys_warns_about_dropped_ports_and_refuses_zero_periods() {
    let dir = tempfile::tempdir().unwrap();
    let w = worker_file(dir.path(), "127.0.0.1:9", "offset.flush.timeout.ms=-3\n");
    // offset.flush.interval.ms=0 would panic tokio::time::interval: refused offline.
    let text = std::fs::read_to_string(&w).unwrap().replace(
        "offset.flush.interval.ms=1000",
        "offset.flush.interval.ms=0",
    );
    std::fs::write(&w, text).unwrap();
    let typo = source_connector(
        dir.path(),
        "typo.properties",
        &format!(
            "Kafka.Topc=iotin\nIotHub.ConnectionString=Endpoint=sb://127.0.0.1:5999/;SharedAccessKeyName=service;SharedAccessKey={SECRET_KEY};EntityPath=hub\n"
        ),
    );
    let (code, out, _) = validate(&[&w, &typo]);
    assert_eq!(code, 78, "{out}");
    let wf = w.display().to_string();
    assert!(
        out.contains(&format!("{wf}:offset.flush.interval.ms: Invalid value 0 for configuration offset.flush.interval.ms: Value must be at least 1")),
        "{out}"
    );
    assert!(
        out.contains(&format!("{wf}:offset.flush.timeout.ms: Invalid value -3")),
        "{out}"
    );
    assert!(
        out.contains("Missing required configuration \"Kafka.Topic\" which has no default value. The file has \"Kafka.Topc\": did you mean \"Kafka.Topic\"?"),
        "{out}"
    );

    // Valid files: the port of an sb:// endpoint without IotHub.CustomEndpoint is warned about.
    let w = worker_file(dir.path(), "127.0.0.1:9", "");
    let port = source_connector(
        dir.path(),
        "port.properties",
        &format!(
            "Kafka.Topic=iotin\nIotHub.ConnectionString=Endpoint=sb://127.0.0.1:5999/;SharedAccessKeyName=service;SharedAccessKey={SECRET_KEY};EntityPath=hub\nBatchSze=5\n"
        ),
    );
    let sink = write_file(
        dir.path(),
        "sink.properties",
        &format!("name=snk\nconnector.class=IotHubSink\ntopics=iotout\nIotHub.ConnectionString=HostName=127.0.0.1:5998;SharedAccessKeyName=service;SharedAccessKey={SECRET_KEY}\n"),
    );
    let (code, out, err) = validate(&[&w, &port, &sink]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        err.contains("port.properties:IotHub.ConnectionString: the endpoint carries port 5999, which the Event Hubs client drops")
            && err.contains("set IotHub.CustomEndpoint=amqp://127.0.0.1:5999"),
        "{err}"
    );
    assert!(
        err.contains("sink.properties:IotHub.ConnectionString: HostName carries port 5998")
            && err.contains("IotHub.CustomEndpoint=amqp://127.0.0.1:5998"),
        "{err}"
    );
    assert!(
        err.contains("The configuration 'BatchSze' was supplied but isn't a known config. Did you mean 'BatchSize'?"),
        "{err}"
    );
    // With IotHub.CustomEndpoint there is nothing to warn about.
    let fixed = source_connector(
        dir.path(),
        "fixed.properties",
        &format!(
            "Kafka.Topic=iotin\nIotHub.ConnectionString=Endpoint=sb://127.0.0.1:5999/;SharedAccessKeyName=service;SharedAccessKey={SECRET_KEY};EntityPath=hub\nIotHub.CustomEndpoint=amqp://127.0.0.1:5999\n"
        ),
    );
    let (code, _, err) = validate(&[&w, &fixed]);
    assert_eq!(code, 0);
    assert!(!err.contains("carries port"), "{err}");
    assert!(!err.contains(SECRET_KEY));
}

#[test]
fn kafka_unreachable_at_start_warns_every_few_seconds_naming_the_servers() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port(); // nothing listens there
    let w = worker_file(
        dir.path(),
        &format!("127.0.0.1:{port}"),
        "default.api.timeout.ms=7500\n",
    );
    let mut p = Process::spawn(&["standalone", w.to_str().unwrap()], &[]);
    assert_eq!(p.wait(Duration::from_secs(60)), Some(2), "{}", p.log());
    let warns: Vec<String> = p
        .lines
        .lock()
        .unwrap()
        .iter()
        .filter(|l| {
            l.contains(" WARN ")
                && l.contains(&format!(
                    "Kafka cluster at 127.0.0.1:{port} is not reachable yet"
                ))
        })
        .cloned()
        .collect();
    assert!(warns.len() >= 2, "{}", p.log());
    assert!(p.log().contains("did not answer within 7500 ms"));
}

#[test]
fn offsets_reset_of_an_unknown_connector_says_so_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("connect.offsets");
    let mut store = iotconnect::offsets::OffsetStore::new();
    store.put(
        "AzureIotHubConnector",
        &[("EventHubName", "hub"), ("EventHubPartition", "0")],
        None,
    );
    store.flush(&file).unwrap();
    let run = |connector: &str| {
        Command::new(iotconnect_bin())
            .args([
                "offsets",
                "reset",
                file.to_str().unwrap(),
                "--connector",
                connector,
            ])
            .output()
            .unwrap()
    };
    let out = run("AzureIotHubConector");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("holds no offsets of connector AzureIotHubConector; connectors with offsets there: AzureIotHubConnector"),
        "{err}"
    );
    assert_eq!(run("AzureIotHubConnector").status.code(), Some(0));
}

#[test]
fn status_exits_2_when_no_worker_answers() {
    let port = free_port();
    let out = Command::new(iotconnect_bin())
        .args(["status", "--url", &format!("http://127.0.0.1:{port}")])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "cannot connect to the worker at http://127.0.0.1:{port}"
        )),
        "{err}"
    );
}

/// Java's `Properties.load(InputStream)` and iotconnect's parser agree on generated inputs (biased
/// towards the format's special characters) and on random bytes: same entries, or both refuse.
/// Needs a JDK (skipped with a notice without one).
#[test]
fn java_properties_parsing_matches_the_jdk_on_generated_inputs() {
    use proptest::strategy::{Strategy, ValueTree};
    use proptest::test_runner::TestRunner;
    if Command::new("javac").arg("-version").output().is_err() {
        eprintln!("NOTICE: javac not found; skipping the properties cross-check against the JDK");
        return;
    }
    let classes = tempfile::tempdir().unwrap();
    let out = Command::new("javac")
        .arg("-d")
        .arg(classes.path())
        .arg(Path::new(REPO).join("tests/java/PropsCheck.java"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut runner = TestRunner::deterministic();
    let special = proptest::string::string_regex("[ab=: \\t\\x0c\\\\#!\\r\\nu0-9DEFé]{0,80}")
        .unwrap()
        .prop_map(|s| s.chars().map(|c| c as u32 as u8).collect::<Vec<u8>>());
    let bytes = proptest::collection::vec(proptest::num::u8::ANY, 0..120);
    let mut inputs: Vec<Vec<u8>> = Vec::new();
    for i in 0..1500 {
        let v = if i % 3 == 0 {
            bytes.new_tree(&mut runner).unwrap().current()
        } else {
            special.new_tree(&mut runner).unwrap().current()
        };
        inputs.push(v);
    }
    let mut child = Command::new("java")
        .arg("-cp")
        .arg(classes.path())
        .arg("PropsCheck")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let feed: String = inputs.iter().map(|i| format!("{}\n", hex(i))).collect();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        stdin.write_all(feed.as_bytes()).unwrap();
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    let java: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(java.len(), inputs.len());
    let mut mismatches = Vec::new();
    for (input, j) in inputs.iter().zip(&java) {
        let ours = match iotconnect::config::properties::parse(input) {
            Ok(p) => {
                let mut s = String::from("OK");
                for (k, v) in &p {
                    s.push_str(&format!(" {}={}", hex(k.as_bytes()), hex(v.as_bytes())));
                }
                s
            }
            Err(_) => "ERR".to_string(),
        };
        let java_norm = if j.starts_with("ERR") {
            "ERR"
        } else {
            j.as_str()
        };
        if ours != java_norm {
            mismatches.push(format!(
                "input {:?}\n  java: {j}\n  ours: {ours}",
                String::from_utf8_lossy(input)
            ));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {} inputs differ from Java, e.g.:\n{}",
        mismatches.len(),
        inputs.len(),
        mismatches
            .iter()
            .take(5)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

fn distributed_worker_file(
    dir: &Path,
    bootstrap: &str,
    group: &str,
    extra: &str,
) -> std::path::PathBuf {
    write_file(
        dir,
        "distributed.properties",
        &format!(
            "bootstrap.servers={bootstrap}\n\
             key.converter=org.apache.kafka.connect.json.JsonConverter\n\
             value.converter=org.apache.kafka.connect.json.JsonConverter\n\
             group.id={group}\n\
             config.storage.topic={group}-configs\n\
             offset.storage.topic={group}-offsets\n\
             status.storage.topic={group}-status\n\
             config.storage.replication.factor=1\n\
             offset.storage.replication.factor=1\n\
             status.storage.replication.factor=1\n\
             session.timeout.ms=6000\n\
             listeners=http://127.0.0.1:{}\n{extra}",
            free_port()
        ),
    )
}

/// The distributed worker starts and stops through the same steps as the standalone one
/// (`worker::process`): Connect's exit codes and closing lines, systemd READY/STATUS/STOPPING.
#[test]
fn distributed_exit_codes_and_systemd_notifications() {
    let dir = tempfile::tempdir().unwrap();
    // Kafka unreachable: exit 2, "Stopping due to error".
    let port = free_port();
    let w = distributed_worker_file(
        dir.path(),
        &format!("127.0.0.1:{port}"),
        "cli-dist-down",
        "default.api.timeout.ms=2000\n",
    );
    let mut p = Process::spawn(&["distributed", w.to_str().unwrap()], &[]);
    assert_eq!(p.wait(Duration::from_secs(30)), Some(2), "{}", p.log());
    assert!(p.log().contains("Stopping due to error"), "{}", p.log());

    // A connector file that cannot make a connector: exit 3, "Stopping after connector error".
    let broker = broker();
    let w = distributed_worker_file(dir.path(), &broker.bootstrap, "cli-dist", "");
    let c = write_file(
        dir.path(),
        "c.properties",
        "name=x\nconnector.class=IotHubSource\n",
    );
    let mut p = Process::spawn(
        &["distributed", w.to_str().unwrap(), c.to_str().unwrap()],
        &[],
    );
    assert_eq!(p.wait(Duration::from_secs(30)), Some(3), "{}", p.log());
    assert!(
        p.log().contains("Stopping after connector error"),
        "{}",
        p.log()
    );

    // A worker without connectors: READY=1 with a status line, STOPPING=1 on SIGTERM, exit 0.
    let mut notify = NotifySocket::bind();
    let mut p = Process::spawn(&["distributed", w.to_str().unwrap()], &[notify.env()]);
    notify.expect("READY=1", Duration::from_secs(60));
    assert!(
        notify.seen.contains("STATUS=no connectors"),
        "{}",
        notify.seen
    );
    p.signal(libc::SIGTERM);
    notify.expect("STOPPING=1", Duration::from_secs(30));
    assert_eq!(p.wait(Duration::from_secs(30)), Some(0), "{}", p.log());
    assert!(p.log().contains("Kafka Connect stopped"), "{}", p.log());
}
