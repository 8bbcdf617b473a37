//! What the test broker supports of what distributed mode needs (issue 12, first step): Kafka
//! transactions (commit and abort), `read_committed`, producer fencing by `transactional.id`,
//! compacted topics, and cooperative-sticky group assignment with failover. Each test names one
//! capability, so a broker that lacks it fails exactly that test.
//!
//! nisshi 0.7.0-pre.2 (the test broker) lacks three of them; those tests are `#[ignore]`d with the
//! reason and reproduce it with
//! `cargo test -p iotconnect-tests --test distributed -- --ignored distributed_broker::`: aborted
//! records are returned to read_committed consumers, a second producer with the same transactional.id
//! does not fence the first, and an abandoned transaction becomes visible when the next owner
//! initialises.

use crate::support;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use support::*;

const T: Duration = Duration::from_secs(30);

fn tx_producer(tid: &str) -> BaseProducer {
    let p: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &broker().bootstrap)
        .set("transactional.id", tid)
        .set("transaction.timeout.ms", "60000")
        .create()
        .unwrap();
    p.init_transactions(T)
        .expect("InitProducerId with a transactional.id");
    p
}

fn send(p: &BaseProducer, topic: &str, v: &str) {
    p.send(
        BaseRecord::<str, str>::to(topic)
            .payload(v)
            .key(v)
            .partition(0),
    )
    .map_err(|(e, _)| e)
    .unwrap();
}

/// Every value of `topic` (one partition) with the given isolation level, read to the partition end.
fn values(topic: &str, isolation: &str) -> Vec<String> {
    values_of(topic, 0, isolation)
}

/// Every value of partition `partition` of `topic`, read to its end.
fn values_of(topic: &str, partition: i32, isolation: &str) -> Vec<String> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &broker().bootstrap)
        .set("group.id", unique("check"))
        .set("isolation.level", isolation)
        .set("enable.partition.eof", "true")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Beginning)
        .unwrap();
    c.assign(&tpl).unwrap();
    let deadline = Instant::now() + T;
    let mut out = Vec::new();
    loop {
        assert!(Instant::now() < deadline, "no end of {topic} within {T:?}");
        match c.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => out.push(String::from_utf8(m.payload().unwrap().to_vec()).unwrap()),
            Some(Err(KafkaError::PartitionEOF(_))) => return out,
            Some(Err(e)) => panic!("{e}"),
            None => {}
        }
    }
}

#[test]
fn committed_transactions_are_visible_to_read_committed() {
    let topic = unique("txc");
    create_topic(&broker().bootstrap, &topic, 1);
    let p = tx_producer(&unique("tid"));
    for batch in [&["a1", "a2", "a3"][..], &["c1"][..]] {
        p.begin_transaction().unwrap();
        for v in batch {
            send(&p, &topic, v);
        }
        p.commit_transaction(T).expect("EndTxn(commit)");
    }
    assert_eq!(values(&topic, "read_committed"), ["a1", "a2", "a3", "c1"]);
}

#[test]
#[ignore = "nisshi 0.7.0-pre.2: EndTxn(abort) succeeds but read_committed consumers still receive the aborted records"]
fn transactions_commit_and_abort_with_read_committed() {
    let topic = unique("tx");
    create_topic(&broker().bootstrap, &topic, 1);
    let p = tx_producer(&unique("tid"));
    p.begin_transaction().unwrap();
    for v in ["a1", "a2", "a3"] {
        send(&p, &topic, v);
    }
    p.commit_transaction(T).expect("EndTxn(commit)");
    p.begin_transaction().unwrap();
    for v in ["x1", "x2"] {
        send(&p, &topic, v);
    }
    p.flush(T).unwrap();
    p.abort_transaction(T).expect("EndTxn(abort)");
    p.begin_transaction().unwrap();
    send(&p, &topic, "c1");
    p.commit_transaction(T).unwrap();
    assert_eq!(values(&topic, "read_committed"), ["a1", "a2", "a3", "c1"]);
    // read_uncommitted sees the aborted records too: the broker really stored and then aborted them.
    assert_eq!(
        values(&topic, "read_uncommitted"),
        ["a1", "a2", "a3", "x1", "x2", "c1"]
    );
}

