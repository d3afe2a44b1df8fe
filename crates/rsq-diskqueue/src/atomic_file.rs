//! Replacing a file's whole content so that a crash at any moment leaves
//! either the old content or the new, never a mix, and the new content is
//! durable once the call returns. The one implementation of it: the disk
//! queue's metadata file goes through it ([`crate::FsStorage`]), and so can
//! any other file a daemon replaces whole.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// Replaces the file `name` in `dir` with `bytes`, atomically and durably:
/// the bytes go to a temporary file beside it, which is fsynced, renamed
/// over `name`, and then the directory is fsynced so the rename itself
/// survives a crash. A reader, or the next start after a crash, sees the
/// old content or the new one, never a mix.
///
/// The temporary file is `<name>.<pid>.<n>.tmp`, with `n` counting the
/// calls in this process, so concurrent writers in one directory never
/// share one; if a step before the rename fails, it is removed (best
/// effort) and the old file is untouched. `dir` must exist.
///
/// # Errors
///
/// The first step's error: creating, writing or fsyncing the temporary
/// file, the rename, or fsyncing `dir`. After a failed directory fsync the
/// new content is in place but may not survive a crash.
///
/// ```
/// let dir = tempfile::tempdir()?;
/// rsq_diskqueue::write_atomically(dir.path(), "state.dat", b"v1")?;
/// rsq_diskqueue::write_atomically(dir.path(), "state.dat", b"v2")?;
/// assert_eq!(std::fs::read(dir.path().join("state.dat"))?, b"v2");
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    replace(dir, name, bytes, || {})
}

/// [`write_atomically`], calling `renamed` once the new file has its name
/// and before the directory fsync (what [`crate::FsStorage`] needs to keep
/// its directory index exact whatever fails).
pub(crate) fn replace(
    dir: &Path,
    name: &str,
    bytes: &[u8],
    renamed: impl FnOnce(),
) -> io::Result<()> {
    static NEXT_TMP: AtomicU64 = AtomicU64::new(0);
    let n = NEXT_TMP.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!("{name}.{}.{n}.tmp", std::process::id()));
    let written = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, dir.join(name))
    })();
    if let Err(e) = written {
        // Nothing points at the temporary file: removing it loses nothing.
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    renamed();
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn replaces_the_content_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        write_atomically(dir.path(), "a.dat", b"old").unwrap();
        write_atomically(dir.path(), "a.dat", b"new content").unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("a.dat")).unwrap(),
            b"new content"
        );
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["a.dat"]);
    }

    #[test]
    fn a_failed_write_keeps_the_old_file_and_removes_the_temporary_one() {
        let dir = tempfile::tempdir().unwrap();
        write_atomically(dir.path(), "a.dat", b"old").unwrap();
        // A directory where the file should go: the rename fails.
        std::fs::create_dir(dir.path().join("b.dat")).unwrap();
        std::fs::write(dir.path().join("b.dat").join("x"), b"").unwrap();
        assert!(write_atomically(dir.path(), "b.dat", b"new").is_err());
        assert_eq!(std::fs::read(dir.path().join("a.dat")).unwrap(), b"old");
        let mut names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["a.dat", "b.dat"]);
    }
}
