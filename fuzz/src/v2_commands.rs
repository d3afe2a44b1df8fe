//! Fuzz target: the server-side protocol V2 parser, `rsq_codec::CommandDecoder`.
//!
//! Input layout (so real byte streams make good seeds): byte 0 is a flags
//! byte, byte 1 seeds the split points, the rest is what a client sends.
//!
//! - flags bit 0: the stream starts with the `"  V2"` magic
//!   (`CommandDecoder::new`) instead of a command line (`without_magic`);
//! - flags bit 1: finish with `decode_eof`, as when the client closes;
//! - flags bits 2-3: which [`Limits`] preset to enforce (small ones, so the
//!   fuzzer reaches every size check);
//! - split seed 0 feeds the whole stream at once; any other value cuts it
//!   into pieces of 1..=32 bytes chosen by a small PRNG.
//!
//! Checked: no panic; every error is well formed (its frame body parses
//! back to the same error, its `wire_len` is right, it is never one of the
//! non-fatal `E_*_FAILED` codes); a fatal error stops decoding and is
//! repeated on every later call without consuming input; a recoverable error
//! leaves the decoder idle; every call makes progress; an idle decoder never
//! holds a full line; decoded commands respect the limits and re-encode to
//! bytes that decode to the same command; and splitting the stream never
//! changes what is decoded.

use bytes::BytesMut;
use rsq_codec::{
    Command, CommandDecoder, ErrorCode, Frame, FrameDecoder, Limits, MAX_LINE_LEN, ProtocolError,
    encode_error, is_valid_name,
};

/// What one `decode` call produced, for comparing split and whole feeding.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Event {
    Command(Command),
    Error(ProtocolError),
}

fn limits(preset: u8) -> Limits {
    match preset & 3 {
        0 => Limits {
            max_msg_size: 8,
            max_body_size: 32,
            max_rdy_count: 5,
            max_req_timeout_ms: 100,
        },
        1 => Limits {
            max_msg_size: 1,
            max_body_size: 9,
            max_rdy_count: 0,
            max_req_timeout_ms: 0,
        },
        2 => Limits {
            max_msg_size: 64,
            max_body_size: 64,
            max_rdy_count: 2500,
            max_req_timeout_ms: 3_600_000,
        },
        _ => Limits::default(),
    }
}

/// xorshift32, so split points depend only on the input.
struct Splitter(u32);

impl Splitter {
    fn next_len(&mut self) -> usize {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.0 = x;
        1 + (x % 32) as usize
    }
}

fn chunks(stream: &[u8], seed: u8) -> Vec<&[u8]> {
    if seed == 0 {
        return vec![stream];
    }
    let mut split = Splitter(u32::from(seed).wrapping_mul(0x9E37_79B9) | 1);
    let mut out = Vec::new();
    let mut rest = stream;
    while !rest.is_empty() {
        let n = split.next_len().min(rest.len());
        let (head, tail) = rest.split_at(n);
        out.push(head);
        rest = tail;
    }
    out
}

fn check_error(err: &ProtocolError) {
    let text = err.to_string();
    assert_eq!(text.len(), err.wire_len(), "wire_len of {err:?}");
    assert_eq!(
        ProtocolError::from_frame_body(text.as_bytes()).as_ref(),
        Some(err),
        "error frame body {text:?} does not parse back"
    );
    assert!(
        !matches!(
            err.code,
            ErrorCode::FinFailed | ErrorCode::ReqFailed | ErrorCode::TouchFailed
        ),
        "the decoder reported a state error: {err:?}"
    );
    assert!(err.is_fatal(), "decoder error is not fatal: {err:?}");
    // The error frame a client receives decodes to the same error.
    let mut wire = BytesMut::new();
    encode_error(err, &mut wire);
    let frame = FrameDecoder::new(u32::MAX).decode(&mut wire);
    match frame {
        Ok(Some(Frame::Error(body))) => {
            assert_eq!(&body[..], text.as_bytes());
        }
        other => panic!("error frame for {err:?} decoded as {other:?}"),
    }
    assert!(wire.is_empty());
}

/// Whether `Command::encode`'s documented precondition holds: ids contain
/// no space or line break (a client may send any 16 bytes, e.g. one ending
/// in `\r`, which a line ending in `\r\n` would swallow on re-decoding).
fn encodable(cmd: &Command) -> bool {
    let id = match cmd {
        Command::Fin(id) | Command::Touch(id) | Command::Req { id, .. } => id,
        _ => return true,
    };
    !id.as_bytes()
        .iter()
        .any(|b| matches!(b, b' ' | b'\n' | b'\r'))
}

