//! Restarts, stored offsets, start positions and faults: the source neither loses nor (after a clean
//! stop) duplicates events.

use crate::source_support;
use crate::support;

use source_support::*;
use std::time::Duration;
use support::*;

#[test]
fn sigterm_mid_stream_then_restart_loses_and_duplicates_nothing() {
    let hub = Hub::start(2);
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("src-term");
    create_topic(&broker().bootstrap, &topic, 2);
    let mut total = send_many(&hub, 0, 20_000, 16);
    let w = noschema_worker(dir.path());
    let c = source_file(dir.path(), "src", &topic, &hub, "");
    let mut p = start(&w, &c);
    p.wait_for_log("Committing offsets for", T);
    assert_eq!(p.terminate(T), Some(0), "{}", p.log());
    assert!(p
        .log()
        .contains("Finished WorkerSourceTask{id=src-0} commitOffsets successfully"));
    let at_stop = topic_size(&broker().bootstrap, &topic);
    eprintln!("records in the topic at SIGTERM: {at_stop} of {total}");
    total += send_many(&hub, total, 1_000, 16);
    let mut p = start(&w, &c);
    assert!(
        p.log().contains("with previously saved offset"),
        "{}",
        p.log()
    );
    wait_all_committed(dir.path(), "src", &hub);
    assert_eq!(p.terminate(T), Some(0));
    let (unique, dups) = unique_and_duplicates(&topic);
    assert_eq!(unique, total, "none lost");
    assert_eq!(dups, 0, "none duplicated after a clean stop");
}

#[test]
fn kill_9_mid_stream_loses_nothing() {
    let hub = Hub::start(2);
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("src-kill");
    create_topic(&broker().bootstrap, &topic, 2);
    let total = send_many(&hub, 0, 20_000, 16);
    let w = noschema_worker(dir.path());
    let c = source_file(dir.path(), "src", &topic, &hub, "");
    let mut p = start(&w, &c);
    p.wait_for_log("Committing offsets for", T);
    p.signal(libc::SIGKILL);
    p.wait(T);
    let mut p = start(&w, &c);
    wait_all_committed(dir.path(), "src", &hub);
    assert_eq!(p.terminate(T), Some(0));
    let (unique, dups) = unique_and_duplicates(&topic);
    eprintln!("kill -9: {unique} unique records, {dups} duplicates (re-read from the last uncommitted interval)");
    assert_eq!(unique, total, "none lost");
    assert!(
        dups <= total,
        "duplicates only from the uncommitted interval"
    );
}

/// Java's bytes for a one-entry `HashMap<byte[],byte[]>` (kafka-connect.md §4.4).
fn java_offsets_file(key: &[u8], value: &[u8]) -> Vec<u8> {
    let mut b = vec![
        0xac, 0xed, 0x00, 0x05, 0x73, 0x72, 0x00, 0x11, 0x6a, 0x61, 0x76, 0x61, 0x2e, 0x75, 0x74,
        0x69, 0x6c, 0x2e, 0x48, 0x61, 0x73, 0x68, 0x4d, 0x61, 0x70, 0x05, 0x07, 0xda, 0xc1, 0xc3,
        0x16, 0x60, 0xd1, 0x03, 0x00, 0x02, 0x46, 0x00, 0x0a, 0x6c, 0x6f, 0x61, 0x64, 0x46, 0x61,
        0x63, 0x74, 0x6f, 0x72, 0x49, 0x00, 0x09, 0x74, 0x68, 0x72, 0x65, 0x73, 0x68, 0x6f, 0x6c,
        0x64, 0x78, 0x70, 0x3f, 0x40, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0c, 0x77, 0x08, 0x00, 0x00,
        0x00, 0x10, 0x00, 0x00, 0x00, 0x01,
    ];
    b.extend_from_slice(&[
        0x75, 0x72, 0x00, 0x02, 0x5b, 0x42, 0xac, 0xf3, 0x17, 0xf8, 0x06, 0x08, 0x54, 0xe0, 0x02,
        0x00, 0x00, 0x78, 0x70,
    ]);
    b.extend_from_slice(&(key.len() as u32).to_be_bytes());
    b.extend_from_slice(key);
    b.extend_from_slice(&[0x75, 0x71, 0x00, 0x7e, 0x00, 0x02]);
    b.extend_from_slice(&(value.len() as u32).to_be_bytes());
    b.extend_from_slice(value);
    b.push(0x78);
    b
}

