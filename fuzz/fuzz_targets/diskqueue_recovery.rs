//! libFuzzer's entry to the `diskqueue_recovery` target; what it checks is in
//! `rsq_fuzz::diskqueue_recovery` (`src/diskqueue_recovery.rs`), which the corpus replay runs too.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rsq_fuzz::diskqueue_recovery::run(data));
