//! Connect's `FileOffsetBackingStore`: the standalone worker's [`OffsetBackingStore`], one actor
//! owning the in-memory [`OffsetStore`] of one offsets file, fed through a channel.
//!
//! Invariants:
//! * Opened once per process by the worker ([`FileOffsetBackingStore::open`]); it holds the file's
//!   [`OffsetsLock`] until the actor ends, so a second worker or `offsets reset` fails at once.
//! * Loaded once at open: missing file = no offsets; an empty, truncated or corrupt file, or one with
//!   an offset value that is not a JSON object, is an error naming the file and the way out
//!   (standalone exits 3).
//! * `put` merges the batch and rewrites the whole file atomically (see `offsets::disk`) before it
//!   answers. A failed write keeps the batch pending in memory (written by the next `put`) and is
//!   reported by [`OffsetBackingStore::health`] until a write succeeds.

use super::backing::{OffsetBackingStore, OffsetMap, PartitionMap, StoredOffset};
use super::file::OffsetsError;
use super::lock::OffsetsLock;
use super::store::{parse_key, OffsetStore};
use anyhow::Context;
use futures::future::BoxFuture;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot};
use tracing::{error, info};

enum Command {
    Get {
        connector: String,
        partition: PartitionMap,
        reply: oneshot::Sender<Option<OffsetMap>>,
    },
    Put {
        connector: String,
        batch: Vec<(PartitionMap, Option<OffsetMap>)>,
        reply: oneshot::Sender<Result<(), OffsetsError>>,
    },
    Entries {
        reply: oneshot::Sender<Vec<StoredOffset>>,
    },
}

/// The offsets file store of a standalone worker.
pub struct FileOffsetBackingStore {
    tx: mpsc::Sender<Command>,
    path: PathBuf,
    /// The last write's failure, until a write succeeds.
    failed: Arc<Mutex<Option<String>>>,
}

fn borrowed(m: &[(String, String)]) -> Vec<(&str, &str)> {
    m.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

impl FileOffsetBackingStore {
    /// Locks and loads `path` and starts the actor. Must be called inside a tokio runtime.
    pub fn open(path: &Path) -> Result<Arc<FileOffsetBackingStore>, OffsetsError> {
        info!(
            "Starting FileOffsetBackingStore with file {}",
            path.display()
        );
        let lock = OffsetsLock::acquire(path)?;
        let store = OffsetStore::load(path)?;
        let (tx, rx) = mpsc::channel(64);
        let failed = Arc::new(Mutex::new(None));
        tokio::spawn(actor(store, path.to_path_buf(), rx, lock, failed.clone()));
        Ok(Arc::new(FileOffsetBackingStore {
            tx,
            path: path.to_path_buf(),
            failed,
        }))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    async fn call<T>(&self, cmd: Command, rx: oneshot::Receiver<T>) -> anyhow::Result<T> {
        let stopped = || format!("the offset store of {} has stopped", self.path.display());
        self.tx
            .send(cmd)
            .await
            .map_err(|_| anyhow::anyhow!(stopped()))?;
        rx.await.with_context(stopped)
    }
}

impl OffsetBackingStore for FileOffsetBackingStore {
    fn describe(&self) -> String {
        format!("file {}", self.path.display())
    }

    fn get<'a>(
        &'a self,
        connector: &'a str,
        partition: &'a PartitionMap,
    ) -> BoxFuture<'a, anyhow::Result<Option<OffsetMap>>> {
        Box::pin(async move {
            let (reply, rx) = oneshot::channel();
            let cmd = Command::Get {
                connector: connector.to_string(),
                partition: partition.clone(),
                reply,
            };
            self.call(cmd, rx).await
        })
    }

    fn put<'a>(
        &'a self,
        connector: &'a str,
        batch: Vec<(PartitionMap, Option<OffsetMap>)>,
    ) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            let (reply, rx) = oneshot::channel();
            let cmd = Command::Put {
                connector: connector.to_string(),
                batch,
                reply,
            };
            Ok(self.call(cmd, rx).await??)
        })
    }

    fn entries(&self) -> BoxFuture<'_, anyhow::Result<Vec<StoredOffset>>> {
        Box::pin(async move {
            let (reply, rx) = oneshot::channel();
            self.call(Command::Entries { reply }, rx).await
        })
    }

    fn health(&self) -> Option<String> {
        self.failed.lock().unwrap().clone()
    }
}

fn stored(store: &OffsetStore) -> Vec<StoredOffset> {
    store
        .entries()
        .iter()
        .filter_map(|(k, v)| {
            let (connector, partition) = parse_key(k)?;
            let offset = v.as_ref().and_then(|v| {
                let parsed: serde_json::Value = serde_json::from_slice(v).ok()?;
                Some(match parsed {
                    serde_json::Value::Object(mut m)
                        if m.len() == 2
                            && m.contains_key("schema")
                            && m.contains_key("payload") =>
                    {
                        m.remove("payload").unwrap_or_default()
                    }
                    other => other,
                })
            });
            Some(StoredOffset {
                connector,
                partition: serde_json::Value::Object(partition),
                offset,
            })
        })
        .collect()
}

