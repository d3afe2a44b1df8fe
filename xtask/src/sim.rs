//! `cargo xtask sim`: the seeded simulation of the daemon (`rsqd::sim`),
//! through its runner, the `rsq-sim` binary (rsqd's `sim` feature).
//!
//! The arguments go to the runner as they are: `--seeds N`, `--first S`,
//! `--seed S`, `--faults LIST`, `--tail N`, `--show`. It prints `trace <seed> <hash>`
//! per run; a failing run prints its broken invariant, the tail of its
//! trace and the command that replays it, `cargo xtask sim --seed S`.

use std::process::Command;

/// Builds and runs `rsq-sim` with `args`.
pub fn run(args: &[String]) -> Result<(), String> {
    let root = crate::ci::project_root();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let status = Command::new(cargo)
        .current_dir(&root)
        .args([
            "run",
            "--quiet",
            "--package",
            "rsqd",
            "--features",
            "sim",
            "--bin",
            "rsq-sim",
            "--",
        ])
        .args(args)
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("the simulation failed ({status})"))
    }
}
