//! AUTH: nsqd's auth-server protocol.
//!
//! With `--auth-http-address`, a client's `AUTH <secret>` makes rsqd ask an
//! auth server `GET /auth?remote_ip=&tls=&secret=&common_name=` (or POST
//! the same form with `--auth-http-request-method=post`; a full `http://`
//! or `https://` URL is used as given), trying the configured servers in
//! random order until one answers 200. The JSON answer grants `authorizations`: a topic
//! regex, channel regexes and `subscribe`/`publish` permissions, valid for
//! `ttl` seconds. rsq-protocol's `AuthState` holds a parsed answer and answers
//! `AuthState::is_allowed` as nsqd does: regexes match anywhere (Go's
//! `MatchString`), a publish is checked against channel `""`. The session
//! re-asks with the same secret once the TTL has passed.
//!
//! [`AuthClient`] is the HTTP side: hyper's HTTP/1.1 client, one request
//! per connection (`Connection: close`). An `https://` auth server is
//! reached through rustls (tokio-rustls), its certificate checked as nsqd
//! checks it: against `--tls-root-ca-file` when given, otherwise against
//! the system's trusted roots as Go finds them (the PEM file
//! `SSL_CERT_FILE` names, or else the first of the usual Linux bundle
//! files that exists), with `--tls-min-version`. The roots are read once,
//! at start, and only when an auth address is `https://`.
//! `--http-client-connect-timeout` bounds the TCP connect and, for https,
//! the TLS handshake; `--http-client-request-timeout` bounds each server's
//! whole query, and `--max-body-size` the answer.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper_util::rt::TokioIo;
use rand::seq::SliceRandom;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;

use rsq_protocol::{AuthState, BadAuthResponse};

use crate::options::{AuthMethod, Options, TlsMinVersion, VERSION};

