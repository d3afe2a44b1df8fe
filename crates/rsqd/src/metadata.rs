//! `nsqd.dat`: which topics and channels exist and which are paused.
//!
//! Same JSON as nsqd's, so a data directory moves between nsqd and rsqd
//! both ways. It is read as Go's `encoding/json` reads it into nsqd's
//! structs: keys match field names case-insensitively, unknown keys are
//! ignored, a repeated key's last value wins, `null` (or a missing key)
//! leaves a scalar at its default and makes a list empty, and invalid UTF-8
//! becomes U+FFFD. So any file nsqd v1.3.0 can load loads here, and only a
//! file nsqd would refuse is corrupt. It is written in nsqd's exact shape:
//! `{"topics":[{"name":..,"paused":..,"channels":[{"name":..,"paused":..}]}],"version":..}`
//! with keys in that order and an empty list written `null`, as Go writes a
//! nil slice. Written atomically (temporary file, fsync, rename, fsync of
//! the directory) so a crash leaves either the old or the new file, never half.
//! Between whole writes, changes go to its [`journal`].

use std::fmt;
use std::path::{Path, PathBuf};

use rsq_diskqueue::{FsStorage, Storage};
use serde::de::{self, IgnoredAny, MapAccess, SeqAccess, Visitor};

pub mod journal;
pub(crate) mod persist;

use journal::Replay;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The file name inside the data path.
pub(crate) const METADATA_FILE: &str = "nsqd.dat";

/// The version Go nsqd v1.3.0 writes in `nsqd.dat`, which `rsqd downgrade`
/// writes back (rsqd itself writes [`crate::options::VERSION`]).
pub(crate) const NSQD_VERSION: &str = "1.3.0";

/// The whole file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Metadata {
    /// Every durable topic.
    #[serde(serialize_with = "empty_as_null")]
    pub topics: Vec<TopicMetadata>,
    /// Version of the daemon that wrote the file.
    pub version: String,
}

/// One topic in `nsqd.dat`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TopicMetadata {
    /// Topic name.
    pub name: String,
    /// Whether the topic is paused.
    pub paused: bool,
    /// Its durable channels.
    #[serde(serialize_with = "empty_as_null")]
    pub channels: Vec<ChannelMetadata>,
}

/// One channel in `nsqd.dat`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ChannelMetadata {
    /// Channel name.
    pub name: String,
    /// Whether the channel is paused.
    pub paused: bool,
    /// The channel's own attempt limit (rsq only, see
    /// `--max-attempts` and `dead_letter.rs`): written only when set, so a data dir that
    /// never had one is byte for byte nsqd's; Go nsqd ignores the key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u16>,
}

/// Why `nsqd.dat` could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    /// Reading, writing, renaming or syncing failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done (`cannot read`, `cannot create`, ...).
        what: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
    /// The file is not nsqd's JSON (nsqd itself would refuse to start on it).
    #[error("{} is not nsqd's metadata JSON: {source}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Where and why parsing stopped.
        source: serde_json::Error,
    },
    /// The metadata could not be encoded (not expected to happen).
    #[error("cannot encode metadata: {0}")]
    Encode(#[source] serde_json::Error),
    /// The journal has a damaged line before its last (see [`journal`]).
    #[error("{} is damaged ({why})", path.display())]
    CorruptJournal {
        /// The journal.
        path: PathBuf,
        /// Which line, and why it does not parse.
        why: String,
    },
}

/// The path of `nsqd.dat` in `data_path`.
pub(crate) fn path_in(data_path: &Path) -> PathBuf {
    data_path.join(METADATA_FILE)
}

/// Maps an IO failure on file `name` of `storage` to [`MetadataError::Io`].
pub(crate) fn io_error(
    storage: &dyn Storage,
    what: &'static str,
    name: &str,
) -> impl FnOnce(std::io::Error) -> MetadataError {
    let path = storage.dir().join(name);
    move |source| MetadataError::Io { what, path, source }
}

/// The whole content of file `name`, or `None` if it does not exist.
pub(crate) fn read_file(
    storage: &dyn Storage,
    name: &str,
) -> Result<Option<Vec<u8>>, MetadataError> {
    let Some(len) = storage
        .len(name)
        .map_err(io_error(storage, "cannot read", name))?
    else {
        return Ok(None);
    };
    let len = usize::try_from(len).map_err(|_| MetadataError::Io {
        what: "too large to read",
        path: storage.dir().join(name),
        source: std::io::Error::from(std::io::ErrorKind::FileTooLarge),
    })?;
    let mut bytes = vec![0; len];
    let n = match storage.read_at(name, 0, &mut bytes) {
        Ok(n) => n,
        // Removed between the two calls.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error(storage, "cannot read", name)(e)),
    };
    bytes.truncate(n);
    Ok(Some(bytes))
}

