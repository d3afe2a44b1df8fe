//! Durations as NSQ writes them in flags, config files and `/config`:
//! Go's `time.ParseDuration` syntax, shared by every rsq binary.

use std::time::Duration;

use crate::CodecError;

/// Parses a duration as Go's `time.ParseDuration` does: a sequence of
/// decimal numbers with units `ns`, `us`, `µs`, `ms`, `s`, `m`, `h`
/// (`60s`, `15m`, `1h30m`, `1.5s`); a bare `0` is zero.
///
/// ```
/// use std::time::Duration;
/// use rsq_codec::parse_duration;
///
/// assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(90 * 60));
/// assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
/// assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
/// assert!(parse_duration("10 parsecs").is_err());
/// ```
pub fn parse_duration(s: &str) -> Result<Duration, CodecError> {
    let err = || CodecError::InvalidDuration(s.to_string());
    let s = s.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() || s.starts_with('-') {
        return Err(err());
    }
    let mut rest = s.strip_prefix('+').unwrap_or(s);
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(err)?;
        if num_len == 0 {
            return Err(err());
        }
        let value: f64 = rest[..num_len].parse().map_err(|_| err())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let nanos_per_unit = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(err()),
        };
        rest = &rest[unit_len..];
        total += value * nanos_per_unit;
    }
    if !total.is_finite() || total > u64::MAX as f64 {
        return Err(err());
    }
    Ok(Duration::from_nanos(total as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check_duration(input: &str, expected: Option<Duration>) {
        assert_eq!(parse_duration(input).ok(), expected, "input {input:?}");
    }

    #[test]
    fn durations_parse_as_go_does() {
        check_duration("60s", Some(Duration::from_secs(60)));
        check_duration("15m", Some(Duration::from_secs(900)));
        check_duration("1h", Some(Duration::from_secs(3600)));
        check_duration("250ms", Some(Duration::from_millis(250)));
        check_duration("1h30m", Some(Duration::from_secs(5400)));
        check_duration("1.5s", Some(Duration::from_millis(1500)));
        check_duration("0", Some(Duration::ZERO));
        check_duration("10", None);
        check_duration("-1s", None);
        check_duration("5x", None);
        check_duration("", None);
    }
}
