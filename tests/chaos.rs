//! The chaos suite: faults injected while data flows, in both directions, against the real binary, a
//! real broker and the IoT Hub emulator.
//!
//! Every scenario asserts the same four things:
//! * **nothing lost**: every hub event is on Kafka, every Kafka record was accepted by the hub;
//! * **order kept**: per hub partition (source; the target topic has one partition so the order is
//!   total) and per device (sink; records are keyed by device, so one device is one Kafka partition):
//!   the first occurrences of the items come in increasing order (duplicates of already-seen items
//!   are allowed after a crash: at-least-once);
//! * **the offsets file always decodes** (checked after every crash);
//! * **everything is committed at the end**.
//!
//! Counts are short by default (CI). `CHAOS_LONG=1` (`scripts/chaos.sh --long`) runs the soak
//! counts the issue asks for. Each scenario appends one row (scenario, repetitions, items, lost,
//! duplicates, seconds) to `target/chaos-report.tsv`, which `scripts/chaos.sh` prints as a table.

mod chaos_support;
mod source_support;
mod support;

use chaos_support::*;
use iotconnect_emulator::EmulatorOptions;
use rand::Rng;
use source_support::{committed, offsets_path};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use support::*;

/// `kill -9` of the source at random points; offsets flushed every 100 ms so kills land mid-write.
#[test]
fn source_kill_9_at_random_points() {
    let t0 = Instant::now();
    let reps = long_or(20, 5);
    let hub = Hub::start(4, EmulatorOptions::default());
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("chaos-src-kill");
    create_topic(&broker().bootstrap, &topic, 1);
    let bootstrap = broker().bootstrap.clone();
    let (w, _) = worker_file(dir.path(), &bootstrap, "offset.flush.interval.ms=100\n");
    let c = source_file(dir.path(), "src", &topic, &hub);
    let mut sent = Sent::default();
    sent.send(&hub, 2_000, 32);
    let mut rng = rand::rng();
    for rep in 0..reps {
        let mut p = start(&w, &[&c]);
        // A random point while events keep flowing: some committed, some in flight, some mid-write.
        let kill_after = Duration::from_millis(rng.random_range(50..1500));
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            let sent = &mut sent;
            let (hub, stop) = (&hub, &stop);
            s.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    sent.send(hub, 50, 32);
                    std::thread::sleep(Duration::from_millis(20));
                }
            });
            std::thread::sleep(kill_after);
            p.signal(libc::SIGKILL);
            stop.store(true, Ordering::Relaxed);
        });
        p.wait(T);
        let entries = iotconnect::offsets::load(&offsets_path(dir.path()))
            .unwrap_or_else(|e| panic!("offsets file unreadable after kill {rep}: {e:#}"));
        assert!(entries.len() <= 4, "{entries:?}");
    }
    let mut p = start(&w, &[&c]);
    wait_source_committed(dir.path(), "src", &hub);
    assert_eq!(p.terminate(T), Some(0), "{}", p.log());
    let check = check_source_topic(&topic, &sent);
    report("source kill -9", reps, &check, t0);
    check.assert_complete();
}

