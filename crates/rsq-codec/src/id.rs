//! Message id generation in nsqd's format, without reading the clock.
//!
//! nsqd's ids are snowflake GUIDs: 42 bits of "pseudo-milliseconds"
//! (`unix_nanos >> 20`, counted from nsqd's epoch `1288834974288`), a 10-bit
//! node id and a 12-bit sequence, sent as 16 lowercase hex digits. nsqd keeps
//! the last timestamp under a lock and fails (then sleeps and retries) when
//! the clock runs backwards or a tick's 4096 sequence numbers run out.
//!
//! [`IdGenerator`] keeps the same bit layout but never fails: it holds the
//! last issued (time, sequence) pair in one atomic word and issues
//! `max(last + 1, now)`. A sequence overflow carries into the time bits (the
//! generator briefly runs ahead of the clock) and a clock that steps back is
//! ignored until it catches up, so ids from one generator are unique and
//! strictly increasing, and the node bits are never touched.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::MessageId;

/// nsqd's GUID epoch, in pseudo-milliseconds (`UnixNano >> 20`) — 2010-11-04.
pub const GUID_EPOCH: i64 = 1_288_834_974_288;

/// Largest valid node id (node ids have 10 bits).
pub const MAX_NODE_ID: u16 = (1 << NODE_ID_BITS) - 1;

const NODE_ID_BITS: u32 = 10;
const SEQUENCE_BITS: u32 = 12;
const SEQUENCE_MASK: u64 = (1 << SEQUENCE_BITS) - 1;
/// Time bits available in a GUID above the node id and sequence.
const TIME_MASK: u64 = (1 << (64 - NODE_ID_BITS - SEQUENCE_BITS)) - 1;

/// Issues unique, increasing message ids for one node. Cheap to share
/// between threads (`&self`, lock-free).
#[derive(Debug)]
pub struct IdGenerator {
    node_bits: u64,
    /// Last issued `(time << 12) | sequence`, node bits left out so that a
    /// sequence carry moves time forward instead of corrupting the node id.
    last: AtomicU64,
}

impl IdGenerator {
    /// A generator for `node_id` (nsqd's `--node-id`).
    ///
    /// # Panics
    /// If `node_id > MAX_NODE_ID` (1023); the daemon validates its flag first.
    pub fn new(node_id: u16) -> Self {
        assert!(
            node_id <= MAX_NODE_ID,
            "node id {node_id} out of range 0-{MAX_NODE_ID}"
        );
        IdGenerator {
            node_bits: u64::from(node_id) << SEQUENCE_BITS,
            last: AtomicU64::new(0),
        }
    }

    /// The node id this generator stamps into every id.
    pub fn node_id(&self) -> u16 {
        // Masked to 10 bits, so the narrowing cannot lose anything.
        ((self.node_bits >> SEQUENCE_BITS) & u64::from(MAX_NODE_ID)) as u16
    }

    /// The next id, for a caller-supplied wall-clock time in nanoseconds since
    /// the Unix epoch. Larger than every id this generator issued before.
    pub fn next(&self, unix_nanos: i64) -> MessageId {
        MessageId::from_u64(self.next_u64(unix_nanos))
    }

