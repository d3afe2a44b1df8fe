//! What the simulated clients know, and the invariants checked against it.
//!
//! Bodies are numbered in publish order (body `n` is the `n`th publish of
//! the run, whatever its outcome). The channel's disk queue commits the
//! longest finished prefix of the records it read, and its records keep
//! publish order but for a deferred message (which may move later within
//! its pump batch), a message written back at a clean stop (moved to the
//! end) or one the topic replays after a crash (appended again): each only
//! moves a record later. So at a barrier (virtual time long enough for the
//! eager metadata writer to run) every finished body below the lowest
//! unsettled one is committed, and a committed body must never come back,
//! crash or not. That bound is what catches a lost FIN commit.

use std::collections::BTreeSet;

/// Bytes of a simulated body: the number, then a check of it.
pub(crate) const BODY_BYTES: usize = 16;

/// The body of publish `n`: `n` and a check word, so a damaged body that
/// got past the disk queue's CRC is told from a published one.
pub(crate) fn body(n: u64) -> [u8; BODY_BYTES] {
    let mut out = [0; BODY_BYTES];
    out[..8].copy_from_slice(&n.to_be_bytes());
    out[8..].copy_from_slice(&check_word(n).to_be_bytes());
    out
}

fn check_word(n: u64) -> u64 {
    n.wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(29) ^ 0x5ea1_ed5e_ed00_0031
}

/// The number of a delivered body, if it is one the simulation wrote.
pub(crate) fn body_number(bytes: &[u8]) -> Option<u64> {
    let n = u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?);
    let check = u64::from_be_bytes(bytes.get(8..BODY_BYTES)?.try_into().ok()?);
    (bytes.len() == BODY_BYTES && check == check_word(n)).then_some(n)
}

/// The clients' knowledge across lives.
#[derive(Debug, Default)]
pub(crate) struct Model {
    /// The next body number.
    pub(crate) next: u64,
    /// Publishes answered OK: under `--durable`, fsynced.
    pub(crate) acked: BTreeSet<u64>,
    /// Publishes that failed: the message may exist or not.
    pub(crate) failed: BTreeSet<u64>,
    /// Finished in this life (and not delivered since).
    pub(crate) done: BTreeSet<u64>,
    /// Finished and committed: never delivered again.
    pub(crate) committed: BTreeSet<u64>,
    /// Finished before a crash but not committed: may come back.
    pub(crate) limbo: BTreeSet<u64>,
    /// Published after the last barrier when a crash came: the topic's
    /// commit of its read may not have been written, so the topic may put
    /// it into the channel again: a second record, which delivers it again
    /// even after its FIN. Never counted as committed until an idle
    /// barrier shows no record is left.
    pub(crate) dup_ok: BTreeSet<u64>,
    /// The first body published after the last barrier.
    pub(crate) since_barrier: u64,
    /// When fsyncs were first set to fail: `since_barrier` then. A failed
    /// channel put stops the topic committing its reads for the rest of
    /// that life, so the next life replays everything from about then on
    /// (and, if it fails too, the one after). Cleared by an idle barrier in
    /// a life with no failing fsyncs: its topic has committed everything.
    pub(crate) failing_since: Option<u64>,
    /// Whether fsyncs were set to fail in this life.
    pub(crate) failing_this_life: bool,
    /// Bodies in a segment file a bit was flipped in: recovery may have
    /// moved the file aside with them.
    pub(crate) may_lose: BTreeSet<u64>,
    /// Ever finished (for the end's loss check).
    pub(crate) ever_finished: BTreeSet<u64>,
    /// Delivered in the drain at the end.
    pub(crate) drained: BTreeSet<u64>,
}

impl Model {
    /// A body was delivered: checks it may be, then counts it as
    /// outstanding again.
    pub(crate) fn delivered(&mut self, bytes: &[u8]) -> Result<u64, String> {
        let Some(n) = body_number(bytes) else {
            return Err(format!(
                "delivered a body no client published ({} bytes: {bytes:02x?})",
                bytes.len()
            ));
        };
        if n >= self.next {
            return Err(format!("delivered body {n}, never published"));
        }
        if self.committed.contains(&n) && !self.dup_ok.contains(&n) {
            return Err(format!(
                "body {n} was finished and its commit was due before a barrier, yet delivered again"
            ));
        }
        if self.done.contains(&n) && !self.dup_ok.contains(&n) {
            return Err(format!(
                "body {n} was finished in this life (no crash since), yet delivered again"
            ));
        }
        self.limbo.remove(&n);
        self.done.remove(&n);
        Ok(n)
    }

