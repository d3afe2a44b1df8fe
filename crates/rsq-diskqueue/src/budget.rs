//! A bound on the bytes all disk queues of a daemon keep in segment files.
//!
//! One [`DiskBudget`] is shared by every queue opened on a data dir. A put
//! reserves the bytes its records take in their segment before the queue
//! accepts them (so a refused put stores nothing), and a queue gives the
//! bytes of a segment back when it removes the file (fully read, emptied,
//! deleted, quarantined or found missing). What the budget counts is
//! therefore the segment bytes on disk plus the records accepted and not yet
//! written: after a sync the two are equal. Metadata files and the zeros a
//! `sync_every = 1` queue writes ahead of its data are not counted.
//!
//! Fullness has hysteresis: once a put was refused (or a write failed with
//! `ENOSPC`), [`DiskBudget::is_full`] stays true until the bytes counted fall
//! to [`LOW_WATER_PERCENT`] of the bound (or of what was counted when the
//! disk filled), so publishers are not let in and refused again at every
//! freed byte.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::sync::Notify;

/// Once full, the budget counts as full until its bytes fall to this
/// percentage of the bound (or of the bytes counted when a write met
/// `ENOSPC`).
pub const LOW_WATER_PERCENT: u64 = 90;

/// The shared byte counter of every disk queue on one data dir, with an
/// optional bound (see the module docs).
#[derive(Debug, Default)]
pub struct DiskBudget {
    /// Most bytes; `0` means unbounded (only counted).
    limit: u64,
    /// Bytes reserved by accepted records and not yet given back.
    used: AtomicU64,
    /// A put was refused (or a write met `ENOSPC`) and usage has not fallen
    /// to the low-water mark since.
    full: AtomicBool,
    /// Bytes counted when a write last met `ENOSPC`; `0` when none did since
    /// the budget recovered.
    enospc_at: AtomicU64,
    /// Reservations always succeed (shutdown flushes must not lose data).
    lifted: AtomicBool,
    /// Woken (all waiters) when the budget becomes full or stops being full.
    changed: Notify,
}

impl DiskBudget {
    /// A budget of `limit` bytes; `0` counts without bounding.
    pub fn new(limit: u64) -> DiskBudget {
        DiskBudget {
            limit,
            ..DiskBudget::default()
        }
    }

    /// The bound in bytes (`0`: none).
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Whether there is a bound.
    pub fn is_bounded(&self) -> bool {
        self.limit > 0
    }