/// `kill -9` of the sink at random points; Kafka offsets committed every 100 ms.
#[test]
fn sink_kill_9_at_random_points() {
    let t0 = Instant::now();
    // Its own sink name: the consumer group `connect-<name>` is shared state on the broker.
    let snk_name = unique("snk");
    let reps = long_or(20, 5);
    let hub = Hub::start(4, EmulatorOptions::default());
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("chaos-sink-kill");
    create_topic(&broker().bootstrap, &topic, 4);
    let bootstrap = broker().bootstrap.clone();
    let (w, _) = worker_file(dir.path(), &bootstrap, "offset.flush.interval.ms=100\n");
    let c = sink_file(dir.path(), &snk_name, &topic, &hub);
    let mut out = C2dSent::default();
    // At most 10 messages per device and round, so even with duplicates a device's queue (50 on IoT
    // Hub) is never full.
    let devices = long_or(400, 100);
    out.produce(&bootstrap, &topic, devices, 4);
    let mut rng = rand::rng();
    for _ in 0..reps {
        let mut p = start(&w, &[&c]);
        // Records keep arriving (a tenth of the devices every 100 ms, so each device gets at most a
        // few per round) while the kill lands at a random point.
        let kill_after = Duration::from_millis(rng.random_range(500..5000));
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            let out = &mut out;
            let (bootstrap, topic, stop) = (&bootstrap, &topic, &stop);
            s.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    out.produce(bootstrap, topic, devices / 10, 1);
                    std::thread::sleep(Duration::from_millis(100));
                }
            });
            std::thread::sleep(kill_after);
            p.signal(libc::SIGKILL);
            stop.store(true, Ordering::Relaxed);
        });
        p.wait(T);
    }
    let mut p = start(&w, &[&c]);
    wait_sink_committed(&bootstrap, &format!("connect-{snk_name}"), &topic, 4, &p);
    assert_eq!(p.terminate(T), Some(0), "{}", p.log());
    let check = check_hub_messages(&hub, &out);
    report("sink kill -9", reps, &check, t0);
    check.assert_complete();
}

/// The broker stopped for 30 s under load (both directions) and restarted on the same port: the
/// tasks are RUNNING again without a restart of iotconnect, nothing is lost.
#[test]
fn broker_stopped_under_load_and_restarted() {
    let t0 = Instant::now();
    // Its own sink name: the consumer group `connect-<name>` is shared state on the broker.
    let snk_name = unique("snk");
    let reps = long_or(3, 1);
    let outage = Duration::from_secs(long_or(30, 15) as u64);
    let mut kafka = RestartableBroker::start();
    let hub = Hub::start(4, EmulatorOptions::default());
    let dir = tempfile::tempdir().unwrap();
    let src_topic = unique("chaos-brk-in");
    let sink_topic = unique("chaos-brk-out");
    create_topic(&kafka.bootstrap, &src_topic, 1);
    create_topic(&kafka.bootstrap, &sink_topic, 4);
    let (w, rest) = worker_file(
        dir.path(),
        &kafka.bootstrap,
        "offset.flush.interval.ms=500\n",
    );
    let src = source_file(dir.path(), "src", &src_topic, &hub);
    let snk = sink_file(dir.path(), &snk_name, &sink_topic, &hub);
    let mut sent = Sent::default();
    let mut out = C2dSent::default();
    sent.send(&hub, 1_000, 32);
    out.produce(&kafka.bootstrap, &sink_topic, 100, 2);
    let mut p = start(&w, &[&src, &snk]);
    wait_tasks_running(rest, &["src", snk_name.as_str()]);
    for _ in 0..reps {
        kafka.stop();
        // Hub events keep arriving while Kafka is away.
        let until = Instant::now() + outage;
        while Instant::now() < until {
            sent.send(&hub, 100, 32);
            std::thread::sleep(Duration::from_millis(500));
        }
        kafka.restart();
        out.produce(&kafka.bootstrap, &sink_topic, 100, 2);
        sent.send(&hub, 500, 32);
        wait_tasks_running(rest, &["src", snk_name.as_str()]);
    }
    wait_source_committed(dir.path(), "src", &hub);
    wait_sink_committed(
        &kafka.bootstrap,
        &format!("connect-{snk_name}"),
        &sink_topic,
        4,
        &p,
    );
    wait_until("the hub to hold every C2D message", T, || {
        check_hub_messages(&hub, &out).lost == 0
    });
    assert_eq!(p.terminate(T), Some(0), "{}", p.log());
    let mut check = check_source_topic_on(&kafka.bootstrap, &src_topic, &sent);
    check.add(&check_hub_messages(&hub, &out));
    report("broker stopped and restarted", reps, &check, t0);
    check.assert_complete();
}

