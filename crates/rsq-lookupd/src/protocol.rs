//! The bytes of nsqlookupd's producer protocol V1, with no IO.
//!
//! A producer sends the magic `"  V1"`, then text lines `CMD params\n`;
//! IDENTIFY is followed by a 4-byte big-endian size and a JSON body.
//! Every reply, success or error, is `[4-byte big-endian size][data]` with
//! no frame type. [`RequestDecoder`] is incremental in the tokio-codec way:
//! callers append to a `BytesMut`, `Ok(None)` means "need more", and no
//! size is trusted before it is checked against a bound.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use rsq_codec::ProtocolError;

/// The magic a producer sends first.
pub const MAGIC_V1: &[u8; 4] = b"  V1";

/// Longest command line accepted, newline included. Names are at most 64
/// bytes, so real lines are far shorter.
pub const MAX_LINE_LEN: usize = 1024;

/// Largest IDENTIFY body accepted (nsqd's default `--max-body-size`).
pub const MAX_IDENTIFY_BODY: usize = 5 * 1024 * 1024;

/// One command from a producer.
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

/// Incremental decoder of producer requests (after the magic).
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

/// Appends one reply, `[4-byte size][data]`, to `out`.
pub fn encode_response(data: &[u8], out: &mut BytesMut) {
    // Replies are IDENTIFY's small JSON object, `OK` or an error line.
    let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
    out.reserve(4 + data.len());
    out.put_u32(len);
    out.put_slice(data);
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
    }
}
