//! Task supervision tests: lifecycle serialization (never two bodies), failure and panic capture.

use super::*;
use crate::config::load_all;
use crate::offsets::FileOffsetBackingStore;
use crate::worker::connector::body;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

pub(crate) struct Fixture {
    pub worker: Arc<WorkerConfig>,
    pub connector: Arc<ConnectorConfig>,
    pub offsets: Arc<dyn OffsetBackingStore>,
    _dir: tempfile::TempDir,
}

/// A worker and a sink connector configuration (offline: nothing connects).
pub(crate) fn fixture() -> Fixture {
    fixture_named("t")
}

/// As [`fixture`], with the connector called `name` (for per-connector metrics).
pub(crate) fn fixture_named(name: &str) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let mut loaded = loaded_named(dir.path(), name);
    let offsets = FileOffsetBackingStore::open(&loaded.worker.offset_file).unwrap();
    Fixture {
        connector: Arc::new(loaded.connectors.remove(0)),
        worker: Arc::new(loaded.worker),
        offsets,
        _dir: dir,
    }
}

/// Worker and connector files in `dir` (offsets in `dir/offsets/connect.offsets`), loaded.
pub(crate) fn loaded(dir: &std::path::Path) -> crate::config::Loaded {
    loaded_named(dir, "t")
}

fn loaded_named(dir: &std::path::Path, name: &str) -> crate::config::Loaded {
    std::fs::create_dir_all(dir.join("offsets")).unwrap();
    let w = dir.join("worker.properties");
    let c = dir.join("sink.properties");
    std::fs::write(
        &w,
        format!(
            "bootstrap.servers=127.0.0.1:9\nkey.converter=org.apache.kafka.connect.storage.StringConverter\n\
             value.converter=org.apache.kafka.connect.storage.StringConverter\n\
             offset.storage.file.filename={}\n",
            dir.join("offsets").join("connect.offsets").display()
        ),
    )
    .unwrap();
    std::fs::write(
        &c,
        format!("name={name}\nconnector.class=IotHubSink\ntopics=iotout\n\
         IotHub.ConnectionString=HostName=h.azure-devices.net;SharedAccessKeyName=service;SharedAccessKey=AAAA\n"),
    )
    .unwrap();
    load_all(&w, &[c]).unwrap_or_else(|e| panic!("{:?}", e.problems))
}

const KIND: TaskKind = TaskKind {
    worker_class: "WorkerSinkTask",
    noun: "Sink",
};

fn handle(f: &Fixture, body: TaskBody) -> Arc<TaskHandle> {
    TaskHandle::new(
        f.worker.clone(),
        f.connector.clone(),
        f.offsets.clone(),
        0,
        TaskPlan {
            config: BTreeMap::new(),
            body,
        },
        KIND,
    )
}

pub(crate) async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Counts bodies alive at once; each "commits" (yields several times) after its shutdown.
#[derive(Default)]
struct Census {
    alive: AtomicUsize,
    max: AtomicUsize,
    runs: AtomicUsize,
}