/// Every AMQP connection of the hub dropped every 2 s, source and sink running in one worker.
#[test]
fn hub_connections_dropped_every_2_s() {
    let t0 = Instant::now();
    // Its own sink name: the consumer group `connect-<name>` is shared state on the broker.
    let snk_name = unique("snk");
    let period = Duration::from_secs(long_or(120, 20) as u64);
    let hub = Hub::start(4, EmulatorOptions::default());
    let dir = tempfile::tempdir().unwrap();
    let bootstrap = broker().bootstrap.clone();
    let src_topic = unique("chaos-drop-in");
    let sink_topic = unique("chaos-drop-out");
    create_topic(&bootstrap, &src_topic, 1);
    create_topic(&bootstrap, &sink_topic, 4);
    let (w, rest) = worker_file(dir.path(), &bootstrap, "offset.flush.interval.ms=500\n");
    let src = source_file(dir.path(), "src", &src_topic, &hub);
    let snk = sink_file(dir.path(), &snk_name, &sink_topic, &hub);
    let mut sent = Sent::default();
    let mut out = C2dSent::default();
    let mut p = start(&w, &[&src, &snk]);
    wait_tasks_running(rest, &["src", snk_name.as_str()]);
    let until = Instant::now() + period;
    let mut drops = 0;
    std::thread::scope(|s| {
        let (hub, drops) = (&hub, &mut drops);
        s.spawn(move || {
            while Instant::now() < until {
                std::thread::sleep(Duration::from_secs(2));
                hub.emu().faults().drop_connections();
                *drops += 1;
            }
        });
        while Instant::now() < until {
            sent.send(hub, 100, 32);
            // Each device gets one message per round: its queue stays far below IoT Hub's 50.
            out.produce(&bootstrap, &sink_topic, 100, 1);
            std::thread::sleep(Duration::from_millis(500));
        }
    });
    wait_source_committed(dir.path(), "src", &hub);
    wait_sink_committed(
        &bootstrap,
        &format!("connect-{snk_name}"),
        &sink_topic,
        4,
        &p,
    );
    assert_eq!(p.terminate(T), Some(0), "{}", p.log());
    let source = check_source_topic(&src_topic, &sent);
    let sink = check_hub_messages(&hub, &out);
    report(
        "hub connections dropped every 2 s: source",
        drops,
        &source,
        t0,
    );
    report("hub connections dropped every 2 s: sink", drops, &sink, t0);
    source.assert_complete();
    sink.assert_complete();
}

