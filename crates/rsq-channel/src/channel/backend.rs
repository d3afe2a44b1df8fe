//! The channel's IO with its backend queue, outside the lock: reading
//! records back in batches and feeding them to the state, telling a
//! committing (`--durable`) backend which reads are finished, turning a
//! refused put into an error that hands the messages back, and writing
//! everything held back in one batch at close.

use bytes::Bytes;
use rsq_codec::{Message, MessageId};
use rsq_diskqueue::QueueError;

use super::{Channel, Inner, Shared};
use crate::ChannelError;

impl Shared {
    /// Reads up to `room` records, `first` (what the driver waited for)
    /// and then whatever the backend has ready, outside the lock; then
    /// feeds them to the state in order and delivers. Returns whether a
    /// read failed in a way worth retrying later.
    pub(super) fn read_batch(&self, first: Result<Bytes, QueueError>, room: usize) -> bool {
        let mut records = Vec::new();
        let mut end = first.map(|record| records.push(record)).err();
        while end.is_none() && records.len() < room {
            match self.backend.try_read() {
                Ok(Some(record)) => records.push(record),
                Ok(None) => break,
                Err(e) => end = Some(e),
            }
        }
        let mut inner = self.lock();
        inner.armed = None;
        if inner.exiting {
            inner.orphans.extend(records);
        } else {
            for record in records {
                self.accept_record(&mut inner, record);
            }
            self.pump(&mut inner);
        }
        match end {
            None => false,
            Some(QueueError::Closed) => {
                inner.backend_closed = true;
                false
            }
            Some(e) => {
                tracing::warn!(channel = %self.name, error = %e, "backend read failed");
                true
            }
        }
    }

    /// Writes what the channel held when it stopped (its messages, then the
    /// orphans: records read after shutdown began and dead letters a sink
    /// refused then) to the backend as one batch: one
    /// append and, when the backend syncs every put, one fsync. Once they
    /// are written every earlier read is settled, since each was written
    /// back as a new record; if the write failed nothing is committed, so a
    /// restart replays those reads.
    pub(super) async fn write_back(
        &self,
        messages: Vec<Message>,
        orphans: Vec<Bytes>,
    ) -> Result<(), QueueError> {
        let records: Vec<Bytes> = messages
            .iter()
            .map(Message::to_record)
            .chain(orphans)
            .collect();
        let count = records.len();
        if count > 0
            && let Err(e) = self.backend.put_many(records).await
        {
            tracing::error!(topic = %self.topic, channel = %self.name, error = %e, count,
                "failed to flush the channel's messages to the backend on close");
            return Err(e);
        }
        let mut inner = self.lock();
        if inner.reads.take().is_some() {
            self.backend.commit_reads();
        }
        Ok(())
    }

    /// Tells a committing backend how many of its oldest reads are finished
    /// (`id` just finished; `None` only re-checks).
    pub(super) fn finished_reads(&self, inner: &mut Inner, id: Option<&MessageId>) {
        if let Some(reads) = inner.reads.as_mut() {
            if let Some(id) = id {
                reads.finished(id);
            }
            let n = reads.take_committable();
            if n > 0 {
                self.backend.commit_oldest_reads(n);
            }
        }
    }

    /// Every backend read is settled (the channel was emptied, or its
    /// messages were written back at close): commit them all.
    pub(super) fn settle_reads(&self, inner: &mut Inner) {
        if let Some(reads) = inner.reads.as_mut() {
            let n = reads.settle_all();
            if n > 0 {
                self.backend.commit_oldest_reads(n);
            }
        }
    }

    pub(super) fn accept_record(&self, inner: &mut Inner, record: Bytes) {
        let decoded = Message::from_record(record);
        if let Some(reads) = inner.reads.as_mut() {
            reads.read(decoded.as_ref().ok().map(|m| m.id));
        }
        self.finished_reads(inner, None);
        match decoded {
            // Deferred when the channel was closed: held again for what was
            // left of its delay (a restart never delivers it early).
            Ok(msg) => match msg.deferred {
                Some(delay) => inner
                    .state
                    .handle_backend_deferred(msg, delay, self.clock.now()),
                None => inner.state.handle_backend_message(msg),
            },
            Err(e) => tracing::error!(topic = %self.topic, channel = %self.name, error = %e,
                "skipping undecodable backend record"),
        }
    }
}

impl Channel {
    /// The error for a backend put that failed: when the disk is full the
    /// messages were not stored and go back to the caller, to put again
    /// later (uncounted, so the put that stores them counts them once).
    pub(super) fn refused(&self, error: QueueError, msgs: Vec<Message>) -> ChannelError {
        if !error.is_disk_full() {
            return ChannelError::Backend(error);
        }
        self.shared.lock().state.uncount_puts(msgs.len() as u64);
        ChannelError::DiskFull {
            unstored: msgs,
            source: error,
        }
    }
}
