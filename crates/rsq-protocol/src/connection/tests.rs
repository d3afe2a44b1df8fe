//! The V2 state machine driven by property tests: well-formed command
//! streams against an independent model of nsqd's rules, and arbitrary
//! bytes (mixed with real commands, split anywhere) against the invariants
//! that must hold whatever a client sends.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use rsq_codec::{Command, ErrorCode, Frame, FrameDecoder, MessageId, ProtocolError};

use super::{Action, Connection, Failure, SettleError};
use crate::{ClientState, ProtocolConfig};

/// The daemon's settings as the tests vary them.
#[derive(Debug, Clone, Copy)]
enum Preset {
    Defaults,
    Auth,
    SmallLimits,
    ShortReq,
}

fn config(preset: Preset) -> Arc<ProtocolConfig> {
    let base = ProtocolConfig::default();
    Arc::new(match preset {
        Preset::Defaults => base,
        Preset::Auth => ProtocolConfig {
            auth_required: true,
            ..base
        },
        Preset::SmallLimits => ProtocolConfig {
            max_rdy_count: 10,
            max_msg_size: 16,
            max_body_size: 64,
            ..base
        },
        Preset::ShortReq => ProtocolConfig {
            max_req_timeout: Duration::from_secs(1),
            ..base
        },
    })
}

/// One client command, as the tests generate it.
#[derive(Debug, Clone)]
enum Op {
    Identify {
        negotiate: bool,
        heartbeat: i64,
    },
    Auth,
    Sub,
    Pub(usize),
    Mpub(usize),
    Dpub(u64),
    Rdy(u64),
    Fin(u64),
    Req(u64, u64),
    Touch(u64),
    Cls,
    Nop,
    /// Anything at all (only in the arbitrary-bytes property).
    Raw(Vec<u8>),
}

impl Op {
    fn command(&self) -> Option<Command> {
        let topic = || "t".to_string();
        let body = |n: usize| Bytes::from(vec![b'x'; n]);
        Some(match self {
            Op::Identify {
                negotiate,
                heartbeat,
            } => Command::Identify(Bytes::from(format!(
                r#"{{"feature_negotiation":{negotiate},"heartbeat_interval":{heartbeat}}}"#
            ))),
            Op::Auth => Command::Auth(Bytes::from_static(b"secret")),
            Op::Sub => Command::Sub {
                topic: topic(),
                channel: "c".to_string(),
            },
            Op::Pub(n) => Command::Pub {
                topic: topic(),
                body: body(*n),
            },
            Op::Mpub(n) => Command::Mpub {
                topic: topic(),
                bodies: (0..*n).map(|i| body(i + 1)).collect(),
            },
            Op::Dpub(ms) => Command::Dpub {
                topic: topic(),
                defer_ms: *ms,
                body: body(3),
            },
            Op::Rdy(n) => Command::Rdy(*n),
            Op::Fin(id) => Command::Fin(MessageId::from_u64(*id)),
            Op::Req(id, ms) => Command::Req {
                id: MessageId::from_u64(*id),
                timeout_ms: *ms,
            },
            Op::Touch(id) => Command::Touch(MessageId::from_u64(*id)),
            Op::Cls => Command::Cls,
            Op::Nop => Command::Nop,
            Op::Raw(_) => return None,
        })
    }

    fn bytes(&self) -> Vec<u8> {
        match (self, self.command()) {
            (Op::Raw(raw), _) => raw.clone(),
            (_, Some(cmd)) => cmd.to_bytes().to_vec(),
            (_, None) => Vec::new(),
        }
    }
}

