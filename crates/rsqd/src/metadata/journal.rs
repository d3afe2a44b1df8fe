//! `nsqd.dat.journal`: the changes to the topic and channel list since
//! `nsqd.dat` was last written whole, one JSON line each.
//!
//! Rewriting `nsqd.dat` costs time in proportion to every topic there is,
//! so with thousands of topics a create that waits for it (`--durable`)
//! would wait longer the more topics exist. A change instead appends a
//! line here and fdatasyncs it, and `nsqd.dat` is rewritten whole only
//! every [`COMPACT_AFTER`] changes and at shutdown.
//!
//! The first line names the `nsqd.dat` the journal applies to, by the
//! CRC32 of its bytes. A whole write replaces `nsqd.dat` first and then
//! starts a new journal, so a crash in between leaves a journal naming the
//! old file, which is then ignored: its changes are all in the new one.
//! Go nsqd ignores the journal (it reads only `nsqd.dat`), and a journal
//! whose base is not the `nsqd.dat` found (Go rewrote it) is ignored too.
//!
//! A torn last line (a crash during an append) is dropped; it was never
//! acknowledged. Any other line that does not parse makes the journal
//! unusable: it is moved aside whole as `nsqd.dat.journal.bad`, logged,
//! and `nsqd.dat` is used alone.

use rsq_diskqueue::Storage;

use serde::{Deserialize, Serialize};

use super::{ChannelMetadata, Metadata, MetadataError, TopicMetadata, io_error, read_file};

/// The journal's file name inside the data path.
pub(crate) const JOURNAL_FILE: &str = "nsqd.dat.journal";

/// Changes journaled before `nsqd.dat` is written whole again.
pub const COMPACT_AFTER: usize = 1024;

/// One change to the topic and channel list: a topic's whole entry, so
/// replaying the latest line about a topic gives its latest state whatever
/// happened in between (a delete and a create with other channels, say).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(crate) enum Change {
    /// The topic exists, with exactly these channels.
    Topic {
        /// Topic name.
        name: String,
        /// Whether it is paused.
        paused: bool,
        /// Its durable channels, sorted by name.
        channels: Vec<ChannelMetadata>,
    },
    /// The topic (with its channels) is gone.
    DeleteTopic {
        /// Topic name.
        name: String,
    },
}

/// The first line: which `nsqd.dat` the changes apply to.
#[derive(Debug, Serialize, Deserialize)]
struct Header {
    base_crc32: u32,
}

/// Applies `change` to `meta`, whose topics are sorted by name (as rsqd
/// writes them), keeping them sorted.
pub(crate) fn apply(meta: &mut Metadata, change: &Change) {
    let at = |name: &str| meta.topics.binary_search_by(|t| t.name.as_str().cmp(name));
    match change {
        Change::Topic {
            name,
            paused,
            channels,
        } => {
            let entry = TopicMetadata {
                name: name.clone(),
                paused: *paused,
                channels: channels.clone(),
            };
            match at(name) {
                Ok(i) => meta.topics[i] = entry,
                Err(i) => meta.topics.insert(i, entry),
            }
        }
        Change::DeleteTopic { name } => {
            if let Ok(i) = at(name) {
                meta.topics.remove(i);
            }
        }
    }
}

/// Starts an empty journal for the `nsqd.dat` whose bytes are `base`,
/// replacing any older one atomically.
pub(crate) fn start(storage: &dyn Storage, base: &[u8]) -> Result<(), MetadataError> {
    let mut header = serde_json::to_vec(&Header {
        base_crc32: crc32fast::hash(base),
    })
    .map_err(MetadataError::Encode)?;
    header.push(b'\n');
    storage
        .write_atomic(JOURNAL_FILE, &header)
        .map_err(io_error(storage, "cannot write", JOURNAL_FILE))
}

/// Appends `changes` and fdatasyncs them: durable when it returns.
pub(crate) fn append(storage: &dyn Storage, changes: &[Change]) -> Result<(), MetadataError> {
    let mut lines = Vec::new();
    for change in changes {
        serde_json::to_writer(&mut lines, change).map_err(MetadataError::Encode)?;
        lines.push(b'\n');
    }
    storage.append(JOURNAL_FILE, &lines).map_err(io_error(
        storage,
        "cannot append to",
        JOURNAL_FILE,
    ))?;
    storage
        .sync(JOURNAL_FILE)
        .map_err(io_error(storage, "cannot sync", JOURNAL_FILE))
}

/// Removes the journal (after `rsqd downgrade` wrote `nsqd.dat` for Go).
pub(crate) fn remove(storage: &dyn Storage) -> Result<(), MetadataError> {
    storage
        .remove(JOURNAL_FILE)
        .map_err(io_error(storage, "cannot remove", JOURNAL_FILE))
}

/// What reading the journal found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Replay {
    /// No journal, or one for another `nsqd.dat`: nothing applies.
    None,
    /// These changes apply, in order.
    Changes(Vec<Change>),
    /// A line before the last does not parse: the journal is unusable.
    Corrupt(String),
}

/// Reads the journal for the `nsqd.dat` whose bytes are `base`. Changes
/// nothing on disk.
pub(crate) fn read(storage: &dyn Storage, base: &[u8]) -> Result<Replay, MetadataError> {
    match read_file(storage, JOURNAL_FILE)? {
        Some(bytes) => Ok(parse(&bytes, crc32fast::hash(base))),
        None => Ok(Replay::None),
    }
}

/// Parses journal bytes for a base with CRC32 `base_crc32`.
pub(crate) fn parse(bytes: &[u8], base_crc32: u32) -> Replay {
    let mut lines: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
    // After the last newline: nothing, or a line a crash tore, which was
    // never acknowledged.
    lines.pop();
    let Some((header, lines)) = lines.split_first() else {
        return Replay::None;
    };
    match serde_json::from_slice::<Header>(header) {
        Ok(header) if header.base_crc32 == base_crc32 => {}
        // Written for another `nsqd.dat`: everything in it is in this one.
        _ => return Replay::None,
    }
    let mut changes = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        match serde_json::from_slice::<Change>(line) {
            Ok(change) => changes.push(change),
            Err(e) => return Replay::Corrupt(format!("line {}: {e}", i + 2)),
        }
    }
    Replay::Changes(changes)
}

#[cfg(test)]
mod tests;
