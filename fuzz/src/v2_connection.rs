//! Fuzz target: rsqd's protocol V2 connection state machines
//! (`rsq_protocol::Connection`, with its frames and settings carried into
//! the outbound `rsq_protocol::Output` as rsqd's writer does), which do no
//! IO, driven with arbitrary client bytes and a scripted daemon.
//!
//! Input layout: byte 0 picks the daemon's options (defaults, AUTH
//! enabled, small limits; bit 2: TLS available; bit 3: failed publishes
//! are refusals, as when draining), byte 1 scripts the daemon's
//! answers (bit i says whether the i-th request, cycling, succeeds), byte 2
//! seeds the split points, the rest is what a client sends after the
//! `"  V2"` magic.
//!
//! Checked: no panic; every frame the machine sends leaves the output at
//! once and is one whole response or error frame; only `E_FIN_FAILED`, `E_REQ_FAILED` and `E_TOUCH_FAILED`
//! (and a refused publish's error) leave the connection open, every other error is followed by `Close` and
//! nothing after it; while a request is unanswered nothing more comes out
//! (FINs are not requests: a run of them is one batch);
//! RDY never exceeds the limit and REQ never exceeds the largest timeout;
//! and how the stream is split never changes a single action.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rsq_codec::{ErrorCode, Frame, FrameDecoder, MAGIC_V2, ProtocolError};
use rsq_protocol::{Action, Connection, Failure, Output, ProtocolConfig, SettleError};

fn presets() -> &'static [ProtocolConfig; 4] {
    static PRESETS: OnceLock<[ProtocolConfig; 4]> = OnceLock::new();
    PRESETS.get_or_init(|| {
        let base = ProtocolConfig::default;
        [
            base(),
            ProtocolConfig {
                auth_required: true,
                ..base()
            },
            ProtocolConfig {
                max_rdy_count: 3,
                max_msg_size: 8,
                max_body_size: 32,
                max_req_timeout: Duration::from_secs(1),
                ..base()
            },
            ProtocolConfig {
                max_heartbeat_interval: Duration::from_secs(2),
                max_output_buffer_size: 100,
                ..base()
            },
        ]
    })
}

/// Runs the machine over `chunks` and returns what it did, as text.
fn drive(
    opts: &ProtocolConfig,
    (tls, refuse): (bool, bool),
    answers: u8,
    chunks: &[&[u8]],
) -> Vec<String> {
    let mut conn = Connection::new(Arc::new(ProtocolConfig {
        tls_available: tls,
        ..opts.clone()
    }));
    conn.input().extend_from_slice(MAGIC_V2);
    let now = Instant::now();
    let mut output = Output::new(conn.settings().clone(), u64::from(answers), now);
    let mut out = BytesMut::new();
    let mut seen = Vec::new();
    let mut closed = false;
    let mut request = 0u32;
    // After a TLS or compression upgrade the bytes belong to the transport
    // (the driver decrypts or decompresses them first), so they are
    // collected, not decoded: a split must not change them either.
    let mut transport: Option<Vec<u8>> = None;
    for chunk in chunks {
        if let Some(bytes) = transport.as_mut() {
            bytes.extend_from_slice(chunk);
            continue;
        }
        conn.input().extend_from_slice(chunk);
        while let Some(action) = conn.poll_action(now) {
            assert!(!closed, "action after Close: {action:?}");
            match &action {
                Action::Send(bytes) => {
                    output.handle_frame(bytes, &mut out);
                    assert!(output.poll_transmit(&mut out), "a response held");
                    let mut buf = out.split();
                    match FrameDecoder::new(u32::MAX).decode(&mut buf) {
                        Ok(Some(Frame::Error(body))) => {
                            let e =
                                ProtocolError::from_frame_body(&body).expect("well-formed error");
                            // Fatal closes at once; a FIN batch's errors
                            // may still follow a fatal command's decision.
                            let refused = refuse
                                && matches!(
                                    e.code,
                                    ErrorCode::PubFailed
                                        | ErrorCode::MpubFailed
                                        | ErrorCode::DpubFailed
                                );
                            assert!(!e.is_fatal() || conn.is_closed() || refused, "{e}");
                        }
                        Ok(Some(Frame::Response(_))) => {}
                        other => panic!("bad frame {other:?}"),
                    }
                    assert!(buf.is_empty(), "one action, one frame");
                }
                Action::Finish(ids) => {
                    // Not a request: one scripted answer per FIN.
                    let mut failures = Vec::new();
                    for id in ids {
                        seen.push(format!("Finish({id})"));
                        if answers >> (request % 8) & 1 == 0 {
                            failures.push((*id, settle_error(request)));
                        }
                        request += 1;
                    }
                    conn.handle_finished(failures);
                    continue;
                }
                Action::Identified { settings, .. } => {
                    output.handle_settings(settings.clone(), now);
                }
                Action::Ready(n) => assert!(*n <= opts.max_rdy_count),
                Action::Requeue(_, delay) => assert!(*delay <= opts.max_req_timeout),
                Action::Close => closed = true,
                Action::StartTls { unread } | Action::Compress { unread, .. } => {
                    transport
                        .get_or_insert_with(Vec::new)
                        .extend_from_slice(unread);
                }
                _ => {}
            }
            let is_request = action.is_request();
            seen.push(match &action {
                Action::StartTls { .. } => "StartTls".to_string(),
                Action::Compress { kind, .. } => format!("Compress({kind:?})"),
                other => format!("{other:?}"),
            });
            if is_request {
                assert!(conn.poll_action(now).is_none(), "decoded past a request");
                let ok = answers >> (request % 8) & 1 == 1;
                request += 1;
                answer(
                    &mut conn,
                    &action,
                    ok.then_some(()).ok_or(request),
                    refuse,
                    now,
                );
            }
        }
        if closed {
            break;
        }
    }
    if let Some(bytes) = transport.filter(|_| !closed) {
        seen.push(format!("transport bytes {bytes:?}"));
    }
    fins_before_their_errors(seen)
}

