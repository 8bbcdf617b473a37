//! Source offsets: Kafka Connect's Java-serialized offsets file, the in-memory offset store and
//! the tracker that decides which offsets are safe to commit.

pub mod cli;
pub mod file;
// [dist] offset.storage.topic of distributed mode
pub mod kafka;
pub mod store;
pub mod tracker;

pub use cli::{OffsetsArgs, OffsetsCommand};
pub use file::{load, save_atomic, Entry, OffsetFileError, OffsetsError};
pub use store::{key_bytes, reset, show, value_bytes, OffsetMap, OffsetStore, OffsetsCommandError};
pub use tracker::{CommittableOffsets, SubmittedRecord, SubmittedRecords};
