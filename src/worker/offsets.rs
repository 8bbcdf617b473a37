//! The worker's offset store (Connect's `FileOffsetBackingStore`): one actor per offsets file owns the
//! in-memory [`OffsetStore`] and is fed through a channel, never locked from many places.
//!
//! * Loaded once at start: a missing file means no offsets; a corrupt or truncated one is an error
//!   naming the file and the way out (standalone exits 3).
//! * `get` answers a source partition's offset map; `commit` merges entries and rewrites the whole file
//!   atomically (temp file, fsync, rename, fsync directory), as Connect's `set()` + `save()` but safe
//!   against a crash mid-write.
//!
//! Every holder of an [`OffsetsHandle`] for the same path talks to the same actor (the registry keeps
//! weak references): all connectors of a worker share one store, as in Connect.

use crate::connect::Value;
use crate::offsets::store::OffsetStore;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use tokio::sync::{mpsc, oneshot};
use tracing::info;

/// A source partition or offset map: string keys and values, in the connector's key order.
pub type StringMap = Vec<(String, String)>;

fn borrowed(m: &StringMap) -> Vec<(&str, &str)> {
    m.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Int64(n) => n.to_string(),
        Value::Int32(n) => n.to_string(),
        Value::Boolean(b) => b.to_string(),
        Value::Float64(f) => crate::connect::java::double_to_string(*f),
        other => format!("{other:?}"),
    }
}

enum Command {
    Get {
        connector: String,
        partition: StringMap,
        reply: oneshot::Sender<Option<StringMap>>,
    },
    Commit {
        connector: String,
        entries: Vec<(StringMap, StringMap)>,
        reply: oneshot::Sender<anyhow::Result<()>>,
    },
}

struct Inner {
    tx: mpsc::Sender<Command>,
    path: PathBuf,
}

/// A cheap, clonable handle on the actor owning one offsets file.
#[derive(Clone)]
pub struct OffsetsHandle {
    inner: Arc<Inner>,
}

static REGISTRY: Mutex<Option<HashMap<PathBuf, Weak<Inner>>>> = Mutex::new(None);

/// Opens (or joins) the store of `path`. Must be called inside a tokio runtime.
///
/// The first open of a path loads the file: missing → empty; unreadable, truncated or corrupt → `Err`
/// whose message names the file and the way out.
pub fn open(path: &Path) -> anyhow::Result<OffsetsHandle> {
    let key = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut reg = REGISTRY.lock().unwrap();
    let map = reg.get_or_insert_with(HashMap::new);
    if let Some(inner) = map.get(&key).and_then(Weak::upgrade) {
        return Ok(OffsetsHandle { inner });
    }
    info!(
        "Starting FileOffsetBackingStore with file {}",
        path.display()
    );
    let store = OffsetStore::load(path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(actor(store, path.to_path_buf(), rx));
    let inner = Arc::new(Inner {
        tx,
        path: path.to_path_buf(),
    });
    map.retain(|_, w| w.strong_count() > 0);
    map.insert(key, Arc::downgrade(&inner));
    Ok(OffsetsHandle { inner })
}

impl OffsetsHandle {
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The stored offset map of `connector`'s source `partition`, if any (a tombstone is `None`).
    pub async fn get(
        &self,
        connector: &str,
        partition: StringMap,
    ) -> anyhow::Result<Option<StringMap>> {
        let (reply, rx) = oneshot::channel();
        self.inner
            .tx
            .send(Command::Get {
                connector: connector.to_string(),
                partition,
                reply,
            })
            .await
            .map_err(|_| anyhow::anyhow!("the offset store has stopped"))?;
        rx.await
            .map_err(|_| anyhow::anyhow!("the offset store has stopped"))
    }

    /// Stores `entries` (partition map → offset map) and rewrites the file atomically. Returns once
    /// the file is on disk.
    pub async fn commit(
        &self,
        connector: &str,
        entries: Vec<(StringMap, StringMap)>,
    ) -> anyhow::Result<()> {
        let (reply, rx) = oneshot::channel();
        self.inner
            .tx
            .send(Command::Commit {
                connector: connector.to_string(),
                entries,
                reply,
            })
            .await
            .map_err(|_| anyhow::anyhow!("the offset store has stopped"))?;
        rx.await
            .map_err(|_| anyhow::anyhow!("the offset store has stopped"))?
    }
}

async fn actor(mut store: OffsetStore, path: PathBuf, mut rx: mpsc::Receiver<Command>) {
    while let Some(cmd) = rx.recv().await {
        match cmd {
            Command::Get {
                connector,
                partition,
                reply,
            } => {
                let got = store
                    .get(&connector, &borrowed(&partition))
                    .map(|m| m.iter().map(|(k, v)| (k.clone(), text(v))).collect());
                let _ = reply.send(got);
            }
            Command::Commit {
                connector,
                entries,
                reply,
            } => {
                for (partition, offset) in &entries {
                    let offset: Vec<(&str, Value)> = offset
                        .iter()
                        .map(|(k, v)| (k.as_str(), Value::String(v.clone())))
                        .collect();
                    store.put(&connector, &borrowed(partition), Some(&offset));
                }
                // Small file, rewritten whole: written inline (Connect does the same on one thread).
                let r = store
                    .flush(&path)
                    .map(|_| ())
                    .map_err(|e| anyhow::anyhow!("{e}"));
                let _ = reply.send(r);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(p: &str) -> StringMap {
        vec![
            ("EventHubName".into(), "iothub-ehub-myhub".into()),
            ("EventHubPartition".into(), p.into()),
        ]
    }

    #[tokio::test]
    async fn commit_writes_a_java_format_file_and_get_reads_it_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("connect.offsets");
        let h = open(&path).unwrap();
        assert_eq!(h.get("c", part("0")).await.unwrap(), None);
        h.commit(
            "c",
            vec![(part("0"), vec![("EventHubOffset".into(), "12".into())])],
        )
        .await
        .unwrap();
        let entries = crate::offsets::file::load(&path).unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(
            entries[0].1.as_deref(),
            Some(&br#"{"EventHubOffset":"12"}"#[..])
        );
        // A second open of the same path joins the same store.
        let h2 = open(&path).unwrap();
        assert_eq!(
            h2.get("c", part("0")).await.unwrap(),
            Some(vec![("EventHubOffset".to_string(), "12".to_string())])
        );
    }

    #[tokio::test]
    async fn a_truncated_file_is_refused_with_the_way_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.offsets");
        std::fs::write(&path, [0xACu8, 0xED, 0x00, 0x05, 0x73]).unwrap();
        let e = open(&path).err().expect("refused").to_string();
        assert!(e.contains("bad.offsets"), "{e}");
        assert!(e.contains("iotconnect offsets show"), "{e}");
    }
}
