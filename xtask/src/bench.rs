//! `cargo xtask bench`: runs each crate's benchmark binary in release mode,
//! then the daemon suite.
//!
//! Crate benchmarks print their own figures (msgs/s, MB/s); this only
//! chooses which to run and reports how long each took. The daemon suite
//! (`cargo xtask bench daemon [ARGS..]`) builds `rsq-bench` and `rsqd` in
//! release mode and runs the first as a subprocess, so xtask itself links
//! no async runtime; every argument after `daemon` goes to `rsq-bench`
//! (`--addr HOST:PORT` to measure a running daemon such as nsqd instead,
//! `--json PATH`, `--scenario NAME`, `--duration 10s`, `--backlog N` for the
//! messages the `nsq` scenario writes then drains; `--help` lists them).
//! `cargo xtask bench scale` runs the idle-topic scaling curve
//! (`rsq-bench --scale 1000,10000,100000`).
//! Figures belong in docs/benchmarks.md with the command that produced them.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use crate::ci::project_root;

/// Short name and package of every crate with a benchmark.
const BENCHES: &[(&str, &str)] = &[
    ("codec", "rsq-codec"),
    ("diskqueue", "rsq-diskqueue"),
    ("channel", "rsq-channel"),
    ("topic", "rsq-topic"),
    ("metrics", "rsqd"),
];

/// The name of the end-to-end suite; arguments after it go to `rsq-bench`.
const DAEMON: &str = "daemon";

/// The idle-topic scaling curve (`rsq-bench --scale`), at these counts.
const SCALE: &str = "scale";
const SCALE_COUNTS: &str = "1000,10000,100000";

/// The benchmark names before `daemon`, and the arguments after it.
fn split_args(args: &[String]) -> Result<(Vec<String>, Vec<String>), String> {
    let (names, daemon_args) = match args.iter().position(|a| a == DAEMON) {
        Some(at) => (&args[..=at], args[at + 1..].to_vec()),
        None => (args, Vec::new()),
    };
    for name in names {
        if name.starts_with('-') {
            return Err(format!(
                "{name:?}: suite flags go after `daemon` (cargo xtask bench daemon {name} ..)"
            ));
        }
        let known = name == DAEMON
            || name == SCALE
            || BENCHES
                .iter()
                .any(|(short, pkg)| short == name || pkg == name);
        if !known {
            return Err(format!("unknown benchmark {name:?}"));
        }
    }
    Ok((names.to_vec(), daemon_args))
}

/// Runs the named benchmarks (crate short names, `daemon` followed by the
/// suite's arguments), or all of them.
pub fn run(args: &[String]) -> Result<(), String> {
    let (selected, daemon_args) = split_args(args)?;
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
    if selected.is_empty() || selected.iter().any(|s| s == DAEMON) {
        run_daemon(&cargo, &daemon_args)?;
    }
    if selected.is_empty() || selected.iter().any(|s| s == SCALE) {
        run_daemon(&cargo, &["--scale".to_string(), SCALE_COUNTS.to_string()])?;
    }
    Ok(())
}

/// Where cargo puts build output: `CARGO_TARGET_DIR` (relative to the
/// project root if relative), else `target/` in the project root.
fn target_dir(root: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => root.join(dir),
        _ => root.join("target"),
    }
}

/// Whether the suite's arguments name a running daemon (so no rsqd is built).
fn measures_running_daemon(args: &[String]) -> bool {
    args.iter()
        .any(|a| a == "--addr" || a.starts_with("--addr=") || a == "--help" || a == "--list")
}

fn cargo_build(cargo: &str, root: &Path, package: &str, bin: &str) -> Result<(), String> {
    let status = Command::new(cargo)
        .current_dir(root)
        .args(["build", "--release", "--package", package, "--bin", bin])
        .status()
        .map_err(|e| format!("cannot run cargo build: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("building {bin} failed: {status}"))
    }
}

/// Builds and runs the end-to-end suite: against a release `rsqd` it starts
/// per scenario, or against the daemon `--addr` names.
fn run_daemon(cargo: &str, args: &[String]) -> Result<(), String> {
    let root = project_root();
    let release = target_dir(&root).join("release");
    println!("==> bench daemon");
    let started = Instant::now();
    cargo_build(cargo, &root, "rsq-bench", "rsq-bench")?;
    let mut command = Command::new(release.join("rsq-bench"));
    if !measures_running_daemon(args) {
        cargo_build(cargo, &root, "rsqd", "rsqd")?;
        command.arg("--daemon-bin").arg(release.join("rsqd"));
    }
    let status = command
        .args(args)
        .status()
        .map_err(|e| format!("cannot run rsq-bench: {e}"))?;
    if !status.success() {
        return Err(format!("bench daemon failed: {status}"));
    }
    println!("<== bench daemon: {:.1?}", started.elapsed());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[track_caller]
    fn check(args: &[&str], names: &[&str], daemon_args: &[&str]) {
        let (got_names, got_args) = split_args(&strings(args)).expect("valid");
        assert_eq!(got_names, strings(names));
        assert_eq!(got_args, strings(daemon_args));
    }

    #[test]
    fn arguments_after_daemon_go_to_the_suite() {
        check(&[], &[], &[]);
        check(&["codec", "topic"], &["codec", "topic"], &[]);
        check(&["daemon"], &["daemon"], &[]);
        check(
            &[
                "codec",
                "daemon",
                "--addr",
                "127.0.0.1:4150",
                "--json",
                "x.json",
            ],
            &["codec", "daemon"],
            &["--addr", "127.0.0.1:4150", "--json", "x.json"],
        );
        check(&["daemon", "daemon"], &["daemon"], &["daemon"]);
    }

    #[test]
    fn flags_before_daemon_and_unknown_names_are_rejected() {
        assert!(split_args(&strings(&["--addr", "x"])).is_err());
        assert!(split_args(&strings(&["nope"])).is_err());
    }

    #[test]
    fn a_running_daemon_needs_no_rsqd_build() {
        assert!(measures_running_daemon(&strings(&["--addr", "h:1"])));
        assert!(measures_running_daemon(&strings(&["--addr=h:1"])));
        assert!(!measures_running_daemon(&strings(&["--duration", "2s"])));
    }
}