fn valid_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => (any::<bool>(), prop_oneof![Just(0i64), Just(-1), Just(5000)])
            .prop_map(|(negotiate, heartbeat)| Op::Identify {
                negotiate,
                heartbeat
            }),
        1 => Just(Op::Auth),
        4 => Just(Op::Sub),
        4 => (1usize..64).prop_map(Op::Pub),
        1 => (1usize..8).prop_map(Op::Mpub),
        1 => (0u64..10_000).prop_map(Op::Dpub),
        4 => (0u64..=2500).prop_map(Op::Rdy),
        4 => (0u64..4).prop_map(Op::Fin),
        1 => (0u64..4, 0u64..=3_600_000).prop_map(|(id, ms)| Op::Req(id, ms)),
        1 => (0u64..4).prop_map(Op::Touch),
        1 => Just(Op::Cls),
        1 => Just(Op::Nop),
    ]
}

fn any_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => valid_op(),
        1 => proptest::collection::vec(any::<u8>(), 0..40).prop_map(Op::Raw),
        1 => proptest::sample::select(vec![
            &b"PUB bad!name\n"[..],
            b"PUB t\n\xff\xff\xff\xff",
            b"MPUB t\n\x00\x00\x00\x08\x00\x00\x00\x00",
            b"RDY -1\n",
            b"RDY 99999999999999999999\n",
            b"FIN 123\n",
            b"SUB t\n",
            b"SUB t c extra\n",
            b"IDENTIFY\n\x00\x00\x00\x02{]",
            b"IDENTIFY\n\x00\x00\x00\x1b{\"heartbeat_interval\":999}",
            b"PUB t\n\x00\x00",
            b"NOP",
            b"\n",
            b"CLS\r\n",
            b"\xc3\x28 t\n",
        ])
        .prop_map(|b| Op::Raw(b.to_vec())),
    ]
}

/// What the test saw, normalised for comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    Ok,
    CloseWait,
    Json,
    Error(ErrorCode),
    State(ClientState),
    Identified,
    Publish(usize, Option<Duration>),
    Subscribe,
    StartDelivery,
    Ready(u64),
    Finish(u64),
    Requeue(u64, Duration),
    Touch(u64),
    Other(String),
    Close,
}

fn frame(bytes: &Bytes) -> Seen {
    let mut buf = BytesMut::from(&bytes[..]);
    let frame = FrameDecoder::new(u32::MAX).decode(&mut buf);
    assert!(buf.is_empty(), "one action, one whole frame");
    match frame {
        Ok(Some(Frame::Response(data))) if &data[..] == b"OK" => Seen::Ok,
        Ok(Some(Frame::Response(data))) if &data[..] == b"CLOSE_WAIT" => Seen::CloseWait,
        Ok(Some(Frame::Response(data))) if data.starts_with(b"{") => Seen::Json,
        Ok(Some(Frame::Error(data))) => {
            let e = ProtocolError::from_frame_body(&data)
                .unwrap_or_else(|| panic!("malformed error frame {data:?}"));
            Seen::Error(e.code)
        }
        other => panic!("unexpected frame {other:?}"),
    }
}

fn id_of(id: &MessageId) -> u64 {
    id.to_u64().unwrap()
}