/// Parses the bytes of an `nsqd.dat` as nsqd reads them (see the module
/// docs): `Err` only for a file nsqd would refuse too.
pub(crate) fn parse(bytes: &[u8]) -> Result<Metadata, serde_json::Error> {
    // Go replaces invalid UTF-8 with U+FFFD instead of failing; valid
    // input is borrowed, not copied.
    let text = String::from_utf8_lossy(bytes);
    // A top-level `null` is a successful no-op for Go's Unmarshal.
    Ok(serde_json::from_str::<Option<Metadata>>(&text)?.unwrap_or_default())
}

/// Encodes metadata in nsqd's exact shape (see the module docs).
pub(crate) fn to_json(meta: &Metadata) -> Result<Vec<u8>, MetadataError> {
    serde_json::to_vec(meta).map_err(MetadataError::Encode)
}

/// Reads `nsqd.dat` and applies its journal: `Ok(None)` when there is no
/// `nsqd.dat`, an error when it cannot be read, is not nsqd's JSON, or its
/// journal is damaged. Changes nothing on disk.
///
/// ```
/// let dir = std::env::temp_dir().join(format!("rsqd-metadata-doc-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// assert_eq!(rsqd::metadata::read(&dir).unwrap(), None);
///
/// // nsqd.dat as Go nsqd v1.3.0 writes it.
/// let go = r#"{"topics":[{"channels":[{"name":"billing","paused":true}],"name":"orders","paused":false}],"version":"1.3.0"}"#;
/// std::fs::write(dir.join("nsqd.dat"), go).unwrap();
/// let meta = rsqd::metadata::read(&dir).unwrap().expect("nsqd.dat exists");
/// assert_eq!(meta.topics[0].name, "orders");
/// assert!(meta.topics[0].channels[0].paused);
/// std::fs::remove_dir_all(&dir).unwrap();
/// ```
pub fn read(data_path: &Path) -> Result<Option<Metadata>, MetadataError> {
    let storage = FsStorage::new(data_path).map_err(|source| MetadataError::Io {
        what: "cannot open",
        path: data_path.to_path_buf(),
        source,
    })?;
    read_from(&storage)
}

/// [`read`] from any [`Storage`]: the daemon's data dir, or a directory
/// in memory (a crash test's, a simulated host's).
pub fn read_from(storage: &dyn Storage) -> Result<Option<Metadata>, MetadataError> {
    let Some((bytes, mut meta)) = read_whole(storage)? else {
        return Ok(None);
    };
    match journal::read(storage, &bytes)? {
        Replay::None => {}
        Replay::Changes(changes) => {
            for change in &changes {
                journal::apply(&mut meta, change);
            }
        }
        Replay::Corrupt(why) => {
            return Err(MetadataError::CorruptJournal {
                path: storage.dir().join(journal::JOURNAL_FILE),
                why,
            });
        }
    }
    Ok(Some(meta))
}

/// `nsqd.dat` alone: its bytes and what they say.
fn read_whole(storage: &dyn Storage) -> Result<Option<(Vec<u8>, Metadata)>, MetadataError> {
    let Some(bytes) = read_file(storage, METADATA_FILE)? else {
        return Ok(None);
    };
    match parse(&bytes) {
        Ok(meta) => Ok(Some((bytes, meta))),
        Err(source) => Err(MetadataError::Corrupt {
            path: storage.dir().join(METADATA_FILE),
            source,
        }),
    }
}

/// Reads `nsqd.dat` for the daemon. A missing file is a fresh start; a
/// corrupt one (a file nsqd could not load either) is moved aside as
/// `nsqd.dat.bad`, logged, and treated as empty, so the daemon still starts
/// and serves what its queues hold. A file that cannot be read, or a
/// corrupt one that cannot be moved aside, is an error: starting without it
/// would write a new `nsqd.dat` over the only list of the topics.
pub(crate) fn load(storage: &dyn Storage) -> Result<Metadata, MetadataError> {
    match read_from(storage) {
        Ok(meta) => Ok(meta.unwrap_or_default()),
        Err(e @ MetadataError::CorruptJournal { .. }) => {
            quarantine(
                storage,
                journal::JOURNAL_FILE,
                "nsqd.dat.journal.bad",
                "cannot move the damaged journal aside",
                &e,
                "metadata journal is damaged; moved aside, starting from nsqd.dat alone (changes since its last whole write are forgotten)",
            )?;
            load(storage)
        }
        Err(e @ MetadataError::Corrupt { .. }) => {
            quarantine(
                storage,
                METADATA_FILE,
                "nsqd.dat.bad",
                "cannot move corrupt metadata aside",
                &e,
                "metadata is corrupt; moved aside, starting without it",
            )?;
            Ok(Metadata::default())
        }
        Err(e) => Err(e),
    }
}

