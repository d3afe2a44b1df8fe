//! The outbound half of a V2 connection, with no IO: which bytes leave
//! and when. [`Connection`](crate::Connection) decides what a client's
//! commands produce; [`Output`] decides when responses, message frames and
//! heartbeats are written, and which messages sampling keeps.
//!
//! The two halves are separate machines because a connection reads and
//! writes at the same time: messages are delivered while a PUB waits for
//! its topic. The driver runs each half in its own task and carries
//! [`Action::Identified`](crate::Action::Identified)'s settings from one to
//! the other.
//!
//! Bytes go straight into the caller's buffer: every `handle_*` that
//! produces bytes appends them to the `out` it is given, and
//! [`Output::poll_transmit`] says when the driver must write that buffer
//! whole. Time comes in as `now`; [`Output::poll_timeout`] is the next
//! instant the machine needs to be woken at ([`Output::handle_timeout`],
//! which decides what is due).
//!
//! # When bytes leave
//!
//! - Responses, errors and heartbeats leave at once.
//! - Message frames are gathered: the driver moves every message already
//!   delivered to the client into the buffer (while
//!   [`Output::has_room`]), then calls [`Output::handle_delivered`]. The
//!   batch leaves at once, unlike nsqd, which holds it until the output
//!   buffer timeout unless the client's RDY window is full. Under load,
//!   messages pile up while a write is under way and still leave in large
//!   batches; at low rates a message leaves at once rather than after up
//!   to 250 ms (`cargo xtask bench daemon`, scenario `latency`: p99 7.5 ms
//!   with nsqd's policy, 0.15 ms with this one).
//! - The one wait: while the reading half is still working through a
//!   batch of commands (say 500 FINs, each freeing a slot that is refilled
//!   at once), messages wait for the end of that batch, which the driver
//!   reports with [`Output::handle_input_idle`]; otherwise that client
//!   would get one write per FIN. The output buffer timeout bounds the
//!   wait, and a full buffer leaves at once.
//!
//! # Sampling
//!
//! nsqd drops a sampled-out message before it goes in flight. In rsq a
//! message reaching the output is already in flight for this client, so
//! [`Output::handle_message`] answers [`Delivery::SampledOut`] and the
//! driver finishes it on the client's behalf: it leaves the channel as
//! nsqd's does, and counts in the client's `message_count` and
//! `finish_count`, which nsqd's does not. The draws come from a
//! [`Sampler`] over the seed the driver gives.

use std::time::Instant;

use bytes::BytesMut;
use rsq_codec::{HEARTBEAT, Message, encode_message_frame, encode_response};

use crate::{Negotiated, Sampler};

/// What became of a message given to [`Output::handle_message`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "a sampled-out message must be finished for the client"]
pub enum Delivery {
    /// Its frame is in the buffer.
    Sent,
    /// Sampling dropped it: finish it on the client's behalf.
    SampledOut,
}

/// The outbound state of one V2 connection.
#[derive(Debug)]
pub struct Output {
    settings: Negotiated,
    /// The seed the sampler restarts from when the sample rate changes.
    seed: u64,
    sampler: Sampler,
    /// When the next heartbeat is due; `None` when heartbeats are off.
    next_heartbeat: Option<Instant>,
    /// The latest instant gathered messages may wait until.
    flush_at: Option<Instant>,
    /// A heartbeat is due: it goes into the buffer at the next
    /// [`Output::poll_transmit`].
    heartbeat_due: bool,
    /// The buffer must be written at the next [`Output::poll_transmit`].
    urgent: bool,
}

impl Output {
    /// The output of a connection accepted at `now`, under `settings`
    /// (the defaults until IDENTIFY), sampling from `seed`.
    pub fn new(settings: Negotiated, seed: u64, now: Instant) -> Self {
        Output {
            sampler: Sampler::new(settings.sample_rate, seed),
            next_heartbeat: settings.heartbeat_interval.map(|d| now + d),
            settings,
            seed,
            flush_at: None,
            heartbeat_due: false,
            urgent: false,
        }
    }

    /// The settings in force.
    pub fn settings(&self) -> &Negotiated {
        &self.settings
    }