/// Why AUTH failed (clients only ever see a generic `E_AUTH_FAILED`; this
/// is logged), or why the auth client could not be set up at start.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// `--tls-root-ca-file` could not be read or holds no certificate.
    #[error("--tls-root-ca-file {path}: {reason}")]
    RootCaFile {
        /// The file.
        path: PathBuf,
        /// What was wrong with it.
        reason: String,
    },
    /// No auth server could be reached or none answered 200.
    #[error("auth server request failed: {0}")]
    Request(String),
    /// The answer was not a valid authorization document.
    #[error(transparent)]
    Response(#[from] BadAuthResponse),
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

/// The daemon's client of its auth servers (`--auth-http-address`), made
/// once at start from the options.
#[derive(Debug)]
pub struct AuthClient {
    servers: Vec<String>,
    post: bool,
    limit: usize,
    connect_timeout: Duration,
    request_timeout: Duration,
    /// For `https://` servers: built at start when one is configured; an
    /// error (no system roots) fails each https query instead.
    tls: Option<Result<Arc<rustls::ClientConfig>, String>>,
}

impl AuthClient {
    /// The client `opts` describe. Fails, as nsqd does, when an `https://`
    /// server is configured and `--tls-root-ca-file` cannot be read.
    pub fn new(opts: &Options) -> Result<AuthClient, AuthError> {
        let https = opts
            .auth_http_addresses
            .iter()
            .any(|a| endpoint(a).is_ok_and(|e| e.tls));
        let tls = match (https, &opts.tls_root_ca_file) {
            (false, _) => None,
            (true, Some(file)) => {
                let roots = read_roots(file).map_err(|reason| AuthError::RootCaFile {
                    path: file.clone(),
                    reason,
                })?;
                Some(tls_config(roots, opts.tls_min_version))
            }
            (true, None) => {
                Some(system_roots().and_then(|roots| tls_config(roots, opts.tls_min_version)))
            }
        };
        Ok(AuthClient {
            servers: opts.auth_http_addresses.clone(),
            post: opts.auth_http_request_method == AuthMethod::Post,
            limit: usize::try_from(opts.max_body_size).unwrap_or(usize::MAX),
            connect_timeout: opts.http_client_connect_timeout,
            request_timeout: opts.http_client_request_timeout,
            tls,
        })
    }

    /// Asks the configured auth servers, in random order, until one answers.
    pub async fn query(&self, req: &AuthRequest<'_>) -> Result<AuthState, AuthError> {
        let form = form_encode(&[
            ("common_name", req.common_name),
            ("remote_ip", &req.remote_ip),
            ("secret", req.secret),
            ("tls", if req.tls { "true" } else { "false" }),
        ]);
        let mut servers: Vec<&String> = self.servers.iter().collect();
        servers.shuffle(&mut rand::thread_rng());
        let mut last = AuthError::Request("no auth server configured".to_string());
        for server in servers {
            let request = self.request(server, &form);
            match tokio::time::timeout(self.request_timeout, request).await {
                Ok(Ok(body)) => match AuthState::parse(&body, Instant::now()) {
                    Ok(state) => return Ok(state),
                    Err(e) => last = e.into(),
                },
                Ok(Err(e)) => last = e,
                Err(_) => last = AuthError::Request(format!("{server}: timed out")),
            }
            tracing::warn!(server, error = %last, "auth server query failed");
        }
        Err(last)
    }

    /// One query to one auth server: the body of its 200 answer.
    async fn request(&self, server: &str, form: &str) -> Result<Bytes, AuthError> {
        let fail = |what: &dyn std::fmt::Display| AuthError::Request(format!("{server}: {what}"));
        let endpoint = endpoint(server)?;
        let builder = hyper::Request::builder()
            .header(hyper::header::HOST, &endpoint.authority)
            .header(hyper::header::USER_AGENT, format!("rsqd/{VERSION}"))
            .header(hyper::header::ACCEPT, "application/vnd.nsq; version=1.0")
            .header(hyper::header::CONNECTION, "close");
        let request = if self.post {
            builder
                .method(hyper::Method::POST)
                .uri(&endpoint.path)
                .header(
                    hyper::header::CONTENT_TYPE,
                    "application/x-www-form-urlencoded",
                )
                .body(Full::new(Bytes::copy_from_slice(form.as_bytes())))
        } else {
            let sep = if endpoint.path.contains('?') {
                '&'
            } else {
                '?'
            };
            builder
                .method(hyper::Method::GET)
                .uri(format!("{}{sep}{form}", endpoint.path))
                .body(Full::new(Bytes::new()))
        }
        .map_err(|e| fail(&e))?;
        let connect = TcpStream::connect(&endpoint.connect);
        let tcp = tokio::time::timeout(self.connect_timeout, connect)
            .await
            .map_err(|_| fail(&"connect timed out"))?
            .map_err(|e| fail(&e))?;
        if !endpoint.tls {
            return exchange(TokioIo::new(tcp), request, self.limit)
                .await
                .map_err(|e| fail(&e));
        }
        let config = match &self.tls {
            Some(Ok(config)) => config.clone(),
            Some(Err(e)) => return Err(fail(e)),
            None => return Err(fail(&"no TLS configuration")),
        };
        let name = ServerName::try_from(endpoint.host.clone()).map_err(|e| fail(&e))?;
        let connector = tokio_rustls::TlsConnector::from(config);
        let tls = tokio::time::timeout(self.connect_timeout, connector.connect(name, tcp))
            .await
            .map_err(|_| fail(&"TLS handshake timed out"))?
            .map_err(|e| fail(&format!("TLS: {e}")))?;
        exchange(TokioIo::new(tls), request, self.limit)
            .await
            .map_err(|e| fail(&e))
    }
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

/// Where an auth server is, from `--auth-http-address`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Endpoint {
    /// `https://`: TLS before HTTP.
    tls: bool,
    /// The authority as written (`host`, `host:port`, `[v6]:port`): the
    /// `Host` header.
    authority: String,
    /// `host:port` to connect to, with the scheme's port when none is given.
    connect: String,
    /// The host alone (no brackets, no port): the name the certificate
    /// must be valid for.
    host: String,
    /// The request path, with any query the address carries.
    path: String,
}

/// Reads `server` as nsqd does: an `http://` or `https://` URL is taken
/// as given, anything else `A` means `http://A/auth`.
fn endpoint(server: &str) -> Result<Endpoint, AuthError> {
    let (tls, rest) = match server.split_once("://") {
        None => (false, server),
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => (false, rest),
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("https") => (true, rest),
        Some(_) => {
            return Err(AuthError::Request(format!(
                "{server}: only http:// and https:// auth servers are supported"
            )));
        }
    };
    // Without a scheme nsqd asks `http://<address>/auth`.
    let (authority, path) = match (rest.find('/'), server.contains("://")) {
        (Some(i), true) => (&rest[..i], rest[i..].to_string()),
        (None, true) => (rest, "/".to_string()),
        (Some(i), false) => (&rest[..i], format!("{}/auth", &rest[i..])),
        (None, false) => (rest, "/auth".to_string()),
    };
    // A port follows the last ':' unless that ':' is inside `[v6]`.
    let (host, port) = match authority.rfind(':') {
        Some(i) if !authority[i..].contains(']') => (&authority[..i], Some(&authority[i + 1..])),
        _ => (authority, None),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(AuthError::Request(format!("{server}: no host")));
    }
    let connect = match port {
        Some(_) => authority.to_string(),
        None if tls => format!("{authority}:443"),
        None => format!("{authority}:80"),
    };
    Ok(Endpoint {
        tls,
        authority: authority.to_string(),
        connect,
        host: host.to_string(),
        path,
    })
}

/// The usual places of the system's trusted root bundle on Linux, as Go's
/// `crypto/x509` looks for them (the first that exists is used).
const ROOT_BUNDLES: [&str; 6] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/pki/tls/cacert.pem",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// The certificates of a PEM file, as trusted roots. A bundle may hold
/// certificates rustls cannot use; those are skipped.
fn read_roots(path: &Path) -> Result<rustls::RootCertStore, String> {
    let certs = CertificateDer::pem_file_iter(path).map_err(|e| e.to_string())?;
    let mut roots = rustls::RootCertStore::empty();
    let (added, _skipped) = roots.add_parsable_certificates(certs.filter_map(Result::ok));
    if added == 0 {
        return Err("no usable certificate".to_string());
    }
    Ok(roots)
}

/// The system's trusted roots: `SSL_CERT_FILE`, or the first bundle file
/// of [`ROOT_BUNDLES`] that exists.
fn system_roots() -> Result<rustls::RootCertStore, String> {
    let path = match std::env::var_os("SSL_CERT_FILE") {
        Some(file) => PathBuf::from(file),
        None => ROOT_BUNDLES
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
            .ok_or("no trusted root certificates found (set SSL_CERT_FILE)")?,
    };
    read_roots(&path).map_err(|e| format!("root certificates {}: {e}", path.display()))
}

/// A TLS client configuration trusting `roots`, with nsqd's
/// `--tls-min-version` (`tls1.3`, or anything else for 1.2 and 1.3).
fn tls_config(
    roots: rustls::RootCertStore,
    min_version: TlsMinVersion,
) -> Result<Arc<rustls::ClientConfig>, String> {
    let versions = min_version.rustls_versions();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Sends `request` on a fresh HTTP/1.1 connection over `io` and returns
/// the body of a 200 answer of at most `limit` bytes. The connection is
/// driven here, not in a task of its own, so it ends with the exchange.
async fn exchange<S>(
    io: S,
    request: hyper::Request<Full<Bytes>>,
    limit: usize,
) -> Result<Bytes, String>
where
    S: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| e.to_string())?;
    let exchange = async move {
        sender.ready().await.map_err(|e| e.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        if status != hyper::StatusCode::OK {
            return Err(format!("status {}", status.as_u16()));
        }
        let body = Limited::new(response.into_body(), limit)
            .collect()
            .await
            .map_err(|e| {
                if e.is::<LengthLimitError>() {
                    "response too large".to_string()
                } else {
                    e.to_string()
                }
            })?;
        Ok(body.to_bytes())
        // `sender` is dropped here, so the connection finishes too.
    };
    // The connection's own result only repeats what the exchange saw.
    let (result, _connection) = tokio::join!(exchange, connection);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_is_encoded_as_go_does() {
        assert_eq!(
            form_encode(&[("secret", "a b&c/é"), ("tls", "true")]),
            "secret=a+b%26c%2F%C3%A9&tls=true"
        );
    }

    #[test]
    fn auth_addresses_are_read_as_nsqd_reads_them() {
        let e = |s: &str| endpoint(s).unwrap_or_else(|e| panic!("{e}"));
        let plain = e("127.0.0.1:4181");
        assert_eq!(
            plain,
            Endpoint {
                tls: false,
                authority: "127.0.0.1:4181".into(),
                connect: "127.0.0.1:4181".into(),
                host: "127.0.0.1".into(),
                path: "/auth".into(),
            }
        );
        let url = e("http://h:1/x/auth?k=v");
        assert_eq!((url.tls, url.authority.as_str()), (false, "h:1"));
        assert_eq!(url.path, "/x/auth?k=v");
        let https = e("HTTPS://auth.example/check");
        assert!(https.tls);
        assert_eq!(https.connect, "auth.example:443");
        assert_eq!(https.authority, "auth.example");
        assert_eq!(https.host, "auth.example");
        assert_eq!(e("http://h").connect, "h:80");
        assert_eq!(e("http://h").path, "/");
        let v6 = e("https://[::1]:8443/auth");
        assert_eq!(
            (v6.host.as_str(), v6.connect.as_str()),
            ("::1", "[::1]:8443")
        );
        assert_eq!(e("https://[::1]/a").connect, "[::1]:443");
        assert_eq!(e("h:1/base").path, "/base/auth");
        assert!(endpoint("ftp://h:1/").is_err());
        assert!(endpoint("http:///auth").is_err());
    }
}
