//! `nsqd.dat`: which topics and channels exist and which are paused.
//!
//! Same JSON as nsqd's, so a data directory moves between nsqd and rsqd.
//! Written atomically (temporary file, fsync, rename, fsync of the
//! directory) so a crash leaves either the old or the new file, never half.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// The file name inside the data path.
pub const METADATA_FILE: &str = "nsqd.dat";

/// The whole file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    /// Every durable topic.
    #[serde(default)]
    pub topics: Vec<TopicMetadata>,
    /// Version of the daemon that wrote the file.
    #[serde(default)]
    pub version: String,
}

/// One topic in `nsqd.dat`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicMetadata {
    /// Topic name.
    pub name: String,
    /// Whether the topic is paused.
    #[serde(default)]
    pub paused: bool,
    /// Its durable channels.
    #[serde(default)]
    pub channels: Vec<ChannelMetadata>,
}

/// One channel in `nsqd.dat`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelMetadata {
    /// Channel name.
    pub name: String,
    /// Whether the channel is paused.
    #[serde(default)]
    pub paused: bool,
}

fn path_in(data_path: &Path) -> PathBuf {
    data_path.join(METADATA_FILE)
}

/// Reads `nsqd.dat`. A missing file is a fresh start; an unreadable or
/// corrupt one is moved aside as `nsqd.dat.bad`, logged, and treated as
/// empty, so the daemon still starts and serves what its queues hold.
pub fn load(data_path: &Path) -> Metadata {
    let path = path_in(data_path);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Metadata::default(),
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "cannot read metadata; starting without it");
            return Metadata::default();
        }
    };
    match serde_json::from_slice::<Metadata>(&bytes) {
        Ok(meta) => meta,
        Err(e) => {
            let bad = path.with_extension("dat.bad");
            tracing::error!(
                path = %path.display(),
                quarantined = %bad.display(),
                error = %e,
                "metadata is corrupt; moved aside, starting without it"
            );
            if let Err(e) = fs::rename(&path, &bad) {
                tracing::error!(error = %e, "cannot move corrupt metadata aside");
            }
            Metadata::default()
        }
    }
}

/// Writes `nsqd.dat` atomically.
pub fn save(data_path: &Path, meta: &Metadata) -> anyhow::Result<()> {
    let path = path_in(data_path);
    let tmp = data_path.join(format!("{METADATA_FILE}.{}.tmp", std::process::id()));
    let json = serde_json::to_vec(meta)?;
    {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        file.write_all(&json)?;
        file.sync_all()?;
    }
    fs::rename(&tmp, &path).with_context(|| format!("cannot rename to {}", path.display()))?;
    fs::File::open(data_path)
        .and_then(|dir| dir.sync_all())
        .with_context(|| format!("cannot sync directory {}", data_path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_reads_nsqd_json() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let nsqd_json = r#"{"topics":[{"channels":[{"name":"c","paused":true}],"name":"t","paused":false}],"version":"1.3.0"}"#;
        fs::write(dir.path().join(METADATA_FILE), nsqd_json)?;
        let meta = load(dir.path());
        assert_eq!(meta.topics[0].name, "t");
        assert!(meta.topics[0].channels[0].paused);
        save(dir.path(), &meta)?;
        assert_eq!(load(dir.path()), meta);
        Ok(())
    }

    #[test]
    fn corrupt_file_is_quarantined() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        fs::write(dir.path().join(METADATA_FILE), b"{\"topics\": [garbage")?;
        assert_eq!(load(dir.path()), Metadata::default());
        assert!(dir.path().join("nsqd.dat.bad").exists());
        Ok(())
    }
}
