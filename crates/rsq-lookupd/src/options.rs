//! Flags, with nsqlookupd's names, defaults and meanings.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use rsq_codec::parse_duration;
use rsq_service::{LogFormat, hostname, parse_log_format, parse_log_level};

use crate::registry::Liveness;

/// The version reported in IDENTIFY replies and `/info`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Every option rsq-lookupd understands.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "rsq-lookupd",
    version = VERSION,
    about = "rsq-lookupd: an nsqlookupd-compatible discovery daemon",
    args_override_self = true
)]
pub struct Options {
    /// Log level: debug, info, warn, error or fatal.
    #[arg(long, default_value = "info", value_parser = parse_log_level)]
    pub log_level: String,
    /// Log line format: text (coloured only on a terminal, never with
    /// `NO_COLOR` set) or json (one object per line).
    #[arg(long, default_value = "text", value_parser = parse_log_format)]
    pub log_format: LogFormat,
    /// `<addr>:<port>` to listen on for producers (nsqd) over TCP.
    #[arg(long, default_value = "0.0.0.0:4160")]
    pub tcp_address: SocketAddr,
    /// `<addr>:<port>` to listen on for HTTP clients.
    #[arg(long, default_value = "0.0.0.0:4161")]
    pub http_address: SocketAddr,
    /// Address of this lookupd node, told to producers (default: the hostname).
    #[arg(long)]
    pub broadcast_address: Option<String>,
    /// How long a producer stays in answers after its last PING.
    #[arg(long, default_value = "300s", value_parser = parse_duration)]
    pub inactive_producer_timeout: Duration,
    /// How long a tombstoned producer is left out of `/lookup`.
    #[arg(long, default_value = "45s", value_parser = parse_duration)]
    pub tombstone_lifetime: Duration,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            log_level: "info".to_string(),
            log_format: LogFormat::Text,
            tcp_address: SocketAddr::from(([0, 0, 0, 0], 4160)),
            http_address: SocketAddr::from(([0, 0, 0, 0], 4161)),
            broadcast_address: None,
            inactive_producer_timeout: Duration::from_secs(300),
            tombstone_lifetime: Duration::from_secs(45),
        }
    }
}

impl Options {
    /// The broadcast address, defaulting to the hostname.
    pub fn effective_broadcast_address(&self) -> String {
        self.broadcast_address.clone().unwrap_or_else(hostname)
    }

    /// The two durations that decide which producers answers show.
    pub fn liveness(&self) -> Liveness {
        Liveness {
            inactive_producer_timeout: self.inactive_producer_timeout,
            tombstone_lifetime: self.tombstone_lifetime,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_nsqlookupds() -> Result<(), clap::Error> {
        let o = Options::try_parse_from(["rsq-lookupd"])?;
        assert_eq!(o.tcp_address.to_string(), "0.0.0.0:4160");
        assert_eq!(o.http_address.to_string(), "0.0.0.0:4161");
        assert_eq!(o.inactive_producer_timeout, Duration::from_secs(300));
        assert_eq!(o.tombstone_lifetime, Duration::from_secs(45));
        assert_eq!(o.log_level, "info");
        assert_eq!(o.broadcast_address, None);
        let d = Options::default();
        assert_eq!(
            (d.tcp_address, d.http_address, d.liveness()),
            (o.tcp_address, o.http_address, o.liveness())
        );
        let o = Options::try_parse_from([
            "rsq-lookupd",
            "--inactive-producer-timeout=1s",
            "--tombstone-lifetime=500ms",
            "--broadcast-address=lk1",
        ])?;
        assert_eq!(o.inactive_producer_timeout, Duration::from_secs(1));
        assert_eq!(o.tombstone_lifetime, Duration::from_millis(500));
        assert_eq!(o.effective_broadcast_address(), "lk1");
        assert!(Options::try_parse_from(["rsq-lookupd", "--log-level=loud"]).is_err());
        Ok(())
    }
}
