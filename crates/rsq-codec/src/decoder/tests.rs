//! Unit tests of the command decoder: one line per input, covering every
//! error code and description the decoder can produce.

use super::*;

const ID: &[u8; 16] = b"0123456789abcdef";

/// Small limits so that "too big" cases stay small.
fn limits() -> Limits {
    Limits {
        max_msg_size: 1024,
        max_body_size: 4096,
        max_rdy_count: 2500,
        max_req_timeout_ms: 3_600_000,
    }
}

/// Decodes `input` (no magic) fed whole and returns each result as text:
/// commands in Debug form, errors as their frame body.
fn run(input: &[u8]) -> Vec<String> {
    let mut dec = CommandDecoder::without_magic(limits());
    let mut buf = BytesMut::from(input);
    let mut out = Vec::new();
    loop {
        match dec.decode(&mut buf) {
            Ok(Some(cmd)) => out.push(format!("{cmd:?}")),
            Ok(None) => break,
            Err(e) => {
                out.push(e.to_string());
                if dec.is_failed() {
                    break;
                }
            }
        }
    }
    out
}

/// The first result for `input` must be the error `expected` (its frame body).
#[track_caller]
fn check_err(input: &[u8], expected: &str) {
    let out = run(input);
    assert_eq!(
        out.first().map(String::as_str),
        Some(expected),
        "input {input:?}"
    );
}

#[track_caller]
fn check_ok(input: &[u8], expected: Command) {
    assert_eq!(run(input), vec![format!("{expected:?}")], "input {input:?}");
}