async fn actor(
    mut store: OffsetStore,
    path: PathBuf,
    mut rx: mpsc::Receiver<Command>,
    _lock: OffsetsLock,
    failed: Arc<Mutex<Option<String>>>,
) {
    while let Some(cmd) = rx.recv().await {
        match cmd {
            Command::Get {
                connector,
                partition,
                reply,
            } => {
                let _ = reply.send(store.get(&connector, &borrowed(&partition)));
            }
            Command::Entries { reply } => {
                let _ = reply.send(stored(&store));
            }
            Command::Put {
                connector,
                batch,
                reply,
            } => {
                for (partition, offset) in &batch {
                    let offset: Option<Vec<(&str, crate::connect::Value)>> = offset
                        .as_ref()
                        .map(|o| o.iter().map(|(k, v)| (k.as_str(), v.clone())).collect());
                    store.put(&connector, &borrowed(partition), offset.as_deref());
                }
                // Small file, rewritten whole: written inline (Connect does the same on one thread).
                let r = store.flush(&path).map(|_| ());
                {
                    let mut f = failed.lock().unwrap();
                    match &r {
                        Ok(()) => *f = None,
                        Err(e) => {
                            error!("{e}");
                            *f = Some(e.to_string());
                        }
                    }
                }
                let _ = reply.send(r);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connect::Value;

    fn part(p: &str) -> PartitionMap {
        vec![
            ("EventHubName".into(), "iothub-ehub-myhub".into()),
            ("EventHubPartition".into(), p.into()),
        ]
    }

    fn offset(o: &str) -> Option<OffsetMap> {
        Some(vec![("EventHubOffset".into(), Value::String(o.into()))])
    }

    #[tokio::test]
    async fn put_writes_a_java_format_file_and_get_reads_it_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("connect.offsets");
        let h = FileOffsetBackingStore::open(&path).unwrap();
        assert_eq!(h.get("c", &part("0")).await.unwrap(), None);
        h.put("c", vec![(part("0"), offset("12"))]).await.unwrap();
        let entries = crate::offsets::file::load(&path).unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(
            entries[0].1.as_deref(),
            Some(&br#"{"EventHubOffset":"12"}"#[..])
        );
        assert_eq!(h.get("c", &part("0")).await.unwrap(), offset("12"));
        let all = h.entries().await.unwrap();
        assert_eq!(
            all,
            vec![StoredOffset {
                connector: "c".into(),
                partition: serde_json::json!({"EventHubName":"iothub-ehub-myhub","EventHubPartition":"0"}),
                offset: Some(serde_json::json!({"EventHubOffset":"12"})),
            }]
        );
        assert_eq!(h.health(), None);
    }

    #[tokio::test]
    async fn a_second_open_of_the_same_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("connect.offsets");
        let _h = FileOffsetBackingStore::open(&path).unwrap();
        let e = FileOffsetBackingStore::open(&path).err().expect("locked");
        assert!(matches!(e, OffsetsError::Locked { .. }), "{e}");
    }

    #[tokio::test]
    async fn a_truncated_file_is_refused_with_the_way_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.offsets");
        std::fs::write(&path, [0xACu8, 0xED, 0x00, 0x05, 0x73]).unwrap();
        let e = FileOffsetBackingStore::open(&path)
            .err()
            .expect("refused")
            .to_string();
        assert!(e.contains("bad.offsets"), "{e}");
        assert!(e.contains("iotconnect offsets show"), "{e}");
    }

    #[tokio::test]
    async fn a_failing_write_is_reported_until_a_write_succeeds() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("d");
        std::fs::create_dir(&sub).unwrap();
        let path = sub.join("connect.offsets");
        let h = FileOffsetBackingStore::open(&path).unwrap();
        // The directory disappears (as an unmounted or full disk would fail the write).
        std::fs::remove_dir_all(&sub).unwrap();
        let e = h
            .put("c", vec![(part("0"), offset("1"))])
            .await
            .unwrap_err();
        assert!(format!("{e:#}").contains("connect.offsets"), "{e:#}");
        let why = h.health().expect("unhealthy");
        assert!(why.contains("connect.offsets"), "{why}");
        std::fs::create_dir(&sub).unwrap();
        h.put("c", vec![(part("1"), offset("2"))]).await.unwrap();
        assert_eq!(h.health(), None);
        // The batch that failed was kept and written with the next one.
        assert_eq!(crate::offsets::file::load(&path).unwrap().len(), 2);
    }
}
