//! Where segment and metadata files live: a small trait with a real
//! directory implementation and an in-memory one that can simulate a crash.
//!
//! Files are named, flat, in one directory. The queue appends to files (or,
//! when every put is synced, writes over zeros it wrote and synced ahead, so
//! an fsync need not update the file's size), reads them at offsets,
//! truncates a torn tail, renames a bad segment aside, removes read segments
//! and replaces the metadata file atomically; that is the whole trait, so
//! the in-memory implementation can model exactly what a crash keeps
//! (synced bytes) and what it may lose (everything after the first
//! unsynced change).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// File access as the disk queue needs it. Names are plain file names inside
/// the storage's directory.
pub trait Storage: Send + Sync + std::fmt::Debug + 'static {
    /// The directory this storage works in, for error messages.
    fn dir(&self) -> &Path;
    /// Names of all files in the directory.
    fn list(&self) -> io::Result<Vec<String>>;
    /// Names of the files whose names start with `prefix`: one queue's
    /// files, without reading the names of every other queue's.
    fn list_prefix(&self, prefix: &str) -> io::Result<Vec<String>> {
        let mut names = self.list()?;
        names.retain(|name| name.starts_with(prefix));
        Ok(names)
    }
    /// Length of a file, or `None` if it does not exist.
    fn len(&self, name: &str) -> io::Result<Option<u64>>;
    /// Reads up to `buf.len()` bytes at `offset`; returns how many were read
    /// (fewer only at the end of the file). A missing file is `NotFound`.
    fn read_at(&self, name: &str, offset: u64, buf: &mut [u8]) -> io::Result<usize>;
    /// Appends `data` to a file, creating it if needed. Not durable until
    /// [`Storage::sync`].
    fn append(&self, name: &str, data: &[u8]) -> io::Result<()>;
    /// Writes `data` at `offset`, over what is there and past the end if
    /// needed, creating the file if needed. Not durable until
    /// [`Storage::sync`].
    fn write_at(&self, name: &str, offset: u64, data: &[u8]) -> io::Result<()>;
    /// Makes everything written to a file so far durable (fdatasync).
    fn sync(&self, name: &str) -> io::Result<()>;
    /// Cuts a file to `len` bytes and makes the cut durable.
    fn truncate(&self, name: &str, len: u64) -> io::Result<()>;
    /// Renames a file; a missing source is `NotFound`.
    fn rename(&self, from: &str, to: &str) -> io::Result<()>;
    /// Removes a file; removing a missing file succeeds.
    fn remove(&self, name: &str) -> io::Result<()>;
    /// Replaces a file's whole content atomically and durably: a reader after
    /// a crash sees either the old content or the new, never a mix.
    fn write_atomic(&self, name: &str, data: &[u8]) -> io::Result<()>;
}

/// The names of the files in one directory, read once and then kept up to
/// date by every [`FsStorage`] made with [`FsStorage::with_index`] on it.
///
/// A daemon keeps thousands of queues in one data directory. Without an
/// index each queue's open lists the whole directory to find its own files,
/// so opening `n` queues reads `n²` names (minutes at 20,000 queues); with
/// one, [`Storage::list_prefix`] is a range lookup. The index is only right
/// while every change to the directory's queue files goes through storages
/// sharing it, which is the case inside one daemon (the data dir lock keeps
/// other processes out).
#[derive(Debug)]
pub struct DirIndex {
    dir: PathBuf,
    names: Mutex<BTreeSet<String>>,
}

impl DirIndex {
    /// Lists `dir` once, creating it if it does not exist.
    pub fn load(dir: impl Into<PathBuf>) -> io::Result<Arc<DirIndex>> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir)?;
        let names = read_names(&dir)?.into_iter().collect();
        Ok(Arc::new(DirIndex {
            dir,
            names: Mutex::new(names),
        }))
    }

    /// The directory indexed.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn names(&self) -> MutexGuard<'_, BTreeSet<String>> {
        self.names.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn with_prefix(&self, prefix: &str) -> Vec<String> {
        self.names()
            .range::<str, _>((
                std::ops::Bound::Included(prefix),
                std::ops::Bound::Unbounded,
            ))
            .take_while(|name| name.starts_with(prefix))
            .cloned()
            .collect()
    }
}

