//! Integration tests of rsq-replica: whole groups driven from a seed.

// Each seed's trace line goes to the test's output.
#![allow(clippy::print_stdout)]

mod cluster;
