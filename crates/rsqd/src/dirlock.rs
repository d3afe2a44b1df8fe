//! The data directory's lock, as nsqd's `internal/dirlock`: an exclusive,
//! non-blocking `flock` on the directory itself, held for as long as a
//! process uses the directory.
//!
//! It is the same lock Go nsqd takes, so an rsqd, an `rsqd downgrade` and a
//! Go nsqd exclude one another: a second one on a directory in use refuses
//! to start instead of opening queue files another process is writing. The
//! kernel drops the lock when its holder exits however it exits, so a crash
//! never leaves a stale lock behind.

use std::fs::{File, TryLockError};
use std::path::{Path, PathBuf};

/// A held lock on a data directory; dropping it releases the lock.
#[derive(Debug)]
pub struct DirLock {
    /// The open directory the lock is on (closing it releases the lock).
    _dir: File,
    path: PathBuf,
}

/// Why a data directory could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum DirLockError {
    /// Another process holds the lock.
    #[error(
        "data path {} is in use: another process (an nsqd, an rsqd or an rsqd downgrade) holds its lock",
        path.display()
    )]
    InUse {
        /// The directory.
        path: PathBuf,
    },
    /// The directory could not be created, opened or locked.
    #[error("cannot lock data path {}: {source}", path.display())]
    Io {
        /// The directory.
        path: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
}

impl DirLock {
    /// Locks the existing directory `path`, or fails at once if another
    /// process holds it ([`DirLockError::InUse`]).
    pub fn acquire(path: &Path) -> Result<DirLock, DirLockError> {
        let io = |source| DirLockError::Io {
            path: path.to_path_buf(),
            source,
        };
        let dir = File::open(path).map_err(io)?;
        match dir.try_lock() {
            Ok(()) => Ok(DirLock {
                _dir: dir,
                path: path.to_path_buf(),
            }),
            Err(TryLockError::WouldBlock) => Err(DirLockError::InUse {
                path: path.to_path_buf(),
            }),
            Err(TryLockError::Error(e)) => Err(io(e)),
        }
    }

    /// Creates `path` if missing (as the daemon does with `--data-path`),
    /// then [`DirLock::acquire`]s it.
    pub fn create_and_acquire(path: &Path) -> Result<DirLock, DirLockError> {
        std::fs::create_dir_all(path).map_err(|source| DirLockError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        DirLock::acquire(path)
    }

    /// The locked directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_until_the_first_is_dropped() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let first = DirLock::acquire(dir.path())?;
        // A second open file description conflicts, in this process too,
        // as two processes' would.
        let err = DirLock::acquire(dir.path()).err();
        assert!(
            matches!(&err, Some(DirLockError::InUse { path }) if path == dir.path()),
            "{err:?}"
        );
        let message = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(
            message.contains(&dir.path().display().to_string()),
            "{message}"
        );
        drop(first);
        let again = DirLock::acquire(dir.path())?;
        assert_eq!(again.path(), dir.path());
        Ok(())
    }

    #[test]
    fn a_missing_directory_is_created_only_when_asked() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let data = dir.path().join("data");
        assert!(matches!(
            DirLock::acquire(&data),
            Err(DirLockError::Io { .. })
        ));
        assert!(!data.exists());
        let _lock = DirLock::create_and_acquire(&data)?;
        assert!(data.is_dir());
        Ok(())
    }
}