    /// A FIN of body `n` was accepted.
    pub(crate) fn finished(&mut self, n: u64) {
        self.done.insert(n);
        self.ever_finished.insert(n);
    }

    /// The lowest body not settled: not finished in this life, or not
    /// committed (outstanding, in limbo, or a failed publish that may
    /// exist).
    fn lowest_unsettled(&self) -> u64 {
        (0..self.next)
            .find(|n| {
                !self.done.contains(n) && !self.committed.contains(n) || self.dup_ok.contains(n)
            })
            .unwrap_or(self.next)
    }

    /// A barrier: every finished body below the lowest unsettled one is
    /// committed. When `idle` (the daemon holds no message: nothing queued,
    /// in flight or deferred at topic or channel), nothing in limbo can come
    /// back in this life any more, so it settles too.
    pub(crate) fn barrier(&mut self, idle: bool) {
        if idle {
            let limbo = std::mem::take(&mut self.limbo);
            self.done.extend(limbo);
            self.dup_ok.clear();
            if !self.failing_this_life {
                self.failing_since = None;
            }
        }
        self.since_barrier = self.next;
        let low = self.lowest_unsettled();
        let settled: Vec<u64> = self.done.range(..low).copied().collect();
        for n in settled {
            self.done.remove(&n);
            self.committed.insert(n);
        }
    }

    /// A clean stop: the channel commits every read. `synced_all` is false
    /// when an injected sync failure hit the stop, which then commits
    /// nothing new.
    pub(crate) fn clean_stop(&mut self, synced_all: bool) {
        if synced_all {
            let done = std::mem::take(&mut self.done);
            self.committed.extend(done);
        } else {
            // The stop wrote what it held back as new records, then its
            // commit failed: the old records replay too.
            self.crash();
            let committed = &self.committed;
            self.dup_ok
                .extend((0..self.next).filter(|n| !committed.contains(n)));
        }
    }

    /// Fsyncs are set to fail.
    pub(crate) fn syncs_failing(&mut self) {
        self.failing_since.get_or_insert(self.since_barrier);
        self.failing_this_life = true;
    }

    /// A life ends (crash or stop): after failed fsyncs the topic replays
    /// what it read since.
    pub(crate) fn life_ends(&mut self) {
        if let Some(from) = self.failing_since {
            self.dup_ok.extend(from..self.next);
        }
        self.failing_this_life = false;
    }

    /// A power loss: what was finished and not committed may come back.
    pub(crate) fn crash(&mut self) {
        let done = std::mem::take(&mut self.done);
        self.limbo.extend(done);
        self.dup_ok.extend(self.since_barrier..self.next);
    }

    /// Messages the daemon must hold now: acknowledged, not finished.
    pub(crate) fn must_hold(&self) -> usize {
        self.acked
            .iter()
            .filter(|n| {
                !self.done.contains(n)
                    && !self.committed.contains(n)
                    && !self.limbo.contains(n)
                    && !self.may_lose.contains(n)
            })
            .count()
    }

    /// Whether the model knows the exact set the daemon holds: nothing in
    /// limbo and no failed publish.
    pub(crate) fn exact(&self) -> bool {
        self.limbo.is_empty()
            && self.failed.is_empty()
            && self.may_lose.is_empty()
            && self.dup_ok.is_empty()
    }

    /// At the end: acknowledged bodies never finished nor delivered in the
    /// drain.
    pub(crate) fn missing(&self) -> Vec<u64> {
        self.acked
            .iter()
            .filter(|n| {
                !self.ever_finished.contains(n)
                    && !self.drained.contains(n)
                    && !self.may_lose.contains(n)
            })
            .copied()
            .collect()
    }
}
