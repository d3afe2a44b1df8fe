//! libFuzzer's entry to the `http_api` target; what it checks is in
//! `rsq_fuzz::http_api` (`src/http_api.rs`), which the corpus replay runs too.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rsq_fuzz::http_api::run(data));
