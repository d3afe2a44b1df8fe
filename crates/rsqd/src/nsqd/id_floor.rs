//! Message ids that survive a restart.
//!
//! An `IdGenerator` issues ids from the clock, increasing within one run.
//! A new run starts from the clock again, and when the clock is behind the
//! ids the last run issued (it stepped back across the restart, or the
//! last run outran it by more than 4,096 ids a tick) new ids would repeat
//! ids still queued; a channel then drops the new message as a replayed
//! copy of the old, losing an acknowledged message. So the daemon keeps a
//! lease in `rsq.idfloor`: a counter every id issued so far is below. At
//! start the generator resumes from it; before an id leaves
//! `new_message(s)` the lease covers it, renewed (one atomic write,
//! fsynced) when ids come within half a lease of it: at most one write a
//! few seconds while publishing, none while idle.

use std::sync::atomic::{AtomicU64, Ordering};

use rsq_codec::IdGenerator;

use super::Nsqd;
use crate::metadata::{MetadataError, io_error, read_file};

/// The lease's file in the data dir (rsq's own; Go nsqd ignores it).
pub(crate) const ID_FLOOR_FILE: &str = "rsq.idfloor";

/// How far past the ids issued a lease reaches: 8,192 ticks of 2^20 ns,
/// about 8.6 s of ids at the clock's pace.
const LEASE: u64 = IdGenerator::counters_in_ticks(8_192);

/// Where the persisted lease stands.
#[derive(Debug, Default)]
pub(crate) struct IdFloor {
    /// Every id issued is below this counter, and the file says so.
    lease: AtomicU64,
    /// One renewal at a time; the others wait for it.
    renewing: tokio::sync::Mutex<()>,
}

impl Nsqd {
    /// At start: resumes the id generator from the last run's lease and
    /// writes the first lease of this run.
    pub(super) async fn resume_ids(&self) -> Result<(), MetadataError> {
        let storage = self.world.storage.clone();
        let stored = self
            .world
            .file_io(ID_FLOOR_FILE, move || read_file(&*storage, ID_FLOOR_FILE))
            .await?;
        match stored.as_deref().map(parse) {
            Some(Some(floor)) => self.ids.resume_from(floor),
            Some(None) => tracing::warn!(
                file = ID_FLOOR_FILE,
                "id floor unreadable; ids start from the clock"
            ),
            None => {}
        }
        self.renew_id_lease(self.ids.issued_below()).await
    }

    /// Returns once the lease covers every id issued so far, renewing it
    /// first when ids came within half a lease of its end.
    pub(super) async fn cover_ids(&self) -> Result<(), MetadataError> {
        let issued = self.ids.issued_below();
        if issued.saturating_add(LEASE / 2) < self.id_floor.lease.load(Ordering::Acquire) {
            return Ok(());
        }
        self.renew_id_lease(issued).await
    }

    /// Writes a lease reaching `LEASE` past both the ids issued (at least
    /// `issued`) and the clock, unless one that covers `issued` with room
    /// was written meanwhile.
    async fn renew_id_lease(&self, issued: u64) -> Result<(), MetadataError> {
        let _one = self.id_floor.renewing.lock().await;
        if issued.saturating_add(LEASE / 2) < self.id_floor.lease.load(Ordering::Acquire) {
            return Ok(());
        }
        let now = IdGenerator::counter_at(self.clock.unix_nanos());
        let lease = self.ids.issued_below().max(now).saturating_add(LEASE);
        let storage = self.world.storage.clone();
        self.world
            .file_io(ID_FLOOR_FILE, move || {
                storage
                    .write_atomic(ID_FLOOR_FILE, format!("{lease}\n").as_bytes())
                    .map_err(io_error(&*storage, "cannot write", ID_FLOOR_FILE))
            })
            .await?;
        self.id_floor.lease.store(lease, Ordering::Release);
        Ok(())
    }
}

/// The lease's text: one decimal counter and a newline.
fn parse(bytes: &[u8]) -> Option<u64> {
    std::str::from_utf8(bytes).ok()?.trim().parse().ok()
}
