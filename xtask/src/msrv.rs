//! The MSRV check of `cargo xtask ci`, without a second toolchain.
//!
//! Only one compiler is installed where CI runs and no other can be
//! fetched, so the minimum supported Rust version cannot be checked by
//! building with it. What can be checked is what would break first: the
//! workspace states a `rust-version`, every member inherits it, and no
//! package in the dependency graph (`cargo metadata`: every platform, dev
//! and build dependencies included) declares a `rust_version` newer than
//! ours. Our own code's use of newer std APIs is caught by clippy's
//! `incompatible_msrv` lint, which reads the same `rust-version`; language
//! features are not checked by either.
//!
use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// Runs `cargo metadata` in `root` and checks it.
pub fn run(root: &Path) -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let output = Command::new(cargo)
        .current_dir(root)
        .args(["metadata", "--format-version", "1", "--locked"])
        .output()
        .map_err(|e| format!("cannot run cargo metadata: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    let text = String::from_utf8(output.stdout)
        .map_err(|_| "cargo metadata printed invalid UTF-8".to_string())?;
    let ours = check(&text)?;
    println!("msrv: every dependency supports rust {ours}");
    Ok(())
}

/// Checks `cargo metadata` output; returns the workspace's rust-version.
fn check(metadata: &str) -> Result<Version, String> {
    let json: Value = serde_json::from_str(metadata)
        .map_err(|e| format!("cargo metadata printed invalid JSON: {e}"))?;
    let members: Vec<&str> = json
        .get("workspace_members")
        .and_then(Value::as_array)
        .ok_or("cargo metadata has no workspace_members")?
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let packages = json
        .get("packages")
        .and_then(Value::as_array)
        .ok_or("cargo metadata has no packages")?;
    let mut ours: Option<Version> = None;
    let mut deps = Vec::new();
    for package in packages {
        let field = |key: &str| package.get(key).and_then(Value::as_str);
        let name = field("name").unwrap_or("?");
        let version = field("version").unwrap_or("?");
        let rust_version = field("rust_version").map(Version::parse).transpose()?;
        if field("id").is_some_and(|id| members.contains(&id)) {
            let Some(rust_version) = rust_version else {
                return Err(format!(
                    "workspace member {name} has no rust-version: set `rust-version.workspace = true` in its Cargo.toml"
                ));
            };
            match ours {
                Some(v) if v != rust_version => {
                    return Err(format!(
                        "workspace member {name} says rust-version {rust_version}, others {v}: every member inherits the workspace's"
                    ));
                }
                _ => ours = Some(rust_version),
            }
        } else if let Some(rust_version) = rust_version {
            deps.push((name, version, rust_version));
        }
    }
    let ours = ours.ok_or("no workspace members in cargo metadata")?;
    let mut newer: Vec<String> = deps
        .into_iter()
        .filter(|(_, _, v)| *v > ours)
        .map(|(name, version, v)| format!("{name} {version} (rust-version {v})"))
        .collect();
    if newer.is_empty() {
        return Ok(ours);
    }
    newer.sort();
    newer.dedup();
    Err(format!(
        "the workspace says rust-version {ours}, but these dependencies need a newer compiler: {}; raise `rust-version` in Cargo.toml or pin older versions",
        newer.join(", ")
    ))
}

/// A Rust version as `rust-version` writes it: `1.88` or `1.88.0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Version([u64; 3]);

impl Version {
    fn parse(text: &str) -> Result<Version, String> {
        let mut parts = [0u64; 3];
        let mut count = 0;
        for (i, part) in text.split('.').enumerate() {
            let slot = parts
                .get_mut(i)
                .ok_or_else(|| format!("not a rust-version: {text:?}"))?;
            *slot = part
                .parse()
                .map_err(|_| format!("not a rust-version: {text:?}"))?;
            count = i + 1;
        }
        if count < 2 {
            return Err(format!("not a rust-version: {text:?}"));
        }
        Ok(Version(parts))
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let [major, minor, patch] = self.0;
        write!(f, "{major}.{minor}.{patch}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata(ours: &str, dep: &str) -> String {
        format!(
            r#"{{"packages":[
                {{"name":"rsq-codec","version":"0.1.0","id":"path+file:///w/crates/rsq-codec#0.1.0","rust_version":"{ours}"}},
                {{"name":"bytes","version":"1.0.0","id":"registry+x#bytes@1.0.0","rust_version":"{dep}","dependencies":[{{"name":"x"}}]}},
                {{"name":"old","version":"0.1.0","id":"registry+x#old@0.1.0","rust_version":null}}
             ],"workspace_members":["path+file:///w/crates/rsq-codec#0.1.0"],"version":1}}"#
        )
    }

    #[test]
    fn versions_compare_as_numbers() {
        assert!(Version::parse("1.100").expect("valid") > Version::parse("1.99.1").expect("valid"));
        assert_eq!(
            Version::parse("1.88").expect("valid"),
            Version::parse("1.88.0").expect("valid")
        );
        assert!(Version::parse("1").is_err());
        assert!(Version::parse("1.x").is_err());
    }

    #[test]
    fn a_dependency_newer_than_ours_is_named() {
        assert_eq!(check(&metadata("1.85", "1.85.0")), Ok(Version([1, 85, 0])));
        let err = check(&metadata("1.85", "1.86")).expect_err("must fail");
        assert!(err.contains("bytes 1.0.0 (rust-version 1.86.0)"), "{err}");
    }

    #[test]
    fn a_member_without_rust_version_fails() {
        let text =
            metadata("1.85", "1.0").replace(r#""rust_version":"1.85""#, r#""rust_version":null"#);
        let err = check(&text).expect_err("must fail");
        assert!(err.contains("rsq-codec has no rust-version"), "{err}");
    }

    #[test]
    fn the_workspace_passes() {
        let root = crate::ci::project_root();
        run(&root).expect("valid");
    }
}
