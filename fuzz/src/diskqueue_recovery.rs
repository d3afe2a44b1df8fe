//! Fuzz target: opening a `DiskQueue` over whatever a crash, a bad disk or
//! an operator left in its directory, then draining it.
//!
//! The input is structured (`arbitrary`): segment files built from chunks
//! that are valid records (length, CRC32, payload), torn or bit-flipped
//! records, or raw bytes; a metadata file that is raw bytes, text with a
//! correct CRC line, or positions and counts rendered in the real format;
//! and records to append after draining. Random bytes alone would almost
//! never pass a CRC, so building valid records here is what lets the fuzzer
//! reach recovery's interesting branches. The files go into the crate's
//! in-memory `MemStorage`.
//!
//! Checked: opening never removes or cuts a byte inside or before a whole
//! record (`check_recovery_kept_records`: only zeros or one torn record
//! after the last whole one are cut, anything else unreadable is moved
//! aside whole); opening and reading never panic; reading terminates (each
//! record takes at least 4 bytes of some file, so more successful reads than
//! bytes/4 means the queue is looping) and leaves depth 0; and after
//! recovery, records put, a close and a reopen come back exactly, in order.

use std::sync::{Arc, OnceLock};

use arbitrary::{Arbitrary, Unstructured};
use bytes::Bytes;
use rsq_diskqueue::{
    BackendQueue, DiskQueue, DiskQueueConfig, MemStorage, Storage, check_recovery_kept_records,
};

const QUEUE: &str = "fz";
const MAX_SEGMENTS: usize = 6;
const MAX_APPENDS: usize = 16;
/// Record header: u32 length, u32 CRC32.
const HEADER_LEN: usize = 8;
/// go-diskqueue's record header: u32 size.
const GO_HEADER_LEN: usize = 4;

#[derive(Arbitrary, Debug)]
enum SegmentNumber {
    /// The usual case: small numbers, so segments are neighbours.
    Small(u8),
    /// Any number: far apart segments (recovery and reading must cost
    /// nothing per missing number in between, see
    /// `regressions/diskqueue_recovery/README.md`) and numbers past the
    /// range the queue uses.
    Any(u64),
    /// A name with extra leading zeros, which also parses as a segment.
    Padded { zeros: u8, number: u8 },
}

#[derive(Arbitrary, Debug)]
enum Chunk {
    /// A valid record.
    Record(Vec<u8>),
    /// A valid record cut short after `keep` bytes.
    Torn { payload: Vec<u8>, keep: u8 },
    /// A valid record with one bit flipped.
    Flipped { payload: Vec<u8>, at: u16, bit: u8 },
    /// Anything.
    Raw(Vec<u8>),
    /// Zeros, as a file system may leave after extending a file.
    Zeros(u8),
    /// A record in go-diskqueue's format (u32 size, payload, no CRC), as
    /// Go nsqd leaves them.
    Go(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
struct Segment {
    number: SegmentNumber,
    chunks: Vec<Chunk>,
}

#[derive(Arbitrary, Debug)]
enum Metadata {
    None,
    Raw(Vec<u8>),
    /// Free text followed by a correct `crc` line.
    Signed(String),
    /// The real layout with fuzzer-chosen positions and counts.
    Fields {
        read: (u8, u16),
        write: (u8, u16),
        counts: Vec<(u8, u16)>,
    },
    /// go-diskqueue's text layout, which opening takes over.
    Go {
        depth: i16,
        read: (u8, u16),
        write: (u8, u16),
    },
}

#[derive(Arbitrary, Debug)]
struct Input {
    max_bytes_per_file: u16,
    min_record_size: u8,
    max_record_size: u8,
    explicit_commit: bool,
    metadata: Metadata,
    segments: Vec<Segment>,
    appends: Vec<Vec<u8>>,
}

fn record(payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&len.to_be_bytes());
    hasher.update(payload);
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&hasher.finalize().to_be_bytes());
    out.extend_from_slice(payload);
    out
}

fn segment_name(number: &SegmentNumber) -> String {
    match number {
        SegmentNumber::Small(n) => format!("{QUEUE}.diskqueue.{n:06}.dat"),
        SegmentNumber::Any(n) => format!("{QUEUE}.diskqueue.{n:06}.dat"),
        SegmentNumber::Padded { zeros, number } => {
            let zeros = "0".repeat(usize::from(*zeros % 4));
            format!("{QUEUE}.diskqueue.{zeros}{number:06}.dat")
        }
    }
}

fn segment_bytes(chunks: &[Chunk]) -> Vec<u8> {
    let mut out = Vec::new();
    for chunk in chunks {
        match chunk {
            Chunk::Record(p) => out.extend(record(p)),
            Chunk::Torn { payload, keep } => {
                let r = record(payload);
                out.extend_from_slice(&r[..usize::from(*keep).min(r.len())]);
            }
            Chunk::Flipped { payload, at, bit } => {
                let mut r = record(payload);
                let i = usize::from(*at) % r.len();
                r[i] ^= 1 << (bit % 8);
                out.extend(r);
            }
            Chunk::Raw(bytes) => out.extend_from_slice(bytes),
            Chunk::Zeros(n) => out.extend(std::iter::repeat_n(0, usize::from(*n))),
            Chunk::Go(p) => {
                out.extend_from_slice(&(p.len() as u32).to_be_bytes());
                out.extend_from_slice(p);
            }
        }
    }
    out
}

