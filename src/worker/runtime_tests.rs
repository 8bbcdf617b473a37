//! Worker tests with a connector written here: the runtime runs any `Connector`, owns the offset
//! store, and reports an unclean stop.

use super::*;
use crate::connect::Value;
use crate::offsets::FileOffsetBackingStore;
use crate::worker::connector::{body, TaskKind, TaskPlan};
use crate::worker::task::tests::{loaded, wait_until};
use crate::worker::task::{TaskContext, TaskState};
use futures::future::BoxFuture;
use std::collections::BTreeMap;

/// A connector whose tasks commit one offset each when they stop (as a source task's final commit).
struct Committer;

impl Connector for Committer {
    fn class_name(&self) -> &'static str {
        "test.Committer"
    }
    fn accepts(&self, c: &ConnectorConfig) -> bool {
        c.name == "t"
    }
    fn task_kind(&self) -> TaskKind {
        TaskKind {
            worker_class: "WorkerSourceTask",
            noun: "Source",
        }
    }
    fn validate(&self, _: &WorkerConfig, _: &ConnectorConfig) -> anyhow::Result<()> {
        Ok(())
    }
    fn plan(&self, ctx: ConnectorContext) -> BoxFuture<'static, anyhow::Result<Vec<TaskPlan>>> {
        let tasks = ctx.connector.tasks_max.max(2);
        Box::pin(async move {
            Ok((0..tasks)
                .map(|_| TaskPlan {
                    config: BTreeMap::new(),
                    body: body(|ctx: TaskContext| async move {
                        ctx.shutdown.cancelled().await;
                        let p = vec![("p".to_string(), ctx.task_id.to_string())];
                        let o = vec![("o".to_string(), Value::Int64(42))];
                        // Like the source task: a failed commit is logged, not returned.
                        if let Err(e) = ctx
                            .offsets
                            .put(&ctx.connector.name, vec![(p, Some(o))])
                            .await
                        {
                            tracing::error!("commit failed: {e:#}");
                        }
                        Ok(())
                    }),
                })
                .collect())
        })
    }
}

fn plugins() -> Plugins {
    Plugins::new(vec![Arc::new(Committer)])
}

#[tokio::test]
async fn any_connector_runs_and_its_final_commits_reach_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let loaded = loaded(dir.path());
    let path = loaded.worker.offset_file.clone();
    let store = FileOffsetBackingStore::open(&path).unwrap();
    let w = Worker::start(loaded, "c".into(), &plugins(), store)
        .await
        .unwrap();
    let c = w.connector("t").unwrap().clone();
    assert_eq!(c.plugin.class_name(), "test.Committer");
    wait_until("RUNNING", || {
        c.tasks.iter().all(|t| t.state() == TaskState::Running)
    })
    .await;
    assert!(w.problems().is_empty());
    assert_eq!(w.stop().await, Ok(()));
    let all = w.offsets.entries().await.unwrap();
    assert_eq!(all.len(), 2, "{all:?}");
    assert!(all
        .iter()
        .all(|e| e.offset == Some(serde_json::json!({"o": 42}))));
}

#[tokio::test]
async fn a_final_commit_that_cannot_be_written_makes_the_stop_unclean() {
    let dir = tempfile::tempdir().unwrap();
    let loaded = loaded(dir.path());
    let store = FileOffsetBackingStore::open(&loaded.worker.offset_file).unwrap();
    let w = Worker::start(loaded, "c".into(), &plugins(), store)
        .await
        .unwrap();
    // The offsets directory goes away (as a failing disk would refuse the write).
    std::fs::remove_dir_all(dir.path().join("offsets")).unwrap();
    let problems = w.stop().await.unwrap_err();
    assert!(
        problems
            .iter()
            .any(|p| p.contains("final offset commit") && p.contains("connect.offsets")),
        "{problems:?}"
    );
    assert!(
        !w.problems().is_empty(),
        "readiness names the store failure"
    );
}

#[tokio::test]
async fn a_connector_no_plugin_accepts_is_refused_by_class() {
    let dir = tempfile::tempdir().unwrap();
    let loaded = loaded(dir.path());
    let store = FileOffsetBackingStore::open(&loaded.worker.offset_file).unwrap();
    let e = Worker::start(loaded, "c".into(), &Plugins::default(), store)
        .await
        .err()
        .expect("refused")
        .to_string();
    assert!(e.contains("IotHubSink") && e.contains("Connector"), "{e}");
}
