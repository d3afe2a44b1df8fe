//! Dead letters: where a channel's messages go once they used up
//! `--max-attempts` (or the channel's own `max_attempts`).
//!
//! **The name.** A topic's dead letters go to the topic named by
//! [`dead_letter_topic`]: the topic's name with `.dead` appended
//! (`orders` → `orders.dead`), before the `#ephemeral` suffix of an
//! ephemeral topic (`clicks#ephemeral` → `clicks.dead#ephemeral`, itself
//! ephemeral: an ephemeral topic's messages never reach the disk, so
//! neither do its dead letters). When that would pass nsqd's 64 bytes, the
//! name is cut and made unique again with a hash of the whole name:
//! the first bytes of the name, `-`, the 16 hex digits of its 64-bit
//! FNV-1a hash, then `.dead` (and `#ephemeral`), 64 bytes in all. The rule
//! depends on the name alone, so every channel of a topic, across
//! restarts and daemons, uses the same dead-letter topic. A dead-letter
//! topic is a normal topic: created at the first dead letter, listed in
//! `nsqd.dat`, consumed and deleted as any other.
//!
//! **No recursion.** A topic whose name ends in `.dead` (before any
//! `#ephemeral`) is a dead-letter topic: its channels never dead-letter
//! (`--max-attempts` does not apply to them and `/channel/create` refuses a
//! `max_attempts` for them), so a poison message stops there instead of
//! moving on to `.dead.dead`.
//!
//! **The message.** What is published is a new message (a fresh id: every
//! channel of a topic may dead-letter its copy of one message, and ids are
//! unique per topic) with the same body and the original publish
//! timestamp; its attempts start at 0 again. The channel's `dead_letter_count`
//! (in `/stats`, and `nsq_channel_dead_letter_total` in `/metrics`) counts
//! it, and each move is logged at debug level.
//!
//! **Durability.** The publish is the topic's ordinary put: under
//! `--durable` it returns once fsynced, and only then does the channel count
//! the message finished (its own backend read committable). Without it, it
//! is as durable as any publish (the memory queue, or the disk queue).

use std::sync::{Arc, Mutex, Weak};

use async_trait::async_trait;
use rsq_channel::{ChannelError, DeadLetterSink};
use rsq_codec::{EPHEMERAL_SUFFIX, MAX_NAME_LEN, Message};

use crate::{ChannelHandle, DaemonTopic, Nsqd};

/// What a topic's name gets to name its dead-letter topic.
pub const DEAD_LETTER_SUFFIX: &str = ".dead";

/// `-` and 16 hex digits: what a shortened name adds after its prefix.
const HASH_LEN: usize = 17;

/// The dead-letter topic of `topic` (see the module docs). `topic` is a
/// valid name; the result is one too.
pub fn dead_letter_topic(topic: &str) -> String {
    let (base, ephemeral) = match topic.strip_suffix(EPHEMERAL_SUFFIX) {
        Some(base) => (base, EPHEMERAL_SUFFIX),
        None => (topic, ""),
    };
    let plain = format!("{base}{DEAD_LETTER_SUFFIX}{ephemeral}");
    if plain.len() <= MAX_NAME_LEN {
        return plain;
    }
    let mut keep = MAX_NAME_LEN - HASH_LEN - DEAD_LETTER_SUFFIX.len() - ephemeral.len();
    // Valid names are ASCII; stay on a character boundary regardless.
    while !base.is_char_boundary(keep) {
        keep -= 1;
    }
    format!(
        "{}-{:016x}{DEAD_LETTER_SUFFIX}{ephemeral}",
        &base[..keep],
        fnv1a64(base.as_bytes())
    )
}

/// Whether `topic` is a dead-letter topic, whose channels never
/// dead-letter (see the module docs).
pub fn is_dead_letter_topic(topic: &str) -> bool {
    topic
        .strip_suffix(EPHEMERAL_SUFFIX)
        .unwrap_or(topic)
        .ends_with(DEAD_LETTER_SUFFIX)
}