/// The hub unreachable (its listener gone) for longer than `max.poll.interval.ms`, then SIGTERM:
/// the sink stops within the graceful timeout with its final commit; after the hub is back and the
/// worker restarted, every record reaches the hub.
#[test]
fn hub_unreachable_past_max_poll_interval_then_sigterm() {
    let t0 = Instant::now();
    // Its own sink name: the consumer group `connect-<name>` is shared state on the broker.
    let snk_name = unique("snk");
    let port = free_port();
    let opts = EmulatorOptions {
        amqp_listen: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        ..Default::default()
    };
    let mut hub = Hub::start(4, opts.clone());
    let dir = tempfile::tempdir().unwrap();
    let bootstrap = broker().bootstrap.clone();
    let topic = unique("chaos-unreach");
    create_topic(&bootstrap, &topic, 4);
    let (w, rest) = worker_file(
        dir.path(),
        &bootstrap,
        "offset.flush.interval.ms=500\n\
         task.shutdown.graceful.timeout.ms=5000\n\
         consumer.max.poll.interval.ms=7000\n",
    );
    let snk = sink_file(dir.path(), &snk_name, &topic, &hub);
    let mut out = C2dSent::default();
    out.produce(&bootstrap, &topic, 100, 2);
    let p = start(&w, &[&snk]);
    wait_tasks_running(rest, &[snk_name.as_str()]);
    wait_sink_committed(&bootstrap, &format!("connect-{snk_name}"), &topic, 4, &p);
    let before = check_hub_messages(&hub, &out);
    assert_eq!(before.lost, 0);
    // The hub goes away; the worker keeps getting records it cannot deliver.
    let accepted_before = hub.emu().c2d_messages();
    let accepted_ends = end_offsets(&bootstrap, &topic, 4);
    hub.stop();
    out.produce(&bootstrap, &topic, 100, 2);
    std::thread::sleep(Duration::from_secs(10)); // longer than max.poll.interval.ms: the fault itself
    let mut p = p;
    let stop = Instant::now();
    p.signal(libc::SIGTERM);
    let code = p.wait(Duration::from_secs(30));
    let took = stop.elapsed();
    assert_eq!(code, Some(0), "{}", p.log());
    assert!(
        took < Duration::from_secs(15),
        "stopped in {took:?}, graceful timeout 5 s"
    );
    // The final commit: every record the hub accepted is committed, nothing past the first one it
    // did not (the records produced during the outage).
    assert_eq!(
        committed_offsets_or_down(&bootstrap, &format!("connect-{snk_name}"), &topic, 4),
        accepted_ends,
        "committed exactly what the hub accepted: {}",
        p.log()
    );
    // Still a group member until the end: no eviction for max.poll.interval.ms.
    assert!(
        !p.log().contains("MAX_POLL_EXCEEDED") && !p.log().contains("maximum poll interval"),
        "{}",
        p.log()
    );
    // The hub is back (same port, same keys); everything arrives after a restart.
    hub.restart(opts);
    let mut p = start(&w, &[&snk]);
    wait_sink_committed(&bootstrap, &format!("connect-{snk_name}"), &topic, 4, &p);
    assert_eq!(p.terminate(T), Some(0), "{}", p.log());
    let mut check = check_hub_messages_with(&hub, &out, accepted_before);
    check.seconds_note = format!("stop took {:.1} s", took.as_secs_f64());
    report(
        "hub unreachable > max.poll.interval.ms, SIGTERM",
        1,
        &check,
        t0,
    );
    check.assert_complete();
}

/// The offsets directory on a full file system: the old file stays intact, /readyz answers 503
/// with the reason, the failure is counted, and a failed final commit makes the exit non-zero.
/// Needs root (a small tmpfs); skipped with a notice otherwise.
#[test]
fn offsets_on_a_full_filesystem() {
    let t0 = Instant::now();
    let Some(fs) = SmallTmpfs::mount("256k") else {
        eprintln!("SKIPPED offsets_on_a_full_filesystem: cannot mount a tmpfs (needs root)");
        return;
    };
    let hub = Hub::start(2, EmulatorOptions::default());
    let dir = tempfile::tempdir().unwrap();
    let bootstrap = broker().bootstrap.clone();
    let topic = unique("chaos-full");
    create_topic(&bootstrap, &topic, 1);
    let offsets = fs.path.join("connect.offsets");
    let (w, rest) = worker_file_at(
        dir.path(),
        &bootstrap,
        &offsets,
        "offset.flush.interval.ms=200\n",
    );
    let src = source_file(dir.path(), "src", &topic, &hub);
    let mut sent = Sent::default();
    sent.send(&hub, 500, 16);
    let mut p = start(&w, &[&src]);
    wait_source_committed_at(&offsets, "src", &hub);
    assert_eq!(http_get(rest, "/readyz").0, 200);
    // Fill the file system, then keep events coming: commits now fail.
    fs.fill();
    let good = std::fs::read(&offsets).unwrap();
    sent.send(&hub, 500, 16);
    wait_until("/readyz to answer 503 naming the offsets", T, || {
        let (code, body) = http_get(rest, "/readyz");
        code == 503 && body.to_lowercase().contains("offset")
    });
    let (_, metrics) = http_get(rest, "/metrics");
    assert!(
        metrics.lines().any(|l| l.contains("commit")
            && l.contains("fail")
            && !l.starts_with('#')
            && !l.trim_end().ends_with(" 0")),
        "a commit-failure metric above 0:\n{metrics}"
    );
    assert_eq!(
        std::fs::read(&offsets).unwrap(),
        good,
        "the old offsets file is intact"
    );
    iotconnect::offsets::load(&offsets).expect("the old offsets file still decodes");
    let code = p.terminate(T);
    assert!(
        matches!(code, Some(c) if c != 0),
        "a failed final commit makes the exit non-zero: {code:?}\n{}",
        p.log()
    );
    // Space again: a restart resumes from the old file and commits everything, nothing lost.
    fs.free();
    let mut p = start(&w, &[&src]);
    wait_source_committed_at(&offsets, "src", &hub);
    assert_eq!(p.terminate(T), Some(0), "{}", p.log());
    let check = check_source_topic(&topic, &sent);
    report("offsets on a full file system", 1, &check, t0);
    check.assert_complete();
}

