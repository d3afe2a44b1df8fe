//! `cargo xtask bench`: runs each crate's benchmark binary in release mode.
//!
//! Benchmarks print their own figures (msgs/s, MB/s); this only chooses
//! which to run and reports how long each took. Figures belong in
//! docs/benchmarks.md with the command that produced them.

use std::process::Command;
use std::time::Instant;

use crate::ci::project_root;

/// Short name and package of every crate with a benchmark.
const BENCHES: &[(&str, &str)] = &[
    ("codec", "rsq-codec"),
    ("diskqueue", "rsq-diskqueue"),
    ("channel", "rsq-channel"),
    ("topic", "rsq-topic"),
];

/// Runs the named benchmarks, or all of them.
pub fn run(selected: &[String]) -> Result<(), String> {
    for name in selected {
        if !BENCHES
            .iter()
            .any(|(short, pkg)| short == name || pkg == name)
        {
            return Err(format!("unknown benchmark {name:?}"));
        }
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    for (short, package) in BENCHES {
        if !selected.is_empty() && !selected.iter().any(|s| s == short || s == package) {
            continue;
        }
        println!("==> bench {package}");
        let started = Instant::now();
        let status = Command::new(&cargo)
            .current_dir(project_root())
            .args(["bench", "--package", package, "--bench", short])
            .status()
            .map_err(|e| format!("cannot run cargo bench: {e}"))?;
        if !status.success() {
            return Err(format!("bench {package} failed: {status}"));
        }
        println!("<== bench {package}: {:.1?}", started.elapsed());
    }
    Ok(())
}