/// Feeds `chunks` to a connection, answering every request with the next
/// of `answers` (cycled; `true` = success), and checks the invariants that
/// hold whatever the input: one request at a time, nothing decoded while
/// one waits, every frame whole and well-formed, only FIN/REQ/TOUCH
/// failures non-fatal, nothing after `Close` (which follows a fatal error).
fn drive(opts: &Arc<ProtocolConfig>, chunks: &[Vec<u8>], answers: &[bool]) -> Vec<Seen> {
    let mut conn = Connection::new(opts.clone());
    let mut seen = Vec::new();
    let mut answers = answers.iter().copied().cycle();
    let now = Instant::now();
    for chunk in chunks {
        if conn.is_closed() {
            break;
        }
        conn.input().extend_from_slice(chunk);
        while let Some(action) = conn.poll_action(now) {
            assert!(seen.last() != Some(&Seen::Close), "action after Close");
            if let Action::Finish(ids) = &action {
                let mut failures = Vec::new();
                for id in ids {
                    seen.push(Seen::Finish(id_of(id)));
                    if !answers.next().unwrap_or(true) {
                        failures.push((*id, SettleError::NotInFlight));
                    }
                }
                conn.handle_finished(failures);
                continue;
            }
            let request = action.is_request();
            let s = match &action {
                Action::Send(bytes) => frame(bytes),
                Action::State(state) => Seen::State(*state),
                Action::Identified { .. } => Seen::Identified,
                Action::Publish { bodies, defer, .. } => {
                    assert!(bodies.iter().all(|b| !b.is_empty()));
                    Seen::Publish(bodies.len(), *defer)
                }
                Action::Subscribe { .. } => Seen::Subscribe,
                Action::StartDelivery => Seen::StartDelivery,
                Action::Ready(n) => {
                    assert!(*n <= opts.max_rdy_count);
                    Seen::Ready(*n)
                }
                Action::Requeue(id, delay) => {
                    assert!(*delay <= opts.max_req_timeout);
                    Seen::Requeue(id_of(id), *delay)
                }
                Action::Touch(id) => Seen::Touch(id_of(id)),
                Action::Close => Seen::Close,
                other => Seen::Other(format!("{other:?}")),
            };
            // A fatal error closes at once; a non-fatal one may still come
            // out after (a FIN batch's, decided before the fatal command).
            if let Seen::Error(code) = &s {
                assert!(!code.is_fatal() || conn.is_closed(), "a fatal error closes");
            }
            seen.push(s);
            if request {
                assert!(conn.poll_action(now).is_none(), "decoded past a request");
                let ok = answers.next().unwrap_or(true);
                answer(&mut conn, &action, ok, now);
            }
        }
    }
    if let Some(i) = seen.iter().position(|s| *s == Seen::Close) {
        assert_eq!(i + 1, seen.len(), "Close is last");
        assert!(matches!(seen[i - 1], Seen::Error(c) if c.is_fatal()));
    }
    fins_before_their_errors(seen)
}

/// Answers the request `action` with success or a failure of its kind
/// (AUTH always fails: the auth server is out of these tests).
fn answer(conn: &mut Connection, action: &Action, ok: bool, now: Instant) {
    let failure = || Failure::Failed("no".to_string());
    match action {
        Action::Authenticate { .. } => conn.handle_auth(Err("refused".to_string()), now),
        Action::Publish { .. } => conn.handle_published(if ok { Ok(()) } else { Err(failure()) }),
        Action::Subscribe { .. } => {
            conn.handle_subscribed(if ok { Ok(()) } else { Err(failure()) })
        }
        Action::Requeue(..) | Action::Touch(_) => conn.handle_settled(if ok {
            Ok(())
        } else {
            Err(SettleError::NotInFlight)
        }),
        Action::StartTls { .. } | Action::Compress { .. } => {
            conn.handle_upgraded(if ok { Ok(()) } else { Err(failure()) })
        }
        other => panic!("{other:?} is not a request"),
    }
}

/// FINs in a row are settled as one batch, whose `E_FIN_FAILED` frames
/// follow the batch: within each run of FINs and FIN errors, the FINs
/// (which put nothing on the wire) come first. What the client sees, the
/// frames in order, is the same either way.
fn fins_before_their_errors(seen: Vec<Seen>) -> Vec<Seen> {
    let mut out = Vec::with_capacity(seen.len());
    let mut errors = Vec::new();
    for s in seen {
        match s {
            Seen::Finish(_) => out.push(s),
            Seen::Error(ErrorCode::FinFailed) => errors.push(s),
            _ => {
                out.append(&mut errors);
                out.push(s);
            }
        }
    }
    out.append(&mut errors);
    out
}

/// An independent model of nsqd's rules for well-formed commands, with no
/// AUTH server and no TLS: what the client should see.
fn model(ops: &[Op], answers: &[bool]) -> Vec<Seen> {
    fins_before_their_errors(nsqd_rules(ops, answers))
}

