//! The metadata file: where reading and writing stand, and how many unread
//! records each segment holds.
//!
//! It is text, so an operator can read it, and ends with a CRC32 line, so a
//! damaged file is recognised and the queue falls back to scanning segments
//! instead of trusting wrong positions:
//!
//! ```text
//! rsq-diskqueue 1
//! read 3 1042
//! write 4 77
//! counts 3:12 4:1
//! crc 1a2b3c4d
//! ```

use std::collections::BTreeMap;

use crate::ledger::Pos;

const MAGIC: &str = "rsq-diskqueue 1";

/// What the metadata file records.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct QueueMeta {
    /// Next record to hand out.
    pub read: Pos,
    /// End of the last record known synced when this was written.
    pub write: Pos,
    /// Unread records per segment file, between `read` and `write`.
    pub counts: BTreeMap<u64, u64>,
}

impl QueueMeta {
    /// Records between `read` and `write`.
    #[cfg(test)]
    pub fn depth(&self) -> u64 {
        self.counts.values().sum()
    }

    /// The file's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut text = format!(
            "{MAGIC}\nread {} {}\nwrite {} {}\ncounts",
            self.read.file, self.read.offset, self.write.file, self.write.offset
        );
        for (file, count) in &self.counts {
            text.push_str(&format!(" {file}:{count}"));
        }
        text.push('\n');
        let crc = crc32fast::hash(text.as_bytes());
        text.push_str(&format!("crc {crc:08x}\n"));
        text.into_bytes()
    }

    /// Parses the file's bytes; the error says what is wrong, for the log.
    pub fn decode(bytes: &[u8]) -> Result<QueueMeta, String> {
        let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8".to_string())?;
        let body_end = text
            .trim_end_matches('\n')
            .rfind('\n')
            .map(|i| i + 1)
            .ok_or("too short")?;
        let (body, crc_line) = text.split_at(body_end);
        let crc_hex = crc_line
            .trim_end()
            .strip_prefix("crc ")
            .ok_or("no crc line")?;
        let crc = u32::from_str_radix(crc_hex, 16).map_err(|_| "bad crc field")?;
        if crc != crc32fast::hash(body.as_bytes()) {
            return Err("CRC32 mismatch".into());
        }
        let mut lines = body.lines();
        if lines.next() != Some(MAGIC) {
            return Err("unknown format".into());
        }
        let read = parse_pos(lines.next(), "read")?;
        let write = parse_pos(lines.next(), "write")?;
        let counts_line = lines.next().ok_or("no counts line")?;
        let counts_fields = counts_line.strip_prefix("counts").ok_or("no counts line")?;
        let mut counts = BTreeMap::new();
        for field in counts_fields.split_whitespace() {
            let (file, count) = field.split_once(':').ok_or("bad counts field")?;
            let file = file.parse().map_err(|_| "bad counts file")?;
            let count = count.parse().map_err(|_| "bad counts value")?;
            counts.insert(file, count);
        }
        Ok(QueueMeta {
            read,
            write,
            counts,
        })
    }
}

fn parse_pos(line: Option<&str>, key: &str) -> Result<Pos, String> {
    let line = line.ok_or_else(|| format!("no {key} line"))?;
    let mut fields = line.split_whitespace();
    if fields.next() != Some(key) {
        return Err(format!("expected {key} line"));
    }
    let mut num = || -> Result<u64, String> {
        fields
            .next()
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| format!("bad {key} position"))
    };
    let file = num()?;
    let offset = num()?;
    Ok(Pos { file, offset })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> QueueMeta {
        QueueMeta {
            read: Pos {
                file: 3,
                offset: 1042,
            },
            write: Pos {
                file: 4,
                offset: 77,
            },
            counts: [(3, 12), (4, 1)].into_iter().collect(),
        }
    }

    #[test]
    fn round_trips() {
        let meta = sample();
        assert_eq!(QueueMeta::decode(&meta.encode()), Ok(meta.clone()));
        assert_eq!(meta.depth(), 13);
        let empty = QueueMeta::default();
        assert_eq!(QueueMeta::decode(&empty.encode()), Ok(empty));
    }

    #[test]
    fn every_byte_flip_and_truncation_is_rejected() {
        let bytes = sample().encode();
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut bad = bytes.clone();
                bad[i] ^= 1 << bit;
                // A flip inside the trailing newline may still parse the same
                // record; anything else must be rejected.
                if let Ok(meta) = QueueMeta::decode(&bad) {
                    assert_eq!(meta, sample(), "flip at {i} bit {bit} accepted");
                }
            }
        }
        for len in 0..bytes.len() - 1 {
            assert!(QueueMeta::decode(&bytes[..len]).is_err(), "cut at {len}");
        }
    }
}
