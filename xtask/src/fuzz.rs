//! `cargo xtask fuzz [TARGET] [--seconds N]`: runs the cargo-fuzz targets in
//! `fuzz/` for a fixed time each.
//!
//! libFuzzer needs nightly compiler flags; the stable toolchain accepts them
//! with `RUSTC_BOOTSTRAP=1`, which is set for the fuzz build only. cargo-fuzz
//! itself is installed on first use, at a pinned version with `--locked`,
//! into `<target dir>/tools`, so nothing outside the project changes. The
//! targets are the files in `fuzz/fuzz_targets/`; each run reads the seeds in
//! `fuzz/corpus/<target>/` and past findings in `fuzz/regressions/<target>/`
//! (the same inputs `cargo xtask ci` replays without libFuzzer, through
//! `fuzz/tests/replay.rs`) and writes what it finds to
//! `fuzz/corpus-generated/<target>/` (not committed), crashes to
//! `fuzz/artifacts/<target>/`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use crate::ci::project_root;

/// The cargo-fuzz release xtask installs.
const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// Seconds per target when `--seconds` is not given.
const DEFAULT_SECONDS: u64 = 30;

/// libFuzzer's limit for a single input before it reports a hang.
const INPUT_TIMEOUT_SECONDS: u64 = 10;

/// What `cargo xtask fuzz` was asked to do.
#[derive(Debug, PartialEq, Eq)]
struct Options {
    /// The one target to run, or `None` for all.
    target: Option<String>,
    /// How long to run each target.
    seconds: u64,
}

fn parse_args(args: &[String]) -> Result<Options, String> {
    let mut target = None;
    let mut seconds = DEFAULT_SECONDS;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let value = match arg.strip_prefix("--seconds") {
            Some("") => Some(args.next().ok_or("--seconds needs a value")?.as_str()),
            Some(rest) => rest.strip_prefix('='),
            None => None,
        };
        if let Some(value) = value {
            seconds = value
                .parse()
                .map_err(|_| format!("--seconds: not a number of seconds: {value:?}"))?;
            if seconds == 0 {
                return Err("--seconds must be at least 1".to_string());
            }
        } else if arg.starts_with('-') {
            return Err(format!("unknown flag for fuzz: {arg}"));
        } else if target.replace(arg.clone()).is_some() {
            return Err("fuzz takes at most one target".to_string());
        }
    }
    Ok(Options { target, seconds })
}

/// The fuzz targets: the file stems in `fuzz/fuzz_targets/`, sorted.
fn targets(fuzz_dir: &Path) -> Result<Vec<String>, String> {
    let dir = fuzz_dir.join("fuzz_targets");
    let entries =
        std::fs::read_dir(&dir).map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
    let mut names = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(|e| format!("cannot list {}: {e}", dir.display()))?
            .path();
        if path.extension().is_some_and(|ext| ext == "rs")
            && let Some(stem) = path.file_stem().and_then(|s| s.to_str())
        {
            names.push(stem.to_string());
        }
    }
    names.sort();
    Ok(names)
}

/// Where cargo puts build output: `CARGO_TARGET_DIR` (relative to the
/// project root if relative), else `target/` in the project root.
fn target_dir(root: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => root.join(dir),
        _ => root.join("target"),
    }
}

/// Whether `bin` runs and reports the pinned version.
fn has_cargo_fuzz(bin: &Path) -> bool {
    Command::new(bin)
        .arg("--version")
        .output()
        .is_ok_and(|out| {
            out.status.success()
                && String::from_utf8_lossy(&out.stdout).contains(CARGO_FUZZ_VERSION)
        })
}

