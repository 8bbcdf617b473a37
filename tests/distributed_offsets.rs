//! The offsets topic of distributed mode, byte for byte: Connect's key/value JSON, the partition Java's
//! murmur2 partitioner picks, compaction and read_committed semantics, and the offsets CLI.

use crate::support;

use iotconnect::connect::Value;
use iotconnect::distributed::murmur2;
use iotconnect::offsets::kafka::{
    ensure_compacted_topic, load_store, offset_record, wait_until_stable, TopicSpec,
};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{BaseProducer, BaseRecord, FutureProducer, FutureRecord, Producer};
use rdkafka::ClientConfig;
use std::time::Duration;
use support::*;

const T: Duration = Duration::from_secs(30);

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn base() -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &broker().bootstrap);
    c
}

fn spec(name: &str, partitions: i32) -> TopicSpec {
    TopicSpec {
        name: name.into(),
        partitions,
        replication_factor: 1,
    }
}

fn part(p: &str) -> [(&'static str, String); 2] {
    [
        ("EventHubName", "iothub-ehub-my-hub-123".to_string()),
        ("EventHubPartition", p.to_string()),
    ]
}

fn write(producer: &FutureProducer, topic: &str, connector: &str, p: &str, offset: Option<&str>) {
    let sp = part(p);
    let b: Vec<(&str, &str)> = sp.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let value = offset.map(|o| [("EventHubOffset", Value::String(o.into()))]);
    let (k, v) = offset_record(connector, &b, value.as_ref().map(|v| &v[..]));
    let mut rec: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic).key(&k);
    if let Some(v) = &v {
        rec = rec.payload(v);
    }
    rt().block_on(producer.send(rec, T))
        .map_err(|(e, _)| e)
        .unwrap();
}

