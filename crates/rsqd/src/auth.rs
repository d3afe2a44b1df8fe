//! AUTH: nsqd's auth-server protocol.
//!
//! With `--auth-http-address`, a client's `AUTH <secret>` makes rsqd ask an
//! auth server `GET /auth?remote_ip=&tls=&secret=&common_name=` (or POST
//! the same form with `--auth-http-request-method=post`; a full `http://`
//! URL is used as given), trying the configured servers in random order
//! until one answers 200. The JSON answer grants `authorizations`: a topic
//! regex, channel regexes and `subscribe`/`publish` permissions, valid for
//! `ttl` seconds. [`AuthState`] holds a parsed answer and answers
//! [`AuthState::is_allowed`] as nsqd does: regexes match anywhere (Go's
//! `MatchString`), a publish is checked against channel `""`. The session
//! re-asks with the same secret once the TTL has passed.
//!
//! The HTTP client is a minimal HTTP/1.1 one (one request per connection,
//! `Connection: close`, Content-Length, chunked or close-delimited bodies);
//! `https://` auth servers are not supported.

use std::time::{Duration, Instant};

use rand::seq::SliceRandom;
use regex::Regex;
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::options::{Options, VERSION};

/// Why AUTH failed. Clients only ever see a generic `E_AUTH_FAILED`; this
/// is logged.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No auth server could be reached or none answered 200.
    #[error("auth server request failed: {0}")]
    Request(String),
    /// The answer was not a valid authorization document.
    #[error("invalid auth server response: {0}")]
    Response(String),
}

/// One grant of the auth server's answer.
#[derive(Debug, Clone)]
pub struct Authorization {
    topic: Regex,
    channels: Vec<Regex>,
    subscribe: bool,
    publish: bool,
}

impl Authorization {
    /// nsqd's rule: `channel == ""` is a publish and needs `publish`,
    /// otherwise `subscribe`; the topic regex and one channel regex must match.
    pub fn is_allowed(&self, topic: &str, channel: &str) -> bool {
        let permitted = if channel.is_empty() {
            self.publish
        } else {
            self.subscribe
        };
        permitted && self.topic.is_match(topic) && self.channels.iter().any(|c| c.is_match(channel))
    }
}

/// A client's authorizations as last fetched.
#[derive(Debug, Clone)]
pub struct AuthState {
    /// Who the auth server says the client is.
    pub identity: String,
    /// A URL about that identity.
    pub identity_url: String,
    /// The grants.
    pub authorizations: Vec<Authorization>,
    /// When to ask again.
    pub expires: Instant,
}

#[derive(Deserialize)]
struct RawState {
    ttl: i64,
    #[serde(default)]
    identity: String,
    #[serde(default)]
    identity_url: String,
    #[serde(default)]
    authorizations: Vec<RawAuthorization>,
}

#[derive(Deserialize)]
struct RawAuthorization {
    topic: String,
    #[serde(default)]
    channels: Vec<String>,
    #[serde(default)]
    permissions: Vec<String>,
}

impl AuthState {
    /// Parses an auth server's JSON answer received at `now`.
    pub fn parse(body: &[u8], now: Instant) -> Result<AuthState, AuthError> {
        let raw: RawState =
            serde_json::from_slice(body).map_err(|e| AuthError::Response(e.to_string()))?;
        if raw.ttl <= 0 {
            return Err(AuthError::Response(format!("invalid ttl {}", raw.ttl)));
        }
        let regex = |s: &str| {
            Regex::new(s).map_err(|e| AuthError::Response(format!("bad regex {s:?}: {e}")))
        };
        let mut authorizations = Vec::with_capacity(raw.authorizations.len());
        for a in raw.authorizations {
            let (mut subscribe, mut publish) = (false, false);
            for p in &a.permissions {
                match p.as_str() {
                    "subscribe" => subscribe = true,
                    "publish" => publish = true,
                    other => {
                        return Err(AuthError::Response(format!("unknown permission {other:?}")))
                    }
                }
            }
            authorizations.push(Authorization {
                topic: regex(&a.topic)?,
                channels: a
                    .channels
                    .iter()
                    .map(|c| regex(c))
                    .collect::<Result<_, _>>()?,
                subscribe,
                publish,
            });
        }
        Ok(AuthState {
            identity: raw.identity,
            identity_url: raw.identity_url,
            authorizations,
            expires: now + Duration::from_secs(u64::try_from(raw.ttl).unwrap_or(1)),
        })
    }

