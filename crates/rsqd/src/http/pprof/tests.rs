//! The `seconds` parameter and the one-profile-at-a-time rule.

use super::*;

#[track_caller]
fn check(value: Option<&str>, expected: Result<u64, &str>) {
    let got = seconds(value).map_err(|ApiError(status, code)| {
        assert_eq!(status, StatusCode::BAD_REQUEST);
        code
    });
    assert_eq!(got, expected, "{value:?}");
}

#[test]
fn seconds_default_to_30_and_are_bounded() {
    check(None, Ok(30));
    check(Some("1"), Ok(1));
    check(Some("300"), Ok(300));
    for bad in [
        "0",
        "301",
        "-1",
        "1.5",
        "",
        " 5",
        "abc",
        "99999999999999999999",
    ] {
        check(Some(bad), Err("INVALID_ARG_SECONDS"));
    }
}

#[test]
fn one_profile_at_a_time_until_the_first_is_dropped() {
    let first = Exclusive::take().expect("free");
    assert!(Exclusive::take().is_none(), "taken twice");
    drop(first);
    let again = Exclusive::take().expect("free again");
    drop(again);
}
