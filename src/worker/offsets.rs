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

use crate::offsets::file::{self as offsets_file, Entry};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use tokio::sync::{mpsc, oneshot};
use tracing::info;

/// A source partition or offset map: string keys and values, in the connector's key order.
pub type StringMap = Vec<(String, String)>;

/// The worker's offsets in memory: every entry of the file with its ORIGINAL key bytes (so a file
/// written by the Java worker is written back byte-identical for entries we did not change).
pub struct OffsetStore {
    entries: Vec<Entry>,
}

/// Connect's key bytes for `[connector, {partition}]`: compact JSON as Jackson writes it, keys in
/// the given order.
pub fn key_bytes(connector: &str, partition: &StringMap) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(b"[");
    crate::connect::json::write_str(&mut out, connector);
    out.extend_from_slice(b",");
    out.extend_from_slice(&map_bytes(partition));
    out.extend_from_slice(b"]");
    out
}

/// A string map as compact JSON (Jackson escaping).
pub fn map_bytes(m: &StringMap) -> Vec<u8> {
    let mut out = Vec::with_capacity(32);
    out.push(b'{');
    for (i, (k, v)) in m.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        crate::connect::json::write_str(&mut out, k);
        out.push(b':');
        crate::connect::json::write_str(&mut out, v);
    }
    out.push(b'}');
    out
}

fn parsed_key_matches(bytes: &[u8], connector: &str, partition: &StringMap) -> bool {
    let Ok(serde_json::Value::Array(a)) = serde_json::from_slice::<serde_json::Value>(bytes) else {
        return false;
    };
    match (a.first(), a.get(1), a.len()) {
        (Some(serde_json::Value::String(c)), Some(serde_json::Value::Object(o)), 2) => {
            c == connector
                && o.len() == partition.len()
                && partition
                    .iter()
                    .all(|(k, v)| o.get(k).and_then(|x| x.as_str()) == Some(v.as_str()))
        }
        _ => false,
    }
}

impl OffsetStore {
    /// Loads `path` (missing → empty; damaged → an error naming the file and the way out).
    pub fn load(path: &Path) -> anyhow::Result<OffsetStore> {
        let entries = offsets_file::load(path).map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(OffsetStore { entries })
    }

    pub fn from_entries(entries: Vec<Entry>) -> OffsetStore {
        OffsetStore { entries }
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    fn find(&self, connector: &str, partition: &StringMap) -> Option<usize> {
        let exact = key_bytes(connector, partition);
        self.entries
            .iter()
            .position(|(k, _)| *k == exact)
            .or_else(|| {
                self.entries
                    .iter()
                    .position(|(k, _)| parsed_key_matches(k, connector, partition))
            })
    }

    /// The offset map stored for a source partition (exact key bytes as Java looks it up, then
    /// parsed-JSON equality). A tombstone or an unparsable value is `None`.
    pub fn get_offset(&self, connector: &str, partition: &StringMap) -> Option<StringMap> {
        let i = self.find(connector, partition)?;
        let value = self.entries[i].1.as_ref()?;
        let serde_json::Value::Object(o) = serde_json::from_slice(value).ok()? else {
            return Some(Vec::new());
        };
        Some(
            o.into_iter()
                .map(|(k, v)| {
                    let text = match v {
                        serde_json::Value::String(s) => s,
                        other => other.to_string(),
                    };
                    (k, text)
                })
                .collect(),
        )
    }

    /// Sets (or, with `None`, tombstones) a partition's offset, keeping existing key bytes.
    pub fn put_offset(
        &mut self,
        connector: &str,
        partition: &StringMap,
        offset: Option<&StringMap>,
    ) {
        let value = offset.map(map_bytes);
        match self.find(connector, partition) {
            Some(i) => self.entries[i].1 = value,
            None => self.entries.push((key_bytes(connector, partition), value)),
        }
    }

    /// Rewrites the whole file atomically.
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        offsets_file::save_atomic(path, &self.entries).map_err(|e| anyhow::anyhow!("{e}"))
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
    let store = OffsetStore::load(path)?;
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
                let _ = reply.send(store.get_offset(&connector, &partition));
            }
            Command::Commit {
                connector,
                entries,
                reply,
            } => {
                for (partition, offset) in &entries {
                    store.put_offset(&connector, partition, Some(offset));
                }
                // Small file, rewritten whole: written inline (Connect does the same on one thread).
                let r = store.save(&path);
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

    #[test]
    fn key_and_value_bytes_are_connects() {
        assert_eq!(
            key_bytes("AzureIotHubConnector", &part("0")),
            br#"["AzureIotHubConnector",{"EventHubName":"iothub-ehub-myhub","EventHubPartition":"0"}]"#.to_vec()
        );
        assert_eq!(
            map_bytes(&vec![("EventHubOffset".into(), "8589934592".into())]),
            br#"{"EventHubOffset":"8589934592"}"#.to_vec()
        );
        assert_eq!(key_bytes("a\"b", &vec![]), br#"["a\"b",{}]"#.to_vec());
    }

    #[test]
    fn keeps_original_key_bytes_and_matches_by_json() {
        // A key written with a space and the other key order still matches, and is kept as is.
        let odd =
            br#"["c", {"EventHubPartition":"1","EventHubName":"iothub-ehub-myhub"}]"#.to_vec();
        let mut s = OffsetStore::from_entries(vec![(
            odd.clone(),
            Some(br#"{"EventHubOffset":"5"}"#.to_vec()),
        )]);
        assert_eq!(
            s.get_offset("c", &part("1")),
            Some(vec![("EventHubOffset".to_string(), "5".to_string())])
        );
        assert_eq!(s.get_offset("c", &part("0")), None);
        assert_eq!(s.get_offset("other", &part("1")), None);
        s.put_offset(
            "c",
            &part("1"),
            Some(&vec![("EventHubOffset".into(), "9".into())]),
        );
        s.put_offset(
            "c",
            &part("0"),
            Some(&vec![("EventHubOffset".into(), "3".into())]),
        );
        assert_eq!(s.entries().len(), 2);
        assert_eq!(s.entries()[0].0, odd);
        assert_eq!(
            s.entries()[0].1.as_deref(),
            Some(&br#"{"EventHubOffset":"9"}"#[..])
        );
        s.put_offset("c", &part("0"), None);
        assert_eq!(s.get_offset("c", &part("0")), None);
        assert_eq!(s.entries()[1].1, None, "tombstone kept");
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
        let entries = offsets_file::load(&path).unwrap();
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
