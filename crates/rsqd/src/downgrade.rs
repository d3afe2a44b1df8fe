//! `rsqd downgrade --data-path=DIR`: gives a data directory back to Go nsqd.
//!
//! rsqd takes over a Go nsqd's data directory in place when it opens it
//! (each go-diskqueue queue is converted as it is opened; see
//! `rsq_diskqueue`'s `go_format`). This is the way back, run while rsqd is
//! stopped: it locks the directory as the daemon does (so it refuses to run
//! beside an rsqd or an nsqd), reads `nsqd.dat`, converts every topic's and
//! every channel's queue with [`rsq_diskqueue::downgrade`] under the same
//! configuration the daemon opens it with (`disk_queue_config` in `context.rs`), and
//! finally rewrites `nsqd.dat` in Go nsqd v1.3.0's exact JSON. Each queue's
//! conversion is crash-safe and a queue already in Go's format is only
//! settled, so an interrupted or failed run is finished by running it again
//! (`nsqd.dat` is rewritten only once every queue is converted).
//!
//! What rsq-only state becomes:
//! - a deferred message (DPUB, or REQ with a delay, written to disk at
//!   shutdown) loses its remaining delay: its record's deferral tag is
//!   stripped and Go nsqd delivers it at once, as Go nsqd's own shutdown
//!   flush does with its deferred messages;
//! - messages that were in flight under `--durable` are still unread
//!   records (their reads were never committed), so Go nsqd delivers them
//!   again as unread;
//! - a record that is not a message rsqd can decode is handed over
//!   unchanged.
//!
//! Use the `--max-msg-size` and `--max-bytes-per-file` the daemon ran with
//! (or its `--config` file): a record larger than the queue's limit does not
//! parse, and recovery moves the segment holding it aside as `.bad` instead
//! of converting it.

use std::cell::Cell;
use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use bytes::Bytes;
use clap::Parser;
use rsq_codec::{Message, is_ephemeral, is_valid_name};
use rsq_diskqueue::{FsStorage, Storage};
use rsq_service::{LogFormat, parse_log_format, parse_log_level};

use crate::dirlock::{DirLock, DirLockError};
use crate::factory::disk_queue_config;
use crate::metadata::{self, Metadata, MetadataError, NSQD_VERSION};
use crate::options::{
    DEFAULT_DATA_PATH, DEFAULT_MAX_BYTES_PER_FILE, DEFAULT_MAX_MSG_SIZE, config_file_args,
};

/// The subcommand's name: `rsqd downgrade ...`.
pub const SUBCOMMAND: &str = "downgrade";

/// The flags of `rsqd downgrade`: the daemon's names and defaults for the
/// few that decide how its queues are read.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "rsqd downgrade",
    version = crate::options::VERSION,
    about = "Converts a stopped rsqd's data directory back to Go nsqd v1.3.0's format, in place",
    after_help = "Deferred messages lose their remaining delay (Go nsqd delivers them at once); \
                  messages in flight under --durable come back as unread. Run it again if it is \
                  interrupted or fails; it finishes the job.",
    args_override_self = true
)]
pub struct DowngradeOptions {
    /// The daemon's TOML config file; only the keys below are read from it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The data directory to convert (it must hold `nsqd.dat`).
    #[arg(long, default_value = DEFAULT_DATA_PATH)]
    pub data_path: PathBuf,
    /// The daemon's largest message body in bytes.
    #[arg(long, default_value_t = DEFAULT_MAX_MSG_SIZE)]
    pub max_msg_size: u64,
    /// The daemon's disk queue segment size; Go's segments are written this size.
    #[arg(long, default_value_t = DEFAULT_MAX_BYTES_PER_FILE)]
    pub max_bytes_per_file: u64,
    /// Log level: debug, info, warn, error or fatal.
    #[arg(long, default_value = "info", value_parser = parse_log_level)]
    pub log_level: String,
    /// Log line format: text or json, as the daemon's.
    #[arg(long, default_value = "text", value_parser = parse_log_format)]
    pub log_format: LogFormat,
}

/// The flags of a config file that `rsqd downgrade` reads.
const CONFIG_FLAGS: [&str; 5] = [
    "--data-path=",
    "--max-msg-size=",
    "--max-bytes-per-file=",
    "--log-level=",
    "--log-format=",
];

