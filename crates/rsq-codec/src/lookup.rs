//! The bytes of nsqlookupd's producer protocol V1, both directions, with
//! no IO: what a producer (nsqd, rsqd) sends and what lookupd answers.
//!
//! A producer sends the magic [`MAGIC_V1`], then text lines `CMD params\n`;
//! IDENTIFY is followed by a 4-byte big-endian size and a JSON body (the
//! JSON itself is the caller's: this crate only carries its bytes). Every
//! reply, success or error, is `[4-byte big-endian size][data]` with no
//! frame type.
//!
//! - producer side: [`Request::encode`] writes a request,
//!   [`ResponseDecoder`] reads replies;
//! - lookupd side: [`RequestDecoder`] reads requests, [`encode_response`]
//!   writes replies.
//!
//! Both decoders are incremental in the tokio-codec way: callers append to
//! a `BytesMut`, `Ok(None)` means "need more", and no size is trusted
//! before it is checked against a bound.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::size_field::{bounded_size_field, field_len, size_field};
use crate::{CodecError, ProtocolError};

/// The magic a producer sends first.
pub const MAGIC_V1: &[u8; 4] = b"  V1";

/// Longest command line [`RequestDecoder`] accepts, newline included.
/// Names are at most 64 bytes, so real lines are far shorter.
pub const MAX_LINE_LEN: usize = 1024;

/// Largest IDENTIFY body [`RequestDecoder`] accepts (nsqd's default
/// `--max-body-size`).
pub const MAX_IDENTIFY_BODY: usize = 5 * 1024 * 1024;

// The decoder reads IDENTIFY's size as nsqlookupd does, signed: every size
// up to the bound is a positive i32.
const _: () = assert!(MAX_IDENTIFY_BODY <= i32::MAX as usize);
// A REGISTER line with a topic and a channel (64 bytes each) fits.
const _: () = assert!(MAX_LINE_LEN > 2 * crate::MAX_NAME_LEN + 16);

/// One request from a producer to lookupd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// `PING`: the producer is alive.
    Ping,
    /// `IDENTIFY` with its JSON body.
    Identify {
        /// The JSON body, unparsed.
        body: Bytes,
    },
    /// `REGISTER <topic> [<channel>]`, parameters as sent.
    Register {
        /// The space-separated words after the command.
        params: Vec<String>,
    },
    /// `UNREGISTER <topic> [<channel>]`, parameters as sent.
    Unregister {
        /// The space-separated words after the command.
        params: Vec<String>,
    },
}

/// `[topic]` or `[topic, channel]`, the parameters nsqd sends.
fn topic_params(topic: &str, channel: Option<&str>) -> Vec<String> {
    let mut params = vec![topic.to_string()];
    params.extend(channel.map(str::to_string));
    params
}

impl Request {
    /// `REGISTER topic` (a topic without channels) or `REGISTER topic channel`.
    pub fn register(topic: &str, channel: Option<&str>) -> Request {
        Request::Register {
            params: topic_params(topic, channel),
        }
    }

    /// `UNREGISTER topic` or `UNREGISTER topic channel`.
    pub fn unregister(topic: &str, channel: Option<&str>) -> Request {
        Request::Unregister {
            params: topic_params(topic, channel),
        }
    }

    /// Appends the request's bytes to `dst`, as nsqd writes them: the
    /// command, each parameter after one space, a newline; IDENTIFY's body
    /// after its 4-byte big-endian size.
    ///
    /// # Panics
    ///
    /// If an IDENTIFY body is 4 GiB or more, which its size field cannot
    /// state; [`Request::try_encode`] returns that as an error instead.
    #[track_caller]
    pub fn encode(&self, dst: &mut BytesMut) {
        if let Err(e) = self.try_encode(dst) {
            panic!("{e}");
        }
    }

    /// Like [`Request::encode`], but an IDENTIFY body too large for its
    /// size field is [`CodecError::SizeFieldOverflow`], and `dst` is left
    /// as it was.
    pub fn try_encode(&self, dst: &mut BytesMut) -> Result<(), CodecError> {
        fn line(dst: &mut BytesMut, verb: &[u8], params: &[String]) {
            dst.put_slice(verb);
            for param in params {
                dst.put_u8(b' ');
                dst.put_slice(param.as_bytes());
            }
            dst.put_u8(b'\n');
        }
        match self {
            Request::Ping => dst.put_slice(b"PING\n"),
            Request::Identify { body } => {
                let size = size_field(body.len(), "IDENTIFY body")?;
                dst.reserve(9 + 4 + body.len());
                dst.put_slice(b"IDENTIFY\n");
                dst.put_u32(size);
                dst.put_slice(body);
            }
            Request::Register { params } => line(dst, b"REGISTER", params),
            Request::Unregister { params } => line(dst, b"UNREGISTER", params),
        }
        Ok(())
    }
}