    /// Whether some grant allows `channel` of `topic` (`""`: publishing).
    pub fn is_allowed(&self, topic: &str, channel: &str) -> bool {
        self.authorizations
            .iter()
            .any(|a| a.is_allowed(topic, channel))
    }

    /// Whether the TTL has passed.
    pub fn is_expired(&self, now: Instant) -> bool {
        now >= self.expires
    }
}

/// What the auth server is told about the client.
#[derive(Debug, Clone)]
pub struct AuthRequest<'a> {
    /// The client's IP address.
    pub remote_ip: String,
    /// Whether the connection uses TLS.
    pub tls: bool,
    /// The AUTH body.
    pub secret: &'a str,
    /// The TLS client certificate's subject common name, empty without one.
    pub common_name: &'a str,
}

/// Asks the configured auth servers, in random order, until one answers.
pub async fn query(opts: &Options, req: &AuthRequest<'_>) -> Result<AuthState, AuthError> {
    let form = form_encode(&[
        ("common_name", req.common_name),
        ("remote_ip", &req.remote_ip),
        ("secret", req.secret),
        ("tls", if req.tls { "true" } else { "false" }),
    ]);
    let mut servers: Vec<&String> = opts.auth_http_addresses.iter().collect();
    servers.shuffle(&mut rand::thread_rng());
    let mut last = AuthError::Request("no auth server configured".to_string());
    for server in servers {
        let post = opts.auth_http_request_method == "post";
        let limit = usize::try_from(opts.max_body_size).unwrap_or(usize::MAX);
        let request = request(server, &form, post, limit, opts.http_client_connect_timeout);
        match tokio::time::timeout(opts.http_client_request_timeout, request).await {
            Ok(Ok(body)) => match AuthState::parse(&body, Instant::now()) {
                Ok(state) => return Ok(state),
                Err(e) => last = e,
            },
            Ok(Err(e)) => last = e,
            Err(_) => last = AuthError::Request(format!("{server}: timed out")),
        }
        tracing::warn!(server, error = %last, "auth server query failed");
    }
    Err(last)
}

/// `application/x-www-form-urlencoded`, as Go's `url.Values.Encode` (sorted keys).
fn form_encode(pairs: &[(&str, &str)]) -> String {
    let enc = |s: &str| {
        let mut out = String::with_capacity(s.len());
        for b in s.bytes() {
            match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    out.push(char::from(b));
                }
                b' ' => out.push('+'),
                _ => out.push_str(&format!("%{b:02X}")),
            }
        }
        out
    };
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// Splits `server` into `host:port` and path: `host:port` means
/// `http://host:port/auth`; a URL is taken as given.
fn endpoint(server: &str) -> Result<(String, String), AuthError> {
    let Some((scheme, rest)) = server.split_once("://") else {
        return Ok((server.to_string(), "/auth".to_string()));
    };
    if !scheme.eq_ignore_ascii_case("http") {
        return Err(AuthError::Request(format!(
            "{server}: only http:// auth servers are supported"
        )));
    }
    match rest.find('/') {
        Some(i) => Ok((rest[..i].to_string(), rest[i..].to_string())),
        None => Ok((rest.to_string(), "/".to_string())),
    }
}

async fn request(
    server: &str,
    form: &str,
    post: bool,
    limit: usize,
    connect_timeout: Duration,
) -> Result<Vec<u8>, AuthError> {
    let fail = |what: &dyn std::fmt::Display| AuthError::Request(format!("{server}: {what}"));
    let (host, path) = endpoint(server)?;
    let mut stream = tokio::time::timeout(connect_timeout, TcpStream::connect(&host))
        .await
        .map_err(|_| fail(&"connect timed out"))?
        .map_err(|e| fail(&e))?;
    let head = |method: &str, target: &str| {
        format!(
            "{method} {target} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: rsqd/{VERSION}\r\n\
             Accept: application/vnd.nsq; version=1.0\r\nConnection: close\r\n"
        )
    };
    let request = if post {
        format!(
            "{}Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{form}",
            head("POST", &path),
            form.len()
        )
    } else {
        let sep = if path.contains('?') { '&' } else { '?' };
        format!("{}\r\n", head("GET", &format!("{path}{sep}{form}")))
    };
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| fail(&e))?;
    let mut response = Vec::new();
    let cap = u64::try_from(limit.saturating_add(16 * 1024)).unwrap_or(u64::MAX);
    (&mut stream)
        .take(cap)
        .read_to_end(&mut response)
        .await
        .map_err(|e| fail(&e))?;
    let (status, body) = parse_response(&response).map_err(|e| fail(&e))?;
    if status != 200 {
        return Err(fail(&format!("status {status}")));
    }
    if body.len() > limit {
        return Err(fail(&"response too large"));
    }
    Ok(body)
}