/// Installs the pinned cargo-fuzz under `tools` unless it is already there.
fn ensure_cargo_fuzz(cargo: &str, tools: &Path) -> Result<(), String> {
    if has_cargo_fuzz(&tools.join("bin").join("cargo-fuzz")) {
        return Ok(());
    }
    println!(
        "==> installing cargo-fuzz {CARGO_FUZZ_VERSION} into {}",
        tools.display()
    );
    let started = Instant::now();
    let status = Command::new(cargo)
        .args(["install", "cargo-fuzz", "--locked", "--version"])
        .arg(CARGO_FUZZ_VERSION)
        .arg("--root")
        .arg(tools)
        .status()
        .map_err(|e| format!("cannot run cargo install: {e}"))?;
    if !status.success() {
        return Err(format!("installing cargo-fuzz failed: {status}"));
    }
    println!("<== installed cargo-fuzz: {:.1?}", started.elapsed());
    Ok(())
}

/// `PATH` with `dir` first, so `cargo fuzz` finds the installed binary.
fn path_with(dir: &Path) -> Result<std::ffi::OsString, String> {
    let old = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::iter::once(dir.to_path_buf()).chain(std::env::split_paths(&old));
    std::env::join_paths(dirs).map_err(|e| format!("cannot extend PATH: {e}"))
}

/// Runs the named fuzz target, or all of them, for `--seconds` each
/// (default 30), installing cargo-fuzz first if needed.
pub fn run(args: &[String]) -> Result<(), String> {
    let options = parse_args(args)?;
    let root = project_root();
    let fuzz_dir = root.join("fuzz");
    let all = targets(&fuzz_dir)?;
    let selected: Vec<&String> = match &options.target {
        Some(name) if all.contains(name) => all.iter().filter(|t| *t == name).collect(),
        Some(name) => {
            return Err(format!(
                "unknown fuzz target {name:?} (targets: {})",
                all.join(", ")
            ));
        }
        None => all.iter().collect(),
    };
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let tools = target_dir(&root).join("tools");
    ensure_cargo_fuzz(&cargo, &tools)?;
    let path = path_with(&tools.join("bin"))?;
    for target in selected {
        println!("==> fuzz {target} for {}s", options.seconds);
        let started = Instant::now();
        let generated = fuzz_dir.join("corpus-generated").join(target);
        std::fs::create_dir_all(&generated)
            .map_err(|e| format!("cannot create {}: {e}", generated.display()))?;
        let mut command = Command::new(&cargo);
        command
            .current_dir(&fuzz_dir)
            .env("PATH", &path)
            .env("RUSTC_BOOTSTRAP", "1")
            .args(["fuzz", "run", target])
            .arg(&generated);
        // The seeds and the inputs of past findings start every run.
        for inputs in ["corpus", "regressions"] {
            let dir = fuzz_dir.join(inputs).join(target);
            if dir.is_dir() {
                command.arg(&dir);
            }
        }
        let status = command
            .arg("--")
            .arg(format!("-max_total_time={}", options.seconds))
            .arg(format!("-timeout={INPUT_TIMEOUT_SECONDS}"))
            .status()
            .map_err(|e| format!("cannot run cargo fuzz: {e}"))?;
        if !status.success() {
            return Err(format!(
                "fuzz {target} failed: {status} (a build error is printed above; a crashing input is saved in fuzz/artifacts/{target}/)"
            ));
        }
        println!("<== fuzz {target}: {:.1?}", started.elapsed());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_target_and_seconds() {
        assert_eq!(
            parse_args(&[]),
            Ok(Options {
                target: None,
                seconds: DEFAULT_SECONDS
            })
        );
        let expected = Ok(Options {
            target: Some("frames".to_string()),
            seconds: 5,
        });
        assert_eq!(
            parse_args(&strings(&["frames", "--seconds", "5"])),
            expected
        );
        assert_eq!(parse_args(&strings(&["--seconds=5", "frames"])), expected);
    }

    #[test]
    fn rejects_bad_arguments() {
        for bad in [
            &["--seconds"][..],
            &["--seconds", "x"],
            &["--seconds=0"],
            &["--verbose"],
            &["frames", "v2_commands"],
        ] {
            assert!(parse_args(&strings(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn finds_the_committed_targets() {
        let names = targets(&project_root().join("fuzz")).expect("fuzz/fuzz_targets exists");
        for expected in ["diskqueue_recovery", "frames", "v2_commands"] {
            assert!(names.iter().any(|n| n == expected), "{names:?}");
        }
    }
}