fn nsqd_rules(ops: &[Op], answers: &[bool]) -> Vec<Seen> {
    let mut seen = Vec::new();
    let mut answers = answers.iter().copied().cycle();
    let mut state = ClientState::Init;
    let mut heartbeats = true;
    let fatal = |seen: &mut Vec<Seen>, code| {
        seen.push(Seen::Error(code));
        seen.push(Seen::Close);
    };
    for op in ops {
        let allowed = match op {
            Op::Identify { .. } | Op::Auth | Op::Sub => state == ClientState::Init,
            Op::Rdy(_) if state == ClientState::Closing => continue,
            Op::Rdy(_) | Op::Cls => state == ClientState::Subscribed,
            Op::Fin(_) | Op::Req(..) | Op::Touch(_) => state != ClientState::Init,
            _ => true,
        };
        if !allowed {
            fatal(&mut seen, ErrorCode::Invalid);
            return seen;
        }
        match op {
            Op::Identify {
                negotiate,
                heartbeat,
            } => {
                heartbeats = *heartbeat != -1;
                seen.push(Seen::Identified);
                seen.push(if *negotiate { Seen::Json } else { Seen::Ok });
            }
            Op::Auth => {
                fatal(&mut seen, ErrorCode::AuthDisabled);
                return seen;
            }
            Op::Sub if !heartbeats => {
                fatal(&mut seen, ErrorCode::Invalid);
                return seen;
            }
            Op::Sub => {
                seen.push(Seen::Subscribe);
                if !answers.next().unwrap_or(true) {
                    fatal(&mut seen, ErrorCode::SubFailed);
                    return seen;
                }
                state = ClientState::Subscribed;
                seen.extend([Seen::State(state), Seen::Ok, Seen::StartDelivery]);
            }
            Op::Pub(_) | Op::Mpub(_) | Op::Dpub(_) => {
                let (n, defer, code) = match op {
                    Op::Mpub(n) => (*n, None, ErrorCode::MpubFailed),
                    Op::Dpub(ms) => (1, Some(Duration::from_millis(*ms)), ErrorCode::DpubFailed),
                    _ => (1, None, ErrorCode::PubFailed),
                };
                seen.push(Seen::Publish(n, defer));
                if !answers.next().unwrap_or(true) {
                    fatal(&mut seen, code);
                    return seen;
                }
                seen.push(Seen::Ok);
            }
            Op::Rdy(n) => seen.push(Seen::Ready(*n)),
            Op::Fin(id) | Op::Req(id, _) | Op::Touch(id) => {
                let (s, code) = match op {
                    Op::Fin(_) => (Seen::Finish(*id), ErrorCode::FinFailed),
                    Op::Req(_, ms) => (
                        Seen::Requeue(*id, Duration::from_millis(*ms)),
                        ErrorCode::ReqFailed,
                    ),
                    _ => (Seen::Touch(*id), ErrorCode::TouchFailed),
                };
                seen.push(s);
                if !answers.next().unwrap_or(true) {
                    seen.push(Seen::Error(code));
                }
            }
            Op::Cls => {
                state = ClientState::Closing;
                seen.extend([Seen::Ready(0), Seen::State(state), Seen::CloseWait]);
            }
            Op::Nop | Op::Raw(_) => {}
        }
    }
    seen
}

/// The bytes a client sends for `ops`, after the protocol magic.
fn stream(ops: &[Op]) -> Vec<u8> {
    let mut bytes = rsq_codec::MAGIC_V2.to_vec();
    bytes.extend(ops.iter().flat_map(Op::bytes));
    bytes
}