fn check_command(cmd: &Command, limits: &Limits) {
    let body_ok = |b: &[u8]| !b.is_empty() && b.len() as u64 <= limits.max_msg_size;
    match cmd {
        Command::Identify(body) | Command::Auth(body) => {
            assert!(!body.is_empty() && body.len() as u64 <= limits.max_body_size);
        }
        Command::Sub { topic, channel } => {
            assert!(is_valid_name(topic) && is_valid_name(channel), "{cmd:?}");
        }
        Command::Pub { topic, body } => {
            assert!(is_valid_name(topic) && body_ok(body), "{cmd:?}");
        }
        Command::Dpub {
            topic,
            defer_ms,
            body,
        } => {
            assert!(is_valid_name(topic) && body_ok(body), "{cmd:?}");
            assert!(*defer_ms <= limits.max_req_timeout_ms, "{cmd:?}");
        }
        Command::Mpub { topic, bodies } => {
            assert!(is_valid_name(topic) && !bodies.is_empty(), "{cmd:?}");
            assert!(bodies.iter().all(|b| body_ok(b)), "{cmd:?}");
            let total: u64 = 4 + bodies.iter().map(|b| 4 + b.len() as u64).sum::<u64>();
            assert!(total <= limits.max_body_size, "{cmd:?}");
        }
        Command::Rdy(n) => assert!(*n <= limits.max_rdy_count, "{cmd:?}"),
        Command::Fin(_) | Command::Req { .. } | Command::Touch(_) | Command::Cls | Command::Nop => {
        }
    }
    if !encodable(cmd) {
        return;
    }
    let mut wire = BytesMut::new();
    cmd.encode(&mut wire);
    assert_eq!(wire[..], cmd.to_bytes()[..]);
    let mut again = CommandDecoder::without_magic(*limits);
    let decoded = again.decode(&mut wire);
    assert_eq!(
        decoded.as_ref(),
        Ok(&Some(cmd.clone())),
        "re-encoded {cmd:?} does not decode back"
    );
    assert!(wire.is_empty(), "re-encoded {cmd:?} left {wire:?}");
    assert!(again.is_idle());
}

/// Feeds `pieces` to a decoder, checking every call; returns what it saw.
fn decode_all(pieces: &[&[u8]], magic: bool, eof: bool, limits: Limits) -> Vec<Event> {
    let mut dec = if magic {
        CommandDecoder::new(limits)
    } else {
        CommandDecoder::without_magic(limits)
    };
    let mut buf = BytesMut::new();
    let mut events = Vec::new();
    let mut failed = None;
    'feed: for piece in pieces {
        buf.extend_from_slice(piece);
        // Each successful call consumes at least one byte, so this bounds the loop.
        for _ in 0..=buf.len() + 1 {
            let before = buf.len();
            match dec.decode(&mut buf) {
                Ok(None) => {
                    if dec.is_idle() {
                        assert!(buf.len() < MAX_LINE_LEN, "idle decoder holds a full line");
                    }
                    continue 'feed;
                }
                Ok(Some(cmd)) => {
                    assert!(buf.len() < before, "decoded {cmd:?} without consuming");
                    assert_eq!(dec.current_verb(), Some(cmd.verb()));
                    check_command(&cmd, &limits);
                    events.push(Event::Command(cmd));
                }
                Err(err) => {
                    check_error(&err);
                    events.push(Event::Error(err.clone()));
                    if dec.is_failed() {
                        failed = Some(err);
                        break 'feed;
                    }
                    assert!(dec.is_idle(), "recoverable error left the decoder busy");
                    assert!(buf.len() < before, "recoverable error consumed nothing");
                }
            }
        }
        panic!("decode made no progress");
    }
    if let Some(err) = failed {
        // Fatal means fatal: more input changes nothing and is not consumed.
        buf.extend_from_slice(b"NOP\n");
        let before = buf.len();
        assert_eq!(dec.decode(&mut buf), Err(err.clone()));
        assert_eq!(dec.decode_eof(&mut buf), Err(err));
        assert_eq!(buf.len(), before, "a failed decoder consumed input");
        return events;
    }
    if eof {
        match dec.decode_eof(&mut buf) {
            Ok(Some(cmd)) => panic!("decode_eof found {cmd:?} that decode missed"),
            Ok(None) => {}
            Err(err) => {
                check_error(&err);
                assert!(dec.is_failed(), "an error at EOF must be final");
                events.push(Event::Error(err));
            }
        }
    }
    events
}

/// Runs the target on one input; panics on a finding.
pub fn run(data: &[u8]) {
    let [flags, seed, stream @ ..] = data else {
        return;
    };
    let magic = flags & 1 != 0;
    let eof = flags & 2 != 0;
    let limits = limits(flags >> 2);
    let split = decode_all(&chunks(stream, *seed), magic, eof, limits);
    if *seed != 0 {
        let whole = decode_all(&[stream], magic, eof, limits);
        assert_eq!(split, whole, "splitting the stream changed the result");
    }
}