    /// IDENTIFY changed the settings at `now`: the heartbeat interval
    /// restarts from `now`, and the sample rate applies from the next
    /// message.
    pub fn handle_settings(&mut self, settings: Negotiated, now: Instant) {
        self.next_heartbeat = settings.heartbeat_interval.map(|d| now + d);
        self.sampler = Sampler::new(settings.sample_rate, self.seed);
        self.settings = settings;
    }

    /// An encoded response or error frame, which leaves at once.
    pub fn handle_frame(&mut self, frame: &[u8], out: &mut BytesMut) {
        out.extend_from_slice(frame);
        self.urgent = true;
    }

    /// A message delivered to the client: its frame goes into `out`, or
    /// sampling drops it (module doc).
    pub fn handle_message(&mut self, msg: &Message, out: &mut BytesMut) -> Delivery {
        if self.sampler.keep() {
            encode_message_frame(msg, out);
            Delivery::Sent
        } else {
            Delivery::SampledOut
        }
    }

    /// Whether `out` can take more messages before it is written: the
    /// client's output buffer size bounds one gathered write.
    pub fn has_room(&self, out: &BytesMut) -> bool {
        out.len() < self.settings.output_buffer_size
    }

    /// The driver has moved every message delivered so far into `out`.
    /// `input_busy` says whether the reading half is mid-batch (it will call
    /// [`Output::handle_input_idle`] at the batch's end).
    pub fn handle_delivered(&mut self, now: Instant, input_busy: bool, out: &BytesMut) {
        if out.is_empty() {
            return;
        }
        match self.settings.output_buffer_timeout {
            Some(timeout) if input_busy && self.has_room(out) => {
                self.flush_at.get_or_insert(now + timeout);
            }
            _ => self.urgent = true,
        }
    }

    /// The reading half finished a batch of commands: whatever it made
    /// ready leaves now.
    pub fn handle_input_idle(&mut self, out: &BytesMut) {
        if !out.is_empty() {
            self.urgent = true;
        }
    }

    /// The driver must have everything written before it goes on (a TLS
    /// handoff, a switch to compression, closing).
    pub fn handle_flush(&mut self) {
        self.urgent = true;
    }

    /// The next instant [`Output::handle_timeout`] is due, if any.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match (self.next_heartbeat, self.flush_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Time passed: a held batch whose wait ran out leaves, and a heartbeat
    /// that is due is queued for the next [`Output::poll_transmit`] (the
    /// next one is scheduled one interval from `now`). Acts only on what is
    /// due, so a driver woken early loses nothing.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.flush_at.is_some_and(|at| at <= now) {
            self.urgent = true;
        }
        if let (Some(at), Some(interval)) = (self.next_heartbeat, self.settings.heartbeat_interval)
            && at <= now
        {
            self.heartbeat_due = true;
            self.next_heartbeat = Some(now + interval);
            self.urgent = true;
        }
    }

    /// Whether the driver must now write all of `out` (and then clear it);
    /// a heartbeat [`Output::handle_timeout`] found due is appended first.
    /// Once it says yes, the machine counts `out` as written.
    pub fn poll_transmit(&mut self, out: &mut BytesMut) -> bool {
        if std::mem::take(&mut self.heartbeat_due) {
            encode_response(HEARTBEAT, out);
        }
        let due = self.urgent && !out.is_empty();
        if due || out.is_empty() {
            self.urgent = false;
            self.flush_at = None;
        }
        if cfg!(debug_assertions) {
            self.check_invariants(if due { &[] } else { &out[..] });
        }
        due
    }

    /// Panics unless the machine is consistent with `held`, the bytes a
    /// [`Output::poll_transmit`] left unwritten: held bytes have a deadline
    /// (nothing waits unbounded) and a deadline holds bytes; heartbeats are
    /// scheduled exactly when they are on. Runs after every
    /// [`Output::poll_transmit`] in debug builds, so the driver must call
    /// [`Output::handle_delivered`] after each run of
    /// [`Output::handle_message`].
    pub fn check_invariants(&self, held: &[u8]) {
        assert_eq!(
            self.next_heartbeat.is_some(),
            self.settings.heartbeat_interval.is_some(),
            "heartbeat schedule out of step with the settings"
        );
        assert_eq!(
            held.is_empty(),
            self.flush_at.is_none(),
            "held bytes and their deadline out of step"
        );
        assert!(!self.urgent, "an urgent write left undone");
        assert!(!self.heartbeat_due, "a due heartbeat left unwritten");
    }
}

#[cfg(test)]
mod tests;