fn signed(body: String) -> Vec<u8> {
    let crc = crc32fast::hash(body.as_bytes());
    format!("{body}crc {crc:08x}\n").into_bytes()
}

fn metadata_bytes(meta: Metadata) -> Option<Vec<u8>> {
    match meta {
        Metadata::None => None,
        Metadata::Raw(bytes) => Some(bytes),
        Metadata::Signed(text) => Some(signed(text)),
        Metadata::Fields {
            read,
            write,
            counts,
        } => {
            let mut text = format!(
                "rsq-diskqueue 1\nread {} {}\nwrite {} {}\ncounts",
                read.0, read.1, write.0, write.1
            );
            for (file, count) in counts {
                text.push_str(&format!(" {file}:{count}"));
            }
            text.push('\n');
            Some(signed(text))
        }
        Metadata::Go { depth, read, write } => {
            Some(format!("{depth}\n{},{}\n{},{}\n", read.0, read.1, write.0, write.1).into_bytes())
        }
    }
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a current-thread runtime")
    })
}

fn total_bytes(storage: &MemStorage) -> usize {
    storage
        .names()
        .iter()
        .filter_map(|n| storage.contents(n))
        .map(|c| c.len())
        .sum()
}

/// Reads until empty; panics if the queue hands out more records than its
/// files could hold.
fn drain(queue: &DiskQueue, bound: usize) -> Vec<Bytes> {
    let mut out = Vec::new();
    loop {
        match queue.try_read() {
            Ok(Some(record)) => {
                out.push(record);
                assert!(
                    out.len() <= bound,
                    "read {} records from {bound} possible: reading does not terminate",
                    out.len()
                );
            }
            Ok(None) => break,
            Err(err) => panic!("try_read failed on in-memory storage: {err}"),
        }
    }
    queue.commit_reads();
    assert_eq!(queue.depth(), 0, "depth after draining");
    out
}

/// Runs the target on one input (decoded as libFuzzer's `fuzz_target!`
/// decodes a typed input); panics on a finding.
pub fn run(data: &[u8]) {
    if let Ok(input) = Input::arbitrary_take_rest(Unstructured::new(data)) {
        check(input);
    }
}

fn check(input: Input) {
    let storage = Arc::new(MemStorage::new());
    for segment in input.segments.iter().take(MAX_SEGMENTS) {
        storage.set_contents(
            &segment_name(&segment.number),
            segment_bytes(&segment.chunks),
        );
    }
    if let Some(meta) = metadata_bytes(input.metadata) {
        storage.set_contents(&format!("{QUEUE}.diskqueue.meta.dat"), meta);
    }
    let min = usize::from(input.min_record_size % 8);
    let max = min + usize::from(input.max_record_size);
    let mut config = DiskQueueConfig::new(QUEUE, "/fuzz");
    config.max_bytes_per_file = u64::from(input.max_bytes_per_file).max(1);
    config.min_record_size = min;
    config.max_record_size = max;
    config.explicit_commit = input.explicit_commit;

    // Go's records take at least 4 bytes, rsq's 8.
    let bound = total_bytes(&storage) / GO_HEADER_LEN + 1;
    let before = storage.crashed_copy(|_, _, len| len);
    let dyn_storage: Arc<dyn Storage> = storage.clone();
    let queue = match DiskQueue::open_with_storage(config.clone(), dyn_storage) {
        Ok(q) => q,
        Err(err) => panic!("open failed on in-memory storage: {err}"),
    };
    if let Err(broken) = check_recovery_kept_records(&before, &storage, QUEUE, min, max) {
        panic!("recovery destroyed data it could not read: {broken}");
    }
    drain(&queue, bound);

    // Whatever recovery found, new records must survive a close and reopen.
    let appends: Vec<Bytes> = input
        .appends
        .into_iter()
        .take(MAX_APPENDS)
        .filter(|r| (min..=max).contains(&r.len()))
        .map(Bytes::from)
        .collect();
    runtime().block_on(async {
        for r in &appends {
            queue
                .put(r.clone())
                .await
                .expect("put within the size limits");
        }
        queue.close().await.expect("close");
    });
    drop(queue);
    let dyn_storage: Arc<dyn Storage> = storage.clone();
    let queue = DiskQueue::open_with_storage(config, dyn_storage).expect("reopen");
    let bound = total_bytes(&storage) / HEADER_LEN + 1;
    let got = drain(&queue, bound);
    assert_eq!(
        got, appends,
        "records put after recovery did not survive a reopen"
    );
}
