//! The in-memory offset store (Connect's `FileOffsetBackingStore` data plus the
//! `OffsetStorageReader`/`Writer` key and value encoding), owned by one task or actor.
//!
//! * Entries loaded from disk keep their original key bytes and their order, so rewriting the file
//!   loses nothing a Java worker could read back (rollback stays possible).
//! * Keys are Connect's internal JSON: `["<connector>",{<partition map in the given order>}]`,
//!   values `{<offset map>}` (JsonConverter, `schemas.enable=false`, Jackson escaping).
//! * Lookup is by exact key bytes first (as Java does), then by JSON equality (partition maps equal
//!   as maps), so a file whose keys were written in another key order or as a 2.x
//!   `{"schema":…,"payload":…}` envelope is still found.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use crate::connect::convert::{convert_to_connect, Converter};
use crate::connect::json;
use crate::connect::value::Value;

use super::file::{self, Activity, Entry, OffsetsError};

/// An offset map as Java reads it back: JSON integers are `Int64`, fractions `Float64`.
pub type OffsetMap = Vec<(String, Value)>;

#[derive(Debug, Default)]
pub struct OffsetStore {
    entries: Vec<Entry>,
    index: HashMap<Vec<u8>, usize>,
    dirty: bool,
}

/// Connect's key bytes for a source partition: `["<connector>",{"k":"v",…}]`.
pub fn key_bytes(connector: &str, partition: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.push(b'[');
    json::write_str(&mut out, connector);
    out.extend_from_slice(b",{");
    for (i, (k, v)) in partition.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        json::write_str(&mut out, k);
        out.push(b':');
        json::write_str(&mut out, v);
    }
    out.extend_from_slice(b"}]");
    out
}

/// Connect's value bytes for an offset map (schemaless JsonConverter).
pub fn value_bytes(offset: &[(&str, Value)]) -> Vec<u8> {
    let map = Value::Map(
        offset
            .iter()
            .map(|(k, v)| (Value::String((*k).to_string()), v.clone()))
            .collect(),
    );
    Converter::json(false)
        .from_connect_data(None, &map)
        .expect("a string-keyed map of primitives always converts")
        .expect("a map is never null")
}

/// Why stored value bytes are not an offset map (`None` when they are): a JSON object, JSON
/// `null`, or either inside a 2.x `{"schema":…,"payload":…}` envelope.
pub fn bad_value(raw: &[u8]) -> Option<String> {
    let v: serde_json::Value = match serde_json::from_slice(raw) {
        Ok(v) => v,
        Err(e) => return Some(format!("is not JSON ({e})")),
    };
    let payload = match &v {
        serde_json::Value::Object(m)
            if m.len() == 2 && m.contains_key("schema") && m.contains_key("payload") =>
        {
            &m["payload"]
        }
        other => other,
    };
    match payload {
        serde_json::Value::Object(_) | serde_json::Value::Null => None,
        _ => Some("is not a JSON object".to_string()),
    }
}

/// Parses a key as `(connector, partition map)`, accepting a 2.x schema envelope.
pub fn parse_key(key: &[u8]) -> Option<(String, serde_json::Map<String, serde_json::Value>)> {
    let mut v: serde_json::Value = serde_json::from_slice(key).ok()?;
    if let serde_json::Value::Object(m) = &mut v {
        v = m.remove("payload")?;
    }
    match v {
        serde_json::Value::Array(mut a) if a.len() == 2 => {
            let partition = match a.pop()? {
                serde_json::Value::Object(m) => m,
                _ => return None,
            };
            match a.pop()? {
                serde_json::Value::String(name) => Some((name, partition)),
                _ => None,
            }
        }
        _ => None,
    }
}

fn partition_matches(
    stored: &serde_json::Map<String, serde_json::Value>,
    wanted: &[(&str, &str)],
) -> bool {
    stored.len() == wanted.len()
        && wanted
            .iter()
            .all(|(k, v)| stored.get(*k).and_then(|x| x.as_str()) == Some(*v))
}

