//! rsqd: the daemon binary. For now it prints its version and exits.

#[allow(clippy::print_stdout)]
fn main() {
    println!("rsqd {}", env!("CARGO_PKG_VERSION"));
}
