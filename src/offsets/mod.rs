//! Source offsets: where they are stored and Kafka Connect's Java-serialized offsets file.
//!
//! * [`backing`]: the [`OffsetBackingStore`] trait every store implements; the worker opens one
//!   store per process and hands it to tasks through their context.
//! * [`file_store`]: the standalone worker's store (Connect's `FileOffsetBackingStore`), an actor
//!   over [`store::OffsetStore`].
//! * [`file`]: the exact bytes (pure codec); [`disk`]: reading and atomically replacing the file;
//!   [`lock`]: the advisory lock that keeps one writer per file.
//! * [`cli`]: `iotconnect offsets show|reset`.

pub mod backing;
pub mod cli;
pub mod disk;
pub mod file;
pub mod file_store;
pub mod lock;
// [dist] offset.storage.topic of distributed mode
pub mod kafka;
pub mod store;

pub use backing::{OffsetBackingStore, OffsetMap, PartitionMap, StoredOffset};
pub use cli::{OffsetsArgs, OffsetsCommand};
pub use disk::{load, save_atomic, Activity, OffsetsError};
pub use file::{Entry, OffsetFileError};
pub use file_store::FileOffsetBackingStore;
pub use lock::OffsetsLock;
pub use store::{key_bytes, reset, show, value_bytes, OffsetStore, OffsetsCommandError};
