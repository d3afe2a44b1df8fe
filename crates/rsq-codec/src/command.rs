//! Protocol V2 commands: what a client sends to nsqd, as values, and the
//! client-side encoder that writes them.
//!
//! The server-side parser lives in [`crate::CommandDecoder`]; the two are
//! inverses for every valid command (checked by property tests).

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};

use crate::size_field::{bounded_size_field, size_field};
use crate::{CodecError, MessageId};

/// The 4 bytes a V2 client sends first: two spaces, `V`, `2`.
pub const MAGIC_V2: &[u8; 4] = b"  V2";

/// The command word of a line, without its parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verb {
    /// `IDENTIFY`
    Identify,
    /// `AUTH`
    Auth,
    /// `SUB`
    Sub,
    /// `PUB`
    Pub,
    /// `MPUB`
    Mpub,
    /// `DPUB`
    Dpub,
    /// `RDY`
    Rdy,
    /// `FIN`
    Fin,
    /// `REQ`
    Req,
    /// `TOUCH`
    Touch,
    /// `CLS`
    Cls,
    /// `NOP`
    Nop,
}

impl Verb {
    /// Every verb.
    pub const ALL: [Verb; 12] = [
        Verb::Identify,
        Verb::Auth,
        Verb::Sub,
        Verb::Pub,
        Verb::Mpub,
        Verb::Dpub,
        Verb::Rdy,
        Verb::Fin,
        Verb::Req,
        Verb::Touch,
        Verb::Cls,
        Verb::Nop,
    ];

    /// The word as sent on the wire (upper case; nsqd matches case-sensitively).
    pub const fn as_str(self) -> &'static str {
        match self {
            Verb::Identify => "IDENTIFY",
            Verb::Auth => "AUTH",
            Verb::Sub => "SUB",
            Verb::Pub => "PUB",
            Verb::Mpub => "MPUB",
            Verb::Dpub => "DPUB",
            Verb::Rdy => "RDY",
            Verb::Fin => "FIN",
            Verb::Req => "REQ",
            Verb::Touch => "TOUCH",
            Verb::Cls => "CLS",
            Verb::Nop => "NOP",
        }
    }

    /// The verb spelled exactly `word`, if any.
    pub fn from_wire(word: &[u8]) -> Option<Verb> {
        Verb::ALL
            .into_iter()
            .find(|v| v.as_str().as_bytes() == word)
    }

    /// Whether the line is followed by a size-prefixed body.
    pub const fn has_body(self) -> bool {
        matches!(
            self,
            Verb::Identify | Verb::Auth | Verb::Pub | Verb::Mpub | Verb::Dpub
        )
    }
}

impl fmt::Display for Verb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One decoded client command. Names are already validated; numbers are
/// range-checked except the REQ timeout, which nsqd clamps rather than rejects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `IDENTIFY\n[size][JSON]`: the raw JSON body; the daemon parses it.
    Identify(Bytes),
    /// `AUTH\n[size][secret]`: the raw secret.
    Auth(Bytes),
    /// `SUB <topic> <channel>\n`.
    Sub {
        /// A valid topic name.
        topic: String,
        /// A valid channel name.
        channel: String,
    },
    /// `PUB <topic>\n[size][body]`.
    Pub {
        /// A valid topic name.
        topic: String,
        /// The message body, `1..=max_msg_size` bytes.
        body: Bytes,
    },
    /// `MPUB <topic>\n[body size][count]([size][body])*`.
    Mpub {
        /// A valid topic name.
        topic: String,
        /// At least one body, each `1..=max_msg_size` bytes.
        bodies: Vec<Bytes>,
    },
    /// `DPUB <topic> <defer_ms>\n[size][body]`.
    Dpub {
        /// A valid topic name.
        topic: String,
        /// Deferral in milliseconds, `0..=max_req_timeout_ms`.
        defer_ms: u64,
        /// The message body, `1..=max_msg_size` bytes.
        body: Bytes,
    },
    /// `RDY <count>\n` (a missing count means 1), `0..=max_rdy_count`.
    Rdy(u64),
    /// `FIN <id>\n`.
    Fin(MessageId),
    /// `REQ <id> <timeout_ms>\n`.
    Req {
        /// The message to requeue.
        id: MessageId,
        /// Requested deferral as sent (not clamped; the daemon clamps it to
        /// `--max-req-timeout`, as nsqd does).
        timeout_ms: u64,
    },
    /// `TOUCH <id>\n`.
    Touch(MessageId),
    /// `CLS\n`.
    Cls,
    /// `NOP\n`.
    Nop,
}