impl DowngradeOptions {
    /// Parses the subcommand's arguments (the first is its name, as
    /// `rsqd downgrade` passes it), with `--config`'s keys beneath the
    /// command line's, as the daemon merges them.
    pub fn load_from<I, T>(args: I) -> anyhow::Result<DowngradeOptions>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let args: Vec<std::ffi::OsString> = args.into_iter().map(Into::into).collect();
        let opts = DowngradeOptions::try_parse_from(&args)?;
        let Some(path) = opts.config.clone() else {
            return Ok(opts);
        };
        let mut merged = vec![args.first().cloned().unwrap_or_else(|| SUBCOMMAND.into())];
        merged.extend(
            config_file_args(&path)?
                .into_iter()
                .filter(|arg| CONFIG_FLAGS.iter().any(|flag| arg.starts_with(flag)))
                .map(Into::into),
        );
        merged.extend(args.iter().skip(1).cloned());
        DowngradeOptions::try_parse_from(&merged)
            .with_context(|| format!("in config file {}", path.display()))
    }
}

/// Why `rsqd downgrade` stopped.
#[derive(Debug, thiserror::Error)]
pub enum DowngradeError {
    /// The directory is in use, or cannot be locked.
    #[error(transparent)]
    Lock(#[from] DirLockError),
    /// The directory does not exist or holds no `nsqd.dat`.
    #[error("{} is not an rsqd or nsqd data directory: {why}", path.display())]
    NotADataDir {
        /// The directory.
        path: PathBuf,
        /// What is missing.
        why: &'static str,
    },
    /// The directory's files cannot be listed.
    #[error("cannot list {}: {source}", path.display())]
    Io {
        /// The directory.
        path: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
    /// `nsqd.dat` cannot be read, is not nsqd's JSON, or cannot be written.
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    /// Some queues could not be converted (each is logged); `nsqd.dat` was
    /// not rewritten. Running the command again retries them.
    #[error(
        "{} of {} queues could not be converted (nsqd.dat left as it was; run rsqd downgrade again once fixed): {}",
        failed.len(), total, failed.join("; ")
    )]
    Queues {
        /// `queue: error` for each failure.
        failed: Vec<String>,
        /// Every queue attempted.
        total: usize,
    },
}

/// One converted queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueDowngrade {
    /// The queue's name (`topic` or `topic:channel`).
    pub name: String,
    /// Unread records it holds in Go's format.
    pub records: u64,
    /// Of those converted now, how many had a deferral stripped.
    pub deferred: u64,
}

/// What a successful `rsqd downgrade` did; its `Display` is the summary
/// the binary prints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// The data directory.
    pub data_path: PathBuf,
    /// Every queue, in `nsqd.dat` order, then any with files but not in it.
    pub queues: Vec<QueueDowngrade>,
    /// Names in `nsqd.dat` that are not valid topic or channel names,
    /// dropped (neither daemon loads them).
    pub skipped: Vec<String>,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let records: u64 = self.queues.iter().map(|q| q.records).sum();
        let deferred: u64 = self.queues.iter().map(|q| q.deferred).sum();
        write!(
            f,
            "rsqd downgrade: {} is in Go nsqd v{NSQD_VERSION}'s format: {} queues, {records} unread messages",
            self.data_path.display(),
            self.queues.len(),
        )?;
        if deferred > 0 {
            write!(
                f,
                " ({deferred} deferred messages lost their delay and are ready at once)"
            )?;
        }
        if !self.skipped.is_empty() {
            write!(
                f,
                "; invalid names left out of nsqd.dat: {}",
                self.skipped.join(", ")
            )?;
        }
        Ok(())
    }
}

/// Removes rsq's deferral tag from a disk record, giving the plain nsqd
/// message Go nsqd reads, and says whether there was one. A record that
/// does not decode as a message is returned unchanged.
pub(crate) fn strip_deferral(record: Bytes) -> (Bytes, bool) {
    match Message::from_record(record.clone()) {
        Ok(mut msg) if msg.deferred.is_some() => {
            msg.deferred = None;
            (msg.to_bytes(), true)
        }
        // Undeferred, the record already is the plain encoding.
        Ok(_) | Err(_) => (record, false),
    }
}

