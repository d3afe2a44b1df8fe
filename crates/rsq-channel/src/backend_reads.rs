//! Which records read from a durable channel's backend are finished, so the
//! backend is told to forget only the finished prefix.
//!
//! A disk queue with explicit commit keeps every record it handed out as
//! unread in its metadata until told otherwise. Records are finished out of
//! order (FIN order is the consumers'), so the channel commits the longest
//! run of finished records from the oldest: after a crash the backend
//! replays everything from the oldest unfinished record on, which may
//! deliver some finished ones again (at least once) but never loses one.

use std::collections::{HashMap, VecDeque};

use rsq_codec::MessageId;

/// Finished flags of the records read and not yet committed, oldest first.
#[derive(Debug, Default)]
pub(crate) struct BackendReads {
    /// Read sequence number of `done[0]`.
    base: u64,
    done: VecDeque<bool>,
    seq_of: HashMap<MessageId, u64>,
}

impl BackendReads {
    /// A record was read. `None` (undecodable) and a second copy of an id
    /// already held (the channel drops it) count as finished at once.
    pub fn read(&mut self, id: Option<MessageId>) {
        let seq = self.base + self.done.len() as u64;
        let finished = match id {
            Some(id) if !self.seq_of.contains_key(&id) => {
                self.seq_of.insert(id, seq);
                false
            }
            _ => true,
        };
        self.done.push_back(finished);
    }

    /// The message `id` left the channel for good (FIN).
    pub fn finished(&mut self, id: &MessageId) {
        if let Some(seq) = self.seq_of.remove(id)
            && let Some(flag) = usize::try_from(seq - self.base)
                .ok()
                .and_then(|i| self.done.get_mut(i))
        {
            *flag = true;
        }
    }

    /// How many of the oldest records are finished; they are forgotten here
    /// and the caller commits that many in the backend.
    pub fn take_committable(&mut self) -> u64 {
        let mut n = 0;
        while self.done.front() == Some(&true) {
            self.done.pop_front();
            n += 1;
        }
        self.base += n;
        n
    }

    /// Every record read so far is settled (emptied, or written back at
    /// close): returns how many to commit.
    pub fn settle_all(&mut self) -> u64 {
        let n = self.done.len() as u64;
        self.done.clear();
        self.seq_of.clear();
        self.base += n;
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> MessageId {
        MessageId([n; 16])
    }

    #[test]
    fn commits_only_the_finished_prefix() {
        let mut r = BackendReads::default();
        r.read(Some(id(1)));
        r.read(Some(id(2)));
        r.read(None);
        r.read(Some(id(2)));
        r.read(Some(id(3)));
        assert_eq!(r.take_committable(), 0);
        r.finished(&id(2));
        assert_eq!(r.take_committable(), 0, "1 is still out");
        r.finished(&id(1));
        assert_eq!(
            r.take_committable(),
            4,
            "1, 2, the undecodable one and the copy of 2"
        );
        r.finished(&id(9));
        assert_eq!(r.take_committable(), 0);
        r.finished(&id(3));
        assert_eq!(r.take_committable(), 1);
        r.read(Some(id(4)));
        assert_eq!(r.settle_all(), 1);
        assert_eq!(r.take_committable(), 0);
    }
}
