//! The stall watchdog (issue 13.1): a partition link that stays attached but delivers nothing is
//! found through `$management`, torn down and reopened after the last delivered event; a partition
//! that stays stalled is reported by `/readyz`. Uses the emulator's freeze and delay faults.

use crate::source_support;
use crate::support;

use serde_json::json;
use source_support::*;
use std::time::{Duration, Instant};
use support::*;

fn labels(p: &str) -> [(&str, &str); 2] {
    [("connector", "src"), ("partition", p)]
}

const RECOVERIES: &str = "iotconnect_source_partition_stall_recoveries_total";

#[test]
fn a_frozen_link_is_reopened_without_loss_or_duplicate_and_the_recovery_is_timed() {
    let hub = Hub::start(1);
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("src-freeze");
    create_topic(&broker().bootstrap, &topic, 1);
    let mut total = send_many(&hub, 0, 200, 4);
    let w = noschema_worker(dir.path());
    let port = rest_port(&w);
    let c = source_file(dir.path(), "src", &topic, &hub, "IotHub.StallTimeout=2\n");
    let mut p = start(&w, &c);
    wait_until("the first events in Kafka", T, || {
        topic_size(&broker().bootstrap, &topic) == total as i64
    });
    assert_eq!(metric(port, RECOVERIES, &labels("0")), Some(0.0));
    // Deliveries stop on the attached link (no error, the link stays up) for far longer than the
    // test: only a reopened link gets events again.
    post_fault(
        &hub,
        json!({"freezePartition": "0", "freezeSeconds": 600, "freezeScope": "links"}),
    );
    let t0 = Instant::now();
    total += send_many(&hub, total, 100, 4);
    wait_until("the events sent during the freeze in Kafka", T, || {
        topic_size(&broker().bootstrap, &topic) == total as i64
    });
    let recovery = t0.elapsed();
    eprintln!(
        "recovery of a frozen partition with IotHub.StallTimeout=2: {:.1} s",
        recovery.as_secs_f64()
    );
    p.wait_for_log("Partition 0 of eventHub", T);
    assert!(p.log().contains("is stalled"), "{}", p.log());
    assert!(metric(port, RECOVERIES, &labels("0")).unwrap() >= 1.0);
    assert!(
        metric(
            port,
            "iotconnect_source_partition_seconds_since_last_event",
            &labels("0")
        )
        .unwrap()
            < 5.0
    );
    assert!(
        recovery < Duration::from_secs(20),
        "recovered within the stall timeout plus a check: {recovery:?}"
    );
    // Flowing again on the new link.
    total += send_many(&hub, total, 50, 4);
    wait_all_committed(dir.path(), "src", &hub);
    assert_eq!(p.terminate(T), Some(0), "{}", p.log());
    let (unique, dups) = unique_and_duplicates(&topic);
    assert_eq!(unique, total, "none lost");
    assert_eq!(
        dups, 0,
        "none duplicated: reopened after the last delivered sequence number"
    );
}

#[test]
fn a_partition_that_stays_frozen_is_reported_by_readyz_until_it_flows_again() {
    let hub = Hub::start(1);
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("src-freeze-part");
    create_topic(&broker().bootstrap, &topic, 1);
    let mut total = send_many(&hub, 0, 50, 4);
    let w = noschema_worker(dir.path());
    let port = rest_port(&w);
    let c = source_file(dir.path(), "src", &topic, &hub, "IotHub.StallTimeout=1\n");
    let mut p = start(&w, &c);
    wait_until("the first events in Kafka", T, || {
        topic_size(&broker().bootstrap, &topic) == total as i64
    });
    wait_until("/readyz 200", T, || rest_get(port, "/readyz").0 == 200);
    // Every link, also the reopened ones, is frozen for 30 s.
    post_fault(
        &hub,
        json!({"freezePartition": "0", "freezeSeconds": 30, "freezeScope": "partition"}),
    );
    let t0 = Instant::now();
    total += send_many(&hub, total, 50, 4);
    wait_until("/readyz to report the stalled partition", T, || {
        let (status, body) = rest_get(port, "/readyz");
        status == 503 && body.contains("stalled_partitions=0")
    });
    assert!(
        t0.elapsed() < Duration::from_secs(30),
        "reported while frozen"
    );
    assert_eq!(
        metric(port, "iotconnect_source_partition_stalled", &labels("0")),
        Some(1.0)
    );
    assert!(metric(port, RECOVERIES, &labels("0")).unwrap() >= 2.0);
    p.wait_for_log("stays stalled after", T);
    // The freeze ends: the next reopen delivers, readiness comes back.
    wait_until(
        "the events sent during the freeze in Kafka",
        Duration::from_secs(90),
        || topic_size(&broker().bootstrap, &topic) == total as i64,
    );
    wait_until("/readyz 200 again", T, || {
        rest_get(port, "/readyz").0 == 200
    });
    assert_eq!(
        metric(port, "iotconnect_source_partition_stalled", &labels("0")),
        Some(0.0)
    );
    wait_all_committed(dir.path(), "src", &hub);
    assert_eq!(p.terminate(T), Some(0), "{}", p.log());
    let (unique, dups) = unique_and_duplicates(&topic);
    assert_eq!(unique, total, "none lost");
    assert_eq!(dups, 0, "none duplicated");
}

#[test]
fn delayed_deliveries_lose_and_duplicate_nothing_with_or_without_stall_recoveries() {
    let hub = Hub::start(2);
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("src-delay");
    create_topic(&broker().bootstrap, &topic, 2);
    let mut total = send_many(&hub, 0, 20, 4);
    let w = noschema_worker(dir.path());
    let port = rest_port(&w);
    let c = source_file(dir.path(), "src", &topic, &hub, "IotHub.StallTimeout=1\n");
    let mut p = start(&w, &c);
    wait_until("the first events in Kafka", T, || {
        topic_size(&broker().bootstrap, &topic) == total as i64
    });
    // Partition 0: each delivery 200 ms late (below the stall timeout: no recovery);
    // partition 1: 2.5 s late (above it: the watchdog reopens, and the reopened link is late too).
    post_fault(
        &hub,
        json!({"delayPartition": "0", "delayMs": 200, "delaySeconds": 15}),
    );
    post_fault(
        &hub,
        json!({"delayPartition": "1", "delayMs": 2500, "delaySeconds": 15}),
    );
    total += send_many(&hub, total, 40, 8);
    wait_until("every event in Kafka", Duration::from_secs(120), || {
        topic_size(&broker().bootstrap, &topic) == total as i64
    });
    assert_eq!(
        metric(port, RECOVERIES, &labels("0")),
        Some(0.0),
        "a slow partition below the stall timeout is not a stall"
    );
    wait_all_committed(dir.path(), "src", &hub);
    assert_eq!(p.terminate(T), Some(0), "{}", p.log());
    let (unique, dups) = unique_and_duplicates(&topic);
    assert_eq!(unique, total, "none lost");
    assert_eq!(dups, 0, "none duplicated");
}