/// Converts the data directory `opts.data_path` to Go nsqd's format (see
/// the module docs). Logs one line per queue.
pub fn run(opts: &DowngradeOptions) -> Result<Summary, DowngradeError> {
    let data_path = opts.data_path.as_path();
    if !data_path.is_dir() {
        return Err(DowngradeError::NotADataDir {
            path: data_path.to_path_buf(),
            why: "no such directory",
        });
    }
    let lock = DirLock::acquire(data_path)?;
    let meta = metadata::read(data_path)?.ok_or_else(|| DowngradeError::NotADataDir {
        path: data_path.to_path_buf(),
        why: "it holds no nsqd.dat",
    })?;
    let (kept, skipped) = valid_names(meta);
    // Queues with files but not in nsqd.dat (a quarantined nsqd.dat, a
    // crash between creating a queue and saving nsqd.dat) are converted
    // too: Go nsqd would open one as soon as its topic is used again, and
    // must not find rsq's files there.
    let on_disk = queue_names_on_disk(data_path).map_err(|source| DowngradeError::Io {
        path: data_path.to_path_buf(),
        source,
    })?;
    let listed = queue_names(&kept);
    let mut seen = BTreeSet::new();
    let mut queues = Vec::new();
    let mut failed = Vec::new();
    let all = listed.iter().map(|name| (name, true));
    for (name, in_nsqd_dat) in all.chain(on_disk.iter().map(|name| (name, false))) {
        if !seen.insert(name.clone()) {
            continue;
        }
        match downgrade_queue(opts, name) {
            Ok(done) if in_nsqd_dat => {
                tracing::info!(
                    queue = %name,
                    records = done.records,
                    deferred = done.deferred,
                    "DOWNGRADE: queue is in Go nsqd's format"
                );
                queues.push(done);
            }
            Ok(done) => {
                tracing::warn!(
                    queue = %name,
                    records = done.records,
                    deferred = done.deferred,
                    "DOWNGRADE: queue not in nsqd.dat is in Go nsqd's format (served once its topic or channel is created again)"
                );
                queues.push(done);
            }
            Err(e) => {
                tracing::error!(queue = %name, error = %e, "DOWNGRADE: cannot convert queue");
                failed.push(format!("{name}: {e}"));
            }
        }
    }
    if !failed.is_empty() {
        return Err(DowngradeError::Queues {
            total: seen.len(),
            failed,
        });
    }
    let storage = FsStorage::new(data_path).map_err(|source| DowngradeError::Io {
        path: data_path.to_path_buf(),
        source,
    })?;
    metadata::save(
        &storage,
        &Metadata {
            topics: without_attempt_limits(kept.topics),
            version: NSQD_VERSION.to_string(),
        },
    )?;
    // Go reads nsqd.dat alone; the (empty) journal would only confuse.
    metadata::journal::remove(&storage)?;
    // Nor rsq's id floor: Go issues its ids from its clock.
    storage
        .remove(crate::nsqd::ID_FLOOR_FILE)
        .map_err(metadata::io_error(
            &storage,
            "cannot remove",
            crate::nsqd::ID_FLOOR_FILE,
        ))?;
    tracing::info!(path = %metadata::path_in(data_path).display(), "DOWNGRADE: nsqd.dat rewritten for Go nsqd v{NSQD_VERSION}");
    drop(lock);
    Ok(Summary {
        data_path: data_path.to_path_buf(),
        queues,
        skipped,
    })
}

/// Converts one queue, counting the deferrals it strips.
fn downgrade_queue(
    opts: &DowngradeOptions,
    name: &str,
) -> Result<QueueDowngrade, rsq_diskqueue::QueueError> {
    let config = disk_queue_config(
        name,
        &opts.data_path,
        opts.max_msg_size,
        opts.max_bytes_per_file,
    );
    let deferred = Cell::new(0u64);
    let payload = |record: Bytes| {
        let (plain, stripped) = strip_deferral(record);
        if stripped {
            deferred.set(deferred.get() + 1);
        }
        plain
    };
    let records = rsq_diskqueue::downgrade(&config, &payload)?;
    Ok(QueueDowngrade {
        name: name.to_string(),
        records,
        deferred: deferred.get(),
    })
}

