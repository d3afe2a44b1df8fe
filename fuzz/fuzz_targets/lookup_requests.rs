//! libFuzzer's entry to the `lookup_requests` target; what it checks is in
//! `rsq_fuzz::lookup_requests` (`src/lookup_requests.rs`), which the corpus replay runs too.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rsq_fuzz::lookup_requests::run(data));
