//! Source offsets: Kafka Connect's Java-serialized offsets file, the in-memory offset store and
//! the tracker that decides which offsets are safe to commit.

pub mod file;

pub use file::{load, save_atomic, Entry, OffsetFileError, OffsetsError};
