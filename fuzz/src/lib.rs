//! rsq's fuzz targets as plain functions, so that libFuzzer and the corpus
//! replay run the same code.
//!
//! Each module is one target: `run(data)` takes one input and panics on a
//! finding; its module doc says what the input means and what is checked.
//! The binaries in `fuzz_targets/` (built only with the default
//! `libfuzzer` feature) hand libFuzzer's inputs to `run`; the replay test
//! (`tests/replay.rs`, built with `--no-default-features`, so without
//! libFuzzer) feeds it every committed input in `corpus/<target>/` and
//! `regressions/<target>/`. [`TARGETS`] is the list both go by.

pub mod compress;
pub mod diskqueue_recovery;
pub mod frames;
pub mod http_api;
pub mod lookup_requests;
pub mod v2_commands;
pub mod v2_connection;

/// A target's `run`: one input in, a panic on a finding.
pub type Run = fn(&[u8]);

/// Every target by name (the name of its binary, its module and its
/// corpus directories), with the function that runs one input.
pub const TARGETS: &[(&str, Run)] = &[
    ("compress", compress::run),
    ("diskqueue_recovery", diskqueue_recovery::run),
    ("frames", frames::run),
    ("http_api", http_api::run),
    ("lookup_requests", lookup_requests::run),
    ("v2_commands", v2_commands::run),
    ("v2_connection", v2_connection::run),
];

/// Cuts `bytes` into pieces of 1 to 32 bytes chosen by `seed` (one piece
/// when `seed` is 0), for the targets that check splitting changes nothing.
pub fn split(bytes: &[u8], seed: u8) -> Vec<&[u8]> {
    if seed == 0 {
        return vec![bytes];
    }
    let mut pieces = Vec::new();
    let mut rest = bytes;
    let mut state = u32::from(seed);
    while !rest.is_empty() {
        state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let n = (1 + (state >> 16) as usize % 32).min(rest.len());
        pieces.push(&rest[..n]);
        rest = &rest[n..];
    }
    pieces
}