/// 50 concurrent REST restarts, task restarts and stop+resume pairs: afterwards exactly one
/// receiver per hub partition, nothing lost, nothing duplicated (every lifecycle change commits).
#[test]
fn fifty_concurrent_rest_lifecycle_calls() {
    let t0 = Instant::now();
    let calls = long_or(200, 50);
    let hub = Hub::start(4, EmulatorOptions::default());
    let dir = tempfile::tempdir().unwrap();
    let bootstrap = broker().bootstrap.clone();
    let topic = unique("chaos-rest");
    create_topic(&bootstrap, &topic, 1);
    let (w, rest) = worker_file(dir.path(), &bootstrap, "offset.flush.interval.ms=500\n");
    let src = source_file_extra(dir.path(), "src", &topic, &hub, "tasks.max=2\n");
    let mut sent = Sent::default();
    sent.send(&hub, 1_000, 32);
    let mut p = start(&w, &[&src]);
    wait_tasks_running(rest, &["src"]);
    let paths: Vec<(&str, &str)> = vec![
        ("POST", "/connectors/src/restart?includeTasks=true"),
        ("POST", "/connectors/src/tasks/0/restart"),
        ("POST", "/connectors/src/tasks/1/restart"),
        ("PUT", "/connectors/src/stop"),
        ("PUT", "/connectors/src/resume"),
        ("PUT", "/connectors/src/pause"),
        ("PUT", "/connectors/src/resume"),
    ];
    std::thread::scope(|s| {
        for i in 0..calls {
            let (m, path) = paths[i % paths.len()];
            s.spawn(move || http_call(rest, m, path));
        }
        // Events keep arriving meanwhile.
        sent.send(&hub, 500, 32);
    });
    // The last word: resume, so the connector runs.
    http_call(rest, "PUT", "/connectors/src/resume");
    wait_tasks_running(rest, &["src"]);
    sent.send(&hub, 500, 32);
    wait_source_committed(dir.path(), "src", &hub);
    wait_until("exactly one receiver per hub partition", T, || {
        hub.emu().stats().receivers_attached == vec![1, 1, 1, 1]
    });
    assert_eq!(p.terminate(T), Some(0), "{}", p.log());
    let check = check_source_topic(&topic, &sent);
    report("50 concurrent REST lifecycle calls", calls, &check, t0);
    check.assert_complete();
    assert_eq!(
        check.duplicates, 0,
        "graceful lifecycle changes duplicate nothing"
    );
}

// ---------------------------------------------------------------------------------------------
// Checks

/// What a scenario found.
#[derive(Default, Debug)]
struct Check {
    items: usize,
    lost: usize,
    duplicates: usize,
    order_violations: Vec<String>,
    seconds_note: String,
}

impl Check {
    fn add(&mut self, o: &Check) {
        self.items += o.items;
        self.lost += o.lost;
        self.duplicates += o.duplicates;
        self.order_violations
            .extend(o.order_violations.iter().cloned());
    }
    fn assert_complete(&self) {
        assert_eq!(self.lost, 0, "nothing lost: {self:?}");
        assert!(
            self.order_violations.is_empty(),
            "order kept: {:?}",
            &self.order_violations[..self.order_violations.len().min(5)]
        );
    }
}