/// Status and body of a complete HTTP/1.1 response read to end of stream.
fn parse_response(raw: &[u8]) -> Result<(u16, Vec<u8>), String> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no end of headers")?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| "headers are not text")?;
    let rest = &raw[end + 4..];
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or("bad status line")?;
    let mut length = None;
    let mut chunked = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(value.parse::<usize>().map_err(|_| "bad content-length")?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.eq_ignore_ascii_case("chunked");
        }
    }
    if chunked {
        return Ok((status, dechunk(rest)?));
    }
    match length {
        Some(n) if n > rest.len() => Err("truncated body".to_string()),
        Some(n) => Ok((status, rest[..n].to_vec())),
        None => Ok((status, rest.to_vec())),
    }
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        let eol = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("truncated chunk")?;
        let size_text = std::str::from_utf8(&data[..eol]).map_err(|_| "bad chunk size")?;
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| "bad chunk size")?;
        data = &data[eol + 2..];
        if size == 0 {
            return Ok(body);
        }
        if data.len() < size + 2 {
            return Err("truncated chunk".to_string());
        }
        body.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(json: &str) -> Result<AuthState, AuthError> {
        AuthState::parse(json.as_bytes(), Instant::now())
    }

    #[test]
    fn grants_follow_nsqds_rules() {
        let s = state(
            r#"{"ttl": 60, "identity": "me", "authorizations": [
                {"topic": "^t$", "channels": [".*"], "permissions": ["publish"]},
                {"topic": "sub", "channels": ["^c$"], "permissions": ["subscribe"]}]}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.identity, "me");
        assert!(s.is_allowed("t", ""));
        assert!(!s.is_allowed("tt", ""));
        assert!(!s.is_allowed("t", "c"), "publish grant does not allow SUB");
        assert!(s.is_allowed("a-sub-b", "c"), "regexes match anywhere");
        assert!(!s.is_allowed("sub", "cc"));
        assert!(
            !s.is_allowed("sub", ""),
            "subscribe grant does not allow PUB"
        );
        assert!(!s.is_expired(Instant::now()));
    }

    #[test]
    fn invalid_answers_fail() {
        assert!(state(r#"{"ttl": 0, "authorizations": []}"#).is_err());
        assert!(state(
            r#"{"ttl": 5, "authorizations": [{"topic": "(", "channels": [], "permissions": []}]}"#
        )
        .is_err());
        assert!(state(r#"{"ttl": 5, "authorizations": [{"topic": "t", "channels": [], "permissions": ["admin"]}]}"#).is_err());
        assert!(state("nope").is_err());
    }

    #[test]
    fn http_pieces() {
        assert_eq!(
            form_encode(&[("secret", "a b&c/é"), ("tls", "true")]),
            "secret=a+b%26c%2F%C3%A9&tls=true"
        );
        assert_eq!(
            endpoint("127.0.0.1:4181").unwrap_or_else(|e| panic!("{e}")),
            ("127.0.0.1:4181".to_string(), "/auth".to_string())
        );
        assert_eq!(
            endpoint("http://h:1/x/auth?k=v").unwrap_or_else(|e| panic!("{e}")),
            ("h:1".to_string(), "/x/auth?k=v".to_string())
        );
        assert!(endpoint("https://h:1/").is_err());
        let (status, body) = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhiXX")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((status, body.as_slice()), (200, &b"hi"[..]));
        let (_, body) = parse_response(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(body, b"abcde");
    }
}
