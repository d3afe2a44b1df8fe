//! libFuzzer's entry to the `compress` target; what it checks is in
//! `rsq_fuzz::compress` (`src/compress.rs`), which the corpus replay runs too.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rsq_fuzz::compress::run(data));
