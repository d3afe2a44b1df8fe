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
//! xtask has no dependencies, so `cargo metadata`'s JSON is read by the
//! small parser below, which accepts any valid JSON document.

use std::path::Path;
use std::process::Command;

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
    let json = Json::parse(metadata)?;
    let members: Vec<&str> = json
        .get("workspace_members")
        .and_then(Json::as_array)
        .ok_or("cargo metadata has no workspace_members")?
        .iter()
        .filter_map(Json::as_str)
        .collect();
    let packages = json
        .get("packages")
        .and_then(Json::as_array)
        .ok_or("cargo metadata has no packages")?;
    let mut ours: Option<Version> = None;
    let mut deps = Vec::new();
    for package in packages {
        let field = |key: &str| package.get(key).and_then(Json::as_str);
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

/// A JSON value; numbers are kept as their text (nothing here needs them).
#[derive(Debug, PartialEq)]
enum Json {
    Null,
    Bool(bool),
    Number(String),
    String(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl Json {
    fn parse(text: &str) -> Result<Json, String> {
        let mut parser = Parser {
            bytes: text.as_bytes(),
            at: 0,
        };
        let value = parser.value()?;
        parser.skip_space();
        if parser.at != parser.bytes.len() {
            return Err(parser.error("trailing characters"));
        }
        Ok(value)
    }

    fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Object(fields) => fields.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    fn as_array(&self) -> Option<&[Json]> {
        match self {
            Json::Array(items) => Some(items),
            _ => None,
        }
    }

    fn as_str(&self) -> Option<&str> {
        match self {
            Json::String(s) => Some(s),
            _ => None,
        }
    }
}

struct Parser<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Parser<'_> {
    fn error(&self, what: &str) -> String {
        format!("cargo metadata: invalid JSON at byte {}: {what}", self.at)
    }

    fn skip_space(&mut self) {
        while self
            .bytes
            .get(self.at)
            .is_some_and(|b| b.is_ascii_whitespace())
        {
            self.at += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.skip_space();
        self.bytes.get(self.at).copied()
    }

    fn expect(&mut self, byte: u8) -> Result<(), String> {
        if self.peek() == Some(byte) {
            self.at += 1;
            Ok(())
        } else {
            Err(self.error(&format!("expected {:?}", byte as char)))
        }
    }

    fn literal(&mut self, word: &str, value: Json) -> Result<Json, String> {
        if self.bytes[self.at..].starts_with(word.as_bytes()) {
            self.at += word.len();
            Ok(value)
        } else {
            Err(self.error("unknown literal"))
        }
    }

    fn value(&mut self) -> Result<Json, String> {
        match self.peek() {
            Some(b'{') => self.object(),
            Some(b'[') => self.array(),
            Some(b'"') => self.string().map(Json::String),
            Some(b't') => self.literal("true", Json::Bool(true)),
            Some(b'f') => self.literal("false", Json::Bool(false)),
            Some(b'n') => self.literal("null", Json::Null),
            Some(b'-' | b'0'..=b'9') => {
                let start = self.at;
                while self
                    .bytes
                    .get(self.at)
                    .is_some_and(|b| matches!(b, b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9'))
                {
                    self.at += 1;
                }
                let text = std::str::from_utf8(&self.bytes[start..self.at])
                    .map_err(|_| self.error("bad number"))?;
                Ok(Json::Number(text.to_string()))
            }
            _ => Err(self.error("expected a value")),
        }
    }

    fn object(&mut self) -> Result<Json, String> {
        self.expect(b'{')?;
        let mut fields = Vec::new();
        if self.peek() == Some(b'}') {
            self.at += 1;
            return Ok(Json::Object(fields));
        }
        loop {
            self.skip_space();
            let key = self.string()?;
            self.expect(b':')?;
            fields.push((key, self.value()?));
            match self.peek() {
                Some(b',') => self.at += 1,
                Some(b'}') => {
                    self.at += 1;
                    return Ok(Json::Object(fields));
                }
                _ => return Err(self.error("expected ',' or '}'")),
            }
        }
    }

    fn array(&mut self) -> Result<Json, String> {
        self.expect(b'[')?;
        let mut items = Vec::new();
        if self.peek() == Some(b']') {
            self.at += 1;
            return Ok(Json::Array(items));
        }
        loop {
            items.push(self.value()?);
            match self.peek() {
                Some(b',') => self.at += 1,
                Some(b']') => {
                    self.at += 1;
                    return Ok(Json::Array(items));
                }
                _ => return Err(self.error("expected ',' or ']'")),
            }
        }
    }

    fn hex4(&mut self) -> Result<u32, String> {
        let digits = self
            .bytes
            .get(self.at..self.at + 4)
            .and_then(|d| std::str::from_utf8(d).ok())
            .and_then(|d| u32::from_str_radix(d, 16).ok())
            .ok_or_else(|| self.error("bad \\u escape"))?;
        self.at += 4;
        Ok(digits)
    }

    fn string(&mut self) -> Result<String, String> {
        self.expect(b'"')?;
        let mut out = Vec::new();
        loop {
            let Some(&byte) = self.bytes.get(self.at) else {
                return Err(self.error("unterminated string"));
            };
            self.at += 1;
            match byte {
                b'"' => break,
                b'\\' => {
                    let Some(&escape) = self.bytes.get(self.at) else {
                        return Err(self.error("unterminated escape"));
                    };
                    self.at += 1;
                    let c = match escape {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => {
                            let high = self.hex4()?;
                            let code = if (0xD800..0xDC00).contains(&high)
                                && self.bytes[self.at..].starts_with(b"\\u")
                            {
                                self.at += 2;
                                let low = self.hex4()?;
                                0x10000
                                    + ((high - 0xD800) << 10)
                                    + (low.wrapping_sub(0xDC00) & 0x3FF)
                            } else {
                                high
                            };
                            char::from_u32(code).unwrap_or('\u{FFFD}')
                        }
                        _ => return Err(self.error("unknown escape")),
                    };
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
                _ => out.push(byte),
            }
        }
        String::from_utf8(out).map_err(|_| self.error("invalid UTF-8 in string"))
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
    fn json_escapes_and_nesting() {
        let json = Json::parse(
            r#" {"a":[1,-2.5e3,true,false,null,{}],"b":"q\"\\\/\u00e9\ud83d\ude00\n"} "#,
        )
        .expect("valid");
        assert_eq!(json.get("b").and_then(Json::as_str), Some("q\"\\/é😀\n"));
        assert_eq!(
            json.get("a").and_then(Json::as_array).map(<[Json]>::len),
            Some(6)
        );
        assert!(Json::parse("[1,]").is_err());
        assert!(Json::parse(r#"{"a":1} x"#).is_err());
    }

    #[test]
    fn the_workspace_passes() {
        let root = crate::ci::project_root();
        run(&root).expect("valid");
    }
}