/// Splits off the topics and channels whose names are not valid: they
/// name no queue either daemon would open (and a name is a file name, so
/// only a valid one is used as one).
fn valid_names(meta: Metadata) -> (Metadata, Vec<String>) {
    let mut skipped = Vec::new();
    let mut topics = Vec::new();
    for mut topic in meta.topics {
        if !is_valid_name(&topic.name) {
            tracing::warn!(topic = %topic.name, "DOWNGRADE: skipping topic with invalid name in nsqd.dat");
            skipped.push(topic.name);
            continue;
        }
        topic.channels.retain(|c| {
            let valid = is_valid_name(&c.name);
            if !valid {
                tracing::warn!(topic = %topic.name, channel = %c.name, "DOWNGRADE: skipping channel with invalid name in nsqd.dat");
                skipped.push(format!("{}:{}", topic.name, c.name));
            }
            valid
        });
        topics.push(topic);
    }
    (
        Metadata {
            topics,
            version: meta.version,
        },
        skipped,
    )
}

/// Every disk queue `meta` names: each topic's, then its channels'
/// (`topic:channel`); ephemeral ones have none.
fn queue_names(meta: &Metadata) -> Vec<String> {
    let mut names = Vec::new();
    for topic in &meta.topics {
        if !is_ephemeral(&topic.name) {
            names.push(topic.name.clone());
        }
        for channel in &topic.channels {
            if !is_ephemeral(&topic.name) && !is_ephemeral(&channel.name) {
                names.push(format!("{}:{}", topic.name, channel.name));
            }
        }
    }
    names
}

/// The queues with files in `dir`: names before `.diskqueue.meta.dat` or
/// `.diskqueue.NNNNNN.dat` that are a valid topic or `topic:channel`.
fn queue_names_on_disk(dir: &Path) -> std::io::Result<BTreeSet<String>> {
    let mut names = BTreeSet::new();
    for entry in std::fs::read_dir(dir)? {
        let file = entry?.file_name();
        let Some(file) = file.to_str() else { continue };
        let Some((name, rest)) = file.split_once(".diskqueue.") else {
            continue;
        };
        let is_queue_file = rest == "meta.dat"
            || rest
                .strip_suffix(".dat")
                .is_some_and(|n| n.len() >= 6 && n.bytes().all(|b| b.is_ascii_digit()));
        let valid = match name.split_once(':') {
            Some((topic, channel)) => is_valid_name(topic) && is_valid_name(channel),
            None => is_valid_name(name),
        };
        if is_queue_file && valid {
            names.insert(name.to_string());
        }
    }
    Ok(names)
}

