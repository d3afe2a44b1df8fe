//! IDENTIFY: parsing the client's JSON, validating it as nsqd does, and the
//! negotiated answer. Pure functions: no IO, no clock.

use std::time::Duration;

use rsq_codec::{ErrorCode, ProtocolError};
use rsq_compress::Compression;
use serde::{Deserialize, Serialize};

use crate::ProtocolConfig;

/// nsqd's default heartbeat: half its 60 s client timeout.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(30);
/// nsqd's default output buffer size.
pub const DEFAULT_OUTPUT_BUFFER_SIZE: usize = 16 * 1024;

/// The IDENTIFY body. Unknown fields are ignored and `null` counts as
/// absent, as with nsqd's JSON decoder (some clients send `"client_id": null`).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct IdentifyRequest {
    /// Client-chosen id.
    pub client_id: Option<String>,
    /// Client hostname.
    pub hostname: Option<String>,
    /// Client library and version.
    pub user_agent: Option<String>,
    /// Whether the client wants a JSON answer.
    pub feature_negotiation: Option<bool>,
    /// Milliseconds; -1 disables, 0 means default.
    pub heartbeat_interval: Option<i64>,
    /// Bytes; -1 disables buffering, 0 means default.
    pub output_buffer_size: Option<i64>,
    /// Milliseconds; -1 disables, 0 means default.
    pub output_buffer_timeout: Option<i64>,
    /// Asks for TLS.
    pub tls_v1: Option<bool>,
    /// Asks for snappy.
    pub snappy: Option<bool>,
    /// Asks for deflate.
    pub deflate: Option<bool>,
    /// Deflate level asked for.
    pub deflate_level: Option<i64>,
    /// Percentage of messages to deliver, 0 = all.
    pub sample_rate: Option<i64>,
    /// Milliseconds; 0 means the daemon's default.
    pub msg_timeout: Option<i64>,
}

/// What a client's connection runs with after IDENTIFY (or without it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// `None` when heartbeats are disabled.
    pub heartbeat_interval: Option<Duration>,
    /// Flush once this many bytes of messages are buffered.
    pub output_buffer_size: usize,
    /// Flush buffered messages after this long; `None` flushes at once.
    pub output_buffer_timeout: Option<Duration>,
    /// In-flight timeout for messages delivered to this client.
    pub msg_timeout: Duration,
    /// Percentage of messages delivered, 0 = all.
    pub sample_rate: i32,
}

impl Negotiated {
    /// The settings of a client that never sent IDENTIFY.
    pub fn defaults(opts: &ProtocolConfig) -> Self {
        Negotiated {
            heartbeat_interval: Some(DEFAULT_HEARTBEAT),
            output_buffer_size: DEFAULT_OUTPUT_BUFFER_SIZE,
            output_buffer_timeout: nonzero(opts.output_buffer_timeout),
            msg_timeout: opts.msg_timeout,
            sample_rate: 0,
        }
    }
}

fn nonzero(d: Duration) -> Option<Duration> {
    (!d.is_zero()).then_some(d)
}

/// The JSON answer to IDENTIFY with `feature_negotiation`.
#[derive(Debug, Serialize)]
pub struct IdentifyResponse {
    /// Largest RDY the client may send.
    pub max_rdy_count: u64,
    /// Daemon version.
    pub version: &'static str,
    /// Largest msg_timeout, ms.
    pub max_msg_timeout: u64,
    /// The client's effective msg_timeout, ms.
    pub msg_timeout: u64,
    /// TLS granted.
    pub tls_v1: bool,
    /// deflate granted.
    pub deflate: bool,
    /// Effective deflate level.
    pub deflate_level: i64,
    /// Largest deflate level.
    pub max_deflate_level: u8,
    /// snappy granted.
    pub snappy: bool,
    /// Effective sample rate.
    pub sample_rate: i32,
    /// Whether AUTH is required.
    pub auth_required: bool,
    /// Effective output buffer size.
    pub output_buffer_size: usize,
    /// Effective output buffer timeout, ms.
    pub output_buffer_timeout: u64,
}

impl IdentifyResponse {
    /// The compression granted: snappy, deflate at the negotiated level, or
    /// none. Both at once is refused by [`negotiate`].
    pub fn compression(&self) -> Option<Compression> {
        if self.snappy {
            Some(Compression::Snappy)
        } else if self.deflate {
            Some(Compression::Deflate(
                u32::try_from(self.deflate_level).unwrap_or(6),
            ))
        } else {
            None
        }
    }
}