impl OffsetStore {
    pub fn new() -> OffsetStore {
        OffsetStore::default()
    }

    /// A store holding `entries` (a repeated key keeps its first position and its last value, as
    /// Java's `data.put` does).
    pub fn from_entries(entries: Vec<Entry>) -> OffsetStore {
        let mut store = OffsetStore::new();
        for (k, v) in entries {
            store.set(k, v);
        }
        store.dirty = false;
        store
    }

    /// Loads the offsets file (missing = empty; damaged = error naming the file and the way out).
    /// A file that decodes but holds an offset value that is not a JSON object is damaged too:
    /// starting would silently treat that partition as never read.
    pub fn load(path: &Path) -> Result<OffsetStore, OffsetsError> {
        let entries = file::load(path)?;
        for (k, v) in &entries {
            if let Some(why) = v.as_deref().and_then(bad_value) {
                return Err(OffsetsError::BadValue {
                    path: path.to_path_buf(),
                    key: String::from_utf8_lossy(k).into_owned(),
                    why,
                    during: Activity::Start,
                });
            }
        }
        Ok(OffsetStore::from_entries(entries))
    }

    fn set(&mut self, key: Vec<u8>, value: Option<Vec<u8>>) {
        match self.index.get(&key) {
            Some(&i) => self.entries[i].1 = value,
            None => {
                self.index.insert(key.clone(), self.entries.len());
                self.entries.push((key, value));
            }
        }
        self.dirty = true;
    }

    fn find(&self, connector: &str, partition: &[(&str, &str)]) -> Option<usize> {
        if let Some(&i) = self.index.get(&key_bytes(connector, partition)) {
            return Some(i);
        }
        self.entries.iter().position(|(k, _)| {
            parse_key(k)
                .is_some_and(|(name, p)| name == connector && partition_matches(&p, partition))
        })
    }

    /// The stored offset of a source partition; `None` when absent or a tombstone.
    pub fn get(&self, connector: &str, partition: &[(&str, &str)]) -> Option<OffsetMap> {
        let i = self.find(connector, partition)?;
        let raw = self.entries[i].1.as_ref()?;
        let parsed: serde_json::Value = match serde_json::from_slice(raw) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(
                    connector,
                    "ignoring stored offset that is not JSON ({e}): {}",
                    String::from_utf8_lossy(raw)
                );
                return None;
            }
        };
        let payload = match &parsed {
            serde_json::Value::Object(m)
                if m.len() == 2 && m.contains_key("schema") && m.contains_key("payload") =>
            {
                &m["payload"]
            }
            other => other,
        };
        match convert_to_connect(None, payload) {
            Ok(Value::Map(entries)) => Some(
                entries
                    .into_iter()
                    .filter_map(|(k, v)| match k {
                        Value::String(k) => Some((k, v)),
                        _ => None,
                    })
                    .collect(),
            ),
            _ => {
                tracing::warn!(
                    connector,
                    "ignoring stored offset that is not a JSON object: {}",
                    String::from_utf8_lossy(raw)
                );
                None
            }
        }
    }

    /// Records an offset (or, with `None`, a tombstone) for a source partition. An existing entry
    /// for the same partition written with different key bytes is replaced by the bytes Java would
    /// look up.
    pub fn put(
        &mut self,
        connector: &str,
        partition: &[(&str, &str)],
        offset: Option<&[(&str, Value)]>,
    ) {
        let key = key_bytes(connector, partition);
        if !self.index.contains_key(&key) {
            if let Some(i) = self.find(connector, partition) {
                let old = self.entries.remove(i).0;
                self.index.remove(&old);
                self.reindex();
            }
        }
        self.set(key, offset.map(value_bytes));
    }

    fn reindex(&mut self) {
        self.index = self
            .entries
            .iter()
            .enumerate()
            .map(|(i, (k, _))| (k.clone(), i))
            .collect();
    }

    /// Removes every entry of `connector` (only `EventHubPartition` = `partition` when given);
    /// returns how many were removed.
    pub fn remove_connector(&mut self, connector: &str, partition: Option<&str>) -> usize {
        let before = self.entries.len();
        self.entries.retain(|(k, _)| match parse_key(k) {
            Some((name, p)) if name == connector => match partition {
                None => false,
                Some(n) => p.get("EventHubPartition").and_then(|x| x.as_str()) != Some(n),
            },
            _ => true,
        });
        let removed = before - self.entries.len();
        if removed > 0 {
            self.reindex();
            self.dirty = true;
        }
        removed
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// True when there are changes not yet written by [`OffsetStore::flush`].
    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// Writes the file atomically when there are changes; returns whether it wrote. On failure the
    /// changes stay pending for the next attempt (as Java keeps them in memory).
    pub fn flush(&mut self, path: &Path) -> Result<bool, OffsetsError> {
        if !self.dirty {
            return Ok(false);
        }
        file::save_atomic(path, &self.entries)?;
        self.dirty = false;
        Ok(true)
    }
}