/// Incremental decoder of a producer's requests (after the magic), for
/// lookupd.
///
/// What a producer encodes, lookupd decodes, however the bytes arrive:
///
/// ```
/// use bytes::BytesMut;
/// use rsq_codec::lookup::{Request, RequestDecoder};
///
/// let mut wire = BytesMut::new();
/// Request::Ping.encode(&mut wire);
/// Request::register("orders", Some("billing")).encode(&mut wire);
///
/// let mut decoder = RequestDecoder::new();
/// assert_eq!(decoder.decode(&mut wire).unwrap(), Some(Request::Ping));
/// assert_eq!(
///     decoder.decode(&mut wire).unwrap(),
///     Some(Request::register("orders", Some("billing")))
/// );
/// assert_eq!(decoder.decode(&mut wire).unwrap(), None);
/// ```
#[derive(Debug, Default)]
pub struct RequestDecoder {
    /// Set while waiting for an IDENTIFY body: the header is consumed.
    pending_identify: bool,
}

impl RequestDecoder {
    /// A decoder at the start of the request stream.
    pub fn new() -> RequestDecoder {
        RequestDecoder::default()
    }

    /// Decodes the next request from `buf`, consuming its bytes; `Ok(None)`
    /// if more bytes are needed. Errors are nsqlookupd's, and fatal.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Request>, ProtocolError> {
        if self.pending_identify {
            return self.decode_identify_body(buf);
        }
        let Some(newline) = buf.iter().position(|&b| b == b'\n') else {
            if buf.len() >= MAX_LINE_LEN {
                return Err(ProtocolError::invalid("command line too long"));
            }
            return Ok(None);
        };
        if newline >= MAX_LINE_LEN {
            return Err(ProtocolError::invalid("command line too long"));
        }
        let line = buf.split_to(newline + 1);
        let text = String::from_utf8_lossy(&line);
        // nsqlookupd trims the line, then splits on single spaces, so two
        // spaces make an empty parameter.
        let mut words = text.trim().split(' ').map(str::to_string);
        let command = words.next().unwrap_or_default();
        let params: Vec<String> = words.collect();
        match command.as_str() {
            "PING" => Ok(Some(Request::Ping)),
            "REGISTER" => Ok(Some(Request::Register { params })),
            "UNREGISTER" => Ok(Some(Request::Unregister { params })),
            "IDENTIFY" => {
                self.pending_identify = true;
                self.decode_identify_body(buf)
            }
            other => Err(ProtocolError::invalid(format!("invalid command {other}"))),
        }
    }

    fn decode_identify_body(
        &mut self,
        buf: &mut BytesMut,
    ) -> Result<Option<Request>, ProtocolError> {
        let Some(header) = buf.get(..4) else {
            return Ok(None);
        };
        let size = i32::from_be_bytes([header[0], header[1], header[2], header[3]]);
        let size = usize::try_from(size)
            .ok()
            .filter(|&s| s <= MAX_IDENTIFY_BODY)
            .ok_or_else(|| ProtocolError::bad_body(format!("IDENTIFY invalid body size {size}")))?;
        if buf.len() < 4 + size {
            buf.reserve(4 + size - buf.len());
            return Ok(None);
        }
        buf.advance(4);
        let body = buf.split_to(size).freeze();
        self.pending_identify = false;
        Ok(Some(Request::Identify { body }))
    }
}

/// Appends one reply, `[4-byte size][data]`, to `dst` (lookupd's side).
///
/// # Panics
///
/// If `data` is 4 GiB or more. Replies are lookupd's own: IDENTIFY's small
/// JSON object, `OK` or an error line.
#[track_caller]
pub fn encode_response(data: &[u8], dst: &mut BytesMut) {
    let len = bounded_size_field(data.len(), "lookupd reply");
    dst.reserve(4 + data.len());
    dst.put_u32(len);
    dst.put_slice(data);
}

/// Incremental decoder of lookupd's replies, for producers. A reply is
/// its data: `OK`, IDENTIFY's JSON, or an `E_*` error line.
#[derive(Debug, Clone)]
pub struct ResponseDecoder {
    max_size: u32,
}

impl ResponseDecoder {
    /// A decoder refusing replies longer than `max_size` bytes (nsqd bounds
    /// them by its `--max-body-size`).
    pub fn new(max_size: usize) -> ResponseDecoder {
        ResponseDecoder {
            // A bound of 4 GiB or more refuses no size a 32-bit field can
            // state, and neither does u32::MAX: the clamp is exact.
            max_size: u32::try_from(max_size).unwrap_or(u32::MAX),
        }
    }