    /// Bytes counted now: segment bytes on disk plus records accepted and
    /// not yet written.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Acquire)
    }

    /// Whether publishing should be refused: a put was refused or a write
    /// met `ENOSPC`, and usage has not yet fallen to the low-water mark.
    pub fn is_full(&self) -> bool {
        self.full.load(Ordering::Acquire)
    }

    /// Whether the bytes counted are at or above the low-water mark of the
    /// bound, or the budget is full: queues then give back fully read
    /// segments as soon as they can (see `Ledger::roll_when_drained`).
    pub fn under_pressure(&self) -> bool {
        self.is_full() || (self.is_bounded() && self.used() >= self.low_water(self.limit))
    }

    /// A future that completes when [`DiskBudget::is_full`] may have
    /// changed. Create it before checking, so a change in between is seen.
    pub fn changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.changed.notified()
    }

    /// From now on every reservation succeeds: called at shutdown, when
    /// what is in memory must reach disk whatever the bound says.
    pub fn lift(&self) {
        self.lifted.store(true, Ordering::Release);
    }

    /// Counts `bytes` a queue found on disk at open, whatever the bound
    /// says; a budget already past its bound is full.
    pub(crate) fn count_existing(&self, bytes: u64) {
        let now = self.used.fetch_add(bytes, Ordering::AcqRel) + bytes;
        if self.is_bounded() && now >= self.limit && bytes > 0 {
            self.set_full(true);
        }
    }

    fn low_water(&self, of: u64) -> u64 {
        of / 100 * LOW_WATER_PERCENT + of % 100 * LOW_WATER_PERCENT / 100
    }

    /// Reserves `bytes` for records about to be accepted. Fails (and marks
    /// the budget full) when they would take it past its bound, or while a
    /// write's `ENOSPC` is unresolved.
    pub fn try_reserve(&self, bytes: u64) -> bool {
        if self.lifted.load(Ordering::Acquire) {
            self.used.fetch_add(bytes, Ordering::AcqRel);
            return true;
        }
        if self.enospc_at.load(Ordering::Acquire) > 0 {
            return false;
        }
        if !self.is_bounded() {
            self.used.fetch_add(bytes, Ordering::AcqRel);
            return true;
        }
        let limit = self.limit;
        let reserved = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|&after| after <= limit)
            });
        if reserved.is_err() {
            self.set_full(true);
            return false;
        }
        true
    }

    /// Gives back `bytes` (a segment file was removed, or a reservation was
    /// not used); clears fullness once usage reaches the low-water mark.
    pub fn release(&self, bytes: u64) {
        if bytes == 0 {
            return;
        }
        let before = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                Some(used.saturating_sub(bytes))
            })
            .unwrap_or(0);
        let now = before.saturating_sub(bytes);
        let enospc_at = self.enospc_at.load(Ordering::Acquire);
        if enospc_at > 0 {
            if now <= self.low_water(enospc_at) {
                self.enospc_at.store(0, Ordering::Release);
            } else {
                return;
            }
        }
        if self.is_full() && (!self.is_bounded() || now <= self.low_water(self.limit)) {
            self.set_full(false);
        }
    }

    /// A write failed because the file system is full: refuse reservations
    /// until usage falls to the low-water mark of what is counted now.
    pub fn note_enospc(&self) {
        let used = self.used().max(1);
        self.enospc_at.fetch_max(used, Ordering::AcqRel);
        self.set_full(true);
    }

    fn set_full(&self, full: bool) {
        if self.full.swap(full, Ordering::AcqRel) != full {
            if full {
                tracing::warn!(
                    used = self.used(),
                    limit = self.limit,
                    "disk budget full: publishing is refused until usage falls to the low-water mark"
                );
            } else {
                tracing::info!(
                    used = self.used(),
                    limit = self.limit,
                    "disk budget below its low-water mark: publishing resumes"
                );
            }
            self.changed.notify_waiters();
        }
    }
}

/// Whether `error` says the file system is out of space (`ENOSPC`, or
/// `EDQUOT`: a quota is the same to a publisher).
pub(crate) fn is_out_of_space(error: &std::io::Error) -> bool {
    const ENOSPC: i32 = 28;
    const EDQUOT: i32 = 122;
    error.kind() == std::io::ErrorKind::StorageFull
        || error.kind() == std::io::ErrorKind::QuotaExceeded
        || matches!(error.raw_os_error(), Some(ENOSPC | EDQUOT))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_past_the_bound_and_recovers_at_low_water() {
        let b = DiskBudget::new(1000);
        assert!(b.try_reserve(600));
        assert!(b.try_reserve(400));
        assert!(!b.is_full());
        assert!(!b.try_reserve(1));
        assert!(b.is_full());
        assert_eq!(b.used(), 1000);
        b.release(50);
        assert!(b.is_full(), "950 is above the low-water mark of 900");
        b.release(50);
        assert!(!b.is_full());
        assert!(b.try_reserve(100));
    }

    #[test]
    fn unbounded_counts_and_enospc_has_hysteresis() {
        let b = DiskBudget::new(0);
        assert!(b.try_reserve(1 << 40));
        b.note_enospc();
        assert!(b.is_full() && !b.try_reserve(1));
        b.release(1 << 30);
        assert!(b.is_full());
        b.release(1 << 37);
        assert!(!b.is_full() && b.try_reserve(1));
    }

    #[test]
    fn lifted_budget_takes_everything() {
        let b = DiskBudget::new(10);
        assert!(!b.try_reserve(11));
        b.lift();
        assert!(b.try_reserve(11));
        assert_eq!(b.used(), 11);
    }

    #[test]
    fn out_of_space_errors_are_recognised() {
        assert!(is_out_of_space(&std::io::Error::from_raw_os_error(28)));
        assert!(!is_out_of_space(&std::io::Error::from_raw_os_error(2)));
    }
}