/// Appends `bytes` as embedded JSON when they parse (re-serialized compactly), else as a JSON string.
fn write_embedded(out: &mut Vec<u8>, bytes: &[u8]) {
    match serde_json::from_slice::<serde_json::Value>(bytes) {
        Ok(v) => json::write_serde(out, &v),
        Err(_) => json::write_str(out, &String::from_utf8_lossy(bytes)),
    }
}

/// One line per entry: `{"key":<key JSON>,"value":<value JSON or null>}`.
fn show_entries(entries: &[Entry], out: &mut dyn Write) -> std::io::Result<()> {
    for (k, v) in entries {
        let mut line = Vec::with_capacity(k.len() + 32);
        line.extend_from_slice(b"{\"key\":");
        write_embedded(&mut line, k);
        line.extend_from_slice(b",\"value\":");
        match v {
            Some(v) => write_embedded(&mut line, v),
            None => json::write_null(&mut line),
        }
        line.extend_from_slice(b"}\n");
        out.write_all(&line)?;
    }
    Ok(())
}

/// Errors of `iotconnect offsets show|reset`.
#[derive(Debug, thiserror::Error)]
pub enum OffsetsCommandError {
    #[error(transparent)]
    File(#[from] OffsetsError),
    #[error("cannot write output: {0}")]
    Output(#[from] std::io::Error),
}

/// `iotconnect offsets show FILE`: prints every entry; for a damaged file, prints the entries
/// still readable and then returns the error. A missing file is an error here (a typo should not
/// look like "no offsets").
pub fn show(path: &Path, out: &mut dyn Write) -> Result<(), OffsetsCommandError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(source) => {
            return Err(OffsetsError::Unreadable {
                path: path.to_path_buf(),
                source,
            }
            .into())
        }
    };
    match file::decode_salvage(&bytes) {
        Ok(entries) => Ok(show_entries(&entries, out)?),
        Err((salvaged, source)) => {
            show_entries(&salvaged, out)?;
            Err(OffsetsError::Invalid {
                path: path.to_path_buf(),
                source,
                during: Activity::Show,
            }
            .into())
        }
    }
}

/// `iotconnect offsets reset FILE --connector NAME [--partition N]`: removes that connector's
/// entries (only `EventHubPartition` = N when given) and saves atomically; returns the count.
/// Takes the file's lock, so it fails with [`OffsetsError::Locked`] while a worker uses the file
/// (the worker would write its own view back on its next flush).
pub fn reset(path: &Path, connector: &str, partition: Option<&str>) -> Result<usize, OffsetsError> {
    let _lock = super::lock::OffsetsLock::acquire(path)?;
    let mut store = OffsetStore::load(path).map_err(|e| e.during(Activity::Reset))?;
    let removed = store.remove_connector(connector, partition);
    if removed > 0 {
        store.flush(path)?;
    }
    Ok(removed)
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