fn read_names(dir: &Path) -> io::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if let Ok(name) = entry.file_name().into_string() {
            names.push(name);
        }
    }
    Ok(names)
}

/// A real directory on disk.
///
/// Open handles are cached per file so appends and reads do not reopen the
/// file each time; removing or renaming a file drops its handle.
#[derive(Debug)]
pub struct FsStorage {
    dir: PathBuf,
    handles: Mutex<HashMap<String, Arc<File>>>,
    index: Option<Arc<DirIndex>>,
}

impl FsStorage {
    /// Uses `dir`, creating it if it does not exist; every listing reads
    /// the directory.
    pub fn new(dir: impl Into<PathBuf>) -> io::Result<Self> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir)?;
        Ok(FsStorage {
            dir,
            handles: Mutex::new(HashMap::new()),
            index: None,
        })
    }

    /// Uses the directory `index` lists, answering listings from the index
    /// and keeping it up to date.
    pub fn with_index(index: Arc<DirIndex>) -> Self {
        FsStorage {
            dir: index.dir.clone(),
            handles: Mutex::new(HashMap::new()),
            index: Some(index),
        }
    }

    fn indexed(&self, change: impl FnOnce(&mut BTreeSet<String>)) {
        if let Some(index) = &self.index {
            change(&mut index.names());
        }
    }

    fn handles(&self) -> MutexGuard<'_, HashMap<String, Arc<File>>> {
        self.handles.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn handle(&self, name: &str, create: bool) -> io::Result<Arc<File>> {
        if let Some(file) = self.handles().get(name) {
            return Ok(file.clone());
        }
        // Not O_APPEND: `write_at` must write at its offset.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .open(self.dir.join(name))?;
        let file = Arc::new(file);
        if create {
            self.indexed(|names| {
                names.insert(name.to_string());
            });
        }
        self.handles().insert(name.to_string(), file.clone());
        Ok(file)
    }

    fn sync_dir(&self) -> io::Result<()> {
        File::open(&self.dir)?.sync_all()
    }
}

impl Storage for FsStorage {
    fn dir(&self) -> &Path {
        &self.dir
    }

    fn list(&self) -> io::Result<Vec<String>> {
        match &self.index {
            Some(index) => Ok(index.names().iter().cloned().collect()),
            None => read_names(&self.dir),
        }
    }

    fn list_prefix(&self, prefix: &str) -> io::Result<Vec<String>> {
        match &self.index {
            Some(index) => Ok(index.with_prefix(prefix)),
            None => {
                let mut names = read_names(&self.dir)?;
                names.retain(|name| name.starts_with(prefix));
                Ok(names)
            }
        }
    }

