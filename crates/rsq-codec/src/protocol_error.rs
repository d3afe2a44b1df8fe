//! Protocol errors: the `E_*` codes nsqd sends in error frames, and whether
//! each one closes the connection.
//!
//! The codec produces these when a client's bytes are malformed; the daemon
//! produces them for state and publish failures. Both write them to the wire
//! with [`crate::encode_error`], whose body is exactly `"<CODE> <desc>"`.

use std::fmt;

/// Every error code nsqd's protocol V2 sends in an error frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// `E_INVALID`: malformed or unknown command, bad parameters, wrong state.
    Invalid,
    /// `E_BAD_PROTOCOL`: the 4-byte magic was not `"  V2"`.
    BadProtocol,
    /// `E_BAD_BODY`: an IDENTIFY, AUTH or MPUB body (or its size) is invalid.
    BadBody,
    /// `E_BAD_TOPIC`: a topic name fails the name rules.
    BadTopic,
    /// `E_BAD_CHANNEL`: a channel name fails the name rules.
    BadChannel,
    /// `E_BAD_MESSAGE`: a PUB, DPUB or MPUB message (or its size) is invalid.
    BadMessage,
    /// `E_PUB_FAILED`: the topic refused a PUB.
    PubFailed,
    /// `E_MPUB_FAILED`: the topic refused an MPUB.
    MpubFailed,
    /// `E_DPUB_FAILED`: the topic refused a DPUB.
    DpubFailed,
    /// `E_FIN_FAILED`: FIN of a message not in flight for this client (non-fatal).
    FinFailed,
    /// `E_REQ_FAILED`: REQ of a message not in flight for this client (non-fatal).
    ReqFailed,
    /// `E_TOUCH_FAILED`: TOUCH of a message not in flight for this client (non-fatal).
    TouchFailed,
    /// `E_SUB_FAILED`: the channel refused the subscription.
    SubFailed,
    /// `E_IDENTIFY_FAILED`: IDENTIFY negotiation or a connection upgrade failed.
    IdentifyFailed,
    /// `E_AUTH_FIRST`: auth is enabled and the client has not sent AUTH yet.
    AuthFirst,
    /// `E_AUTH_DISABLED`: AUTH sent to a server without an auth service.
    AuthDisabled,
    /// `E_AUTH_FAILED`: the auth service could not be asked or answered with an error.
    AuthFailed,
    /// `E_UNAUTHORIZED`: the client's authorizations do not allow the command.
    Unauthorized,
    /// `E_AUTH_ERROR`: the AUTH response could not be sent.
    AuthError,
    /// `E_TOO_MANY_CHANNEL_CONSUMERS`: sent by later nsqd versions when
    /// `--max-channel-consumers` is reached (v1.3.0 reports that as `E_SUB_FAILED`).
    TooManyChannelConsumers,
}

impl ErrorCode {
    /// Every code, in declaration order.
    pub const ALL: [ErrorCode; 20] = [
        ErrorCode::Invalid,
        ErrorCode::BadProtocol,
        ErrorCode::BadBody,
        ErrorCode::BadTopic,
        ErrorCode::BadChannel,
        ErrorCode::BadMessage,
        ErrorCode::PubFailed,
        ErrorCode::MpubFailed,
        ErrorCode::DpubFailed,
        ErrorCode::FinFailed,
        ErrorCode::ReqFailed,
        ErrorCode::TouchFailed,
        ErrorCode::SubFailed,
        ErrorCode::IdentifyFailed,
        ErrorCode::AuthFirst,
        ErrorCode::AuthDisabled,
        ErrorCode::AuthFailed,
        ErrorCode::Unauthorized,
        ErrorCode::AuthError,
        ErrorCode::TooManyChannelConsumers,
    ];

    /// The code as it appears on the wire, e.g. `"E_INVALID"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Invalid => "E_INVALID",
            ErrorCode::BadProtocol => "E_BAD_PROTOCOL",
            ErrorCode::BadBody => "E_BAD_BODY",
            ErrorCode::BadTopic => "E_BAD_TOPIC",
            ErrorCode::BadChannel => "E_BAD_CHANNEL",
            ErrorCode::BadMessage => "E_BAD_MESSAGE",
            ErrorCode::PubFailed => "E_PUB_FAILED",
            ErrorCode::MpubFailed => "E_MPUB_FAILED",
            ErrorCode::DpubFailed => "E_DPUB_FAILED",
            ErrorCode::FinFailed => "E_FIN_FAILED",
            ErrorCode::ReqFailed => "E_REQ_FAILED",
            ErrorCode::TouchFailed => "E_TOUCH_FAILED",
            ErrorCode::SubFailed => "E_SUB_FAILED",
            ErrorCode::IdentifyFailed => "E_IDENTIFY_FAILED",
            ErrorCode::AuthFirst => "E_AUTH_FIRST",
            ErrorCode::AuthDisabled => "E_AUTH_DISABLED",
            ErrorCode::AuthFailed => "E_AUTH_FAILED",
            ErrorCode::Unauthorized => "E_UNAUTHORIZED",
            ErrorCode::AuthError => "E_AUTH_ERROR",
            ErrorCode::TooManyChannelConsumers => "E_TOO_MANY_CHANNEL_CONSUMERS",
        }
    }

    /// The code whose wire text is `text`, if any.
    pub fn from_wire(text: &[u8]) -> Option<ErrorCode> {
        ErrorCode::ALL
            .into_iter()
            .find(|code| code.as_str().as_bytes() == text)
    }

    /// Whether nsqd closes the connection after sending this error.
    ///
    /// Only `E_FIN_FAILED`, `E_REQ_FAILED` and `E_TOUCH_FAILED` leave it open:
    /// a consumer that finishes a message twice is sloppy, not hostile.
    pub const fn is_fatal(self) -> bool {
        !matches!(
            self,
            ErrorCode::FinFailed | ErrorCode::ReqFailed | ErrorCode::TouchFailed
        )
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error to report to a client in an error frame.
///
/// `Display` writes exactly the frame body nsqd sends: the code, a space and
/// the description, or the bare code when the description is empty (nsqd's
/// reply to a bad magic is the bare `E_BAD_PROTOCOL`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ProtocolError {
    /// The `E_*` code.
    pub code: ErrorCode,
    /// The human-readable description, byte-for-byte as nsqd words it.
    pub desc: String,
}

