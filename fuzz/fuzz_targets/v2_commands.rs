//! libFuzzer's entry to the `v2_commands` target; what it checks is in
//! `rsq_fuzz::v2_commands` (`src/v2_commands.rs`), which the corpus replay runs too.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rsq_fuzz::v2_commands::run(data));
