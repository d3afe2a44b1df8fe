//! What a replicated topic's log holds: the entries its state machine
//! applies, in postcard.

use rsq_codec::Message;
use serde::{Deserialize, Serialize};

/// One entry of a replicated topic's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum TopicEntry {
    /// Messages published together (a PUB, an MPUB's bodies, a DPUB), as
    /// disk records (`Message::to_record`: a deferral travels with it).
    Publish {
        /// The messages' records, in order.
        records: Vec<Vec<u8>>,
    },
    /// A channel was created; from here on it gets every message.
    Channel {
        /// Its name.
        name: String,
    },
    /// Messages a channel's consumers finished, batched by the leader.
    Finished {
        /// The channel.
        channel: String,
        /// The finished messages' ids.
        ids: Vec<[u8; 16]>,
    },
}

impl TopicEntry {
    /// A publish entry of `msgs`.
    pub(crate) fn publish(msgs: &[Message]) -> TopicEntry {
        TopicEntry::Publish {
            records: msgs.iter().map(|m| m.to_record().to_vec()).collect(),
        }
    }

    /// The entry's bytes.
    pub(crate) fn encode(&self) -> Result<Vec<u8>, String> {
        postcard::to_stdvec(self).map_err(|e| e.to_string())
    }

    /// The entry in `bytes`, or why they are not one.
    pub(crate) fn decode(bytes: &[u8]) -> Result<TopicEntry, String> {
        postcard::from_bytes(bytes).map_err(|e| e.to_string())
    }
}

/// The messages of a publish entry's records; a record that does not
/// decode is skipped and counted, never served.
pub(crate) fn messages(records: Vec<Vec<u8>>) -> (Vec<Message>, usize) {
    let mut bad = 0;
    let msgs = records
        .into_iter()
        .filter_map(|r| match Message::from_record(r.into()) {
            Ok(m) => Some(m),
            Err(_) => {
                bad += 1;
                None
            }
        })
        .collect();
    (msgs, bad)
}