impl IdentifyRequest {
    /// The client id to record: the one sent, unless it is absent or empty
    /// (then the connection keeps its default, the peer's IP).
    pub fn client_id(&self) -> Option<&str> {
        self.client_id.as_deref().filter(|s| !s.is_empty())
    }

    /// The hostname to record, under the same rule as
    /// [`IdentifyRequest::client_id`].
    pub fn hostname(&self) -> Option<&str> {
        self.hostname.as_deref().filter(|s| !s.is_empty())
    }

    /// The user agent to record: the one sent, empty when absent.
    pub fn user_agent(&self) -> &str {
        self.user_agent.as_deref().unwrap_or_default()
    }
}

fn bad_body(desc: String) -> ProtocolError {
    ProtocolError::new(ErrorCode::BadBody, desc)
}

fn ms(v: i64) -> Duration {
    Duration::from_millis(u64::try_from(v).unwrap_or(0))
}

fn as_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Validates an IDENTIFY body against the daemon's limits. On success gives
/// the connection settings, the identity fields and, if the client asked for
/// feature negotiation, the JSON answer (whose `tls_v1`, `snappy` and
/// `deflate` are the upgrades granted); on failure nsqd's error.
pub fn negotiate(
    body: &[u8],
    opts: &ProtocolConfig,
) -> Result<(IdentifyRequest, Negotiated, Option<IdentifyResponse>), ProtocolError> {
    let req: IdentifyRequest = serde_json::from_slice(body)
        .map_err(|_| bad_body("IDENTIFY failed to decode JSON body".to_string()))?;
    let max_heartbeat = i64::try_from(as_ms(opts.max_heartbeat_interval)).unwrap_or(i64::MAX);
    let heartbeat_interval = match req.heartbeat_interval.unwrap_or(0) {
        -1 => None,
        0 => Some(DEFAULT_HEARTBEAT),
        v if (1000..=max_heartbeat).contains(&v) => Some(ms(v)),
        v => {
            return Err(bad_body(format!(
                "IDENTIFY heartbeat interval ({v}) is invalid"
            )));
        }
    };
    let max_obs = i64::try_from(opts.max_output_buffer_size).unwrap_or(i64::MAX);
    let (mut output_buffer_size, mut output_buffer_timeout) = (
        DEFAULT_OUTPUT_BUFFER_SIZE,
        nonzero(opts.output_buffer_timeout),
    );
    match req.output_buffer_size.unwrap_or(0) {
        -1 => {
            output_buffer_size = 1;
            output_buffer_timeout = None;
        }
        0 => {}
        v if (64..=max_obs).contains(&v) => output_buffer_size = usize::try_from(v).unwrap_or(1),
        v => {
            return Err(bad_body(format!(
                "IDENTIFY output buffer size ({v}) is invalid"
            )));
        }
    }
    let min_obt = i64::try_from(as_ms(opts.min_output_buffer_timeout)).unwrap_or(0);
    let max_obt = i64::try_from(as_ms(opts.max_output_buffer_timeout)).unwrap_or(i64::MAX);
    match req.output_buffer_timeout.unwrap_or(0) {
        -1 => output_buffer_timeout = None,
        0 => {}
        v if (min_obt..=max_obt).contains(&v) => output_buffer_timeout = Some(ms(v)),
        v => {
            return Err(bad_body(format!(
                "IDENTIFY output buffer timeout ({v}) is invalid"
            )));
        }
    }
    let sample_rate = req.sample_rate.unwrap_or(0);
    if !(0..=99).contains(&sample_rate) {
        return Err(bad_body(format!(
            "IDENTIFY sample rate ({sample_rate}) is invalid"
        )));
    }
    let max_msg_timeout = i64::try_from(as_ms(opts.max_msg_timeout)).unwrap_or(i64::MAX);
    let msg_timeout = match req.msg_timeout.unwrap_or(0) {
        0 => opts.msg_timeout,
        v if (1000..=max_msg_timeout).contains(&v) => ms(v),
        v => return Err(bad_body(format!("IDENTIFY msg timeout ({v}) is invalid"))),
    };
    let negotiated = Negotiated {
        heartbeat_interval,
        output_buffer_size,
        output_buffer_timeout,
        msg_timeout,
        sample_rate: i32::try_from(sample_rate).unwrap_or(0),
    };
    let tls_v1 = req.tls_v1.unwrap_or(false) && opts.tls_available;
    let snappy = req.snappy.unwrap_or(false) && opts.snappy;
    let deflate = req.deflate.unwrap_or(false) && opts.deflate;
    if snappy && deflate {
        return Err(ProtocolError::new(
            ErrorCode::IdentifyFailed,
            "cannot enable both deflate and snappy compression".to_string(),
        ));
    }
    let deflate_level = match req.deflate_level.unwrap_or(0) {
        level if level <= 0 => 6,
        level => level,
    }
    .min(i64::from(opts.max_deflate_level));
    let response = req
        .feature_negotiation
        .unwrap_or(false)
        .then(|| IdentifyResponse {
            max_rdy_count: opts.max_rdy_count,
            version: opts.version,
            max_msg_timeout: as_ms(opts.max_msg_timeout),
            msg_timeout: as_ms(negotiated.msg_timeout),
            tls_v1,
            deflate,
            deflate_level,
            max_deflate_level: opts.max_deflate_level,
            snappy,
            sample_rate: negotiated.sample_rate,
            auth_required: opts.auth_required,
            output_buffer_size: negotiated.output_buffer_size,
            output_buffer_timeout: negotiated.output_buffer_timeout.map_or(0, as_ms),
        });
    Ok((req, negotiated, response))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> ProtocolConfig {
        ProtocolConfig::default()
    }

    #[track_caller]
    fn check_err(json: &str, expected: &str) {
        match negotiate(json.as_bytes(), &opts()) {
            Ok(_) => panic!("{json} was accepted"),
            Err(e) => assert_eq!(e.to_string(), expected),
        }
    }

    #[test]
    fn invalid_fields_get_nsqds_errors() {
        check_err("{", "E_BAD_BODY IDENTIFY failed to decode JSON body");
        check_err(
            r#"{"heartbeat_interval": 500}"#,
            "E_BAD_BODY IDENTIFY heartbeat interval (500) is invalid",
        );
        check_err(
            r#"{"heartbeat_interval": 60001}"#,
            "E_BAD_BODY IDENTIFY heartbeat interval (60001) is invalid",
        );
        check_err(
            r#"{"output_buffer_size": 10}"#,
            "E_BAD_BODY IDENTIFY output buffer size (10) is invalid",
        );
        check_err(
            r#"{"output_buffer_timeout": 1}"#,
            "E_BAD_BODY IDENTIFY output buffer timeout (1) is invalid",
        );
        check_err(
            r#"{"sample_rate": 100}"#,
            "E_BAD_BODY IDENTIFY sample rate (100) is invalid",
        );
        check_err(
            r#"{"msg_timeout": 999}"#,
            "E_BAD_BODY IDENTIFY msg timeout (999) is invalid",
        );
    }

    #[test]
    fn defaults_and_overrides() {
        let (_, n, resp) = negotiate(br#"{"feature_negotiation": true}"#, &opts())
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(n, Negotiated::defaults(&opts()));
        let resp = resp.unwrap_or_else(|| panic!("no negotiation response"));
        assert_eq!(resp.max_rdy_count, 2500);
        assert_eq!(resp.msg_timeout, 60_000);
        assert_eq!(resp.output_buffer_timeout, 250);

        let (_, n, resp) = negotiate(
            br#"{"heartbeat_interval": -1, "output_buffer_size": -1, "msg_timeout": 5000}"#,
            &opts(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(resp.is_none());
        assert_eq!(n.heartbeat_interval, None);
        assert_eq!(n.output_buffer_size, 1);
        assert_eq!(n.output_buffer_timeout, None);
        assert_eq!(n.msg_timeout, Duration::from_secs(5));
    }

    #[test]
    fn empty_identity_fields_keep_the_defaults_and_compression_follows_the_grant() {
        let (req, _, resp) = negotiate(
            br#"{"client_id":"","hostname":"h","feature_negotiation":true,"deflate":true,"deflate_level":3}"#,
            &opts(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            req.client_id(),
            None,
            "an empty client id keeps the default"
        );
        assert_eq!(req.hostname(), Some("h"));
        assert_eq!(req.user_agent(), "");
        let resp = resp.unwrap_or_else(|| panic!("no negotiation response"));
        assert_eq!(resp.compression(), Some(Compression::Deflate(3)));

        let (_, _, resp) = negotiate(br#"{"feature_negotiation":true,"snappy":true}"#, &opts())
            .unwrap_or_else(|e| panic!("{e}"));
        let resp = resp.unwrap_or_else(|| panic!("no negotiation response"));
        assert_eq!(resp.compression(), Some(Compression::Snappy));
    }
}
