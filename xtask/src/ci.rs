//! `cargo xtask ci`: the checks that decide whether a change lands.
//!
//! Each step prints its name and how long it took; the first failure stops
//! the run with a non-zero exit. The steps: fmt, the MSRV check
//! (`msrv.rs`), clippy, docs, the replay of every fuzz target's committed
//! inputs (`fuzz/tests/replay.rs`), doctests, then every other test.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// Runs every CI step in order. `long` enables the soak, crash and fuzz
/// tests, which are too slow for every run.
pub fn run(long: bool) -> Result<(), String> {
    let root = project_root();
    let started = Instant::now();
    step("fmt", || cargo(&root, &["fmt", "--all", "--check"], &[]))?;
    // Cheap, and a failure here names the dependency to blame, so it runs
    // before anything is compiled.
    step("msrv", || crate::msrv::run(&root))?;
    step("clippy", || {
        cargo(
            &root,
            &[
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ],
            &[],
        )
    })?;
    step("doc", || {
        cargo(
            &root,
            &["doc", "--workspace", "--no-deps"],
            &[("RUSTDOCFLAGS", "-D warnings")],
        )
    })?;
    // The fuzz targets are their own workspace, so clippy above never sees
    // them. Their bodies are the fuzz crate's library; replaying every
    // committed input (corpus/ and regressions/) through them, without
    // libFuzzer, keeps a change to a daemon's API or a fixed finding from
    // breaking unnoticed until a `--long` run, in seconds.
    step("fuzz corpus replay", || {
        cargo(
            &root,
            &[
                "test",
                "--manifest-path",
                "fuzz/Cargo.toml",
                "--no-default-features",
                "--locked",
                "--test",
                "replay",
            ],
            &[],
        )
    })?;
    let env: &[(&str, &str)] = if long {
        &[("RSQ_LONG_TESTS", "1")]
    } else {
        &[]
    };
    if long {
        step("fuzz", || {
            crate::fuzz::run(&["--seconds".to_string(), "60".to_string()])
        })?;
    }
    // The crates' examples (each README is its crate's documentation, so
    // its example runs here too). Nextest does not run doctests, and plain
    // `cargo test` below is told to skip them, so they run exactly once.
    step("doctest", || {
        cargo(&root, &["test", "--workspace", "--doc"], env)
    })?;
    // The full suite runs last, so its summary is the run's closing line.
    if has_nextest() {
        step("test (nextest)", || {
            cargo(
                &root,
                &["nextest", "run", "--workspace", "--no-fail-fast"],
                env,
            )
        })?;
    } else {
        step("test", || {
            cargo(
                &root,
                &["test", "--workspace", "--lib", "--bins", "--tests"],
                env,
            )
        })?;
    }
    println!("ci: all steps passed in {:.1?}", started.elapsed());
    Ok(())
}

/// Runs one named step and reports its duration.
fn step(name: &str, f: impl FnOnce() -> Result<(), String>) -> Result<(), String> {
    println!("==> {name}");
    let started = Instant::now();
    let result = f();
    let took = started.elapsed();
    match &result {
        Ok(()) => println!("<== {name}: ok in {took:.1?}"),
        Err(e) => println!("<== {name}: FAILED in {took:.1?}: {e}"),
    }
    result
}

fn cargo(root: &Path, args: &[&str], env: &[(&str, &str)]) -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let status = cmd
        .status()
        .map_err(|e| format!("cannot run cargo {}: {e}", args.join(" ")))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("cargo {} exited with {status}", args.join(" ")))
    }
}

fn has_nextest() -> bool {
    Command::new("cargo-nextest")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The workspace root: the parent of this crate's directory.
pub fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}