/// Moves the unreadable file `name` aside as `bad`, logging `why` at
/// error level; `what` names a failed move.
fn quarantine(
    storage: &dyn Storage,
    name: &str,
    bad: &str,
    what: &'static str,
    error: &MetadataError,
    why: &'static str,
) -> Result<(), MetadataError> {
    let dir = storage.dir();
    tracing::error!(path = %dir.join(name).display(), quarantined = %dir.join(bad).display(), %error, "{why}");
    storage
        .rename(name, bad)
        .map_err(io_error(storage, what, name))
}

/// Writes `nsqd.dat` atomically, in nsqd's shape, then starts an empty
/// journal for it.
pub(crate) fn save(storage: &dyn Storage, meta: &Metadata) -> Result<(), MetadataError> {
    let json = to_json(meta)?;
    storage
        .write_atomic(METADATA_FILE, &json)
        .map_err(io_error(storage, "cannot write", METADATA_FILE))?;
    journal::start(storage, &json)
}

/// Go writes a nil slice as `null`, and nsqd's lists are nil when empty.
fn empty_as_null<S: Serializer, T: Serialize>(list: &[T], s: S) -> Result<S::Ok, S::Error> {
    if list.is_empty() {
        s.serialize_none()
    } else {
        s.collect_seq(list)
    }
}

/// Whether a JSON key names `field` for Go's `encoding/json`: an exact
/// match, or equal under Unicode case folding (so `Name`, `NAME` and even
/// `pauſed`, with a long s, are the fields they fold to).
fn names_field(key: &str, field: &str) -> bool {
    key == field
        || key
            .chars()
            .flat_map(char::to_uppercase)
            .flat_map(char::to_lowercase)
            .eq(field.chars())
}

/// A list in nsqd's JSON: `null` is empty, as is a `null` element's
/// struct (Go decodes it as the zero value).
struct List<T>(Vec<T>);

impl<'de, T: Deserialize<'de> + Default> Deserialize<'de> for List<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ListVisitor<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de> + Default> Visitor<'de> for ListVisitor<T> {
            type Value = List<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list or null")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(List(Vec::new()))
            }
            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(List(Vec::new()))
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
                d.deserialize_seq(self)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut items = Vec::new();
                // Bounded by the input: each element consumes bytes.
                while let Some(item) = seq.next_element::<Option<T>>()? {
                    items.push(item.unwrap_or_default());
                }
                Ok(List(items))
            }
        }
        d.deserialize_option(ListVisitor(std::marker::PhantomData))
    }
}

/// Reads a JSON object's fields as Go does into a struct: `apply` is given
/// each key and decides, unknown keys are skipped.
fn visit_fields<'de, A, T>(
    mut map: A,
    mut value: T,
    mut apply: impl FnMut(&mut T, &str, &mut A) -> Result<bool, A::Error>,
) -> Result<T, A::Error>
where
    A: MapAccess<'de>,
{
    while let Some(key) = map.next_key::<String>()? {
        if !apply(&mut value, &key, &mut map)? {
            map.next_value::<IgnoredAny>()?;
        }
    }
    Ok(value)
}

/// A scalar's new value: `null` leaves it as it was (Go's no-op).
fn scalar<'de, A: MapAccess<'de>, T: Deserialize<'de>>(
    map: &mut A,
    slot: &mut T,
) -> Result<bool, A::Error> {
    if let Some(v) = map.next_value::<Option<T>>()? {
        *slot = v;
    }
    Ok(true)
}

/// A list's new value: `null` empties it (Go sets a nil slice).
fn list<'de, A: MapAccess<'de>, T: Deserialize<'de> + Default>(
    map: &mut A,
    slot: &mut Vec<T>,
) -> Result<bool, A::Error> {
    *slot = map.next_value::<List<T>>()?.0;
    Ok(true)
}