#[test]
fn records_are_connects_bytes_on_the_partition_javas_murmur2_picks() {
    let topic = unique("connect-offsets");
    rt().block_on(ensure_compacted_topic(&base(), &spec(&topic, 25)))
        .unwrap();
    let producer = iotconnect::distributed::configs::worker_producer(&base()).unwrap();
    for p in 0..8 {
        write(
            &producer,
            &topic,
            "AzureIotHubConnector",
            &p.to_string(),
            Some(&format!("{}", 100 * p)),
        );
    }
    let recs = read_topic(&broker().bootstrap, &topic, 8, T);
    for r in &recs {
        let key = r.key.as_deref().unwrap();
        let text = String::from_utf8(key.to_vec()).unwrap();
        let p = text
            .split("\"EventHubPartition\":\"")
            .nth(1)
            .unwrap()
            .trim_end_matches("\"}]");
        assert_eq!(
            text,
            format!(
                r#"["AzureIotHubConnector",{{"EventHubName":"iothub-ehub-my-hub-123","EventHubPartition":"{p}"}}]"#
            )
        );
        let n: i64 = p.parse().unwrap();
        assert_eq!(
            r.value.as_deref().unwrap(),
            format!(r#"{{"EventHubOffset":"{}"}}"#, 100 * n).as_bytes()
        );
        // librdkafka's murmur2_random put it where Java's Utils.murmur2 says.
        assert_eq!(r.partition, murmur2::partition(key, 25), "{text}");
    }
    // The spread is real (not everything on one partition).
    let used: std::collections::BTreeSet<i32> = recs.iter().map(|r| r.partition).collect();
    assert!(used.len() > 2, "{used:?}");
}

#[test]
fn the_last_value_wins_and_a_tombstone_deletes() {
    let topic = unique("connect-offsets");
    rt().block_on(ensure_compacted_topic(&base(), &spec(&topic, 5)))
        .unwrap();
    let producer = iotconnect::distributed::configs::worker_producer(&base()).unwrap();
    write(&producer, &topic, "c", "0", Some("10"));
    write(&producer, &topic, "c", "0", Some("20"));
    write(&producer, &topic, "c", "1", Some("5"));
    write(&producer, &topic, "c", "1", None);
    let store = load_store(&base(), &topic, T).unwrap();
    let sp = part("0");
    let b: Vec<(&str, &str)> = sp.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(
        store.get("c", &b),
        Some(vec![(
            "EventHubOffset".to_string(),
            Value::String("20".into())
        )])
    );
    let sp1 = part("1");
    let b1: Vec<(&str, &str)> = sp1.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(store.get("c", &b1), None);
    // The CLI shows the same.
    let mut out = Vec::new();
    iotconnect::offsets::kafka::show_topic(&broker().bootstrap, &topic, &mut out).unwrap();
    let out = String::from_utf8(out).unwrap();
    assert!(out.contains(r#""value":{"EventHubOffset":"20"}"#), "{out}");
    assert!(out.contains(r#""value":null"#), "{out}");
}

#[test]
#[ignore = "nisshi 0.7.0-pre.2 returns aborted records to read_committed consumers (tests/distributed_broker.rs)"]
fn an_offset_written_in_an_aborted_transaction_is_never_read() {
    let topic = unique("connect-offsets");
    rt().block_on(ensure_compacted_topic(&base(), &spec(&topic, 3)))
        .unwrap();
    let p: BaseProducer = base()
        .clone()
        .set("transactional.id", unique("tid"))
        .set("partitioner", "murmur2_random")
        .create()
        .unwrap();
    p.init_transactions(T).unwrap();
    let sp = part("0");
    let b: Vec<(&str, &str)> = sp.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (k, v) = offset_record(
        "c",
        &b,
        Some(&[("EventHubOffset", Value::String("7".into()))]),
    );
    p.begin_transaction().unwrap();
    p.send(BaseRecord::to(&topic).key(&k).payload(v.as_ref().unwrap()))
        .map_err(|(e, _)| e)
        .unwrap();
    p.flush(T).unwrap();
    p.abort_transaction(T).unwrap();
    assert_eq!(load_store(&base(), &topic, T).unwrap().get("c", &b), None);
    p.begin_transaction().unwrap();
    p.send(BaseRecord::to(&topic).key(&k).payload(v.as_ref().unwrap()))
        .map_err(|(e, _)| e)
        .unwrap();
    p.commit_transaction(T).unwrap();
    assert!(load_store(&base(), &topic, T)
        .unwrap()
        .get("c", &b)
        .is_some());
}

#[test]
fn an_existing_topic_that_is_not_compacted_is_refused() {
    let topic = unique("not-compacted");
    let admin: AdminClient<DefaultClientContext> = base().create().unwrap();
    rt().block_on(admin.create_topics(
        &[NewTopic::new(&topic, 1, TopicReplication::Fixed(1)).set("cleanup.policy", "delete")],
        &AdminOptions::new(),
    ))
    .unwrap()
    .into_iter()
    .for_each(|r| {
        r.unwrap();
    });
    let e = rt()
        .block_on(ensure_compacted_topic(&base(), &spec(&topic, 1)))
        .unwrap_err()
        .to_string();
    assert!(e.contains("cleanup.policy=compact"), "{e}");
    assert!(e.contains("cleanup.policy=delete"), "{e}");
}

/// A new owner waits for transactions open in the offsets topic before it reads its offset: while
/// one is open the partition is reported short (its last stable offset below the high watermark
/// taken at the start), once it commits the wait returns at once with nothing short.
#[test]
fn the_offsets_topic_is_read_once_no_transaction_is_open_before_its_end() {
    let topic = unique("offsets-stable");
    create_topic(&broker().bootstrap, &topic, 2);
    let p: BaseProducer = base()
        .set("transactional.id", unique("stable"))
        .create()
        .unwrap();
    p.init_transactions(T).unwrap();
    assert!(
        wait_until_stable(&base(), &topic, Duration::from_millis(200))
            .unwrap()
            .is_empty()
    );
    p.begin_transaction().unwrap();
    p.send(
        BaseRecord::<str, str>::to(&topic)
            .key("k")
            .payload("v")
            .partition(1),
    )
    .map_err(|(e, _)| e)
    .unwrap();
    p.flush(T).unwrap();
    let short = wait_until_stable(&base(), &topic, Duration::from_millis(500)).unwrap();
    assert_eq!(short.len(), 1, "{short:?}");
    assert_eq!(short[0].partition, 1);
    assert!(short[0].stable < short[0].high, "{short:?}");
    p.commit_transaction(T).unwrap();
    let t0 = std::time::Instant::now();
    assert!(wait_until_stable(&base(), &topic, T).unwrap().is_empty());
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
}