#[test]
fn java_format_offsets_file_resumes_after_the_stored_offset() {
    // The builder itself matches the worked example byte for byte.
    let example = java_offsets_file(br#"["c",{"p":"0"}]"#, br#"{"o":"1"}"#);
    assert_eq!(example.len(), 139);
    let hub = Hub::start(1);
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("src-java");
    create_topic(&broker().bootstrap, &topic, 1);
    let sent: Vec<_> = (0..10)
        .map(|i| hub.send("dev-j", format!("{{\"i\":{i}}}").as_bytes(), None))
        .collect();
    let name = "AzureIotHubConnector";
    let eh = &hub.emu().info().event_hub_compatible_name;
    let key = format!(r#"["{name}",{{"EventHubName":"{eh}","EventHubPartition":"0"}}]"#);
    let value = format!(r#"{{"EventHubOffset":"{}"}}"#, sent[3].offset);
    std::fs::write(
        offsets_path(dir.path()),
        java_offsets_file(key.as_bytes(), value.as_bytes()),
    )
    .unwrap();
    let w = noschema_worker(dir.path());
    let c = source_file(dir.path(), name, &topic, &hub, "");
    let mut p = start(&w, &c);
    wait_all_committed(dir.path(), name, &hub);
    assert_eq!(p.terminate(T), Some(0));
    assert!(
        p.log().contains(&format!(
            "Setting up partition receiver 0 with previously saved offset {}",
            sent[3].offset
        )),
        "{}",
        p.log()
    );
    let recs = read_topic(&broker().bootstrap, &topic, 6, T);
    let seqs: Vec<i64> = recs.iter().map(|r| id_seq(r).1).collect();
    let want: Vec<i64> = sent[4..].iter().map(|s| s.sequence_number).collect();
    assert_eq!(seqs, want);
    assert_eq!(topic_size(&broker().bootstrap, &topic), 6);
    // The entry keeps Java's key bytes; the file is still one Java HashMap entry.
    let entries = iotconnect::offsets::load(&offsets_path(dir.path())).unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].0, key.as_bytes());
    assert_eq!(
        entries[0].1.as_deref().unwrap(),
        format!(r#"{{"EventHubOffset":"{}"}}"#, sent[9].offset).as_bytes()
    );
}

#[test]
fn truncated_offsets_file_is_refused_with_exit_3() {
    let hub = Hub::start(1);
    let dir = tempfile::tempdir().unwrap();
    let good = java_offsets_file(br#"["c",{"p":"0"}]"#, br#"{"o":"1"}"#);
    std::fs::write(offsets_path(dir.path()), &good[..100]).unwrap();
    let w = noschema_worker(dir.path());
    let c = source_file(dir.path(), "c", "t", &hub, "");
    let mut p = Process::spawn(
        &["standalone", w.to_str().unwrap(), c.to_str().unwrap()],
        &[],
    );
    assert_eq!(p.wait(T), Some(3), "{}", p.log());
    let log = p.log();
    assert!(
        log.contains(&offsets_path(dir.path()).display().to_string()),
        "{log}"
    );
    assert!(log.contains("iotconnect offsets show"), "{log}");
}

fn rfc3339_ms(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000).unwrap();
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[test]
fn start_time_offsets_and_stored_offsets_choose_the_start() {
    let hub = Hub::start(1);
    let a: Vec<_> = (0..3)
        .map(|i| hub.send("d", format!("{{\"a\":{i}}}").as_bytes(), None))
        .collect();
    let t = now_ms();
    wait_until(
        "the clock to pass the start time",
        Duration::from_secs(5),
        || now_ms() > t + 1,
    );
    let b: Vec<_> = (0..3)
        .map(|i| hub.send("d", format!("{{\"b\":{i}}}").as_bytes(), None))
        .collect();

    // IotHub.StartTime: only events enqueued after it.
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("src-time");
    create_topic(&broker().bootstrap, &topic, 1);
    let w = noschema_worker(dir.path());
    let c = source_file(
        dir.path(),
        "timed",
        &topic,
        &hub,
        &format!("IotHub.StartTime={}\n", rfc3339_ms(t)),
    );
    let mut p = start(&w, &c);
    wait_all_committed(dir.path(), "timed", &hub);
    assert_eq!(p.terminate(T), Some(0));
    assert!(
        p.log()
            .contains("Setting up partition receiver 0 with start time Some("),
        "{}",
        p.log()
    );
    let seqs: Vec<i64> = read_topic(&broker().bootstrap, &topic, 3, T)
        .iter()
        .map(|r| id_seq(r).1)
        .collect();
    assert_eq!(
        seqs,
        b.iter().map(|s| s.sequence_number).collect::<Vec<_>>()
    );
    assert_eq!(topic_size(&broker().bootstrap, &topic), 3);

    // Restart with StartTime still set: the stored offset wins; only the new event is read.
    let c1 = hub.send("d", b"{\"c\":0}", None);
    let mut p = start(&w, &c);
    wait_all_committed(dir.path(), "timed", &hub);
    assert_eq!(p.terminate(T), Some(0));
    assert!(
        p.log().contains("with previously saved offset"),
        "{}",
        p.log()
    );
    assert_eq!(topic_size(&broker().bootstrap, &topic), 4);
    let last = read_topic(&broker().bootstrap, &topic, 4, T);
    assert_eq!(id_seq(&last[3]).1, c1.sequence_number);

    // IotHub.Offsets: exclusive, from the given offset.
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("src-offs");
    create_topic(&broker().bootstrap, &topic, 1);
    let w = noschema_worker(dir.path());
    let c = source_file(
        dir.path(),
        "offs",
        &topic,
        &hub,
        &format!("IotHub.Offsets={}\n", a[1].offset),
    );
    let mut p = start(&w, &c);
    wait_all_committed(dir.path(), "offs", &hub);
    assert_eq!(p.terminate(T), Some(0));
    assert!(
        p.log().contains(&format!(
            "Setting up partition receiver 0 with offset {}",
            a[1].offset
        )),
        "{}",
        p.log()
    );
    let seqs: Vec<i64> = read_topic(&broker().bootstrap, &topic, 5, T)
        .iter()
        .map(|r| id_seq(r).1)
        .collect();
    let mut want = vec![a[2].sequence_number];
    want.extend(b.iter().map(|s| s.sequence_number));
    want.push(c1.sequence_number);
    assert_eq!(seqs, want);
}

#[test]
fn dropped_connections_mid_stream_lose_nothing() {
    let hub = Hub::start(2);
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("src-fault");
    create_topic(&broker().bootstrap, &topic, 2);
    let mut total = send_many(&hub, 0, 5_000, 8);
    let w = noschema_worker(dir.path());
    let c = source_file(dir.path(), "src", &topic, &hub, "");
    let mut p = start(&w, &c);
    wait_until("records to arrive", T, || {
        topic_size(&broker().bootstrap, &topic) > 0
    });
    let attached = hub.receivers_attached();
    hub.emu().faults().drop_connections();
    total += send_many(&hub, total, 1_000, 8);
    wait_until("the receivers to reattach", T, || {
        hub.receivers_attached() >= attached + 2
    });
    total += send_many(&hub, total, 1_000, 8);
    wait_all_committed(dir.path(), "src", &hub);
    assert_eq!(p.terminate(T), Some(0), "{}", p.log());
    let (unique, dups) = unique_and_duplicates(&topic);
    assert_eq!(unique, total, "none lost");
    assert_eq!(dups, 0, "redelivered events are dropped by sequence number");
}

#[test]
fn a_stolen_partition_is_logged_as_an_error_and_taken_back_later() {
    use azure_messaging_eventhubs::{ConsumerClient, OpenReceiverOptions};
    use futures::StreamExt;
    let hub = Hub::start(1);
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("src-stolen");
    create_topic(&broker().bootstrap, &topic, 1);
    hub.send("d", b"{\"i\":0}", None);
    let w = noschema_worker(dir.path());
    let c = source_file(dir.path(), "src", &topic, &hub, "");
    let mut p = start(&w, &c);
    read_topic(&broker().bootstrap, &topic, 1, T);
    // Another reader with an owner level (epoch) takes partition 0.
    let info = hub.emu().info().clone();
    let thief = hub.rt.block_on(async {
        let client = ConsumerClient::builder()
            .with_custom_endpoint(info.amqp_endpoint.clone())
            .open_with_connection_string(info.event_hub_connection_string.expose(), None)
            .await
            .unwrap();
        let rx = client
            .open_receiver_on_partition(
                "0".into(),
                Some(OpenReceiverOptions {
                    owner_level: Some(1),
                    ..Default::default()
                }),
            )
            .await
            .unwrap();
        // Polling attaches the link; nothing new arrives (it starts at the end).
        let _ = tokio::time::timeout(Duration::from_secs(2), rx.stream_events().next()).await;
        (client, rx)
    });
    p.wait_for_log("was taken by another reader", T);
    assert!(p.log().contains("ERROR"), "{}", p.log());
    // The thief leaves; iotconnect takes the partition back (slowly) and reads on.
    hub.rt.block_on(async {
        let (client, rx) = thief;
        rx.close().await.unwrap();
        client.close().await.unwrap();
    });
    hub.send("d", b"{\"i\":1}", None);
    wait_all_committed(dir.path(), "src", &hub);
    assert_eq!(p.terminate(T), Some(0));
    assert_eq!(topic_size(&broker().bootstrap, &topic), 2);
}