/// Splits `bytes` at the given (arbitrary) cut points.
fn split(bytes: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    cuts.sort_unstable();
    let mut chunks = Vec::new();
    let mut start = 0;
    for cut in cuts {
        chunks.push(bytes[start..cut].to_vec());
        start = cut;
    }
    chunks.push(bytes[start..].to_vec());
    chunks
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// Well-formed commands, in any order, split anywhere, with the daemon
    /// failing requests at random: the client sees exactly what the model
    /// of nsqd's rules says.
    #[test]
    fn valid_commands_follow_nsqds_rules(
        ops in proptest::collection::vec(valid_op(), 0..40),
        answers in proptest::collection::vec(any::<bool>(), 1..8),
        cuts in proptest::collection::vec(any::<usize>(), 0..6),
    ) {
        let opts = config(Preset::Defaults);
        let bytes = stream(&ops);
        let seen = drive(&opts, &split(&bytes, &cuts), &answers);
        prop_assert_eq!(seen, model(&ops, &answers));
    }

    /// Anything at all, real commands mixed with garbage: no panic, the
    /// invariants in `drive` hold, and how the bytes are split does not
    /// change a single action.
    #[test]
    fn arbitrary_input_keeps_the_invariants(
        ops in proptest::collection::vec(any_op(), 0..30),
        answers in proptest::collection::vec(any::<bool>(), 1..8),
        cuts in proptest::collection::vec(any::<usize>(), 0..8),
        preset in proptest::sample::select(vec![
            Preset::Defaults,
            Preset::Auth,
            Preset::SmallLimits,
            Preset::ShortReq,
        ]),
    ) {
        let opts = config(preset);
        let bytes = stream(&ops);
        let whole = drive(&opts, std::slice::from_ref(&bytes), &answers);
        let pieces = drive(&opts, &split(&bytes, &cuts), &answers);
        prop_assert_eq!(whole, pieces);
    }
}

#[test]
fn auth_gates_publishing_and_refreshes_when_expired() {
    let mut conn = Connection::new(config(Preset::Auth));
    conn.input().extend_from_slice(rsq_codec::MAGIC_V2);
    let now = Instant::now();
    conn.input().extend_from_slice(
        &Command::Pub {
            topic: "t".into(),
            body: Bytes::from_static(b"x"),
        }
        .to_bytes(),
    );
    let sent = |a: Option<Action>| match a {
        Some(Action::Send(b)) => frame(&b),
        other => panic!("expected a frame, got {other:?}"),
    };
    assert_eq!(
        sent(conn.poll_action(now)),
        Seen::Error(ErrorCode::AuthFirst)
    );

    let mut conn = Connection::new(config(Preset::Auth));
    conn.input().extend_from_slice(rsq_codec::MAGIC_V2);
    conn.input()
        .extend_from_slice(&Command::Auth(Bytes::from_static(b"s")).to_bytes());
    assert!(
        matches!(conn.poll_action(now), Some(Action::Authenticate { secret, tls: false }) if secret == "s")
    );
    assert!(conn.poll_action(now).is_none());
    let grant = br#"{"ttl":1,"identity":"me","identity_url":"","authorizations":[{"permissions":["publish"],"topic":"t","channels":[".*"]}]}"#;
    let state = crate::AuthState::parse(grant, now).unwrap();
    conn.handle_auth(Ok(state), now);
    assert!(
        matches!(conn.poll_action(now), Some(Action::Authorized { identity, .. }) if identity == "me")
    );
    assert_eq!(sent(conn.poll_action(now)), Seen::Json);

    // An hour later the authorizations have expired: PUB asks again first.
    let later = now + Duration::from_secs(3600);
    conn.input().extend_from_slice(
        &Command::Pub {
            topic: "t".into(),
            body: Bytes::from_static(b"x"),
        }
        .to_bytes(),
    );
    assert!(matches!(
        conn.poll_action(later),
        Some(Action::Authenticate { .. })
    ));
    let state = crate::AuthState::parse(grant, later).unwrap();
    conn.handle_auth(Ok(state), later);
    assert!(matches!(
        conn.poll_action(later),
        Some(Action::Publish { .. })
    ));
    conn.handle_published(Ok(()));
    assert_eq!(sent(conn.poll_action(later)), Seen::Ok);

    // Not allowed on another topic.
    conn.input().extend_from_slice(
        &Command::Pub {
            topic: "zzz".into(),
            body: Bytes::from_static(b"x"),
        }
        .to_bytes(),
    );
    assert_eq!(
        sent(conn.poll_action(later)),
        Seen::Error(ErrorCode::Unauthorized)
    );
    assert!(matches!(conn.poll_action(later), Some(Action::Close)));
    assert!(conn.poll_action(later).is_none());
}