impl Command {
    /// The command's verb.
    pub fn verb(&self) -> Verb {
        match self {
            Command::Identify(_) => Verb::Identify,
            Command::Auth(_) => Verb::Auth,
            Command::Sub { .. } => Verb::Sub,
            Command::Pub { .. } => Verb::Pub,
            Command::Mpub { .. } => Verb::Mpub,
            Command::Dpub { .. } => Verb::Dpub,
            Command::Rdy(_) => Verb::Rdy,
            Command::Fin(_) => Verb::Fin,
            Command::Req { .. } => Verb::Req,
            Command::Touch(_) => Verb::Touch,
            Command::Cls => Verb::Cls,
            Command::Nop => Verb::Nop,
        }
    }

    /// Appends the bytes a client sends for this command to `dst`.
    ///
    /// Sizes are written as 32-bit big-endian integers, so a body must be
    /// shorter than 2 GiB (nsqd reads the field as signed); names and ids
    /// must not contain spaces or line breaks (true of every valid name and
    /// of every id nsqd issues).
    ///
    /// # Panics
    ///
    /// If a body (or an MPUB's bodies together) is 4 GiB or more, which no
    /// size field can state; [`Command::try_encode`] returns that as an
    /// error instead.
    #[track_caller]
    pub fn encode(&self, dst: &mut BytesMut) {
        if let Err(e) = self.try_encode(dst) {
            panic!("{e}");
        }
    }

    /// Like [`Command::encode`], but a body too large for its 32-bit size
    /// field is [`CodecError::SizeFieldOverflow`], and `dst` is left as it
    /// was.
    pub fn try_encode(&self, dst: &mut BytesMut) -> Result<(), CodecError> {
        match self {
            Command::Identify(body) => line_with_body(dst, b"IDENTIFY\n", body, "IDENTIFY body")?,
            Command::Auth(body) => line_with_body(dst, b"AUTH\n", body, "AUTH body")?,
            Command::Sub { topic, channel } => {
                dst.reserve(6 + topic.len() + channel.len());
                dst.put_slice(b"SUB ");
                dst.put_slice(topic.as_bytes());
                dst.put_u8(b' ');
                dst.put_slice(channel.as_bytes());
                dst.put_u8(b'\n');
            }
            Command::Pub { topic, body } => {
                let size = size_field(body.len(), "PUB body")?;
                dst.reserve(9 + topic.len() + body.len());
                dst.put_slice(b"PUB ");
                dst.put_slice(topic.as_bytes());
                dst.put_u8(b'\n');
                dst.put_u32(size);
                dst.put_slice(body);
            }
            Command::Mpub { topic, bodies } => {
                let body_size = mpub_body_size(bodies);
                let body_size_field = size_field(body_size, "MPUB body")?;
                dst.reserve(6 + topic.len() + 4 + body_size);
                dst.put_slice(b"MPUB ");
                dst.put_slice(topic.as_bytes());
                dst.put_u8(b'\n');
                dst.put_u32(body_size_field);
                // The count and each body's size are smaller than the whole
                // body's size, which fits (checked just above).
                dst.put_u32(bounded_size_field(bodies.len(), "MPUB count"));
                for body in bodies {
                    dst.put_u32(bounded_size_field(body.len(), "MPUB message"));
                    dst.put_slice(body);
                }
            }
            Command::Dpub {
                topic,
                defer_ms,
                body,
            } => {
                let size = size_field(body.len(), "DPUB body")?;
                dst.reserve(31 + topic.len() + body.len());
                dst.put_slice(b"DPUB ");
                dst.put_slice(topic.as_bytes());
                dst.put_u8(b' ');
                put_decimal(dst, *defer_ms);
                dst.put_u8(b'\n');
                dst.put_u32(size);
                dst.put_slice(body);
            }
            Command::Rdy(count) => {
                dst.put_slice(b"RDY ");
                put_decimal(dst, *count);
                dst.put_u8(b'\n');
            }
            Command::Fin(id) => line_with_id(dst, b"FIN ", id, None),
            Command::Req { id, timeout_ms } => line_with_id(dst, b"REQ ", id, Some(*timeout_ms)),
            Command::Touch(id) => line_with_id(dst, b"TOUCH ", id, None),
            Command::Cls => dst.put_slice(b"CLS\n"),
            Command::Nop => dst.put_slice(b"NOP\n"),
        }
        Ok(())
    }

