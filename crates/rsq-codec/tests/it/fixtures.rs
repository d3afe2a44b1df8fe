//! Byte-exact fixtures: frames and commands exactly as NSQ's TCP protocol
//! spec lays them out, checked in both directions.

use bytes::{Bytes, BytesMut};
use rsq_codec::{
    CLOSE_WAIT, Command, CommandDecoder, Frame, FrameDecoder, HEARTBEAT, Limits, MAGIC_V2, Message,
    MessageId, OK, ProtocolError, encode_error, encode_message_frame, encode_response,
};

const ID: MessageId = MessageId(*b"0123456789abcdef");

/// `cmd` encodes to exactly `wire`, and `wire` decodes to exactly `cmd`.
#[track_caller]
fn check_command(cmd: Command, wire: &[u8]) {
    assert_eq!(&cmd.to_bytes()[..], wire, "encoding of {cmd:?}");
    let mut dec = CommandDecoder::without_magic(Limits::default());
    let mut buf = BytesMut::from(wire);
    assert_eq!(dec.decode(&mut buf), Ok(Some(cmd)));
    assert!(buf.is_empty());
}

/// `frame` encodes to exactly `wire`, and `wire` decodes to exactly `frame`.
#[track_caller]
fn check_frame(frame: Frame, wire: &[u8]) {
    let mut out = BytesMut::new();
    frame.encode(&mut out);
    assert_eq!(&out[..], wire, "encoding of {frame:?}");
    let mut buf = BytesMut::from(wire);
    assert_eq!(FrameDecoder::default().decode(&mut buf), Ok(Some(frame)));
    assert!(buf.is_empty());
}

#[test]
fn magic_is_two_spaces_v2() {
    assert_eq!(MAGIC_V2, &[0x20, 0x20, 0x56, 0x32]);
}

#[test]
fn response_frames() {
    check_frame(
        Frame::Response(Bytes::from_static(OK)),
        &[0x00, 0x00, 0x00, 0x06, 0x00, 0x00, 0x00, 0x00, 0x4f, 0x4b],
    );
    check_frame(
        Frame::Response(Bytes::from_static(HEARTBEAT)),
        b"\x00\x00\x00\x0f\x00\x00\x00\x00_heartbeat_",
    );
    check_frame(
        Frame::Response(Bytes::from_static(CLOSE_WAIT)),
        b"\x00\x00\x00\x0e\x00\x00\x00\x00CLOSE_WAIT",
    );
    let mut out = BytesMut::new();
    encode_response(OK, &mut out);
    assert_eq!(&out[..], b"\x00\x00\x00\x06\x00\x00\x00\x00OK");
}

#[test]
fn error_frames() {
    let wire = b"\x00\x00\x00\x21\x00\x00\x00\x01E_INVALID invalid command FOO";
    check_frame(Frame::Error(Bytes::from_static(&wire[8..])), wire);
    let mut out = BytesMut::new();
    encode_error(&ProtocolError::invalid("invalid command FOO"), &mut out);
    assert_eq!(&out[..], wire);

    // nsqd's reply to a bad magic is the bare code.
    let mut out = BytesMut::new();
    encode_error(&ProtocolError::bad_protocol(), &mut out);
    assert_eq!(&out[..], b"\x00\x00\x00\x12\x00\x00\x00\x01E_BAD_PROTOCOL");
}

#[test]
fn message_frame() {
    let msg = Message {
        id: ID,
        timestamp_ns: 0x1122_3344_5566_7788,
        attempts: 1,
        body: Bytes::from_static(b"hello"),
        deferred: None,
    };
    let wire: &[u8] = b"\x00\x00\x00\x23\x00\x00\x00\x02\
        \x11\x22\x33\x44\x55\x66\x77\x88\
        \x00\x01\
        0123456789abcdef\
        hello";
    // size = 4 (type) + 8 + 2 + 16 + 5 = 35 = 0x23
    let mut out = BytesMut::new();
    encode_message_frame(&msg, &mut out);
    assert_eq!(&out[..], wire);
    check_frame(Frame::Message(msg), wire);
}

#[test]
fn commands_without_bodies() {
    check_command(Command::Nop, b"NOP\n");
    check_command(Command::Cls, b"CLS\n");
    check_command(Command::Rdy(100), b"RDY 100\n");
    check_command(Command::Fin(ID), b"FIN 0123456789abcdef\n");
    check_command(Command::Touch(ID), b"TOUCH 0123456789abcdef\n");
    check_command(
        Command::Req {
            id: ID,
            timeout_ms: 5000,
        },
        b"REQ 0123456789abcdef 5000\n",
    );
    check_command(
        Command::Sub {
            topic: "test_topic".into(),
            channel: "ch#ephemeral".into(),
        },
        b"SUB test_topic ch#ephemeral\n",
    );
}

#[test]
fn pub_layout() {
    check_command(
        Command::Pub {
            topic: "events".into(),
            body: Bytes::from_static(b"hello"),
        },
        b"PUB events\n\x00\x00\x00\x05hello",
    );
}

#[test]
fn dpub_layout() {
    check_command(
        Command::Dpub {
            topic: "events".into(),
            defer_ms: 1500,
            body: Bytes::from_static(b"hi"),
        },
        b"DPUB events 1500\n\x00\x00\x00\x02hi",
    );
}

#[test]
fn mpub_layout() {
    // [4-byte body size][4-byte num messages]([4-byte size][body])*
    // body size = 4 + (4 + 3) + (4 + 2) = 17
    check_command(
        Command::Mpub {
            topic: "events".into(),
            bodies: vec![Bytes::from_static(b"abc"), Bytes::from_static(b"de")],
        },
        b"MPUB events\n\x00\x00\x00\x11\x00\x00\x00\x02\x00\x00\x00\x03abc\x00\x00\x00\x02de",
    );
}

#[test]
fn identify_and_auth_layout() {
    check_command(
        Command::Identify(Bytes::from_static(br#"{"client_id":"a"}"#)),
        b"IDENTIFY\n\x00\x00\x00\x11{\"client_id\":\"a\"}",
    );
    check_command(
        Command::Auth(Bytes::from_static(b"s3cret")),
        b"AUTH\n\x00\x00\x00\x06s3cret",
    );
}

#[test]
fn a_session_with_magic_decodes_in_order() {
    let mut wire = BytesMut::from(&MAGIC_V2[..]);
    let cmds = [
        Command::Identify(Bytes::from_static(b"{}")),
        Command::Sub {
            topic: "t".into(),
            channel: "c".into(),
        },
        Command::Rdy(1),
        Command::Fin(ID),
        Command::Cls,
    ];
    for c in &cmds {
        c.encode(&mut wire);
    }
    let mut dec = CommandDecoder::new(Limits::default());
    for c in cmds {
        assert_eq!(dec.decode(&mut wire), Ok(Some(c)));
    }
    assert_eq!(dec.decode(&mut wire), Ok(None));
    assert!(dec.is_idle());
}