/// A settle failure of some kind, picked by the request's number.
fn settle_error(request: u32) -> SettleError {
    match request % 4 {
        0 => SettleError::NotInFlight,
        1 => SettleError::NotOwner,
        2 => SettleError::Exiting,
        _ => SettleError::NotSubscribed,
    }
}

/// Answers the request `action`: `Ok`, or the `n`-th failure, a refusal
/// for publishes when `refuse` (AUTH always fails: no auth server here).
fn answer(
    conn: &mut Connection,
    action: &Action,
    result: Result<(), u32>,
    refuse: bool,
    now: Instant,
) {
    let failure = |_| match refuse {
        true => Failure::Refused("DRAINING".to_string()),
        false => Failure::Failed("no".to_string()),
    };
    match action {
        Action::Authenticate { .. } => conn.handle_auth(Err("refused".into()), now),
        Action::Publish { .. } => conn.handle_published(result.map_err(failure)),
        Action::Subscribe { .. } => conn.handle_subscribed(result.map_err(failure)),
        Action::Requeue(..) | Action::Touch(_) => conn.handle_settled(result.map_err(settle_error)),
        Action::StartTls { .. } | Action::Compress { .. } => {
            conn.handle_upgraded(result.map_err(|_| Failure::Failed("no".to_string())))
        }
        other => panic!("{other:?} is not a request"),
    }
}

/// FINs in a row are settled as one batch whose `E_FIN_FAILED` frames
/// follow it, so where a split falls moves them among the FINs (which put
/// nothing on the wire): within each run, FINs first.
fn fins_before_their_errors(seen: Vec<String>) -> Vec<String> {
    let mut out = Vec::with_capacity(seen.len());
    let mut errors = Vec::new();
    for s in seen {
        if s.starts_with("Finish(") {
            out.push(s);
        } else if s.contains("E_FIN_FAILED") {
            errors.push(s);
        } else {
            out.append(&mut errors);
            out.push(s);
        }
    }
    out.append(&mut errors);
    out
}

/// Runs the target on one input; panics on a finding.
pub fn run(data: &[u8]) {
    let [preset, answers, seed, stream @ ..] = data else {
        return;
    };
    let opts = &presets()[usize::from(preset & 3)];
    let modes = (preset & 4 != 0, preset & 8 != 0);
    let whole = drive(opts, modes, *answers, &[stream]);
    if *seed != 0 {
        let mut chunks = Vec::new();
        let mut rest = stream;
        let mut state = u32::from(*seed);
        while !rest.is_empty() {
            state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            let n = (1 + (state >> 16) as usize % 32).min(rest.len());
            chunks.push(&rest[..n]);
            rest = &rest[n..];
        }
        assert_eq!(
            whole,
            drive(opts, modes, *answers, &chunks),
            "splitting changed the actions"
        );
    }
}