#[test]
fn identify_upgrades_hand_over_the_unread_bytes() {
    let mut conn = Connection::new(Arc::new(ProtocolConfig {
        snappy: true,
        tls_available: true,
        ..ProtocolConfig::default()
    }));
    conn.input().extend_from_slice(rsq_codec::MAGIC_V2);
    let now = Instant::now();
    let identify = Command::Identify(Bytes::from_static(
        br#"{"feature_negotiation":true,"tls_v1":true,"snappy":true}"#,
    ));
    conn.input().extend_from_slice(&identify.to_bytes());
    conn.input().extend_from_slice(b"\x16\x03\x01handshake");
    assert!(matches!(
        conn.poll_action(now),
        Some(Action::Identified { .. })
    ));
    assert!(matches!(conn.poll_action(now), Some(Action::Send(_))));
    match conn.poll_action(now) {
        Some(Action::StartTls { unread }) => assert_eq!(&unread[..], b"\x16\x03\x01handshake"),
        other => panic!("expected StartTls, got {other:?}"),
    }
    assert!(conn.poll_action(now).is_none());
    conn.handle_upgraded(Ok(()));
    assert!(matches!(conn.poll_action(now), Some(Action::Send(b)) if frame(&b) == Seen::Ok));
    assert!(matches!(
        conn.poll_action(now),
        Some(Action::Compress {
            kind: rsq_compress::Compression::Snappy,
            ..
        })
    ));
    conn.handle_upgraded(Ok(()));
    assert!(matches!(conn.poll_action(now), Some(Action::Send(b)) if frame(&b) == Seen::Ok));
    // A second upgrade is refused.
    conn.input().extend_from_slice(&identify.to_bytes());
    assert!(
        matches!(conn.poll_action(now), Some(Action::Send(b)) if frame(&b) == Seen::Error(ErrorCode::IdentifyFailed))
    );
}

#[test]
fn fins_in_one_read_are_one_batch_whose_errors_come_first() {
    let mut conn = Connection::new(config(Preset::Defaults));
    conn.input().extend_from_slice(&stream(&[Op::Sub]));
    let now = Instant::now();
    while let Some(action) = conn.poll_action(now) {
        if let Action::Subscribe { .. } = action {
            conn.handle_subscribed(Ok(()));
        }
    }
    let ops = [Op::Fin(1), Op::Fin(2), Op::Fin(3), Op::Pub(1), Op::Fin(4)];
    for op in &ops {
        conn.input().extend_from_slice(&op.bytes());
    }
    let ids = |ids: &[u64]| {
        ids.iter()
            .map(|&i| MessageId::from_u64(i))
            .collect::<Vec<_>>()
    };
    match conn.poll_action(now) {
        Some(Action::Finish(got)) => assert_eq!(got, ids(&[1, 2, 3])),
        other => panic!("expected one FIN batch, got {other:?}"),
    }
    conn.handle_finished(vec![(MessageId::from_u64(2), SettleError::NotInFlight)]);
    let next = conn.poll_action(now);
    let Some(Action::Send(error)) = next else {
        panic!("expected the FIN error first, got {next:?}");
    };
    assert_eq!(frame(&error), Seen::Error(ErrorCode::FinFailed));
    assert!(matches!(
        conn.poll_action(now),
        Some(Action::Publish { .. })
    ));
    assert!(conn.poll_action(now).is_none(), "PUB is a request");
    conn.handle_published(Ok(()));
    assert!(matches!(conn.poll_action(now), Some(Action::Send(_))));
    match conn.poll_action(now) {
        Some(Action::Finish(got)) => assert_eq!(got, ids(&[4])),
        other => panic!("expected the last FIN, got {other:?}"),
    }
}

