//! The offset backing store interface (Connect's `OffsetBackingStore` as seen through
//! `OffsetStorageReader` / `OffsetStorageWriter`).
//!
//! Invariants every implementation keeps:
//! * The worker opens exactly one store per process and hands it to every task through its
//!   `TaskContext`; tasks never open a store themselves, nothing else writes it.
//! * [`OffsetBackingStore::put`] returns only when the batch is durable (file renamed into place and
//!   its directory synced; or the topic write acknowledged). A failed `put` leaves the batch pending
//!   inside the store; [`OffsetBackingStore::health`] then names the failure until a later write
//!   succeeds, and `/readyz` shows it.
//! * Keys are Connect's: `["<connector>",{<source partition>}]` with the partition map's keys in the
//!   connector's order; values are the schemaless JSON offset map (see `offsets::store`).

use crate::connect::Value;
use futures::future::BoxFuture;

/// A source partition map: string keys and values, in the connector's key order.
pub type PartitionMap = Vec<(String, String)>;

/// A source offset map, as Connect's JSON converter reads it back (integers `Int64`, strings
/// `String`, …).
pub type OffsetMap = Vec<(String, Value)>;

/// One stored entry, for REST `GET /connectors/{name}/offsets` and `iotconnect offsets show`.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredOffset {
    pub connector: String,
    /// The partition map as JSON (an object).
    pub partition: serde_json::Value,
    /// The offset map as JSON; `None` for a tombstone.
    pub offset: Option<serde_json::Value>,
}

/// Where source offsets live. Object safe: used as `Arc<dyn OffsetBackingStore>`.
pub trait OffsetBackingStore: Send + Sync + 'static {
    /// A human description for logs and errors, e.g. `file /var/lib/iotconnect/connect.offsets`.
    fn describe(&self) -> String;

    /// The stored offset of `connector`'s source `partition`; `None` when absent or a tombstone.
    fn get<'a>(
        &'a self,
        connector: &'a str,
        partition: &'a PartitionMap,
    ) -> BoxFuture<'a, anyhow::Result<Option<OffsetMap>>>;

    /// Stores a batch (`None` offset = tombstone) for `connector`; durable when it returns `Ok`.
    fn put<'a>(
        &'a self,
        connector: &'a str,
        batch: Vec<(PartitionMap, Option<OffsetMap>)>,
    ) -> BoxFuture<'a, anyhow::Result<()>>;

    /// Every stored entry, in store order.
    fn entries(&self) -> BoxFuture<'_, anyhow::Result<Vec<StoredOffset>>>;

    /// `None` while healthy; the reason while the last write failed (readiness shows it, and a
    /// worker that stops in this state exits non-zero: its final commit did not reach the store).
    fn health(&self) -> Option<String>;
}
