//! Writing `nsqd.dat` while the daemon runs: one write at a time, group
//! committed, a journal append for what changed between whole writes.
//!
//! [`MetadataWriter`] knows nothing of topics: the daemon hands each write
//! a snapshot of the whole file and the journal line of a changed topic,
//! so the group commit and the whole-or-journal choice are tested here
//! against a temporary directory, without a daemon.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use super::journal::{self, Change};
use super::{Metadata, MetadataError};
use crate::world::World;

/// Where `nsqd.dat` writing stands for one data directory.
pub(crate) struct MetadataWriter {
    /// The data dir (or, in a test, a directory in memory) and where its
    /// IO runs.
    world: World,
    /// Changes counted so far; each write covers all counted before it began.
    requested: AtomicU64,
    /// Held across a write (its IO included: this is the one lock the
    /// daemon holds across file IO), so writes run one at a time.
    written: tokio::sync::Mutex<Written>,
    /// Topics whose entry changed since the last write (marked before the
    /// change is counted in `requested`). Held for one set operation.
    dirty: Mutex<BTreeSet<String>>,
}

/// What the last write covered.
#[derive(Debug, Default)]
struct Written {
    /// Every change counted up to this one is in the file.
    upto: u64,
    /// The shutdown's final write happened: no more writes.
    closed: bool,
    /// `nsqd.dat` was written whole since start, and every write since
    /// succeeded: the journal holds every change after it.
    journal_ok: bool,
    /// Changes in the journal since the last whole write.
    journaled: usize,
}

/// Which kind of write [`MetadataWriter::write`] made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wrote {
    /// Nothing: an earlier write (or the final one) already covered it.
    Nothing,
    /// The whole `nsqd.dat`, and a fresh journal.
    Whole,
    /// Journal lines for this many changed topics.
    Journal(usize),
}

impl MetadataWriter {
    /// A writer for `nsqd.dat` in `world`'s data dir; its first write is
    /// whole.
    pub(crate) fn new(world: World) -> Self {
        MetadataWriter {
            world,
            requested: AtomicU64::new(0),
            written: tokio::sync::Mutex::new(Written::default()),
            dirty: Mutex::new(BTreeSet::new()),
        }
    }

    /// Records that topic `topic`'s entry changed, before the change is
    /// written.
    pub(crate) fn mark_changed(&self, topic: &str) {
        self.dirty
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(topic.to_string());
    }