    fn len(&self, name: &str) -> io::Result<Option<u64>> {
        match std::fs::metadata(self.dir.join(name)) {
            Ok(meta) => Ok(Some(meta.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn read_at(&self, name: &str, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let file = self.handle(name, false)?;
        let mut done = 0;
        while done < buf.len() {
            match file.read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }

    fn append(&self, name: &str, data: &[u8]) -> io::Result<()> {
        let file = self.handle(name, true)?;
        let end = file.metadata()?.len();
        file.write_all_at(data, end)
    }

    fn write_at(&self, name: &str, offset: u64, data: &[u8]) -> io::Result<()> {
        self.handle(name, true)?.write_all_at(data, offset)
    }

    fn sync(&self, name: &str) -> io::Result<()> {
        self.handle(name, false)?.sync_data()
    }

    fn truncate(&self, name: &str, len: u64) -> io::Result<()> {
        let file = self.handle(name, false)?;
        file.set_len(len)?;
        file.sync_all()
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        self.handles().remove(from);
        self.handles().remove(to);
        std::fs::rename(self.dir.join(from), self.dir.join(to))?;
        self.indexed(|names| {
            names.remove(from);
            names.insert(to.to_string());
        });
        self.sync_dir()
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        self.handles().remove(name);
        match std::fs::remove_file(self.dir.join(name)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        self.indexed(|names| {
            names.remove(name);
        });
        Ok(())
    }

    fn write_atomic(&self, name: &str, data: &[u8]) -> io::Result<()> {
        self.handles().remove(name);
        crate::atomic_file::replace(&self.dir, name, data, || {
            self.indexed(|names| {
                names.insert(name.to_string());
            });
        })
    }
}

/// A directory in memory that remembers how much of each file was synced,
/// so tests can take a [`MemStorage::crashed_copy`] and see exactly what a power loss
/// could leave behind.
///
/// Renames, removals, truncations and atomic writes are durable at once; only
/// appended bytes wait for [`Storage::sync`].
///
/// Files are kept in name order, so [`Storage::list`] and `crashed_copy`'s
/// calls of its `cut` follow the names, not a hash: the same run on it gives
/// the same contents, which a seeded simulation relies on.
///
/// A put into a queue that syncs every put survives a power loss that
/// keeps nothing unsynced:
///
/// ```
/// use std::sync::Arc;
/// use bytes::Bytes;
/// use rsq_diskqueue::{BackendQueue, DiskQueue, DiskQueueConfig, MemStorage};
///
/// let storage = Arc::new(MemStorage::new());
/// let config = DiskQueueConfig { sync_every: 1, ..DiskQueueConfig::new("orders", "/nowhere") };
/// let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
/// runtime.block_on(async {
///     let queue = DiskQueue::open_with_storage(config.clone(), storage.clone()).unwrap();
///     queue.put(Bytes::from_static(b"acknowledged")).await.unwrap();
///
///     // The power goes: every file keeps exactly its synced bytes.
///     let after_crash = storage.crashed_copy(|_name, synced, _len| synced);
///     let reopened = DiskQueue::open_with_storage(config, Arc::new(after_crash)).unwrap();
///     assert_eq!(reopened.try_read().unwrap(), Some(Bytes::from_static(b"acknowledged")));
/// });
/// ```
#[derive(Debug, Default)]
pub struct MemStorage {
    files: Mutex<BTreeMap<String, MemFile>>,
    /// How many of the next [`Storage::sync`] calls fail (fault injection,
    /// see [`MemStorage::fail_next_syncs`]).
    failing_syncs: std::sync::atomic::AtomicUsize,
}

#[derive(Debug, Default, Clone)]
struct MemFile {
    data: Vec<u8>,
    synced: usize,
}

impl MemStorage {
    /// An empty directory.
    pub fn new() -> Self {
        Self::default()
    }

    fn files(&self) -> MutexGuard<'_, BTreeMap<String, MemFile>> {
        self.files.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Simulates a crash: returns what the directory could hold after a
    /// power loss now. Every file keeps its synced bytes and a prefix of its
    /// unsynced ones whose length `cut(name, synced, len)` picks (clamped to
    /// `synced..=len`), called once per file in name order. The original is
    /// left as it is, so a queue still running on it cannot touch the copy,
    /// as a dead process could not.
    pub fn crashed_copy(&self, mut cut: impl FnMut(&str, usize, usize) -> usize) -> MemStorage {
        let mut files = self.files().clone();
        for (name, file) in files.iter_mut() {
            let keep = cut(name, file.synced, file.data.len()).clamp(file.synced, file.data.len());
            file.data.truncate(keep);
            file.synced = keep;
        }
        MemStorage {
            files: Mutex::new(files),
            failing_syncs: Default::default(),
        }
    }

    /// Fault injection: the next `count` calls of [`Storage::sync`] (on any
    /// file) fail with an IO error and make nothing durable, as an
    /// `fdatasync` that reports `EIO` does. The written bytes stay in the
    /// file, unsynced: a later successful sync of that file makes them
    /// durable, and a crash before one keeps a prefix of them (the kind
    /// kernel that keeps dirty pages after a failed sync; one that drops
    /// them is not modelled). Atomic writes and truncates are not affected.
    pub fn fail_next_syncs(&self, count: usize) {
        self.failing_syncs
            .store(count, std::sync::atomic::Ordering::Relaxed);
    }

    /// How many injected sync failures are still to come.
    pub fn failing_syncs_left(&self) -> usize {
        self.failing_syncs
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Names of the files, sorted.
    pub fn names(&self) -> Vec<String> {
        self.files().keys().cloned().collect()
    }

    /// A copy of a file's bytes, for tests that inspect or damage files.
    pub fn contents(&self, name: &str) -> Option<Vec<u8>> {
        self.files().get(name).map(|f| f.data.clone())
    }

    /// Replaces a file's bytes (durably), for tests that damage files.
    pub fn set_contents(&self, name: &str, data: Vec<u8>) {
        let synced = data.len();
        self.files()
            .insert(name.to_string(), MemFile { data, synced });
    }
}

fn not_found(name: &str) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("{name}: no such file"))
}

impl Storage for MemStorage {
    fn dir(&self) -> &Path {
        Path::new("<memory>")
    }

    fn list(&self) -> io::Result<Vec<String>> {
        Ok(self.files().keys().cloned().collect())
    }

    fn len(&self, name: &str) -> io::Result<Option<u64>> {
        Ok(self.files().get(name).map(|f| f.data.len() as u64))
    }

    fn read_at(&self, name: &str, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let files = self.files();
        let file = files.get(name).ok_or_else(|| not_found(name))?;
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(file.data.len());
        let n = buf.len().min(file.data.len() - start);
        buf[..n].copy_from_slice(&file.data[start..start + n]);
        Ok(n)
    }

    fn append(&self, name: &str, data: &[u8]) -> io::Result<()> {
        self.files()
            .entry(name.to_string())
            .or_default()
            .data
            .extend_from_slice(data);
        Ok(())
    }

    fn write_at(&self, name: &str, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut files = self.files();
        let file = files.entry(name.to_string()).or_default();
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        let end = start.saturating_add(data.len());
        if file.data.len() < end {
            file.data.resize(end, 0);
        }
        file.data[start..end].copy_from_slice(data);
        // Only the bytes before the first unsynced change are sure to
        // survive; a crash keeps a prefix of the rest (see `crashed_copy`).
        file.synced = file.synced.min(start);
        Ok(())
    }

    fn sync(&self, name: &str) -> io::Result<()> {
        let mut files = self.files();
        let file = files.get_mut(name).ok_or_else(|| not_found(name))?;
        let failing = self.failing_syncs.fetch_update(
            std::sync::atomic::Ordering::Relaxed,
            std::sync::atomic::Ordering::Relaxed,
            |left| left.checked_sub(1),
        );
        if failing.is_ok() {
            return Err(io::Error::other(format!("{name}: injected fsync failure")));
        }
        file.synced = file.data.len();
        Ok(())
    }

    fn truncate(&self, name: &str, len: u64) -> io::Result<()> {
        let mut files = self.files();
        let file = files.get_mut(name).ok_or_else(|| not_found(name))?;
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        file.data.resize(len, 0);
        file.synced = len;
        Ok(())
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let mut files = self.files();
        let file = files.remove(from).ok_or_else(|| not_found(from))?;
        files.insert(to.to_string(), file);
        Ok(())
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        self.files().remove(name);
        Ok(())
    }

    fn write_atomic(&self, name: &str, data: &[u8]) -> io::Result<()> {
        self.set_contents(name, data.to_vec());
        Ok(())
    }
}