fn check_source_topic(topic: &str, sent: &Sent) -> Check {
    check_source_topic_on(&broker().bootstrap, topic, sent)
}

/// Every sent event on the (one-partition) topic; per hub partition the first occurrences increase.
fn check_source_topic_on(bootstrap: &str, topic: &str, sent: &Sent) -> Check {
    let size = topic_size(bootstrap, topic) as usize;
    let recs = read_topic(bootstrap, topic, size, T);
    let mut seen: HashMap<(u32, i64), usize> = HashMap::new();
    let mut high: BTreeMap<u32, i64> = BTreeMap::new();
    let mut check = Check {
        items: sent.events.len(),
        ..Default::default()
    };
    for r in &recs {
        let (device, seq) = source_support::id_seq(r);
        let partition = sent.partition_of[&device];
        let n = seen.entry((partition, seq)).or_default();
        *n += 1;
        if *n > 1 {
            check.duplicates += 1;
            continue;
        }
        let h = high.entry(partition).or_insert(-1);
        if seq < *h {
            check
                .order_violations
                .push(format!("hub partition {partition}: {seq} after {h}"));
        }
        *h = seq.max(*h);
    }
    check.lost = sent.events.iter().filter(|e| !seen.contains_key(e)).count();
    check
}

fn check_hub_messages(hub: &Hub, out: &C2dSent) -> Check {
    check_hub_messages_with(hub, out, Vec::new())
}

/// Every produced record accepted by the hub (`earlier`: messages an earlier emulator instance
/// accepted); per device the first occurrences come in production order.
fn check_hub_messages_with(
    hub: &Hub,
    out: &C2dSent,
    earlier: Vec<iotconnect_emulator::c2d::C2dMessage>,
) -> Check {
    let mut msgs = earlier;
    msgs.extend(hub.emu().c2d_messages());
    let mut check = Check {
        items: out.ids.len(),
        ..Default::default()
    };
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut high: HashMap<String, u64> = HashMap::new();
    for m in &msgs {
        let Some(id) = m.message_id.clone() else {
            continue;
        };
        let n = seen.entry(id.clone()).or_default();
        *n += 1;
        if *n > 1 {
            check.duplicates += 1;
            continue;
        }
        if let Some(i) = out.index.get(&id) {
            let h = high.entry(m.device_id.clone()).or_insert(0);
            if *i < *h {
                check
                    .order_violations
                    .push(format!("device {}: {id} after #{h}", m.device_id));
            }
            *h = (*i).max(*h);
        }
    }
    check.lost = out.ids.iter().filter(|id| !seen.contains_key(*id)).count();
    check
}

fn report(scenario: &str, reps: usize, c: &Check, t0: Instant) {
    let line = format!(
        "{scenario}\t{reps}\t{}\t{}\t{}\t{:.0}{}\n",
        c.items,
        c.lost,
        c.duplicates,
        t0.elapsed().as_secs_f64(),
        if c.seconds_note.is_empty() {
            String::new()
        } else {
            format!(" ({})", c.seconds_note)
        }
    );
    eprint!("CHAOS {line}");
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("../chaos-report.tsv");
    use std::io::Write;
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = f.write_all(line.as_bytes());
    }
}

// Kept here (not in chaos_support) because it reads the source test helpers' offsets file layout.
fn wait_source_committed(dir: &Path, connector: &str, hub: &Hub) {
    wait_source_committed_at(&offsets_path(dir), connector, hub)
}

fn wait_source_committed_at(offsets: &Path, connector: &str, hub: &Hub) {
    let parts = hub.emu().stats().partitions;
    let dir = offsets.parent().unwrap();
    assert_eq!(offsets.file_name().unwrap(), "connect.offsets");
    wait_until(
        "every hub partition committed up to its last event",
        T,
        || {
            parts.iter().filter(|p| !p.is_empty).all(|p| {
                committed(dir, connector, p.id).as_deref() == Some(p.last_enqueued_offset.as_str())
            })
        },
    );
}
