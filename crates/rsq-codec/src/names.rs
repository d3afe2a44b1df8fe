//! Topic and channel name rules, exactly as nsqd applies them.
//!
//! A name is 1 to 64 bytes long and matches `^[.a-zA-Z0-9_-]+(#ephemeral)?$`;
//! the length includes the `#ephemeral` suffix. Topics and channels share the
//! rule.

/// Longest valid name, in bytes, suffix included.
pub const MAX_NAME_LEN: usize = 64;

/// The suffix that marks a topic or channel as ephemeral (never written to disk,
/// deleted when its last consumer leaves).
pub const EPHEMERAL_SUFFIX: &str = "#ephemeral";

/// Whether `name` is a valid topic or channel name.
///
/// ```
/// use rsq_codec::is_valid_name;
///
/// assert!(is_valid_name("orders"));
/// assert!(is_valid_name("clicks.v2#ephemeral"));
/// assert!(!is_valid_name("has space"));
/// assert!(!is_valid_name("#ephemeral"));
/// assert!(!is_valid_name(&"x".repeat(65)));
/// ```
pub fn is_valid_name(name: &str) -> bool {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return false;
    }
    let stem = name.strip_suffix(EPHEMERAL_SUFFIX).unwrap_or(name);
    !stem.is_empty()
        && stem
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Whether `name` ends in `#ephemeral`. Says nothing about validity.
pub fn is_ephemeral(name: &str) -> bool {
    name.ends_with(EPHEMERAL_SUFFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(name: &str, valid: bool) {
        assert_eq!(is_valid_name(name), valid, "is_valid_name({name:?})");
    }

    /// The cases of nsqd's `TestChannelTopicNames`, plus the edges of the rule.
    #[test]
    fn names_follow_nsqd() {
        check("test", true);
        check("test-with_period.", true);
        check("test#ephemeral", true);
        check("test:ephemeral", false);
        check("test with space", false);
        check("test#ephemeral#ephemeral", false);
        check("#ephemeral", false);
        check("", false);
        check("a", true);
        check("A.b_c-D9", true);
        check("test\n", false);
        check("t#eph", false);
        check("tëst", false);
        check(&"a".repeat(64), true);
        check(&"a".repeat(65), false);
        check(&format!("{}#ephemeral", "a".repeat(54)), true);
        check(&format!("{}#ephemeral", "a".repeat(55)), false);
    }

    #[test]
    fn ephemeral_is_the_suffix() {
        assert!(is_ephemeral("t#ephemeral"));
        assert!(!is_ephemeral("t"));
        assert!(!is_ephemeral("t#ephemeral2"));
    }
}