/// 64-bit FNV-1a: small, fixed forever (the names it makes are persisted),
/// and plenty to tell apart names that share their first 42 bytes.
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, b| {
        (hash ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The sink the daemon gives every channel of a topic that is not itself a
/// dead-letter topic: it publishes to the topic's dead-letter topic.
pub struct Publisher {
    nsqd: Weak<Nsqd>,
    topic: String,
    channel: String,
    dead_letter_topic: String,
}

impl Publisher {
    /// The sink of channel `channel` of `topic`.
    pub fn new(nsqd: Weak<Nsqd>, topic: &str, channel: &str) -> Publisher {
        Publisher {
            nsqd,
            topic: topic.to_string(),
            channel: channel.to_string(),
            dead_letter_topic: dead_letter_topic(topic),
        }
    }
}

fn boxed(e: impl std::error::Error + Send + Sync + 'static) -> ChannelError {
    ChannelError::DeadLetter(Box::new(e))
}

#[async_trait]
impl DeadLetterSink for Publisher {
    async fn publish(&self, msg: Message) -> Result<(), ChannelError> {
        let nsqd = self.nsqd.upgrade().ok_or(ChannelError::Exiting)?;
        // Not `Nsqd::publish`: dead letters still flow while draining, as
        // they are messages the node already holds.
        let topic = nsqd
            .get_or_create_topic(&self.dead_letter_topic)
            .await
            .map_err(boxed)?;
        let mut letter = nsqd.new_message(msg.body.clone()).await.map_err(boxed)?;
        letter.timestamp_ns = msg.timestamp_ns;
        let letter_id = letter.id;
        topic.put(letter).await.map_err(boxed)?;
        tracing::debug!(
            topic = %self.topic,
            channel = %self.channel,
            id = %msg.id,
            attempts = msg.attempts,
            dead_letter_topic = %self.dead_letter_topic,
            dead_letter_id = %letter_id,
            "dead letter published"
        );
        Ok(())
    }
}

/// A channel's own attempt limit, kept beside it: `None` follows
/// `--max-attempts`; `Some` was set by `/channel/create` and is written to
/// `nsqd.dat` (only then, so a daemon that never sets one writes nsqd's
/// bytes).
#[derive(Debug, Default)]
pub struct ChannelLimit(Mutex<Option<u16>>);

impl ChannelLimit {
    /// The channel's own limit, if it has one.
    pub fn get(&self) -> Option<u16> {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set(&self, max_attempts: u16) -> bool {
        let mut limit = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let changed = *limit != Some(max_attempts);
        *limit = Some(max_attempts);
        changed
    }
}

impl ChannelHandle {
    /// Gives the channel its own attempt limit (from `/channel/create` or
    /// `nsqd.dat`); returns whether it differs from what it had.
    pub(crate) fn set_max_attempts(&self, max_attempts: u16) -> bool {
        self.0.set_max_attempts(max_attempts);
        self.1.set(max_attempts)
    }

    /// The channel's own attempt limit, if it was given one.
    pub(crate) fn own_max_attempts(&self) -> Option<u16> {
        self.1.get()
    }
}

impl Nsqd {
    /// Sets channel `channel` of `topic`'s own attempt limit and persists
    /// it, when it changed (under `--durable`, before returning).
    pub(crate) async fn set_max_attempts(
        &self,
        topic: &DaemonTopic,
        channel: &Arc<ChannelHandle>,
        max_attempts: u16,
    ) {
        if channel.set_max_attempts(max_attempts) && !channel.is_ephemeral() {
            tracing::info!(
                topic = topic.name(),
                channel = channel.name(),
                max_attempts,
                "CHANNEL max_attempts set"
            );
            self.mark_changed(topic.name());
            self.metadata_changed().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsq_codec::is_valid_name;

    #[track_caller]
    fn check(topic: &str, expected: &str) {
        let name = dead_letter_topic(topic);
        assert_eq!(name, expected, "dead_letter_topic({topic:?})");
        assert!(is_valid_name(&name), "{name:?} is not a valid name");
        assert!(is_dead_letter_topic(&name));
        assert_eq!(
            rsq_codec::is_ephemeral(&name),
            rsq_codec::is_ephemeral(topic)
        );
    }

    #[test]
    fn names_are_the_topic_with_dot_dead() {
        check("orders", "orders.dead");
        check("clicks#ephemeral", "clicks.dead#ephemeral");
        check(&"a".repeat(59), &format!("{}.dead", "a".repeat(59)));
        check(
            &format!("{}#ephemeral", "e".repeat(49)),
            &format!("{}.dead#ephemeral", "e".repeat(49)),
        );
    }

    #[test]
    fn long_names_are_cut_and_hashed_deterministically() {
        let long = "x".repeat(64);
        let name = dead_letter_topic(&long);
        assert_eq!(name.len(), 64);
        assert!(name.starts_with(&"x".repeat(42)));
        check(&long, &name);
        assert_eq!(dead_letter_topic(&long), name, "deterministic");
        // Names sharing their first 42 bytes still differ.
        let other = format!("{}y", "x".repeat(63));
        assert_ne!(dead_letter_topic(&other), name);
        let eph = format!("{}#ephemeral", "z".repeat(54));
        let eph_name = dead_letter_topic(&eph);
        assert_eq!(eph_name.len(), 64);
        check(&eph, &eph_name);
        // Fixed forever: it names topics on disk.
        check(
            &"q".repeat(60),
            &format!(
                "{}-{:016x}.dead",
                "q".repeat(42),
                fnv1a64("q".repeat(60).as_bytes())
            ),
        );
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn dead_letter_topics_are_recognised() {
        assert!(is_dead_letter_topic("orders.dead"));
        assert!(is_dead_letter_topic("orders.dead#ephemeral"));
        assert!(!is_dead_letter_topic("orders"));
        assert!(!is_dead_letter_topic("orders.deadline"));
        assert!(!is_dead_letter_topic("dead"));
    }
}