#[test]
fn the_read_deadline_is_two_heartbeats_after_the_last_read() {
    let mut conn = Connection::new(config(Preset::Defaults));
    let t0 = Instant::now();
    assert_eq!(
        conn.poll_timeout(),
        None,
        "no deadline before the first read"
    );
    conn.handle_read(t0);
    let deadline = t0 + Duration::from_secs(60);
    assert_eq!(conn.poll_timeout(), Some(deadline));
    conn.handle_timeout(deadline - Duration::from_millis(1));
    assert!(!conn.is_closed());
    conn.handle_read(t0 + Duration::from_secs(10));
    assert_eq!(
        conn.poll_timeout(),
        Some(deadline + Duration::from_secs(10))
    );
    conn.handle_timeout(deadline + Duration::from_secs(10));
    assert!(conn.is_closed());
    assert!(matches!(conn.poll_action(t0), Some(Action::Close)));
    assert!(conn.poll_action(t0).is_none());
    assert_eq!(conn.poll_timeout(), None);

    // IDENTIFY can turn heartbeats, and so the deadline, off.
    let mut conn = Connection::new(config(Preset::Defaults));
    conn.handle_read(t0);
    conn.input().extend_from_slice(rsq_codec::MAGIC_V2);
    conn.input().extend_from_slice(
        &Command::Identify(Bytes::from_static(br#"{"heartbeat_interval": -1}"#)).to_bytes(),
    );
    while conn.poll_action(t0).is_some() {}
    assert_eq!(conn.poll_timeout(), None);
}

#[test]
fn a_refused_publish_leaves_the_connection_open_and_a_failed_one_closes_it() {
    let mut conn = Connection::new(config(Preset::Defaults));
    let now = Instant::now();
    let body = |conn: &mut Connection| {
        let Some(Action::Send(bytes)) = conn.poll_action(now) else {
            panic!("expected an error frame");
        };
        let mut buf = BytesMut::from(&bytes[..]);
        match FrameDecoder::new(u32::MAX).decode(&mut buf) {
            Ok(Some(Frame::Error(data))) => String::from_utf8_lossy(&data).into_owned(),
            other => panic!("expected an error frame, got {other:?}"),
        }
    };
    conn.input()
        .extend_from_slice(&stream(&[Op::Pub(1), Op::Mpub(2)]));
    assert!(matches!(
        conn.poll_action(now),
        Some(Action::Publish { .. })
    ));
    conn.handle_published(Err(Failure::Refused("DRAINING: no".to_string())));
    assert_eq!(body(&mut conn), "E_PUB_FAILED PUB failed DRAINING: no");
    assert!(!conn.is_closed());
    assert!(matches!(
        conn.poll_action(now),
        Some(Action::Publish { .. })
    ));
    conn.handle_published(Err(Failure::Failed("exiting".to_string())));
    assert_eq!(body(&mut conn), "E_MPUB_FAILED MPUB failed exiting");
    assert!(conn.is_closed());
    assert!(matches!(conn.poll_action(now), Some(Action::Close)));
}

#[test]
fn settle_errors_get_nsqds_texts_and_keep_the_connection() {
    let mut conn = Connection::new(config(Preset::Defaults));
    let now = Instant::now();
    conn.input()
        .extend_from_slice(&stream(&[Op::Sub, Op::Req(7, 0), Op::Touch(7)]));
    while let Some(action) = conn.poll_action(now) {
        match action {
            Action::Subscribe { .. } => conn.handle_subscribed(Ok(())),
            Action::Requeue(..) => conn.handle_settled(Err(SettleError::NotOwner)),
            Action::Touch(_) => conn.handle_settled(Err(SettleError::Exiting)),
            Action::Send(bytes) => {
                let mut buf = BytesMut::from(&bytes[..]);
                if let Ok(Some(Frame::Error(data))) = FrameDecoder::new(u32::MAX).decode(&mut buf) {
                    let text = String::from_utf8_lossy(&data).into_owned();
                    assert!(
                        text == "E_REQ_FAILED REQ 0000000000000007 failed client does not own message"
                            || text == "E_TOUCH_FAILED TOUCH 0000000000000007 failed exiting",
                        "{text}"
                    );
                }
            }
            _ => {}
        }
    }
    assert!(!conn.is_closed());
}
