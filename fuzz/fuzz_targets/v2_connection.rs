//! libFuzzer's entry to the `v2_connection` target; what it checks is in
//! `rsq_fuzz::v2_connection` (`src/v2_connection.rs`), which the corpus replay runs too.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rsq_fuzz::v2_connection::run(data));