/// A struct visitor for one of the three shapes, built from its field rules.
macro_rules! go_struct {
    ($ty:ident, $what:literal, |$value:ident, $key:ident, $map:ident| $body:expr) => {
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct StructVisitor;
                impl<'de> Visitor<'de> for StructVisitor {
                    type Value = $ty;
                    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                        f.write_str($what)
                    }
                    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<$ty, A::Error> {
                        visit_fields(map, $ty::default(), |$value, $key, $map| $body)
                    }
                }
                d.deserialize_map(StructVisitor)
            }
        }
    };
}

go_struct!(Metadata, "nsqd's metadata object", |m, key, map| {
    if names_field(key, "topics") {
        list(map, &mut m.topics)
    } else if names_field(key, "version") {
        scalar(map, &mut m.version)
    } else {
        Ok(false)
    }
});

go_struct!(TopicMetadata, "a topic object", |t, key, map| {
    if names_field(key, "name") {
        scalar(map, &mut t.name)
    } else if names_field(key, "paused") {
        scalar(map, &mut t.paused)
    } else if names_field(key, "channels") {
        list(map, &mut t.channels)
    } else {
        Ok(false)
    }
});

go_struct!(ChannelMetadata, "a channel object", |c, key, map| {
    if names_field(key, "name") {
        scalar(map, &mut c.name)
    } else if names_field(key, "paused") {
        scalar(map, &mut c.paused)
    } else if key == "max_attempts" {
        // rsq's own key, matched exactly (Go never reads it): a value that
        // is no attempt count is dropped, never a reason to call the file
        // corrupt, since nsqd would load it.
        let value = map.next_value::<IgnoredOr<u16>>()?;
        c.max_attempts = value.0;
        Ok(true)
    } else {
        Ok(false)
    }
});

