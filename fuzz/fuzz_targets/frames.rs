//! libFuzzer's entry to the `frames` target; what it checks is in
//! `rsq_fuzz::frames` (`src/frames.rs`), which the corpus replay runs too.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rsq_fuzz::frames::run(data));
