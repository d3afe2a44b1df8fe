//! Tidy tests: invariants of the code base that a machine can check, run by
//! plain `cargo test`. Each states an absence, as ARCHITECTURE.md does.

use std::fs;
use std::path::{Path, PathBuf};

use crate::ci::project_root;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if path.is_dir() {
            if name != "target" && !name.starts_with('.') && !name.starts_with("target-") {
                rust_files(&path, out);
            }
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

fn all_rust_files() -> Vec<PathBuf> {
    let root = project_root();
    let mut files = Vec::new();
    rust_files(&root.join("crates"), &mut files);
    rust_files(&root.join("xtask"), &mut files);
    files.sort();
    files
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

#[test]
fn every_rust_file_says_what_it_is_for() {
    let missing: Vec<_> = all_rust_files()
        .into_iter()
        .filter(|p| !read(p).trim_start().starts_with("//!"))
        .collect();
    assert!(
        missing.is_empty(),
        "files without a leading //! comment: {missing:#?}"
    );
}

#[test]
fn no_grab_bag_modules() {
    let bad: Vec<_> = all_rust_files()
        .into_iter()
        .filter(|p| {
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
            matches!(
                name.as_deref(),
                Some("utils.rs" | "util.rs" | "helpers.rs" | "misc.rs")
            )
        })
        .collect();
    assert!(bad.is_empty(), "name modules by concept: {bad:#?}");
}

/// rsq-codec does no IO: it must not depend on tokio or any networking crate.
#[test]
fn codec_does_no_io() {
    let manifest = read(&project_root().join("crates/rsq-codec/Cargo.toml"));
    for forbidden in ["tokio", "async-trait", "mio", "hyper", "axum"] {
        assert!(
            !manifest
                .lines()
                .any(|l| l.trim_start().starts_with(forbidden)),
            "rsq-codec must not depend on {forbidden}"
        );
    }
    for file in all_rust_files()
        .into_iter()
        .filter(|p| p.starts_with(project_root().join("crates/rsq-codec/src")))
    {
        let text = read(&file);
        for forbidden in [
            "std::fs",
            "std::net",
            "std::io::Read",
            "Instant::now",
            "SystemTime::now",
        ] {
            assert!(
                !text.contains(forbidden),
                "{} uses {forbidden}: rsq-codec does no IO and never reads the clock",
                file.display()
            );
        }
    }
}

/// The sans-IO state machines (ARCHITECTURE.md names each) do no IO and
/// never read the clock: time comes in as `now`.
#[test]
fn state_machines_do_no_io() {
    for file in [
        "crates/rsq-protocol/src/connection.rs",
        "crates/rsq-protocol/src/identify.rs",
        "crates/rsq-protocol/src/auth.rs",
        "crates/rsq-channel/src/state.rs",
        "crates/rsq-channel/src/in_flight.rs",
        "crates/rsq-channel/src/deferred.rs",
        "crates/rsq-channel/src/consumer.rs",
        "crates/rsq-channel/src/e2e_latency.rs",
        "crates/rsq-diskqueue/src/ledger.rs",
        "crates/rsq-lookupd/src/registry.rs",
    ] {
        let text = read(&project_root().join(file));
        for forbidden in [
            "tokio",
            "std::fs",
            "std::net",
            "Instant::now",
            "SystemTime::now",
        ] {
            assert!(
                !text.contains(forbidden),
                "{file} uses {forbidden}: a state machine does no IO and never reads the clock"
            );
        }
    }
}

/// The V2 connection machine's crate cannot do IO: it depends on no
/// runtime, network, TLS or HTTP crate and on no crate of the daemon, so
/// the compiler, not this text search, keeps it sans-IO.
#[test]
fn protocol_depends_on_nothing_that_does_io() {
    let manifest = read(&project_root().join("crates/rsq-protocol/Cargo.toml"));
    let deps = manifest
        .split("[dependencies]")
        .nth(1)
        .and_then(|rest| rest.split("\n[").next())
        .unwrap_or("");
    for forbidden in [
        "tokio",
        "mio",
        "hyper",
        "axum",
        "rustls",
        "rsqd",
        "rsq-service",
        "rsq-diskqueue",
        "rsq-channel",
        "rsq-topic",
    ] {
        assert!(
            !deps.lines().any(|l| l.trim_start().starts_with(forbidden)),
            "rsq-protocol depends on {forbidden}: it must stay free of IO"
        );
    }
}

/// rsq-topic reaches channels only through its trait: no dependency on rsq-channel.
#[test]
fn topic_does_not_know_channel() {
    let manifest = read(&project_root().join("crates/rsq-topic/Cargo.toml"));
    assert!(
        !manifest.contains("rsq-channel"),
        "rsq-topic must not depend on rsq-channel"
    );
}

/// Libraries log through tracing; only binaries (`src/main.rs`, `src/bin/`)
/// and xtask may print.
#[test]
fn libraries_do_not_print() {
    let root = project_root();
    for file in all_rust_files() {
        let rel = file.strip_prefix(&root).unwrap_or(&file);
        let rel_s = rel.to_string_lossy();
        let is_binary = rel_s.ends_with("/src/main.rs") || rel_s.contains("/src/bin/");
        let is_library_src = rel_s.starts_with("crates/") && rel_s.contains("/src/") && !is_binary;
        if !is_library_src {
            continue;
        }
        let text = read(&file);
        for forbidden in ["println!", "eprintln!", "dbg!"] {
            assert!(
                !text.contains(forbidden),
                "{} uses {forbidden}; log through tracing",
                rel.display()
            );
        }
    }
}

/// Every `unsafe` block carries a `SAFETY:` comment that argues it is sound.
#[test]
fn unsafe_is_justified() {
    for file in all_rust_files() {
        if file.ends_with("xtask/src/tidy.rs") {
            continue;
        }
        let text = read(&file);
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            if line.contains("unsafe {") || line.contains("unsafe impl") {
                let start = i.saturating_sub(5);
                let justified = lines[start..i].iter().any(|l| l.contains("SAFETY:"));
                assert!(
                    justified,
                    "{}:{} has unsafe without a SAFETY: comment",
                    file.display(),
                    i + 1
                );
            }
        }
    }
}