fn counted_body(census: Arc<Census>) -> TaskBody {
    body(move |ctx: TaskContext| {
        let census = census.clone();
        async move {
            let now = census.alive.fetch_add(1, Ordering::SeqCst) + 1;
            census.max.fetch_max(now, Ordering::SeqCst);
            census.runs.fetch_add(1, Ordering::SeqCst);
            ctx.shutdown.cancelled().await;
            // The final commit takes a while: a second body must not start meanwhile.
            for _ in 0..20 {
                tokio::task::yield_now().await;
            }
            census.alive.fetch_sub(1, Ordering::SeqCst);
            Ok(())
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_restarts_never_run_two_bodies() {
    let f = fixture();
    let census = Arc::new(Census::default());
    let t = handle(&f, counted_body(census.clone()));
    t.start().await;
    let mut calls = Vec::new();
    for i in 0..60 {
        let t = t.clone();
        calls.push(tokio::spawn(async move {
            match i % 3 {
                0 | 1 => t.restart(Duration::from_secs(10)).await,
                _ => {
                    t.stop(tokio::time::Instant::now() + Duration::from_secs(10))
                        .await;
                    t.start().await;
                }
            }
        }));
    }
    for c in calls {
        c.await.unwrap();
    }
    wait_until("one body running", || {
        census.alive.load(Ordering::SeqCst) == 1
    })
    .await;
    assert_eq!(
        census.max.load(Ordering::SeqCst),
        1,
        "two bodies ran at once"
    );
    assert!(census.runs.load(Ordering::SeqCst) >= 40);
    assert_eq!(t.state(), TaskState::Running);
    assert_eq!(
        t.stop(tokio::time::Instant::now() + Duration::from_secs(10))
            .await,
        None
    );
    assert_eq!(census.alive.load(Ordering::SeqCst), 0);
    assert_eq!(t.state(), TaskState::Unassigned);
}

#[tokio::test]
async fn a_start_while_a_body_runs_is_a_no_op() {
    let f = fixture();
    let census = Arc::new(Census::default());
    let t = handle(&f, counted_body(census.clone()));
    t.start().await;
    t.start().await;
    wait_until("the body", || census.runs.load(Ordering::SeqCst) == 1).await;
    t.start().await;
    assert_eq!(census.runs.load(Ordering::SeqCst), 1);
    t.stop(tokio::time::Instant::now() + Duration::from_secs(10))
        .await;
}

#[tokio::test]
async fn a_panicking_body_is_failed_with_its_message_and_restarts() {
    let f = fixture_named("panics");
    let failures = || {
        crate::rest::metrics::METRICS
            .task_failures
            .get_or_create(&crate::rest::metrics::task_labels("panics", 0))
            .get()
    };
    assert_eq!(failures(), 0);
    let runs = Arc::new(AtomicUsize::new(0));
    let r = runs.clone();
    let t = handle(
        &f,
        body(move |ctx: TaskContext| {
            let first = r.fetch_add(1, Ordering::SeqCst) == 0;
            async move {
                if first {
                    panic!("boom at partition 3");
                }
                ctx.shutdown.cancelled().await;
                Ok(())
            }
        }),
    );
    t.start().await;
    wait_until("FAILED", || matches!(t.state(), TaskState::Failed(_))).await;
    match t.state() {
        TaskState::Failed(trace) => assert!(trace.contains("boom at partition 3"), "{trace}"),
        other => panic!("{other:?}"),
    }
    assert!(!t.health.links_up());
    assert_eq!(failures(), 1, "the failure shows in metrics");
    t.restart(Duration::from_secs(5)).await;
    assert_eq!(t.state(), TaskState::Running);
    wait_until("the second run", || runs.load(Ordering::SeqCst) == 2).await;
    assert_eq!(t.state(), TaskState::Running);
    t.stop(tokio::time::Instant::now() + Duration::from_secs(5))
        .await;
}

#[tokio::test]
async fn a_failure_while_stopping_is_reported_by_stop() {
    let f = fixture();
    let t = handle(
        &f,
        body(|ctx: TaskContext| async move {
            ctx.shutdown.cancelled().await;
            Err(anyhow::anyhow!("disk full")).context("final commit failed")
        }),
    );
    t.start().await;
    let trace = t
        .stop(tokio::time::Instant::now() + Duration::from_secs(5))
        .await
        .expect("the failure is reported");
    assert!(
        trace.contains("final commit failed") && trace.contains("disk full"),
        "{trace}"
    );
    assert!(matches!(t.state(), TaskState::Failed(_)));
    // A second stop has nothing to report.
    assert_eq!(
        t.stop(tokio::time::Instant::now() + Duration::from_secs(5))
            .await,
        None
    );
}

/// The task lifecycle as a state machine, against a model: after every operation the reported
/// state and the number of live bodies match the model, and no two bodies ever live at once (also
/// when the same operations run concurrently).
mod lifecycle_model {
    use super::*;
    use proptest::prelude::*;

    #[derive(Clone, Copy, Debug)]
    enum Op {
        Start,
        Stop,
        Restart,
        Pause,
        Resume,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            Just(Op::Start),
            Just(Op::Stop),
            Just(Op::Restart),
            Just(Op::Pause),
            Just(Op::Resume)
        ]
    }

    async fn apply(t: &Arc<TaskHandle>, op: Op) {
        let soon = || tokio::time::Instant::now() + Duration::from_secs(10);
        match op {
            Op::Start => t.start().await,
            Op::Stop => {
                t.stop(soon()).await;
            }
            Op::Restart => t.restart(Duration::from_secs(10)).await,
            Op::Pause => t.set_target(TargetState::Paused),
            Op::Resume => t.set_target(TargetState::Started),
        }
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

        #[test]
        fn sequential_operations_follow_the_model(ops in proptest::collection::vec(op(), 1..12)) {
            runtime().block_on(async {
                let f = fixture();
                let census = Arc::new(Census::default());
                let t = handle(&f, counted_body(census.clone()));
                let (mut running, mut paused) = (false, false);
                for op in ops {
                    apply(&t, op).await;
                    match op {
                        Op::Start | Op::Restart => running = true,
                        Op::Stop => running = false,
                        Op::Pause => paused = true,
                        Op::Resume => paused = false,
                    }
                    let want = match (running, paused) {
                        (false, _) => TaskState::Unassigned,
                        (true, true) => TaskState::Paused,
                        (true, false) => TaskState::Running,
                    };
                    assert_eq!(t.state(), want, "after {op:?}");
                    let alive = usize::from(running);
                    wait_until("the model's body count", || {
                        census.alive.load(Ordering::SeqCst) == alive
                    })
                    .await;
                }
                assert!(census.max.load(Ordering::SeqCst) <= 1);
                t.stop(tokio::time::Instant::now() + Duration::from_secs(10)).await;
            });
        }

        #[test]
        fn concurrent_operations_never_run_two_bodies(ops in proptest::collection::vec(op(), 1..24)) {
            runtime().block_on(async {
                let f = fixture();
                let census = Arc::new(Census::default());
                let t = handle(&f, counted_body(census.clone()));
                t.start().await;
                let calls: Vec<_> = ops
                    .into_iter()
                    .map(|op| {
                        let t = t.clone();
                        tokio::spawn(async move { apply(&t, op).await })
                    })
                    .collect();
                for c in calls {
                    c.await.unwrap();
                }
                let alive = usize::from(matches!(t.state(), TaskState::Running | TaskState::Paused));
                wait_until("settled", || census.alive.load(Ordering::SeqCst) == alive).await;
                assert!(census.max.load(Ordering::SeqCst) <= 1, "two bodies at once");
                t.stop(tokio::time::Instant::now() + Duration::from_secs(10)).await;
                assert_eq!(census.alive.load(Ordering::SeqCst), 0);
            });
        }
    }
}