#[test]
fn an_open_transaction_is_invisible_to_read_committed_until_committed() {
    let topic = unique("lso");
    create_topic(&broker().bootstrap, &topic, 1);
    let p = tx_producer(&unique("tid"));
    p.begin_transaction().unwrap();
    send(&p, &topic, "open");
    p.flush(T).unwrap();
    assert!(values(&topic, "read_committed").is_empty());
    p.commit_transaction(T).unwrap();
    assert_eq!(values(&topic, "read_committed"), ["open"]);
}

#[test]
#[ignore = "nisshi 0.7.0-pre.2: no fencing; the first producer's commit succeeds after a second producer initialised the same transactional.id"]
fn a_second_producer_with_the_same_transactional_id_fences_the_first() {
    let topic = unique("fence");
    create_topic(&broker().bootstrap, &topic, 1);
    let tid = unique("tid");
    let old = tx_producer(&tid);
    old.begin_transaction().unwrap();
    send(&old, &topic, "zombie");
    old.flush(T).unwrap();
    // The new owner's InitProducerId bumps the epoch and aborts the old open transaction.
    let new = tx_producer(&tid);
    let late = old.commit_transaction(T);
    match &late {
        Err(KafkaError::Transaction(e)) => assert!(
            e.code() == RDKafkaErrorCode::InvalidProducerEpoch
                || e.code() == RDKafkaErrorCode::ProducerFenced
                || e.is_fatal(),
            "fenced, got {e:?}"
        ),
        other => panic!("the zombie's commit must fail as fenced, got {other:?}"),
    }
    new.begin_transaction().unwrap();
    send(&new, &topic, "owner");
    new.commit_transaction(T).unwrap();
    assert_eq!(values(&topic, "read_committed"), ["owner"]);
}

#[test]
fn compacted_topics_are_created_and_described() {
    let topic = unique("compact");
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &broker().bootstrap)
        .create()
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let res = rt
        .block_on(
            admin.create_topics(
                &[NewTopic::new(&topic, 3, TopicReplication::Fixed(1))
                    .set("cleanup.policy", "compact")],
                &AdminOptions::new(),
            ),
        )
        .unwrap();
    res.into_iter().for_each(|r| {
        r.unwrap();
    });
    let desc = rt
        .block_on(admin.describe_configs(&[ResourceSpecifier::Topic(&topic)], &AdminOptions::new()))
        .unwrap();
    let r = desc.into_iter().next().unwrap().expect("DescribeConfigs");
    let policy = r.get("cleanup.policy").and_then(|e| e.value.clone());
    assert_eq!(policy.as_deref(), Some("compact"));
}

fn group_member(topic: &str, group: &str) -> BaseConsumer {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &broker().bootstrap)
        .set("group.id", group)
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "1000")
        .create()
        .unwrap();
    c.subscribe(&[topic]).unwrap();
    c
}

fn owned(c: &BaseConsumer) -> BTreeSet<i32> {
    c.assignment()
        .unwrap()
        .elements()
        .iter()
        .map(|e| e.partition())
        .collect()
}

/// Two members split 4 partitions 2 + 2 (incrementally); when one leaves, the other takes all 4
/// within the session timeout plus a few seconds. (A member that dies without leaving is covered by
/// the worker tests in tests/distributed_workers.rs, where workers are processes killed with -9.)
#[test]
fn cooperative_sticky_splits_and_fails_over_within_the_session_timeout() {
    let topic = unique("coop");
    create_topic(&broker().bootstrap, &topic, 4);
    let group = unique("g");
    let a = group_member(&topic, &group);
    let t0 = Instant::now();
    wait_until("a owns all 4", T, || {
        a.poll(Duration::from_millis(100));
        owned(&a).len() == 4
    });
    eprintln!("first assignment after {:?}", t0.elapsed());
    let b = group_member(&topic, &group);
    let t1 = Instant::now();
    wait_until("2 + 2 split", T, || {
        a.poll(Duration::from_millis(50));
        b.poll(Duration::from_millis(50));
        let (x, y) = (owned(&a), owned(&b));
        x.len() == 2 && y.len() == 2 && x.is_disjoint(&y)
    });
    eprintln!("join rebalance after {:?}", t1.elapsed());
    drop(b);
    let t2 = Instant::now();
    wait_until("a owns all 4 again", Duration::from_secs(6 + 10), || {
        a.poll(Duration::from_millis(100));
        owned(&a).len() == 4
    });
    eprintln!("takeover after a leave: {:?}", t2.elapsed());
}

