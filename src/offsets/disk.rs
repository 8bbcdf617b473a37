//! The offsets file on disk: reading it (a missing file is "no offsets", a damaged one an error
//! naming the file and the way out) and replacing it atomically.
//!
//! Invariants of [`save_atomic`]: the old file stays intact until the new bytes are synced (temp
//! file `<file>.tmp` created exclusively with `O_EXCL`, never through a symlink, written, fsynced,
//! renamed over the file, directory fsynced). Callers hold the file's [`super::lock::OffsetsLock`],
//! so a leftover temp file can only come from a crashed writer and is removed first.

use super::file::{decode, encode, Entry, OffsetFileError};
use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// What was being done when an offsets file turned out damaged (the way out differs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Activity {
    /// A worker starting: it refuses to start.
    #[default]
    Start,
    /// `iotconnect offsets show`: it printed what it could read.
    Show,
    /// `iotconnect offsets reset`: it does not rewrite a damaged file.
    Reset,
}

/// Errors of the offsets file on disk. Messages name the file and, for a damaged file, the way out.
#[derive(Debug)]
pub enum OffsetsError {
    /// The file exists but could not be read (permissions, I/O error).
    Unreadable { path: PathBuf, source: io::Error },
    /// The file is empty, truncated or not an offsets file.
    Invalid {
        path: PathBuf,
        source: OffsetFileError,
        during: Activity,
    },
    /// The file decodes, but a stored offset value is not a JSON object.
    BadValue {
        path: PathBuf,
        /// The entry's key as text.
        key: String,
        why: String,
        during: Activity,
    },
    /// The directory that should hold the file does not exist.
    MissingDirectory { path: PathBuf, dir: PathBuf },
    /// Writing the temp file, syncing or renaming failed.
    Write { path: PathBuf, source: io::Error },
    /// Another process holds the file's lock (a running worker or `offsets reset`).
    Locked { path: PathBuf, lock: PathBuf },
}

impl OffsetsError {
    /// The same error, with the way out for `during`.
    pub fn during(mut self, activity: Activity) -> OffsetsError {
        if let OffsetsError::Invalid { during, .. } | OffsetsError::BadValue { during, .. } =
            &mut self
        {
            *during = activity;
        }
        self
    }
}

fn way_out(f: &mut fmt::Formatter<'_>, p: &Path, during: Activity) -> fmt::Result {
    let p = p.display();
    match during {
        Activity::Start => write!(
            f,
            "refusing to start, because without it every partition would restart from \
             IotHub.StartTime / IotHub.Offsets and replay events. Inspect it with `iotconnect offsets \
             show {p}` (prints the entries still readable), restore a good copy, or delete the file to \
             start from IotHub.StartTime / IotHub.Offsets"
        ),
        Activity::Show => write!(
            f,
            "the lines printed above are the entries still readable. Restore a good copy, or delete \
             the file so its connectors start from IotHub.StartTime / IotHub.Offsets"
        ),
        Activity::Reset => write!(
            f,
            "reset does not rewrite a damaged file. Inspect it with `iotconnect offsets show {p}`, \
             restore a good copy, or delete the file so its connectors start from IotHub.StartTime / \
             IotHub.Offsets"
        ),
    }
}

impl fmt::Display for OffsetsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OffsetsError::Unreadable { path, source } => {
                write!(f, "cannot read offsets file {}: {source}", path.display())
            }
            OffsetsError::Invalid {
                path,
                source,
                during,
            } => {
                write!(f, "offsets file {} is damaged ({source}); ", path.display())?;
                way_out(f, path, *during)
            }
            OffsetsError::BadValue {
                path,
                key,
                why,
                during,
            } => {
                write!(
                    f,
                    "offsets file {} is damaged (the offset stored for {key} {why}); ",
                    path.display()
                )?;
                way_out(f, path, *during)
            }
            OffsetsError::MissingDirectory { path, dir } => write!(
                f,
                "cannot write offsets file {}: directory {} does not exist",
                path.display(),
                dir.display()
            ),
            OffsetsError::Write { path, source } => {
                write!(f, "cannot write offsets file {}: {source}", path.display())
            }
            OffsetsError::Locked { path, lock } => write!(
                f,
                "offsets file {} is in use by another process (a running iotconnect worker or \
                 `iotconnect offsets reset` holds the lock on {}): stop it first; two writers would \
                 overwrite each other's offsets",
                path.display(),
                lock.display()
            ),
        }
    }
}

