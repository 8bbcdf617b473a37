//! The `iotconnect-emulator` binary: its JSON line, `--write-config` (the tutorial's three files,
//! accepted by `iotconnect validate`), and the device SAS token it hands out.

use crate::support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The emulator as a child process, stopped (SIGTERM, then wait) when dropped.
struct Running {
    child: Child,
    info: serde_json::Value,
}

impl Drop for Running {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the pid of a child this test started and has not reaped yet.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let _ = self.child.wait();
    }
}

fn start(args: &[&str]) -> Running {
    let mut child = Command::new(support::emulator_bin())
        .args([
            "--amqp-listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
        ])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("iotconnect-emulator starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .expect("the JSON line");
    let info = serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    Running { child, info }
}

fn s<'a>(r: &'a Running, k: &str) -> &'a str {
    r.info[k]
        .as_str()
        .unwrap_or_else(|| panic!("{k} missing: {}", r.info))
}

#[test]
fn json_line_write_config_and_device_token() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("tutorial");
    let emu = start(&[
        "--partitions",
        "2",
        "--ws-listen",
        "127.0.0.1:0",
        "--write-config",
        cfg.to_str().unwrap(),
        "--kafka-bootstrap",
        "127.0.0.1:19092",
    ]);
    // Every key of the old `iotconnect emulator` line, and the new ones.
    for k in [
        "hubName",
        "eventHubCompatibleName",
        "eventHubCompatibleEndpoint",
        "eventHubConnectionString",
        "accessKeyName",
        "accessKeyValue",
        "serviceConnectionString",
        "iotHubHostName",
        "amqpEndpoint",
        "httpEndpoint",
        "wsEndpoint",
        "wsHostPort",
        "producerConnectionString",
        "deviceSasToken",
    ] {
        assert!(emu.info.get(k).is_some(), "{k} missing: {}", emu.info);
    }
    assert_eq!(emu.info["partitions"], 2);
    assert_eq!(
        s(&emu, "producerConnectionString"),
        format!(
            "{};UseDevelopmentEmulator=true",
            s(&emu, "eventHubConnectionString")
        )
    );

    // The tutorial's files, filled in for this emulator, owner-readable only.
    let read = |n: &str| std::fs::read_to_string(cfg.join(n)).unwrap();
    let worker = read("connect-standalone.properties");
    assert!(worker.contains("bootstrap.servers=127.0.0.1:19092\n"));
    assert!(worker.contains("consumer.session.timeout.ms=6000\n"));
    let source = read("connect-iothub-source.properties");
    assert!(source.contains(&format!(
        "IotHub.CustomEndpoint={}\n",
        s(&emu, "amqpEndpoint")
    )));
    assert!(source.contains(&format!(
        "IotHub.AccessKeyValue={}\n",
        s(&emu, "accessKeyValue")
    )));
    assert!(source.contains(&format!(
        "IotHub.EventHubCompatibleEndpoint={}\n",
        s(&emu, "eventHubCompatibleEndpoint")
    )));
    let sink = read("connect-iothub-sink.properties");
    assert!(sink.contains(&format!(
        "IotHub.ConnectionString={}\n",
        s(&emu, "serviceConnectionString")
    )));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(cfg.join("connect-iothub-sink.properties"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "the files hold the key: {mode:o}");

    // iotconnect accepts them as they are.
    let out = Command::new(support::iotconnect_bin())
        .arg("validate")
        .args(
            [
                "connect-standalone.properties",
                "connect-iothub-source.properties",
                "connect-iothub-sink.properties",
            ]
            .map(|n| cfg.join(n)),
        )
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "validate: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // The device token opens the device API for any device; no token, or a forged one, does not.
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let post = |token: Option<&str>| {
        let mut r = http
            .post(format!(
                "{}/devices/dev1/messages/events",
                s(&emu, "httpEndpoint")
            ))
            .body(r#"{"t":21}"#);
        if let Some(t) = token {
            r = r.header("Authorization", t);
        }
        r.send().unwrap().status().as_u16()
    };
    let token = s(&emu, "deviceSasToken");
    assert_eq!(post(Some(token)), 204);
    assert_eq!(post(None), 401);
    let forged = token.replacen("sig=", "sig=A", 1);
    assert_eq!(post(Some(&forged)), 401);
    let stats: serde_json::Value = http
        .get(format!("{}/emulator/stats", s(&emu, "httpEndpoint")))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(stats["eventsEnqueued"], 1);
    assert_eq!(stats["receiversAttached"], serde_json::json!([0, 0]));
}

#[test]
fn bad_flags_fail_with_a_message() {
    let out = Command::new(support::emulator_bin())
        .args([
            "--partitions",
            "0",
            "--amqp-listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("partitions must be at least 1"));
}