fn sized(body: &[u8]) -> Vec<u8> {
    let mut v = (body.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(body);
    v
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

#[test]
fn invalid_commands() {
    check_err(b"FOO\n", "E_INVALID invalid command FOO");
    check_err(b"pub t\n", "E_INVALID invalid command pub");
    check_err(b"\n", "E_INVALID invalid command ");
    check_err(b"\r\n", "E_INVALID invalid command ");
    check_err(b" NOP\n", "E_INVALID invalid command ");
}

#[test]
fn parameter_counts() {
    check_err(
        b"SUB t\n",
        "E_INVALID SUB insufficient number of parameters",
    );
    check_err(b"SUB\n", "E_INVALID SUB insufficient number of parameters");
    check_err(b"PUB\n", "E_INVALID PUB insufficient number of parameters");
    check_err(
        b"MPUB\n",
        "E_INVALID MPUB insufficient number of parameters",
    );
    check_err(
        b"DPUB t\n",
        "E_INVALID DPUB insufficient number of parameters",
    );
    check_err(b"FIN\n", "E_INVALID FIN insufficient number of params");
    check_err(b"TOUCH\n", "E_INVALID TOUCH insufficient number of params");
    check_err(
        b"REQ 0123456789abcdef\n",
        "E_INVALID REQ insufficient number of params",
    );
    check_err(b"AUTH x\n", "E_INVALID AUTH invalid number of parameters");
    check_err(b"AUTH \n", "E_INVALID AUTH invalid number of parameters");
}

#[test]
fn names() {
    check_err(
        b"PUB x!\n",
        r#"E_BAD_TOPIC PUB topic name "x!" is not valid"#,
    );
    check_err(b"PUB  t\n", r#"E_BAD_TOPIC PUB topic name "" is not valid"#);
    check_err(
        b"DPUB x! 0\n",
        r#"E_BAD_TOPIC DPUB topic name "x!" is not valid"#,
    );
    check_err(
        b"MPUB x!\n",
        r#"E_BAD_TOPIC E_BAD_TOPIC MPUB topic name "x!" is not valid"#,
    );
    check_err(
        b"SUB x! c\n",
        r#"E_BAD_TOPIC SUB topic name "x!" is not valid"#,
    );
    check_err(
        b"SUB t c!\n",
        r#"E_BAD_CHANNEL SUB channel name "c!" is not valid"#,
    );
    check_err(
        b"SUB t \n",
        r#"E_BAD_CHANNEL SUB channel name "" is not valid"#,
    );
    check_err(
        b"PUB a\"b\n",
        r#"E_BAD_TOPIC PUB topic name "a\"b" is not valid"#,
    );
    check_err(
        b"PUB a\tb\xff\x01\n",
        r#"E_BAD_TOPIC PUB topic name "a\tb\xff\x01" is not valid"#,
    );
    check_err(
        "PUB tëst\n".as_bytes(),
        "E_BAD_TOPIC PUB topic name \"tëst\" is not valid",
    );
    let long = format!("PUB {}\n", "a".repeat(65));
    check_err(
        long.as_bytes(),
        &format!(
            "E_BAD_TOPIC PUB topic name \"{}\" is not valid",
            "a".repeat(65)
        ),
    );
}

#[test]
fn numbers() {
    check_err(b"RDY x\n", "E_INVALID RDY could not parse count x");
    check_err(b"RDY -1\n", "E_INVALID RDY could not parse count -1");
    check_err(
        b"RDY 3000\n",
        "E_INVALID RDY count 3000 out of range 0-2500",
    );
    check_err(
        b"RDY 18446744073709551615\n",
        "E_INVALID RDY count -1 out of range 0-2500",
    );
    check_err(
        b"REQ 0123456789abcdef x\n",
        "E_INVALID REQ could not parse timeout x",
    );
    check_err(
        b"REQ 0123456789abcdef -5\n",
        "E_INVALID REQ could not parse timeout -5",
    );
    check_err(b"DPUB t x\n", "E_INVALID DPUB could not parse timeout x");
    check_err(b"DPUB t -1\n", "E_INVALID DPUB could not parse timeout -1");
    check_err(
        b"DPUB t 3600001\n",
        "E_INVALID DPUB timeout 3600001 out of range 0-3600000",
    );
}

#[test]
fn message_ids() {
    check_err(b"FIN 0123\n", "E_INVALID invalid message ID");
    check_err(b"TOUCH 0123456789abcdef0\n", "E_INVALID invalid message ID");
    check_err(b"REQ 0123 10\n", "E_INVALID invalid message ID");
}

#[test]
fn pub_and_dpub_bodies() {
    check_err(
        b"PUB t\n\0\0\0\0",
        "E_BAD_MESSAGE PUB invalid message body size 0",
    );
    check_err(
        b"PUB t\n\xff\xff\xff\xff",
        "E_BAD_MESSAGE PUB invalid message body size -1",
    );
    check_err(
        b"PUB t\n\0\0\x07\xd0",
        "E_BAD_MESSAGE PUB message too big 2000 > 1024",
    );
    check_err(
        b"PUB t\n\x7f\xff\xff\xff",
        "E_BAD_MESSAGE PUB message too big 2147483647 > 1024",
    );
    check_err(
        b"DPUB t 5\n\0\0\0\0",
        "E_BAD_MESSAGE DPUB invalid message body size 0",
    );
    check_err(
        b"DPUB t 5\n\0\0\x07\xd0",
        "E_BAD_MESSAGE DPUB message too big 2000 > 1024",
    );
}

#[test]
fn identify_and_auth_bodies() {
    check_err(
        b"IDENTIFY\n\0\0\0\0",
        "E_BAD_BODY IDENTIFY invalid body size 0",
    );
    check_err(
        b"IDENTIFY\n\xff\xff\xff\xfe",
        "E_BAD_BODY IDENTIFY invalid body size -2",
    );
    check_err(
        b"IDENTIFY\n\0\0\x13\x88",
        "E_BAD_BODY IDENTIFY body too big 5000 > 4096",
    );
    check_err(b"AUTH\n\0\0\0\0", "E_BAD_BODY AUTH invalid body size 0");
    check_err(
        b"AUTH\n\0\0\x13\x88",
        "E_BAD_BODY AUTH body too big 5000 > 4096",
    );
}

#[test]
fn mpub_bodies() {
    check_err(b"MPUB t\n\0\0\0\0", "E_BAD_BODY MPUB invalid body size 0");
    check_err(
        b"MPUB t\n\x80\0\0\0",
        "E_BAD_BODY MPUB invalid body size -2147483648",
    );
    check_err(
        b"MPUB t\n\0\0\x13\x88",
        "E_BAD_BODY MPUB body too big 5000 > 4096",
    );
    check_err(
        b"MPUB t\n\0\0\0\x10\0\0\0\0",
        "E_BAD_BODY MPUB invalid message count 0",
    );
    check_err(
        b"MPUB t\n\0\0\0\x10\xff\xff\xff\xff",
        "E_BAD_BODY MPUB invalid message count -1",
    );
    // (4096 - 4) / 5 = 818 messages at most.
    check_err(
        b"MPUB t\n\0\0\0\x10\0\0\x03\x33",
        "E_BAD_BODY MPUB invalid message count 819",
    );
    check_err(
        b"MPUB t\n\0\0\0\x10\0\0\0\x02\0\0\0\x01a\0\0\0\0",
        "E_BAD_MESSAGE MPUB invalid message(1) body size 0",
    );
    check_err(
        b"MPUB t\n\0\0\x0f\xa0\0\0\0\x01\0\0\x07\xd0",
        "E_BAD_MESSAGE MPUB message too big 2000 > 1024",
    );
}

#[test]
fn mpub_body_size_must_match_its_messages() {
    // Declared 16 bytes, but the messages take 4 + (4 + 20).
    check_err(
        b"MPUB t\n\0\0\0\x10\0\0\0\x01\0\0\0\x14",
        "E_BAD_BODY MPUB body size 16 does not match its messages",
    );
    // Declared 20 bytes, but the messages take only 4 + (4 + 1).
    check_err(
        b"MPUB t\n\0\0\0\x14\0\0\0\x01\0\0\0\x01a",
        "E_BAD_BODY MPUB body size 20 does not match its messages",
    );
    check_err(
        b"MPUB t\n\0\0\0\x03\0\0\0\x01",
        "E_BAD_BODY MPUB body size 3 does not match its messages",
    );
}

#[test]
fn line_too_long() {
    let mut input = vec![b'a'; MAX_LINE_LEN];
    check_err(
        &input,
        "E_INVALID command line too long: no newline within 16384 bytes",
    );
    // A line of exactly the limit, newline included, is fine.
    input.truncate(MAX_LINE_LEN - 1);
    input.push(b'\n');
    assert_eq!(run(&input).len(), 1);
    assert!(run(&input)[0].starts_with("E_INVALID invalid command aaaa"));
}

#[test]
fn valid_commands() {
    check_ok(b"NOP\n", Command::Nop);
    check_ok(b"NOP\r\n", Command::Nop);
    check_ok(b"NOP extra\n", Command::Nop);
    check_ok(b"CLS\n", Command::Cls);
    check_ok(b"RDY\n", Command::Rdy(1));
    check_ok(b"RDY 0\n", Command::Rdy(0));
    check_ok(b"RDY \n", Command::Rdy(0));
    check_ok(b"RDY 2500\n", Command::Rdy(2500));
    check_ok(b"FIN 0123456789abcdef\n", Command::Fin(MessageId(*ID)));
    check_ok(
        b"TOUCH 0123456789abcdef\r\n",
        Command::Touch(MessageId(*ID)),
    );
    check_ok(
        b"REQ 0123456789abcdef 99999999999\n",
        Command::Req {
            id: MessageId(*ID),
            timeout_ms: 99_999_999_999,
        },
    );
    check_ok(
        b"SUB t c#ephemeral extra\n",
        Command::Sub {
            topic: "t".into(),
            channel: "c#ephemeral".into(),
        },
    );
    check_ok(
        &cat(&[b"PUB t\n", &sized(b"hello")]),
        Command::Pub {
            topic: "t".into(),
            body: Bytes::from_static(b"hello"),
        },
    );
    check_ok(
        &cat(&[b"DPUB t 3600000\n", &sized(b"x")]),
        Command::Dpub {
            topic: "t".into(),
            defer_ms: 3_600_000,
            body: Bytes::from_static(b"x"),
        },
    );
    check_ok(
        &cat(&[b"IDENTIFY\n", &sized(b"{}")]),
        Command::Identify(Bytes::from_static(b"{}")),
    );
    check_ok(
        &cat(&[b"AUTH\n", &sized(b"secret")]),
        Command::Auth(Bytes::from_static(b"secret")),
    );
    check_ok(
        b"MPUB t\n\0\0\0\x0f\0\0\0\x02\0\0\0\x01a\0\0\0\x02bc",
        Command::Mpub {
            topic: "t".into(),
            bodies: vec![Bytes::from_static(b"a"), Bytes::from_static(b"bc")],
        },
    );
}

#[test]
fn body_size_limits_are_inclusive() {
    let body = vec![b'x'; 1024];
    assert_eq!(run(&cat(&[b"PUB t\n", &sized(&body)])).len(), 1);
    assert!(!run(&cat(&[b"PUB t\n", &sized(&body)]))[0].starts_with('E'));
}

#[test]
fn errors_on_bodyless_lines_let_decoding_continue() {
    assert_eq!(
        run(b"FOO\nRDY x\nFIN 1\nNOP\n"),
        [
            "E_INVALID invalid command FOO",
            "E_INVALID RDY could not parse count x",
            "E_INVALID invalid message ID",
            "Nop",
        ]
    );
    // A bad PUB line loses the stream position: the decoder stops for good.
    let mut dec = CommandDecoder::without_magic(limits());
    let mut buf = BytesMut::from(&b"PUB x!\nNOP\n"[..]);
    let first = dec.decode(&mut buf);
    assert!(first.is_err());
    assert!(dec.is_failed());
    assert_eq!(dec.decode(&mut buf), first);
}

#[test]
fn current_verb_names_the_failing_command() {
    let mut dec = CommandDecoder::without_magic(limits());
    let mut buf = BytesMut::from(&b"FIN 1\nFOO\nPUB t\n\0\0\0\0"[..]);
    assert!(dec.decode(&mut buf).is_err());
    assert_eq!(dec.current_verb(), Some(Verb::Fin));
    assert!(dec.decode(&mut buf).is_err());
    assert_eq!(dec.current_verb(), None);
    assert!(dec.decode(&mut buf).is_err());
    assert_eq!(dec.current_verb(), Some(Verb::Pub));
}

#[test]
fn magic() {
    let mut dec = CommandDecoder::new(limits());
    let mut buf = BytesMut::from(&b"  V"[..]);
    assert_eq!(dec.decode(&mut buf), Ok(None));
    buf.extend_from_slice(b"2NOP\n");
    assert_eq!(dec.decode(&mut buf), Ok(Some(Command::Nop)));

    let mut dec = CommandDecoder::new(limits());
    let mut buf = BytesMut::from(&b"  V1PING\n"[..]);
    let err = dec.decode(&mut buf);
    assert_eq!(err, Err(ProtocolError::bad_protocol()));
    assert_eq!(ProtocolError::bad_protocol().to_string(), "E_BAD_PROTOCOL");
    assert!(dec.is_failed());
}

#[track_caller]
fn check_eof(input: &[u8], expected: Option<&str>) {
    let mut dec = CommandDecoder::without_magic(limits());
    let mut buf = BytesMut::from(input);
    assert_eq!(dec.decode(&mut buf), Ok(None), "input {input:?}");
    let got = dec.decode_eof(&mut buf).err().map(|e| e.to_string());
    assert_eq!(got.as_deref(), expected, "input {input:?}");
}

#[test]
fn eof_inside_a_command_gives_nsqds_read_errors() {
    check_eof(b"", None);
    check_eof(b"NOP", None);
    check_eof(
        b"PUB t\n",
        Some("E_BAD_MESSAGE PUB failed to read message body size"),
    );
    check_eof(
        b"PUB t\n\0\0",
        Some("E_BAD_MESSAGE PUB failed to read message body size"),
    );
    check_eof(
        b"PUB t\n\0\0\0\x05ab",
        Some("E_BAD_MESSAGE PUB failed to read message body"),
    );
    check_eof(
        b"DPUB t 1\n",
        Some("E_BAD_MESSAGE DPUB failed to read message body size"),
    );
    check_eof(
        b"DPUB t 1\n\0\0\0\x01",
        Some("E_BAD_MESSAGE DPUB failed to read message body"),
    );
    check_eof(
        b"IDENTIFY\n",
        Some("E_BAD_BODY IDENTIFY failed to read body size"),
    );
    check_eof(
        b"IDENTIFY\n\0\0\0\x02{",
        Some("E_BAD_BODY IDENTIFY failed to read body"),
    );
    check_eof(b"AUTH\n", Some("E_BAD_BODY AUTH failed to read body size"));
    check_eof(
        b"AUTH\n\0\0\0\x02s",
        Some("E_BAD_BODY AUTH failed to read body"),
    );
    check_eof(
        b"MPUB t\n",
        Some("E_BAD_BODY MPUB failed to read body size"),
    );
    check_eof(
        b"MPUB t\n\0\0\0\x0a",
        Some("E_BAD_BODY MPUB failed to read message count"),
    );
    check_eof(
        b"MPUB t\n\0\0\0\x0a\0\0\0\x01",
        Some("E_BAD_MESSAGE MPUB failed to read message(0) body size"),
    );
    check_eof(
        b"MPUB t\n\0\0\0\x0a\0\0\0\x01\0\0\0\x02a",
        Some("E_BAD_MESSAGE MPUB failed to read message body"),
    );
}

#[test]
fn base10_is_go_byte_to_base10() {
    assert_eq!(parse_base10(b""), Some(0));
    assert_eq!(parse_base10(b"0"), Some(0));
    assert_eq!(parse_base10(b"007"), Some(7));
    assert_eq!(parse_base10(b"18446744073709551615"), Some(u64::MAX));
    assert_eq!(parse_base10(b"18446744073709551616"), Some(0));
    assert_eq!(parse_base10(b"+1"), None);
    assert_eq!(parse_base10(b"1 "), None);
}

#[test]
fn go_quote_matches_percent_q() {
    assert_eq!(go_quote(b"abc"), r#""abc""#);
    assert_eq!(go_quote(b"a\\b"), r#""a\\b""#);
    assert_eq!(go_quote(b"\x00\x1b\x7f"), r#""\x00\x1b\x7f""#);
    assert_eq!(go_quote(b"\x07\x08\x0c\x0b"), r#""\a\b\f\v""#);
    assert_eq!(go_quote("é".as_bytes()), "\"é\"");
    assert_eq!(go_quote("\u{a0}".as_bytes()), r#""\u00a0""#);
    assert_eq!(go_quote(b"\xc3"), r#""\xc3""#);
}

#[test]
fn small_bodies_are_copied_large_ones_shared() {
    for (len, shared) in [(COPY_BODY_BELOW - 1, false), (COPY_BODY_BELOW, true)] {
        let mut dec = CommandDecoder::without_magic(limits());
        let mut buf = BytesMut::from(&cat(&[b"PUB t\n", &sized(&vec![b'x'; len])])[..]);
        let body_start = buf.as_ptr().wrapping_add(b"PUB t\n".len() + 4);
        let Ok(Some(Command::Pub { body, .. })) = dec.decode(&mut buf) else {
            panic!("expected PUB");
        };
        assert_eq!(body.len(), len);
        assert_eq!(body.as_ptr() == body_start, shared, "len {len}");
    }
}

#[test]
fn default_limits_are_nsqds() {
    let l = Limits::default();
    assert_eq!(l.max_msg_size, 1024 * 1024);
    assert_eq!(l.max_body_size, 5 * 1024 * 1024);
    assert_eq!(l.max_rdy_count, 2500);
    assert_eq!(l.max_req_timeout_ms, 60 * 60 * 1000);
}

/// Small PUB and MPUB bodies are slices of one shared chunk (one
/// allocation for many bodies); a DPUB body and a large body are not.
#[test]
fn small_pub_bodies_share_a_chunk_and_dpub_bodies_do_not() -> Result<(), ProtocolError> {
    let mut input = Vec::new();
    input.extend_from_slice(b"PUB t\n\x00\x00\x00\x03one");
    input.extend_from_slice(
        b"MPUB t\n\x00\x00\x00\x12\x00\x00\x00\x02\x00\x00\x00\x03two\x00\x00\x00\x03six",
    );
    input.extend_from_slice(b"DPUB t 10\n\x00\x00\x00\x03dpb");
    let mut dec = CommandDecoder::without_magic(limits());
    let mut buf = BytesMut::from(&input[..]);
    let mut bodies = Vec::new();
    while let Some(cmd) = dec.decode(&mut buf)? {
        match cmd {
            Command::Pub { body, .. } | Command::Dpub { body, .. } => bodies.push(body),
            Command::Mpub { bodies: b, .. } => bodies.extend(b),
            other => panic!("unexpected {other:?}"),
        }
    }
    let texts: Vec<&[u8]> = bodies.iter().map(|b| &b[..]).collect();
    assert_eq!(texts, [&b"one"[..], b"two", b"six", b"dpb"]);
    // Adjacent in one chunk.
    for pair in bodies[..3].windows(2) {
        assert_eq!(pair[0].as_ptr().wrapping_add(3), pair[1].as_ptr());
    }
    assert_ne!(bodies[2].as_ptr().wrapping_add(3), bodies[3].as_ptr());
    Ok(())
}
