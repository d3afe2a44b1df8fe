//! What a connection needs to know of the daemon: its limits, defaults and
//! which upgrades it offers. The daemon builds one from its own options;
//! the state machine never sees them.

use std::time::Duration;

/// nsqd's `--tls-required` levels (ordered: each requires more).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsRequired {
    /// Plain connections are fine (`false`, `0`).
    No = 0,
    /// TCP clients must upgrade; plain HTTP is still served (`tcp-https`, `1`).
    ExceptHttp = 1,
    /// TCP clients must upgrade and plain HTTP answers 403 `TLS_REQUIRED`
    /// (`true`, `2`).
    Yes = 2,
}

impl serde::Serialize for TlsRequired {
    /// As nsqd's `/config/tls_required`: the number.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(*self as u8)
    }
}

/// The daemon settings a V2 connection runs under. `Default` is nsqd's
/// defaults with no TLS and no AUTH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolConfig {
    /// Largest message body (`--max-msg-size`).
    pub max_msg_size: u64,
    /// Largest MPUB body (`--max-body-size`).
    pub max_body_size: u64,
    /// Largest RDY a client may send (`--max-rdy-count`).
    pub max_rdy_count: u64,
    /// Largest REQ delay; longer ones are clamped (`--max-req-timeout`).
    pub max_req_timeout: Duration,
    /// In-flight timeout of a client that asks for none (`--msg-timeout`).
    pub msg_timeout: Duration,
    /// Largest in-flight timeout a client may ask for (`--max-msg-timeout`).
    pub max_msg_timeout: Duration,
    /// Largest heartbeat interval a client may ask for.
    pub max_heartbeat_interval: Duration,
    /// Largest output buffer a client may ask for, in bytes.
    pub max_output_buffer_size: u64,
    /// Output buffer timeout of a client that asks for none; zero flushes at once.
    pub output_buffer_timeout: Duration,
    /// Smallest output buffer timeout a client may ask for.
    pub min_output_buffer_timeout: Duration,
    /// Largest output buffer timeout a client may ask for.
    pub max_output_buffer_timeout: Duration,
    /// Whether snappy is offered (`--snappy`).
    pub snappy: bool,
    /// Whether deflate is offered (`--deflate`).
    pub deflate: bool,
    /// Largest deflate level a client may ask for (`--max-deflate-level`).
    pub max_deflate_level: u8,
    /// Whether clients must AUTH before anything else (an auth server is configured).
    pub auth_required: bool,
    /// Whether commands other than IDENTIFY need TLS first (the effective
    /// `--tls-required`: a client-auth policy forces it on).
    pub tls_required: TlsRequired,
    /// Whether a TLS configuration exists, so `tls_v1` can be granted.
    pub tls_available: bool,
    /// The version IDENTIFY's answer reports.
    pub version: &'static str,
}

impl Default for ProtocolConfig {
    fn default() -> Self {
        ProtocolConfig {
            max_msg_size: 1_048_576,
            max_body_size: 5_242_880,
            max_rdy_count: 2500,
            max_req_timeout: Duration::from_secs(3600),
            msg_timeout: Duration::from_secs(60),
            max_msg_timeout: Duration::from_secs(900),
            max_heartbeat_interval: Duration::from_secs(60),
            max_output_buffer_size: 65536,
            output_buffer_timeout: Duration::from_millis(250),
            min_output_buffer_timeout: Duration::from_millis(25),
            max_output_buffer_timeout: Duration::from_secs(30),
            snappy: true,
            deflate: true,
            max_deflate_level: 6,
            auth_required: false,
            tls_required: TlsRequired::No,
            tls_available: false,
            version: concat!("1.3.0+rsq.", env!("CARGO_PKG_VERSION")),
        }
    }
}