impl ProtocolError {
    /// An error with any code and description.
    pub fn new(code: ErrorCode, desc: impl Into<String>) -> Self {
        ProtocolError {
            code,
            desc: desc.into(),
        }
    }

    /// An `E_INVALID` error.
    pub fn invalid(desc: impl Into<String>) -> Self {
        Self::new(ErrorCode::Invalid, desc)
    }

    /// An `E_BAD_BODY` error.
    pub fn bad_body(desc: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadBody, desc)
    }

    /// An `E_BAD_TOPIC` error.
    pub fn bad_topic(desc: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadTopic, desc)
    }

    /// An `E_BAD_CHANNEL` error.
    pub fn bad_channel(desc: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadChannel, desc)
    }

    /// An `E_BAD_MESSAGE` error.
    pub fn bad_message(desc: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadMessage, desc)
    }

    /// The bare `E_BAD_PROTOCOL` nsqd sends when the magic is wrong.
    pub fn bad_protocol() -> Self {
        Self::new(ErrorCode::BadProtocol, "")
    }

    /// Whether the connection must be closed after sending this error.
    pub fn is_fatal(&self) -> bool {
        self.code.is_fatal()
    }

    /// Length in bytes of the frame body [`Display`](fmt::Display) produces.
    pub fn wire_len(&self) -> usize {
        let code = self.code.as_str().len();
        if self.desc.is_empty() {
            code
        } else {
            code + 1 + self.desc.len()
        }
    }

    /// Parses an error-frame body (`"<CODE> <desc>"` or a bare code), as a
    /// client does. Returns `None` for an unknown code or a non-UTF-8 description.
    pub fn from_frame_body(body: &[u8]) -> Option<ProtocolError> {
        let (code, desc) = match body.iter().position(|&b| b == b' ') {
            Some(i) => (&body[..i], &body[i + 1..]),
            None => (body, &b""[..]),
        };
        let code = ErrorCode::from_wire(code)?;
        let desc = std::str::from_utf8(desc).ok()?;
        Some(ProtocolError::new(code, desc))
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code.as_str())?;
        if !self.desc.is_empty() {
            f.write_str(" ")?;
            f.write_str(&self.desc)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_fin_req_touch_failures_are_non_fatal() {
        let non_fatal: Vec<_> = ErrorCode::ALL
            .into_iter()
            .filter(|c| !c.is_fatal())
            .collect();
        assert_eq!(
            non_fatal,
            [
                ErrorCode::FinFailed,
                ErrorCode::ReqFailed,
                ErrorCode::TouchFailed
            ]
        );
    }

    #[test]
    fn codes_round_trip_through_their_wire_text() {
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::from_wire(code.as_str().as_bytes()), Some(code));
            assert!(code.as_str().starts_with("E_"));
        }
        assert_eq!(ErrorCode::from_wire(b"E_NOPE"), None);
    }

    #[test]
    fn display_is_the_frame_body() {
        let e = ProtocolError::invalid("invalid command FOO");
        assert_eq!(e.to_string(), "E_INVALID invalid command FOO");
        assert_eq!(e.wire_len(), e.to_string().len());
        assert_eq!(ProtocolError::bad_protocol().to_string(), "E_BAD_PROTOCOL");
        assert_eq!(ProtocolError::bad_protocol().wire_len(), 14);
    }

    #[test]
    fn frame_bodies_parse_back() {
        for e in [
            ProtocolError::invalid("invalid command FOO"),
            ProtocolError::bad_protocol(),
            ProtocolError::new(
                ErrorCode::FinFailed,
                "FIN 0123456789abcdef failed ID not in flight",
            ),
        ] {
            assert_eq!(
                ProtocolError::from_frame_body(e.to_string().as_bytes()),
                Some(e)
            );
        }
    }
}
