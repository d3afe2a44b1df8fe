//! The corpus replay: every committed input of every fuzz target
//! (`corpus/<target>/*` and `regressions/<target>/*`, READMEs aside) runs
//! once through the target's function, without libFuzzer and without
//! generating anything new, so `cargo xtask ci` checks in seconds that
//! no change brings back a finding or breaks a seed.
//!
//! Run it with `cargo test --manifest-path fuzz/Cargo.toml
//! --no-default-features --test replay`.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use rsq_fuzz::TARGETS;

/// The input directories the replay reads, under the fuzz crate's root.
const INPUT_DIRS: [&str; 2] = ["corpus", "regressions"];

fn fuzz_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The entries of `dir`, sorted; none when it does not exist.
fn entries(dir: &Path) -> Vec<PathBuf> {
    let Ok(read) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = read
        .map(|e| e.unwrap_or_else(|e| panic!("listing {}: {e}", dir.display())))
        .map(|e| e.path())
        .collect();
    paths.sort();
    paths
}

/// The inputs committed for `target`: every file but a README.
fn inputs(target: &str) -> Vec<PathBuf> {
    INPUT_DIRS
        .iter()
        .flat_map(|d| entries(&fuzz_dir().join(d).join(target)))
        .filter(|p| p.is_file() && p.extension().is_none_or(|ext| ext != "md"))
        .collect()
}

fn name(path: &Path) -> String {
    path.file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default()
        .to_string()
}

#[test]
fn every_committed_input_passes_its_target() {
    let mut failed = Vec::new();
    let mut replayed = 0;
    for (target, run) in TARGETS {
        let inputs = inputs(target);
        assert!(
            !inputs.is_empty(),
            "fuzz target {target} has no committed input"
        );
        for path in inputs {
            let data =
                std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
            if catch_unwind(AssertUnwindSafe(|| run(&data))).is_err() {
                failed.push(path.display().to_string());
            }
            replayed += 1;
        }
    }
    assert!(
        failed.is_empty(),
        "inputs that fail their target: {failed:#?}"
    );
    eprintln!("replayed {replayed} inputs of {} targets", TARGETS.len());
}

#[test]
fn every_target_is_listed_and_every_input_dir_names_one() {
    let listed: Vec<&str> = TARGETS.iter().map(|(name, _)| *name).collect();
    let bins: Vec<String> = entries(&fuzz_dir().join("fuzz_targets"))
        .iter()
        .filter(|p| p.extension().is_some_and(|ext| ext == "rs"))
        .map(|p| name(p))
        .collect();
    assert_eq!(bins, listed, "fuzz_targets/ and rsq_fuzz::TARGETS differ");
    for dir in INPUT_DIRS {
        for path in entries(&fuzz_dir().join(dir)) {
            let target = name(&path);
            assert!(
                listed.contains(&target.as_str()),
                "{} is not a fuzz target's inputs",
                path.display()
            );
        }
    }
}