impl std::error::Error for OffsetsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            OffsetsError::Unreadable { source, .. } | OffsetsError::Write { source, .. } => {
                Some(source)
            }
            OffsetsError::Invalid { source, .. } => Some(source),
            OffsetsError::BadValue { .. }
            | OffsetsError::MissingDirectory { .. }
            | OffsetsError::Locked { .. } => None,
        }
    }
}

/// Reads the offsets file. A missing file is empty offsets; an empty, truncated or corrupt file is
/// [`OffsetsError::Invalid`] (never silently empty, unlike Java).
pub fn load(path: &Path) -> Result<Vec<Entry>, OffsetsError> {
    match fs::read(path) {
        Ok(bytes) => decode(&bytes).map_err(|source| OffsetsError::Invalid {
            path: path.to_path_buf(),
            source,
            during: Activity::Start,
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(source) => Err(OffsetsError::Unreadable {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// The temp file [`save_atomic`] writes before renaming: `<file>.tmp` in the same directory.
pub fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Writes the file atomically: `<file>.tmp` in the same directory (with the old file's
/// permissions), fsync, rename over `<file>`, fsync the directory.
pub fn save_atomic(path: &Path, entries: &[Entry]) -> Result<(), OffsetsError> {
    // A symlinked offsets file is replaced at its target (Java writes through the link too).
    let resolved;
    let path = match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => {
            resolved = fs::canonicalize(path).map_err(|source| OffsetsError::Write {
                path: path.to_path_buf(),
                source,
            })?;
            resolved.as_path()
        }
        _ => path,
    };
    let dir = parent_dir(path);
    if !dir.is_dir() {
        return Err(OffsetsError::MissingDirectory {
            path: path.to_path_buf(),
            dir,
        });
    }
    let werr = |source: io::Error| OffsetsError::Write {
        path: path.to_path_buf(),
        source,
    };
    let tmp = temp_path(path);
    let bytes = encode(entries);
    let result = (|| -> io::Result<()> {
        // A leftover from a crashed writer (we hold the lock, so no one else is writing it); a
        // symlink planted there is removed, never followed.
        match fs::remove_file(&tmp) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o666)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)?;
        if let Ok(meta) = fs::metadata(path) {
            f.set_permissions(meta.permissions())?;
        }
        f.write_all(&bytes)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)?;
        fs::File::open(&dir)?.sync_all()?;
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(werr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_and_save_atomic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("connect.offsets");
        assert_eq!(load(&path).unwrap(), vec![], "missing file = no offsets");

        let entries = vec![(b"k".to_vec(), Some(b"v".to_vec())), (b"t".to_vec(), None)];
        save_atomic(&path, &entries).unwrap();
        assert_eq!(load(&path).unwrap(), entries);
        assert!(!temp_path(&path).exists());
        assert_eq!(fs::read(&path).unwrap(), encode(&entries));

        fs::write(&path, b"").unwrap();
        let err = load(&path).unwrap_err().to_string();
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(err.contains("iotconnect offsets show"), "{err}");
        assert!(err.contains("delete the file"), "{err}");
        assert!(err.contains("empty"), "{err}");

        let full = encode(&entries);
        fs::write(&path, &full[..full.len() - 3]).unwrap();
        assert!(matches!(load(&path), Err(OffsetsError::Invalid { .. })));

        let missing = dir.path().join("nope").join("connect.offsets");
        let err = save_atomic(&missing, &entries).unwrap_err().to_string();
        assert!(err.contains("does not exist"), "{err}");
        assert!(
            err.contains(&dir.path().join("nope").display().to_string()),
            "{err}"
        );
    }

    #[cfg(unix)]
    #[test]
    fn save_writes_through_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("real.offsets");
        let link = dir.path().join("link.offsets");
        save_atomic(&target, &[]).unwrap();
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let entries = vec![(b"k".to_vec(), Some(b"v".to_vec()))];
        save_atomic(&link, &entries).unwrap();
        assert!(fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(load(&target).unwrap(), entries);
    }

    #[test]
    fn a_planted_temp_symlink_is_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("o");
        let victim = dir.path().join("victim");
        fs::write(&victim, b"precious").unwrap();
        std::os::unix::fs::symlink(&victim, temp_path(&path)).unwrap();
        save_atomic(&path, &[(b"k".to_vec(), None)]).unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
        assert_eq!(load(&path).unwrap(), vec![(b"k".to_vec(), None)]);
        assert!(!temp_path(&path).exists());
    }

    #[cfg(unix)]
    #[test]
    fn save_keeps_permissions() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("o");
        save_atomic(&path, &[]).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        save_atomic(&path, &[(b"k".to_vec(), None)]).unwrap();
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}