/// Kafka aborts a transaction left open by a dead producer when a new producer with the same
/// transactional.id initialises: its records never become visible to read_committed.
#[test]
#[ignore = "nisshi 0.7.0-pre.2: the new producer's InitProducerId makes the abandoned transaction's records visible to read_committed"]
fn a_new_owner_aborts_the_transaction_a_dead_producer_left_open() {
    let topic = unique("abandon");
    create_topic(&broker().bootstrap, &topic, 1);
    let tid = unique("tid");
    let old = tx_producer(&tid);
    old.begin_transaction().unwrap();
    send(&old, &topic, "zombie");
    old.flush(T).unwrap();
    // Like kill -9: the producer never ends its transaction (its threads are simply abandoned).
    std::mem::forget(old);
    let new = tx_producer(&tid);
    new.begin_transaction().unwrap();
    send(&new, &topic, "owner");
    new.commit_transaction(T).unwrap();
    assert_eq!(values(&topic, "read_committed"), ["owner"]);
}

/// On two new one-partition topics P and Q: `h2` writes P, `w` writes Q, `h7` writes P and Q (each
/// flushed, all three open at once); then `h2`, `h7` and `w` commit in that order, every commit
/// acknowledged. Returns (P, Q).
fn interleave_three_commits() -> (String, String) {
    let p = unique("txp");
    let q = unique("txq");
    create_topic(&broker().bootstrap, &p, 1);
    create_topic(&broker().bootstrap, &q, 1);
    let h2 = tx_producer(&unique("tid-h2"));
    let w = tx_producer(&unique("tid-w"));
    let h7 = tx_producer(&unique("tid-h7"));
    h2.begin_transaction().unwrap();
    send(&h2, &p, "h2");
    h2.flush(T).unwrap();
    w.begin_transaction().unwrap();
    send(&w, &q, "w");
    w.flush(T).unwrap();
    h7.begin_transaction().unwrap();
    send(&h7, &p, "h7p");
    send(&h7, &q, "h7q");
    h7.flush(T).unwrap();
    h2.commit_transaction(T).expect("EndTxn(commit) of h2");
    h7.commit_transaction(T).expect("EndTxn(commit) of h7");
    w.commit_transaction(T).expect("EndTxn(commit) of w");
    (p, q)
}

/// Three transactions interleaved over two partitions, as exactly-once pipelines whose hub partitions
/// share Kafka partitions produce them: `h2` writes P, `w` writes Q, `h7` writes P and Q; then `h2`,
/// `h7` and `w` commit in that order. All three are committed, so read_committed must show every
/// record of both partitions.
#[test]
#[ignore = "nisshi 0.7.0-pre.2: a committed transaction stays PREPARE_COMMIT (holding the partition's last stable offset) when the transactions it waited for are completed through another partition; a later transaction on its partition releases it"]
fn interleaved_committed_transactions_are_all_visible() {
    let (p, q) = interleave_three_commits();
    assert_eq!(values(&q, "read_committed"), ["w", "h7q"]);
    assert_eq!(values(&p, "read_committed"), ["h2", "h7p"]);
}

/// A transaction on a partition is released by the next one there: the exactly-once tests keep a
/// trickle of events flowing while they read, so the test broker's stranded commits (see
/// `interleaved_committed_transactions_are_all_visible`) become visible.
#[test]
fn a_later_transaction_on_the_partition_makes_earlier_commits_visible() {
    let (p, _q) = interleave_three_commits();
    let later = tx_producer(&unique("tid-later"));
    later.begin_transaction().unwrap();
    send(&later, &p, "later");
    later.commit_transaction(T).unwrap();
    assert_eq!(values(&p, "read_committed"), ["h2", "h7p", "later"]);
}