/// A value that is `Some` when it parses as `T` and `None` otherwise
/// (anything else, `null` included, is skipped whole).
struct IgnoredOr<T>(Option<T>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for IgnoredOr<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(d)?;
        Ok(IgnoredOr(T::deserialize(value).ok()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    /// What Go nsqd v1.3.0 wrote for the fixture data dir, byte for byte.
    const GO_LINE: &str = r#"{"topics":[{"name":"payments","paused":false,"channels":[{"name":"ledger","paused":false},{"name":"archive","paused":true}]},{"name":"signups","paused":true,"channels":[{"name":"welcome","paused":false}]},{"name":"lonely","paused":false,"channels":null}],"version":"1.3.0"}"#;

    fn channel(name: &str, paused: bool) -> ChannelMetadata {
        ChannelMetadata {
            name: name.into(),
            paused,
            max_attempts: None,
        }
    }

    fn go_metadata() -> Metadata {
        Metadata {
            topics: vec![
                TopicMetadata {
                    name: "payments".into(),
                    paused: false,
                    channels: vec![channel("ledger", false), channel("archive", true)],
                },
                TopicMetadata {
                    name: "signups".into(),
                    paused: true,
                    channels: vec![channel("welcome", false)],
                },
                TopicMetadata {
                    name: "lonely".into(),
                    paused: false,
                    channels: vec![],
                },
            ],
            version: NSQD_VERSION.into(),
        }
    }

    #[test]
    fn reads_go_nsqds_exact_line_and_writes_it_back_byte_for_byte() -> anyhow::Result<()> {
        assert_eq!(parse(GO_LINE.as_bytes())?, go_metadata());
        assert_eq!(String::from_utf8(to_json(&go_metadata())?)?, GO_LINE);
        Ok(())
    }

    #[test]
    fn no_topics_is_written_null_as_go_writes_a_nil_slice() -> anyhow::Result<()> {
        let meta = Metadata {
            topics: vec![],
            version: NSQD_VERSION.into(),
        };
        assert_eq!(
            String::from_utf8(to_json(&meta)?)?,
            r#"{"topics":null,"version":"1.3.0"}"#
        );
        assert_eq!(parse(&to_json(&meta)?)?, meta);
        Ok(())
    }

    #[test]
    fn missing_and_null_lists_are_empty() -> anyhow::Result<()> {
        let meta = parse(br#"{"topics":[{"name":"a"},{"name":"b","channels":null}]}"#)?;
        assert_eq!(meta.topics.len(), 2);
        assert!(
            meta.topics
                .iter()
                .all(|t| t.channels.is_empty() && !t.paused)
        );
        assert_eq!(meta.version, "");
        assert_eq!(parse(br#"{"topics":null}"#)?, Metadata::default());
        assert_eq!(parse(b"{}")?, Metadata::default());
        assert_eq!(parse(b" null ")?, Metadata::default());
        Ok(())
    }

    #[test]
    fn reads_what_go_json_reads() -> anyhow::Result<()> {
        // Unknown keys (a later nsqd's, or anything) are ignored; keys
        // match case-insensitively; null scalars keep the zero value; a
        // null element is a zero struct; the last of repeated keys wins.
        let text = r#"{"Topics":[{"NAME":"t","Paused":true,"extra":{"x":[1,2]},
            "channels":[{"name":"c","paused":null,"future":1}, null]},null],
            "version":"1.3.0","version":"9.9.9","new_field":[]}"#;
        let meta = parse(text.as_bytes())?;
        assert_eq!(meta.version, "9.9.9");
        assert_eq!(meta.topics.len(), 2);
        let t = &meta.topics[0];
        assert_eq!((t.name.as_str(), t.paused), ("t", true));
        assert_eq!(t.channels, vec![channel("c", false), channel("", false)]);
        assert_eq!(meta.topics[1], TopicMetadata::default());
        // Go folds the long s (U+017F) to `s`.
        assert!(
            parse("{\"topics\":[{\"name\":\"t\",\"pau\u{17f}ed\":true}]}".as_bytes())?.topics[0]
                .paused
        );
        // Invalid UTF-8 in a name becomes U+FFFD (an invalid name, skipped at load).
        let meta = parse(b"{\"topics\":[{\"name\":\"t\xff\"}]}")?;
        assert_eq!(meta.topics[0].name, "t\u{fffd}");
        Ok(())
    }

    #[test]
    fn what_go_refuses_is_corrupt() {
        for bad in [
            &b"{\"topics\": [garbage"[..],
            b"[]",
            b"{\"topics\":{}}",
            b"{\"topics\":[{\"name\":12}]}",
            b"{\"topics\":[{\"name\":\"t\",\"paused\":\"true\"}]}",
            b"{\"topics\":[]} trailing",
            b"",
        ] {
            assert!(parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn max_attempts_is_written_only_when_set_and_read_leniently() -> anyhow::Result<()> {
        let mut meta = go_metadata();
        meta.topics[0].channels[1].max_attempts = Some(5);
        let json = String::from_utf8(to_json(&meta)?)?;
        assert_eq!(
            json,
            GO_LINE.replace(
                r#"{"name":"archive","paused":true}"#,
                r#"{"name":"archive","paused":true,"max_attempts":5}"#
            )
        );
        assert_eq!(parse(json.as_bytes())?, meta);
        // Not an attempt count: dropped, the file still loads (as in Go).
        for odd in ["-1", "70000", "\"5\"", "null", "[1]", "2.5"] {
            let text = format!(
                r#"{{"topics":[{{"name":"t","channels":[{{"name":"c","max_attempts":{odd}}}]}}]}}"#
            );
            assert_eq!(
                parse(text.as_bytes())?.topics[0].channels[0],
                channel("c", false),
                "{odd}"
            );
        }
        Ok(())
    }

    #[test]
    fn round_trips_through_the_file() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        fs::write(dir.path().join(METADATA_FILE), GO_LINE)?;
        let meta = load(&FsStorage::new(dir.path())?)?;
        assert_eq!(meta, go_metadata());
        save(&FsStorage::new(dir.path())?, &meta)?;
        assert_eq!(fs::read_to_string(dir.path().join(METADATA_FILE))?, GO_LINE);
        assert_eq!(read(dir.path())?, Some(meta));
        assert!(!dir.path().join("nsqd.dat.bad").exists());
        Ok(())
    }

    #[test]
    fn corrupt_file_is_quarantined() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        fs::write(dir.path().join(METADATA_FILE), b"{\"topics\": [garbage")?;
        assert!(matches!(
            read(dir.path()),
            Err(MetadataError::Corrupt { .. })
        ));
        // `read` changes nothing; `load` moves it aside.
        assert!(dir.path().join(METADATA_FILE).exists());
        assert_eq!(load(&FsStorage::new(dir.path())?)?, Metadata::default());
        assert!(dir.path().join("nsqd.dat.bad").exists());
        Ok(())
    }

    #[test]
    fn a_missing_file_is_none() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        assert_eq!(read(dir.path())?, None);
        assert_eq!(load(&FsStorage::new(dir.path())?)?, Metadata::default());
        Ok(())
    }

    #[test]
    fn an_unreadable_file_stops_the_start() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        // A directory where the file should be: reading it fails, and
        // starting empty would write a new file over the only topic list.
        fs::create_dir(dir.path().join(METADATA_FILE))?;
        assert!(matches!(
            load(&FsStorage::new(dir.path())?),
            Err(MetadataError::Io { .. })
        ));
        Ok(())
    }
}
