//! Produce failures (issue 10.1): only a record error (record too large) may be skipped, under
//! `errors.tolerance=all`, logged with hub partition and offset and counted; a missing topic fails
//! the task whatever the tolerance; in every case nothing past the last acknowledged record is
//! committed. Real broker, emulator, `iotconnect standalone`.

use crate::source_support;
use crate::support;

use source_support::*;
use std::time::Duration;
use support::*;

/// librdkafka refuses records above `message.max.bytes` itself (MSG_SIZE_TOO_LARGE): a record error.
const SMALL_MAX: &str = "producer.override.message.max.bytes=2000\n";

fn big_body() -> Vec<u8> {
    format!("{{\"big\":\"{}\"}}", "x".repeat(5000)).into_bytes()
}

#[test]
fn a_too_large_record_is_skipped_under_tolerance_all_logged_and_counted() {
    let hub = Hub::start(1);
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("src-big-all");
    create_topic(&broker().bootstrap, &topic, 1);
    let a = hub.send("d", b"{\"i\":0}", None);
    let big = hub.send("d", &big_body(), None);
    let b = hub.send("d", b"{\"i\":2}", None);
    let w = noschema_worker(dir.path());
    let port = rest_port(&w);
    let c = source_file(
        dir.path(),
        "src",
        &topic,
        &hub,
        &format!("errors.tolerance=all\n{SMALL_MAX}"),
    );
    let mut p = start(&w, &c);
    wait_all_committed(dir.path(), "src", &hub);
    assert_eq!(committed(dir.path(), "src", 0), Some(b.offset.clone()));
    let recs = read_topic(&broker().bootstrap, &topic, 2, T);
    let seqs: Vec<i64> = recs.iter().map(|r| id_seq(r).1).collect();
    assert_eq!(seqs, vec![a.sequence_number, b.sequence_number]);
    assert_eq!(topic_size(&broker().bootstrap, &topic), 2);
    let log = p.log();
    assert!(
        log.contains(&format!("hub partition 0 offset {}", big.offset))
            && log.contains("skipped (errors.tolerance=all)"),
        "{log}"
    );
    assert_eq!(
        metric(
            port,
            "iotconnect_source_partition_records_skipped_total",
            &[("connector", "src"), ("partition", "0")]
        ),
        Some(1.0)
    );
    assert_eq!(task_state(port, "src").0, "RUNNING");
    assert_eq!(p.terminate(T), Some(0));
}

#[test]
fn a_too_large_record_fails_the_task_under_tolerance_none_committing_nothing_past_it() {
    let hub = Hub::start(1);
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("src-big-none");
    create_topic(&broker().bootstrap, &topic, 1);
    let before: Vec<_> = (0..3)
        .map(|i| hub.send("d", format!("{{\"i\":{i}}}").as_bytes(), None))
        .collect();
    let big = hub.send("d", &big_body(), None);
    hub.send("d", b"{\"i\":9}", None);
    let w = noschema_worker(dir.path());
    let port = rest_port(&w);
    let c = source_file(dir.path(), "src", &topic, &hub, SMALL_MAX);
    let mut p = start(&w, &c);
    wait_until("the task to fail", T, || {
        task_state(port, "src").0 == "FAILED"
    });
    let (_, trace) = task_state(port, "src");
    assert!(
        trace.contains(&format!("offset {}", big.offset)) && trace.contains("hub partition 0"),
        "{trace}"
    );
    // The final commit of the failed task stops right before the refused record.
    wait_until("the final commit", T, || {
        committed(dir.path(), "src", 0).as_deref() == Some(before[2].offset.as_str())
    });
    assert_eq!(topic_size(&broker().bootstrap, &topic), 3);
    assert_eq!(p.terminate(T), Some(0));
    assert_eq!(
        committed(dir.path(), "src", 0).as_deref(),
        Some(before[2].offset.as_str()),
        "nothing committed past the last acknowledged record"
    );
}

#[test]
fn a_missing_topic_fails_the_task_whatever_the_tolerance_and_commits_nothing() {
    let hub = Hub::start(1);
    let dir = tempfile::tempdir().unwrap();
    // Never created; the worker's producers do not create topics.
    let topic = unique("src-missing");
    for i in 0..3 {
        hub.send("d", format!("{{\"i\":{i}}}").as_bytes(), None);
    }
    let w = worker_file(
        dir.path(),
        JSON,
        JSON,
        "value.converter.schemas.enable=false\nproducer.allow.auto.create.topics=false\n\
         producer.topic.metadata.propagation.max.ms=1000\n",
    );
    let port = rest_port(&w);
    let c = source_file(dir.path(), "src", &topic, &hub, "errors.tolerance=all\n");
    let mut p = start(&w, &c);
    wait_until("the task to fail", Duration::from_secs(120), || {
        task_state(port, "src").0 == "FAILED"
    });
    let (_, trace) = task_state(port, "src");
    assert!(trace.contains(&topic), "{trace}");
    assert!(trace.contains("not a record error"), "{trace}");
    assert_eq!(p.terminate(T), Some(0));
    assert_eq!(
        committed(dir.path(), "src", 0),
        None,
        "nothing was delivered, so nothing is committed"
    );
}

#[test]
fn a_key_refused_while_running_fails_the_task_at_once_with_the_cause() {
    let hub = Hub::start(1);
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("src-401");
    create_topic(&broker().bootstrap, &topic, 1);
    hub.send("d", b"{\"i\":0}", None);
    let w = noschema_worker(dir.path());
    let port = rest_port(&w);
    let c = source_file(dir.path(), "src", &topic, &hub, "");
    let mut p = start(&w, &c);
    read_topic(&broker().bootstrap, &topic, 1, T);
    // The key is refused from now on (as after a key rotation); the connection drops, the SDK
    // reconnects and its put-token gets 401.
    post_fault(
        &hub,
        serde_json::json!({"refuseTokensSeconds": 600, "dropConnections": true}),
    );
    let t0 = std::time::Instant::now();
    wait_until("the task to fail", T, || {
        task_state(port, "src").0 == "FAILED"
    });
    let (_, trace) = task_state(port, "src");
    assert!(trace.contains("IoT Hub refused the access key"), "{trace}");
    assert!(
        trace.contains(&hub.emu().info().amqp_endpoint),
        "names the address: {trace}"
    );
    assert!(
        t0.elapsed() < Duration::from_secs(30),
        "not retried as transient: {:?}",
        t0.elapsed()
    );
    // The SDK's own retry chatter stays below WARN (issue 9.5).
    let noise: Vec<String> = p
        .log()
        .lines()
        .filter(|l| l.contains(" INFO ") && (l.contains("(azure_") || l.contains("(fe2o3_amqp")))
        .map(String::from)
        .collect();
    assert!(noise.is_empty(), "SDK INFO lines: {noise:?}");
    let key = hub.emu().info().access_key_value.expose().to_string();
    assert!(
        !p.log().contains(&key) && !trace.contains(&key),
        "no secret"
    );
    assert_eq!(p.terminate(T), Some(0));
}
