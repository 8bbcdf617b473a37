//! The command line against real files and a real broker: `validate` and `standalone` start/stop.

mod support;

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