/// The topics as Go nsqd writes them: Go has no attempt limit, so each
/// channel's own `max_attempts` (rsq only) is dropped, with a warning.
/// Go would ignore the key, but it rewrites `nsqd.dat` without it at its
/// first start anyway, and the downgraded file is promised to be nsqd's
/// own bytes. Dead-letter topics stay: to Go they are ordinary topics.
fn without_attempt_limits(
    mut topics: Vec<metadata::TopicMetadata>,
) -> Vec<metadata::TopicMetadata> {
    for topic in &mut topics {
        for channel in &mut topic.channels {
            if let Some(max_attempts) = channel.max_attempts.take() {
                tracing::warn!(
                    topic = %topic.name,
                    channel = %channel.name,
                    max_attempts,
                    "DOWNGRADE: Go nsqd has no max_attempts; the channel's limit is dropped"
                );
            }
        }
    }
    topics
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rsq_codec::MessageId;

    use super::*;
    use crate::metadata::{ChannelMetadata, TopicMetadata};

    fn message() -> Message {
        Message::new(
            MessageId::from_u64(7),
            1_700_000_000_000_000_000,
            Bytes::from_static(b"body"),
        )
    }

    #[test]
    fn a_deferred_record_becomes_the_plain_message() {
        let mut msg = message();
        msg.attempts = 3;
        let plain = msg.to_bytes();
        msg.deferred = Some(Duration::from_secs(3600));
        let (out, stripped) = strip_deferral(msg.to_record());
        assert!(stripped);
        assert_eq!(out, plain);
        let back = Message::from_record(out).ok();
        assert_eq!(
            back.map(|m| (m.attempts, m.deferred, m.body)),
            Some((3, None, Bytes::from_static(b"body")))
        );
    }

    #[test]
    fn other_records_pass_through_unchanged() {
        let plain = message().to_record();
        assert_eq!(strip_deferral(plain.clone()), (plain, false));
        // The tag with too few bytes behind it does not decode.
        let mut broken = rsq_codec::DEFERRED_RECORD_TAG.to_vec();
        broken.extend_from_slice(&[0; 20]);
        let broken = Bytes::from(broken);
        assert_eq!(strip_deferral(broken.clone()), (broken, false));
    }

    #[test]
    fn queues_are_named_as_nsqd_names_them_and_invalid_names_are_dropped() {
        let meta = Metadata {
            topics: vec![
                TopicMetadata {
                    name: "t".into(),
                    paused: true,
                    channels: vec![
                        ChannelMetadata {
                            name: "c".into(),
                            paused: false,
                            max_attempts: None,
                        },
                        ChannelMetadata {
                            name: "../x".into(),
                            paused: false,
                            max_attempts: None,
                        },
                        ChannelMetadata {
                            name: "e#ephemeral".into(),
                            paused: false,
                            max_attempts: None,
                        },
                    ],
                },
                TopicMetadata {
                    name: "../../etc".into(),
                    paused: false,
                    channels: vec![],
                },
                TopicMetadata {
                    name: "lonely".into(),
                    paused: false,
                    channels: vec![],
                },
            ],
            version: "1.3.0+rsq.0.1.0".into(),
        };
        let (kept, skipped) = valid_names(meta);
        assert_eq!(skipped, ["t:../x", "../../etc"]);
        assert_eq!(queue_names(&kept), ["t", "t:c", "lonely"]);
        assert!(kept.topics[0].paused);
    }

    #[test]
    fn config_file_keys_are_read_beneath_the_command_line() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let config = dir.path().join("rsqd.toml");
        std::fs::write(
            &config,
            "data_path = \"/from/file\"\nmax_msg_size = 2048\nmem_queue_size = 5\ntcp_address = \"0.0.0.0:1\"\n",
        )?;
        let opts = DowngradeOptions::load_from([
            "downgrade".into(),
            format!("--config={}", config.display()),
            "--data-path=/from/flag".into(),
        ])?;
        assert_eq!(opts.data_path, Path::new("/from/flag"));
        assert_eq!(opts.max_msg_size, 2048);
        assert_eq!(opts.max_bytes_per_file, DEFAULT_MAX_BYTES_PER_FILE);
        Ok(())
    }

    #[test]
    fn a_directory_without_nsqd_dat_is_refused_and_left_alone() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        std::fs::write(dir.path().join("other"), b"x")?;
        let opts = DowngradeOptions::load_from([
            "downgrade".into(),
            format!("--data-path={}", dir.path().display()),
        ])?;
        let err = run(&opts).err();
        assert!(
            matches!(err, Some(DowngradeError::NotADataDir { .. })),
            "{err:?}"
        );
        assert!(!dir.path().join(metadata::METADATA_FILE).exists());
        let missing = DowngradeOptions::load_from([
            "downgrade".into(),
            format!("--data-path={}", dir.path().join("nope").display()),
        ])?;
        assert!(matches!(
            run(&missing),
            Err(DowngradeError::NotADataDir { .. })
        ));
        assert!(!dir.path().join("nope").exists());
        Ok(())
    }

    #[test]
    fn channel_attempt_limits_are_dropped_for_go() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        std::fs::write(
            dir.path().join(metadata::METADATA_FILE),
            r#"{"topics":[{"name":"t","paused":false,"channels":[{"name":"c","paused":true,"max_attempts":3}]},{"name":"t.dead","paused":false,"channels":null}],"version":"1.3.0+rsq.0.1.0"}"#,
        )?;
        let opts = DowngradeOptions::load_from([
            "downgrade".into(),
            format!("--data-path={}", dir.path().display()),
        ])?;
        run(&opts)?;
        assert_eq!(
            std::fs::read_to_string(dir.path().join(metadata::METADATA_FILE))?,
            r#"{"topics":[{"name":"t","paused":false,"channels":[{"name":"c","paused":true}]},{"name":"t.dead","paused":false,"channels":null}],"version":"1.3.0"}"#
        );
        Ok(())
    }
}