    /// The encoding as a new buffer.
    ///
    /// # Panics
    ///
    /// As [`Command::encode`].
    #[track_caller]
    pub fn to_bytes(&self) -> Bytes {
        let mut dst = BytesMut::new();
        self.encode(&mut dst);
        dst.freeze()
    }
}

/// Size of an MPUB body: the count, then a size and the bytes of each
/// message. Saturates only past `usize::MAX`, which [`size_field`] refuses
/// like any length over 4 GiB.
fn mpub_body_size(bodies: &[Bytes]) -> usize {
    bodies.iter().fold(4usize, |sum, b| {
        sum.saturating_add(4).saturating_add(b.len())
    })
}

fn line_with_body(
    dst: &mut BytesMut,
    line: &[u8],
    body: &[u8],
    what: &'static str,
) -> Result<(), CodecError> {
    let size = size_field(body.len(), what)?;
    dst.reserve(line.len() + 4 + body.len());
    dst.put_slice(line);
    dst.put_u32(size);
    dst.put_slice(body);
    Ok(())
}

fn line_with_id(dst: &mut BytesMut, verb: &[u8], id: &MessageId, number: Option<u64>) {
    dst.reserve(verb.len() + 16 + 22);
    dst.put_slice(verb);
    dst.put_slice(id.as_bytes());
    if let Some(n) = number {
        dst.put_u8(b' ');
        put_decimal(dst, n);
    }
    dst.put_u8(b'\n');
}

/// Writes `n` in decimal without allocating.
fn put_decimal(dst: &mut BytesMut, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    dst.put_slice(&digits[i..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(cmd: Command, expected: &[u8]) {
        assert_eq!(&cmd.to_bytes()[..], expected, "{cmd:?}");
    }

    #[test]
    fn simple_lines() {
        check(Command::Nop, b"NOP\n");
        check(Command::Cls, b"CLS\n");
        check(Command::Rdy(0), b"RDY 0\n");
        check(Command::Rdy(2500), b"RDY 2500\n");
        check(Command::Rdy(u64::MAX), b"RDY 18446744073709551615\n");
        let id = MessageId(*b"0123456789abcdef");
        check(Command::Fin(id), b"FIN 0123456789abcdef\n");
        check(Command::Touch(id), b"TOUCH 0123456789abcdef\n");
        check(
            Command::Req {
                id,
                timeout_ms: 1000,
            },
            b"REQ 0123456789abcdef 1000\n",
        );
        check(
            Command::Sub {
                topic: "t".into(),
                channel: "c".into(),
            },
            b"SUB t c\n",
        );
    }

    #[test]
    fn an_mpub_too_large_for_its_size_field_is_refused_and_writes_nothing() {
        // 4096 handles on one 1 MiB body: over 4 GiB declared, 1 MiB held.
        let body = Bytes::from(vec![b'x'; 1 << 20]);
        let cmd = Command::Mpub {
            topic: "t".into(),
            bodies: vec![body; 4096],
        };
        let mut dst = BytesMut::new();
        assert_eq!(
            cmd.try_encode(&mut dst),
            Err(CodecError::SizeFieldOverflow {
                what: "MPUB body",
                len: 4 + 4096 * (4 + (1 << 20)),
            })
        );
        assert!(dst.is_empty());
    }

    #[test]
    #[should_panic(expected = "MPUB body of 4294983684 bytes does not fit a 32-bit size field")]
    fn encode_panics_where_try_encode_refuses() {
        let body = Bytes::from(vec![b'x'; 1 << 20]);
        Command::Mpub {
            topic: "t".into(),
            bodies: vec![body; 4096],
        }
        .encode(&mut BytesMut::new());
    }

    #[test]
    fn verbs_round_trip() {
        for v in Verb::ALL {
            assert_eq!(Verb::from_wire(v.as_str().as_bytes()), Some(v));
        }
        assert_eq!(Verb::from_wire(b"pub"), None);
    }
}
