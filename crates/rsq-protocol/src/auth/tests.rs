//! Parsing auth server answers and matching their grants as nsqd does.

use super::*;

fn state(json: &str) -> Result<AuthState, BadAuthResponse> {
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
    assert!(
        state(
            r#"{"ttl": 5, "authorizations": [{"topic": "(", "channels": [], "permissions": []}]}"#
        )
        .is_err()
    );
    assert!(state(r#"{"ttl": 5, "authorizations": [{"topic": "t", "channels": [], "permissions": ["admin"]}]}"#).is_err());
    assert!(state("nope").is_err());
}