    /// Decodes the next reply from `buf`, consuming its bytes; `Ok(None)`
    /// if more bytes are needed. A size over the limit is refused from the
    /// 4-byte header alone.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, CodecError> {
        let Some(header) = buf.get(..4) else {
            return Ok(None);
        };
        let size = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
        if size > self.max_size {
            return Err(CodecError::ReplyTooLarge {
                size,
                max: self.max_size,
            });
        }
        let size = field_len(size);
        if buf.len() - 4 < size {
            buf.reserve(4 + size - buf.len());
            return Ok(None);
        }
        buf.advance(4);
        Ok(Some(buf.split_to(size).freeze()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes everything in `input`, fed in one go and then byte by byte,
    /// and checks both give `expected` (requests, then the error if any).
    #[track_caller]
    fn check(input: &[u8], expected: &[Result<Request, &str>]) {
        for split in [false, true] {
            let mut decoder = RequestDecoder::new();
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            let chunks: Vec<&[u8]> = if split {
                input.chunks(1).collect()
            } else {
                vec![input]
            };
            'feed: for chunk in chunks {
                buf.extend_from_slice(chunk);
                loop {
                    match decoder.decode(&mut buf) {
                        Ok(Some(req)) => got.push(Ok(req)),
                        Ok(None) => break,
                        Err(e) => {
                            got.push(Err(e.to_string()));
                            break 'feed;
                        }
                    }
                }
            }
            let expected: Vec<Result<Request, String>> = expected
                .iter()
                .map(|r| r.clone().map_err(str::to_string))
                .collect();
            assert_eq!(got, expected, "split={split}");
        }
    }

    fn words(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn encoded(request: &Request) -> Vec<u8> {
        let mut out = BytesMut::new();
        request.encode(&mut out);
        out.to_vec()
    }

    #[test]
    fn requests_encode_as_nsqd_sends_them() {
        let cases: [(Request, &[u8]); 6] = [
            (Request::Ping, b"PING\n"),
            (Request::register("t", None), b"REGISTER t\n"),
            (
                Request::register("t", Some("c#ephemeral")),
                b"REGISTER t c#ephemeral\n",
            ),
            (Request::unregister("t", None), b"UNREGISTER t\n"),
            (Request::unregister("t", Some("c")), b"UNREGISTER t c\n"),
            (
                Request::Identify {
                    body: Bytes::from_static(b"{}"),
                },
                b"IDENTIFY\n\x00\x00\x00\x02{}",
            ),
        ];
        for (request, expected) in cases {
            assert_eq!(
                String::from_utf8_lossy(&encoded(&request)),
                String::from_utf8_lossy(expected)
            );
        }
    }

    #[test]
    fn commands() {
        check(b"PING\n", &[Ok(Request::Ping)]);
        check(b"PING\r\n", &[Ok(Request::Ping)]);
        check(
            b"REGISTER t c\nUNREGISTER t\n",
            &[
                Ok(Request::Register {
                    params: words(&["t", "c"]),
                }),
                Ok(Request::Unregister {
                    params: words(&["t"]),
                }),
            ],
        );
        check(b"REGISTER\n", &[Ok(Request::Register { params: vec![] })]);
        check(
            b"REGISTER  t\n",
            &[Ok(Request::Register {
                params: words(&["", "t"]),
            })],
        );
        check(b"PING", &[]);
    }

    #[test]
    fn identify_reads_its_body() {
        let mut input = b"IDENTIFY\n".to_vec();
        input.extend_from_slice(&2u32.to_be_bytes());
        input.extend_from_slice(b"{}PING\n");
        check(
            &input,
            &[
                Ok(Request::Identify {
                    body: Bytes::from_static(b"{}"),
                }),
                Ok(Request::Ping),
            ],
        );
    }

    #[test]
    fn errors() {
        check(b"NOPE x\n", &[Err("E_INVALID invalid command NOPE")]);
        check(b"\n", &[Err("E_INVALID invalid command ")]);
        check(
            b"PING\nping\n",
            &[Ok(Request::Ping), Err("E_INVALID invalid command ping")],
        );
        let mut negative = b"IDENTIFY\n".to_vec();
        negative.extend_from_slice(&(-1i32).to_be_bytes());
        check(
            &negative,
            &[Err("E_BAD_BODY IDENTIFY invalid body size -1")],
        );
        let mut huge = b"IDENTIFY\n".to_vec();
        huge.extend_from_slice(&(MAX_IDENTIFY_BODY as u32 + 1).to_be_bytes());
        check(
            &huge,
            &[Err("E_BAD_BODY IDENTIFY invalid body size 5242881")],
        );
        check(
            &[b'A'; MAX_LINE_LEN],
            &[Err("E_INVALID command line too long")],
        );
    }

    #[test]
    fn responses_are_length_prefixed_only() {
        let mut out = BytesMut::new();
        encode_response(b"OK", &mut out);
        encode_response(b"", &mut out);
        assert_eq!(&out[..], b"\x00\x00\x00\x02OK\x00\x00\x00\x00");
        let mut decoder = ResponseDecoder::new(2);
        assert_eq!(
            decoder.decode(&mut out),
            Ok(Some(Bytes::from_static(b"OK")))
        );
        assert_eq!(decoder.decode(&mut out), Ok(Some(Bytes::new())));
        assert_eq!(decoder.decode(&mut out), Ok(None));
    }

    #[test]
    fn an_oversized_reply_is_refused_from_its_header() {
        let mut buf = BytesMut::from(&b"\x00\x00\x00\x03"[..]);
        assert_eq!(
            ResponseDecoder::new(2).decode(&mut buf),
            Err(CodecError::ReplyTooLarge { size: 3, max: 2 })
        );
    }
}