    /// Writes what changed and returns once a write that began after this
    /// call has finished. Group commit: callers arriving while a write
    /// runs wait for the next one, which covers them all. `last` is the
    /// shutdown's write: always whole, and nothing is written after it.
    ///
    /// `snapshot` gives the whole file, `change` a changed topic's journal
    /// line as it is now; both are called under the write lock, after every
    /// change counted so far was made, so what they see covers it.
    pub(crate) async fn write(
        &self,
        last: bool,
        snapshot: impl FnOnce() -> Metadata,
        change: impl Fn(&str) -> Change,
    ) -> Result<Wrote, MetadataError> {
        let want = self.requested.fetch_add(1, Ordering::SeqCst) + 1;
        let mut written = self.written.lock().await;
        // The shutdown's write is whole even when a journal append that
        // began after it was counted already covers its changes.
        if (written.upto >= want && !last) || written.closed {
            return Ok(Wrote::Nothing);
        }
        let upto = self.requested.load(Ordering::SeqCst);
        let dirty = std::mem::take(&mut *self.dirty.lock().unwrap_or_else(|e| e.into_inner()));
        // A whole write costs time in proportion to every topic; a journal
        // append, to the topics that changed. So whole writes happen only at
        // start, shutdown and every `COMPACT_AFTER` changes.
        let whole =
            last || !written.journal_ok || written.journaled + dirty.len() > journal::COMPACT_AFTER;
        // Until this write succeeds, what the files say is unknown (an
        // append may be torn): a failure makes the next write a whole one.
        written.journal_ok = false;
        let storage = self.world.storage.clone();
        let wrote = if whole {
            let meta = snapshot();
            self.world
                .file_io(super::METADATA_FILE, move || super::save(&*storage, &meta))
                .await?;
            written.journaled = 0;
            Wrote::Whole
        } else if dirty.is_empty() {
            Wrote::Nothing
        } else {
            let changes: Vec<Change> = dirty.iter().map(|name| change(name)).collect();
            let n = changes.len();
            self.world
                .file_io(journal::JOURNAL_FILE, move || {
                    journal::append(&*storage, &changes)
                })
                .await?;
            written.journaled += n;
            Wrote::Journal(n)
        };
        written.journal_ok = true;
        written.upto = upto;
        written.closed = last;
        Ok(wrote)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use std::sync::Arc;

    use rsq_diskqueue::MemStorage;

    use super::*;
    use crate::metadata::{TopicMetadata, read_from};

    fn topic(name: &str, paused: bool) -> TopicMetadata {
        TopicMetadata {
            name: name.to_string(),
            paused,
            channels: Vec::new(),
        }
    }

    fn meta(topics: Vec<TopicMetadata>) -> Metadata {
        Metadata {
            topics,
            version: "test".to_string(),
        }
    }

    fn change(name: &str) -> Change {
        Change::Topic {
            name: name.to_string(),
            paused: true,
            channels: Vec::new(),
        }
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
    }

    #[tokio::test]
    async fn first_write_is_whole_then_changes_are_journaled() -> anyhow::Result<()> {
        let disk = Arc::new(MemStorage::new());
        let writer = MetadataWriter::new(World::in_memory(disk.clone()));
        let all = || meta(vec![topic("a", false), topic("b", false)]);
        assert_eq!(writer.write(false, all, change).await?, Wrote::Whole);
        writer.mark_changed("b");
        let wrote = writer.write(false, || meta(Vec::new()), change).await?;
        assert_eq!(wrote, Wrote::Journal(1));
        let back = read_from(&*disk)?.ok_or_else(|| anyhow::anyhow!("no nsqd.dat"))?;
        assert_eq!(back.topics, vec![topic("a", false), topic("b", true)]);
        Ok(())
    }

    #[tokio::test]
    async fn nothing_is_written_after_the_final_write() -> anyhow::Result<()> {
        let disk = Arc::new(MemStorage::new());
        let writer = MetadataWriter::new(World::in_memory(disk.clone()));
        let a = || meta(vec![topic("a", false)]);
        assert_eq!(writer.write(true, a, change).await?, Wrote::Whole);
        writer.mark_changed("a");
        let z = || meta(vec![topic("z", false)]);
        assert_eq!(writer.write(false, z, change).await?, Wrote::Nothing);
        let back = read_from(&*disk)?.ok_or_else(|| anyhow::anyhow!("no nsqd.dat"))?;
        assert_eq!(back.topics, vec![topic("a", false)]);
        Ok(())
    }

    #[tokio::test]
    async fn concurrent_writers_share_writes() -> anyhow::Result<()> {
        let writer = Arc::new(MetadataWriter::new(World::in_memory(Arc::new(
            MemStorage::new(),
        ))));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..32 {
            let writer = writer.clone();
            tasks.spawn(async move {
                let a = || meta(vec![topic("a", false)]);
                writer.write(false, a, change).await
            });
        }
        let mut writes = 0;
        while let Some(result) = tasks.join_next().await {
            if result?? != Wrote::Nothing {
                writes += 1;
            }
        }
        // The first write is whole; nothing was marked changed, so every
        // later caller finds nothing to journal.
        assert_eq!(writes, 1);
        Ok(())
    }

    proptest! {
        /// What a write returned is what a power loss right after it
        /// leaves: at every step, a crashed copy of the disk (unsynced
        /// bytes cut anywhere) reads back exactly the topics written so
        /// far, whole writes and journal appends alike.
        #[test]
        fn every_acknowledged_write_survives_a_crash(
            steps in prop::collection::vec((0..6usize, any::<bool>(), any::<u16>()), 1..40),
        ) {
            runtime().block_on(async {
                let disk = Arc::new(MemStorage::new());
                let writer = MetadataWriter::new(World::in_memory(disk.clone()));
                let mut model: std::collections::BTreeMap<String, bool> = Default::default();
                for (t, paused, cut) in steps {
                    let name = format!("t{t}");
                    model.insert(name.clone(), paused);
                    writer.mark_changed(&name);
                    let snapshot = || meta(model.iter().map(|(n, p)| topic(n, *p)).collect());
                    let line = |n: &str| Change::Topic {
                        name: n.to_string(),
                        paused: model[n],
                        channels: Vec::new(),
                    };
                    writer.write(false, snapshot, line).await.expect("write");
                    let crashed = disk.crashed_copy(|_, synced, len| {
                        synced + usize::from(cut) % (len - synced + 1)
                    });
                    let back = read_from(&crashed).expect("read").expect("nsqd.dat");
                    let expected: Vec<_> = model.iter().map(|(n, p)| topic(n, *p)).collect();
                    prop_assert_eq!(back.topics, expected);
                }
                Ok(())
            })?;
        }
    }
}
