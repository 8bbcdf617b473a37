//! The advisory lock of an offsets file: one writer at a time (a running worker, or
//! `iotconnect offsets reset`).
//!
//! The lock is a `flock(LOCK_EX)` on `<file>.lock` next to the offsets file (the offsets file itself
//! is replaced by rename on every write, so a lock on it would not survive the first commit). It is
//! taken without waiting: a second holder gets [`OffsetsError::Locked`] at once. The kernel releases
//! it when the holder exits, even after `kill -9`, so a stale `.lock` file never blocks anyone.
//! The JVM worker does not take it (it does not know it).

use super::file::OffsetsError;
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Held while alive; dropping it releases the lock.
#[derive(Debug)]
pub struct OffsetsLock {
    _file: File,
    path: PathBuf,
}

/// The lock file of an offsets file: `<file>.lock` in the same directory.
pub fn lock_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".lock");
    path.with_file_name(name)
}

impl OffsetsLock {
    /// Takes the lock of the offsets file `path` without waiting. A missing directory is
    /// [`OffsetsError::MissingDirectory`]; a lock held elsewhere is [`OffsetsError::Locked`].
    pub fn acquire(path: &Path) -> Result<OffsetsLock, OffsetsError> {
        let lock = lock_path(path);
        if let Some(dir) = lock.parent().filter(|d| !d.as_os_str().is_empty()) {
            if !dir.is_dir() {
                return Err(OffsetsError::MissingDirectory {
                    path: path.to_path_buf(),
                    dir: dir.to_path_buf(),
                });
            }
        }
        let open = |write: bool| {
            OpenOptions::new()
                .read(true)
                .write(write)
                .create(write)
                .truncate(false)
                .mode(0o644)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&lock)
        };
        // An existing lock file we may only read still locks (flock needs no write access).
        let file = match open(true) {
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => open(false),
            other => other,
        }
        .map_err(|source| OffsetsError::Unreadable {
            path: lock.clone(),
            source,
        })?;
        // SAFETY: flock on a file descriptor we own; no memory is involved.
        let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if r != 0 {
            let err = std::io::Error::last_os_error();
            return Err(if err.kind() == std::io::ErrorKind::WouldBlock {
                OffsetsError::Locked {
                    path: path.to_path_buf(),
                    lock,
                }
            } else {
                OffsetsError::Unreadable {
                    path: lock,
                    source: err,
                }
            });
        }
        Ok(OffsetsLock {
            _file: file,
            path: path.to_path_buf(),
        })
    }

    /// The offsets file this lock guards.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_until_the_first_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("connect.offsets");
        let first = OffsetsLock::acquire(&path).unwrap();
        let e = OffsetsLock::acquire(&path).unwrap_err();
        assert!(matches!(e, OffsetsError::Locked { .. }), "{e}");
        let msg = e.to_string();
        assert!(msg.contains("connect.offsets"), "{msg}");
        assert!(msg.contains("in use"), "{msg}");
        drop(first);
        let _again = OffsetsLock::acquire(&path).unwrap();
    }

    /// Another process sees the lock too (util-linux `flock -n` on the same lock file).
    #[test]
    fn another_process_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("connect.offsets");
        let try_other = || {
            std::process::Command::new("flock")
                .args(["-n", "-E", "75"])
                .arg(lock_path(&path))
                .arg("true")
                .status()
                .expect("util-linux flock")
                .code()
        };
        let held = OffsetsLock::acquire(&path).unwrap();
        assert_eq!(try_other(), Some(75), "the other process got the lock");
        drop(held);
        assert_eq!(try_other(), Some(0));
    }

    #[test]
    fn missing_directory_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let e = OffsetsLock::acquire(&dir.path().join("nope").join("o")).unwrap_err();
        assert!(matches!(e, OffsetsError::MissingDirectory { .. }), "{e}");
    }
}