    /// [`IdGenerator::next`] as the raw 64-bit GUID.
    pub fn next_u64(&self, unix_nanos: i64) -> u64 {
        let floor = Self::time_counter(unix_nanos);
        let mut last = self.last.load(Ordering::Relaxed);
        loop {
            let next = floor.max(last.wrapping_add(1));
            match self
                .last
                .compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return self.compose(next),
                Err(actual) => last = actual,
            }
        }
    }

    /// Every id this generator has issued has a counter below this: what a
    /// daemon persists (see [`IdGenerator::resume_from`]) so that its next
    /// run issues only larger ids, whatever its clock says then.
    pub fn issued_below(&self) -> u64 {
        self.last.load(Ordering::Relaxed).wrapping_add(1)
    }

    /// Makes every later id larger than every id whose counter is below
    /// `floor`: a restarted daemon calls it with the floor its last run
    /// persisted, so a clock that stepped back (or a last run that outran
    /// its clock) cannot make it repeat an id still queued.
    pub fn resume_from(&self, floor: u64) {
        self.last
            .fetch_max(floor.saturating_sub(1), Ordering::Relaxed);
    }

    /// The smallest counter of the tick `unix_nanos` falls in, in the units
    /// of [`IdGenerator::issued_below`]: what a daemon adds its lease to.
    pub fn counter_at(unix_nanos: i64) -> u64 {
        Self::time_counter(unix_nanos)
    }

    /// Counter values in `ticks` ticks of the id clock (2^20 ns each).
    pub const fn counters_in_ticks(ticks: u64) -> u64 {
        ticks << SEQUENCE_BITS
    }

    /// `(pseudo_ms - epoch) << 12`: the smallest counter value for this time.
    fn time_counter(unix_nanos: i64) -> u64 {
        let pseudo_ms = unix_nanos >> 20;
        let since_epoch = u64::try_from(pseudo_ms.saturating_sub(GUID_EPOCH)).unwrap_or(0);
        (since_epoch & TIME_MASK) << SEQUENCE_BITS
    }

    fn compose(&self, counter: u64) -> u64 {
        let time = counter >> SEQUENCE_BITS;
        let sequence = counter & SEQUENCE_MASK;
        (time << (SEQUENCE_BITS + NODE_ID_BITS)) | self.node_bits | sequence
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    /// 2024-01-01T00:00:00Z in nanoseconds.
    const NOW: i64 = 1_704_067_200_000_000_000;

    #[test]
    fn layout_matches_nsqd() {
        let g = IdGenerator::new(5);
        let guid = g.next_u64(NOW);
        let expected_time = ((NOW >> 20) - GUID_EPOCH) as u64;
        assert_eq!(guid >> 22, expected_time);
        assert_eq!((guid >> 12) & 0x3ff, 5);
        assert_eq!(guid & 0xfff, 0);
        let id = MessageId::from_u64(guid);
        assert!(
            id.as_bytes()
                .iter()
                .all(|b| b"0123456789abcdef".contains(b))
        );
        assert_eq!(g.node_id(), 5);
    }

    #[test]
    fn a_resumed_generator_never_repeats_the_last_runs_ids() {
        let first = IdGenerator::new(3);
        let mut last = 0;
        for _ in 0..5_000 {
            last = first.next_u64(NOW);
        }
        let floor = first.issued_below();
        // The next run, its clock behind: a second earlier.
        let second = IdGenerator::new(3);
        second.resume_from(floor);
        assert!(second.next_u64(NOW - 1_000_000_000) > last);
        // A floor below what it issued changes nothing.
        let before = second.next_u64(NOW);
        second.resume_from(1);
        assert!(second.next_u64(NOW) > before);
    }

    #[test]
    fn same_tick_increments_the_sequence() {
        let g = IdGenerator::new(1);
        let a = g.next_u64(NOW);
        let b = g.next_u64(NOW);
        assert_eq!(b, a + 1);
        assert_eq!(b & 0xfff, 1);
    }

    #[test]
    fn sequence_overflow_carries_into_time_not_node() {
        let g = IdGenerator::new(MAX_NODE_ID);
        let mut prev = g.next_u64(NOW);
        for _ in 0..10_000 {
            let id = g.next_u64(NOW);
            assert!(id > prev);
            assert_eq!((id >> 12) & 0x3ff, u64::from(MAX_NODE_ID));
            prev = id;
        }
    }

    #[test]
    fn clock_going_backwards_still_increases() {
        let g = IdGenerator::new(0);
        let a = g.next_u64(NOW);
        let b = g.next_u64(NOW - 10_000_000_000);
        assert!(b > a);
    }

    #[test]
    fn later_clock_jumps_ahead() {
        let g = IdGenerator::new(0);
        let a = g.next_u64(NOW);
        let b = g.next_u64(NOW + 1_000_000_000);
        assert!(b >> 22 > a >> 22);
        assert_eq!(b & 0xfff, 0);
    }

    #[test]
    fn a_restarted_generator_continues_above_the_old_one_when_time_moved_on() {
        let old = IdGenerator::new(3);
        let last = (0..100).map(|_| old.next_u64(NOW)).max().unwrap_or(0);
        let new = IdGenerator::new(3);
        assert!(new.next_u64(NOW + 2_000_000) > last);
    }

    #[test]
    fn times_before_the_epoch_do_not_panic() {
        let g = IdGenerator::new(0);
        assert!(g.next_u64(i64::MIN) < g.next_u64(0));
        let _ = g.next_u64(i64::MAX);
    }

    #[test]
    #[should_panic(expected = "node id 1024 out of range")]
    fn node_id_must_fit_ten_bits() {
        let _ = IdGenerator::new(1024);
    }

    #[test]
    fn unique_across_threads() {
        let g = IdGenerator::new(7);
        let per_thread = 20_000;
        let all: Vec<Vec<u64>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    s.spawn(|| {
                        let ids: Vec<u64> = (0..per_thread).map(|_| g.next_u64(NOW)).collect();
                        assert!(ids.windows(2).all(|w| w[0] < w[1]));
                        ids
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("thread"))
                .collect()
        });
        let set: HashSet<u64> = all.iter().flatten().copied().collect();
        assert_eq!(set.len(), 4 * per_thread);
    }
}
