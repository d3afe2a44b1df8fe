//! Recovery's promise, checked from the outside: what a test or fuzz
//! target calls after opening a queue over files it built.
//!
//! The promise (ARCHITECTURE.md, "rsq-diskqueue"): no byte recovery removes
//! or cuts was inside or before a whole record. Whole records are the chain
//! of valid records from a segment's start. A segment is either kept with
//! that chain intact, moved aside whole as `.bad`, or removed because valid
//! metadata says it was fully read (or, under Go's metadata, because it was
//! taken over, which the takeover tests check record by record). What may
//! be cut after the chain is only zeros, or at most one record's worth of
//! bytes after at least one whole record.

use crate::MemStorage;
use crate::go_format::GoMeta;
use crate::metadata::QueueMeta;
use crate::record::{Decoded, HEADER_LEN, decode};
use crate::recovery::{Names, check};

/// Checks that opening the queue `queue` turned the directory `before` into
/// `after` keeping every whole record (see the module docs); the error says
/// which file broke the promise and how. `min_record_size` and
/// `max_record_size` are the queue's `DiskQueueConfig` limits.
pub fn check_recovery_kept_records(
    before: &MemStorage,
    after: &MemStorage,
    queue: &str,
    min_record_size: usize,
    max_record_size: usize,
) -> Result<(), String> {
    let names = Names::new(queue);
    let meta = before.contents(&names.meta());
    let fully_read = |file: u64| match &meta {
        None => false,
        Some(bytes) => match QueueMeta::decode(bytes) {
            Ok(meta) => check(&meta).is_ok() && file < meta.read.file,
            Err(_) => GoMeta::decode(bytes).is_some(),
        },
    };
    for name in before.names() {
        let Some(file) = names.parse_segment(&name) else {
            continue;
        };
        let old = before.contents(&name).unwrap_or_default();
        let whole = chain_end(&old, min_record_size, max_record_size);
        match after.contents(&name) {
            Some(new) => {
                if new.len() < whole || new[..whole] != old[..whole] {
                    return Err(format!("{name}: whole records up to {whole} were changed"));
                }
                if new.len() < old.len() {
                    let cut = &old[new.len()..];
                    let data = cut.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
                    let torn =
                        new.len() == whole && whole > 0 && data <= HEADER_LEN + max_record_size;
                    if data > 0 && !torn {
                        return Err(format!(
                            "{name}: cut at {} with {data} bytes of data after it (whole records end at {whole})",
                            new.len()
                        ));
                    }
                }
            }
            None if after.contents(&format!("{name}.bad")).as_ref() == Some(&old) => {}
            None if fully_read(file) => {}
            None => return Err(format!("{name}: removed without a whole copy aside")),
        }
    }
    Ok(())
}

/// Where the chain of whole records from the start of `bytes` ends.
fn chain_end(bytes: &[u8], min: usize, max: usize) -> usize {
    let mut at = 0;
    while let Decoded::Record { total } = decode(&bytes[at..], min, max) {
        at += total;
    }
    at
}
