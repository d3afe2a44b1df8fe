//! The server-side protocol V2 parser: an incremental decoder that turns the
//! bytes a client sends into [`Command`]s or nsqd's exact protocol errors.
//!
//! It works like a tokio codec without depending on one: the caller appends
//! received bytes to a [`BytesMut`] and calls [`CommandDecoder::decode`],
//! which consumes complete items and returns `Ok(None)` when it needs more.
//! Every size is checked against [`Limits`] as soon as its 4-byte header
//! arrives, before any of the body is buffered, and a command line must end
//! within [`MAX_LINE_LEN`] bytes, so a client can make the decoder hold at
//! most one line or one already-accepted body.
//!
//! The checks run in the order nsqd runs them, and every error carries
//! nsqd's code and description. Errors on lines of body-less commands (SUB,
//! RDY, FIN, REQ, TOUCH, unknown words) consume the line and leave the
//! decoder ready for the next one; every other error leaves the stream
//! position unknown, so the decoder fails permanently and repeats the error.
//! All codec errors are fatal in nsqd anyway; the distinction exists so the
//! daemon can reproduce nsqd quirks such as silently ignoring any RDY line
//! after CLS. [`CommandDecoder::current_verb`] tells the daemon which command
//! an error belongs to, so it can apply its state checks (which nsqd runs
//! before parameter checks) first.

use bytes::{Buf, Bytes, BytesMut};

use crate::names::is_valid_name;
use crate::{Command, MAGIC_V2, MessageId, ProtocolError, Verb};

/// Longest command line, newline included, as nsqd's 16 KiB read buffer allows.
pub const MAX_LINE_LEN: usize = 16 * 1024;

/// Bodies shorter than this are copied out of the read buffer; longer ones
/// are split off without copying. A small body kept in a queue would
/// otherwise pin the whole read-buffer allocation it arrived in.
const COPY_BODY_BELOW: usize = 1024;

/// Size of the shared chunks small PUB and MPUB bodies are copied into.
/// Each body is a slice of its chunk, so one allocation serves a dozen or
/// more bodies, and cloning a body (the channel keeps one copy in flight,
/// the connection writes the other) only bumps a count: a body copied into
/// its own buffer allocated twice, once for the copy and once more for the
/// shared header its first clone needs, and with many publishers these
/// allocations contended on the allocator's lock. The cost: a message held
/// long keeps its whole chunk alive, so DPUB bodies, which are held by
/// design, get buffers of their own.
const BODY_CHUNK: usize = 4096;

/// Most MPUB body slots reserved up front, whatever count the client declares.
const MPUB_PREALLOC_MAX: usize = 1024;

// A body copied into the shared chunk always fits a fresh one, so
// `take_shared_body` never grows a chunk (which would move it and break the
// sharing).
const _: () = assert!(COPY_BODY_BELOW <= BODY_CHUNK);
// Names are at most 64 bytes: the longest valid line (DPUB or SUB with two
// names and a number) fits the line bound many times over.
const _: () = assert!(MAX_LINE_LEN > 2 * crate::MAX_NAME_LEN + 32);

/// The size limits nsqd enforces while parsing (its `--max-*` flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// `--max-msg-size`: largest PUB/DPUB/MPUB message body, in bytes.
    pub max_msg_size: u64,
    /// `--max-body-size`: largest MPUB, IDENTIFY or AUTH body, in bytes.
    pub max_body_size: u64,
    /// `--max-rdy-count`: largest RDY count.
    pub max_rdy_count: u64,
    /// `--max-req-timeout` in milliseconds: largest DPUB deferral.
    pub max_req_timeout_ms: u64,
}

/// nsqd's default `--max-msg-size`, 1 MiB.
pub(crate) const DEFAULT_MAX_MSG_SIZE: u64 = 1_048_576;

impl Default for Limits {
    /// nsqd's defaults: 1 MiB messages, 5 MiB bodies, RDY 2500, one hour.
    fn default() -> Self {
        Limits {
            max_msg_size: DEFAULT_MAX_MSG_SIZE,
            max_body_size: 5_242_880,
            max_rdy_count: 2500,
            max_req_timeout_ms: 3_600_000,
        }
    }
}

/// A command whose line is parsed and whose single body is still to come.
#[derive(Debug)]
enum Pending {
    Identify,
    Auth,
    Pub { topic: String },
    Dpub { topic: String, defer_ms: u64 },
}

impl Pending {
    fn verb(&self) -> Verb {
        match self {
            Pending::Identify => Verb::Identify,
            Pending::Auth => Verb::Auth,
            Pending::Pub { .. } => Verb::Pub,
            Pending::Dpub { .. } => Verb::Dpub,
        }
    }

    fn finish(self, body: Bytes) -> Command {
        match self {
            Pending::Identify => Command::Identify(body),
            Pending::Auth => Command::Auth(body),
            Pending::Pub { topic } => Command::Pub { topic, body },
            Pending::Dpub { topic, defer_ms } => Command::Dpub {
                topic,
                defer_ms,
                body,
            },
        }
    }
}

/// An MPUB whose header is accepted and whose messages are arriving.
#[derive(Debug)]
struct MpubProgress {
    topic: String,
    declared_len: i32,
    /// Bytes of the declared body not yet accounted for.
    remaining: usize,
    count: usize,
    bodies: Vec<Bytes>,
}

#[derive(Debug)]
enum State {
    Magic,
    Line { scanned: usize },
    BodySize(Pending),
    Body(Pending, usize),
    MpubBodySize { topic: String },
    MpubCount { topic: String, declared_len: i32 },
    MpubMsgSize(MpubProgress),
    MpubMsgBody(MpubProgress, usize),
    Failed(ProtocolError),
}

/// What one step of the state machine produced.
enum Step {
    Continue,
    NeedMore,
    Done(Command),
    /// An error after which the decoder can go on with the next line.
    Recoverable(ProtocolError),
    /// An error after which the stream position is lost.
    Fatal(ProtocolError),
}

/// Incremental server-side decoder for one connection.
///
/// A body's declared size is checked against [`Limits`] from its 4-byte
/// header, before any of the body is buffered:
///
/// ```
/// use bytes::BytesMut;
/// use rsq_codec::{Command, CommandDecoder, ErrorCode, Limits};
///
/// let limits = Limits { max_msg_size: 16, ..Limits::default() };
/// let mut decoder = CommandDecoder::without_magic(limits);
///
/// let mut buf = BytesMut::from(&b"RDY 10\nPUB orders\n"[..]);
/// buf.extend_from_slice(&1_000_000u32.to_be_bytes());
/// assert_eq!(decoder.decode(&mut buf).unwrap(), Some(Command::Rdy(10)));
///
/// let err = decoder.decode(&mut buf).unwrap_err();
/// assert_eq!(err.code, ErrorCode::BadMessage);
/// assert!(err.is_fatal());
/// ```
#[derive(Debug)]
pub struct CommandDecoder {
    limits: Limits,
    state: State,
    verb: Option<Verb>,
    /// The chunk small PUB and MPUB bodies are copied into ([`BODY_CHUNK`]).
    bodies: BytesMut,
}

impl CommandDecoder {
    /// A decoder for a fresh connection: expects the magic `"  V2"` first.
    pub fn new(limits: Limits) -> Self {
        CommandDecoder {
            limits,
            state: State::Magic,
            verb: None,
            bodies: BytesMut::new(),
        }
    }

    /// A decoder that starts at the first command line, for connections whose
    /// magic was consumed elsewhere, and for tests.
    pub fn without_magic(limits: Limits) -> Self {
        CommandDecoder {
            limits,
            state: State::Line { scanned: 0 },
            verb: None,
            bodies: BytesMut::new(),
        }
    }

    /// The limits this decoder enforces.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The verb of the command most recently started: the one being decoded,
    /// or the one just returned or rejected. `None` before the first line and
    /// after a line whose first word is not a command.
    pub fn current_verb(&self) -> Option<Verb> {
        self.verb
    }

    /// Whether an earlier error left the decoder unable to continue; every
    /// later call returns that error again.
    pub fn is_failed(&self) -> bool {
        matches!(self.state, State::Failed(_))
    }

    /// Whether the decoder is between commands (after the magic), so a closed
    /// connection loses nothing.
    pub fn is_idle(&self) -> bool {
        matches!(self.state, State::Line { .. })
    }

    /// Consumes the next complete command from the front of `buf`.
    ///
    /// Returns `Ok(None)` when `buf` holds no complete command; call again
    /// after appending more bytes (and nothing else: the decoder remembers how
    /// far it has searched for a newline).
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Command>, ProtocolError> {
        loop {
            match self.step(buf) {
                Step::Continue => continue,
                Step::NeedMore => return Ok(None),
                Step::Done(cmd) => return Ok(Some(cmd)),
                Step::Recoverable(err) => {
                    self.state = State::Line { scanned: 0 };
                    return Err(err);
                }
                Step::Fatal(err) => {
                    self.state = State::Failed(err.clone());
                    return Err(err);
                }
            }
        }
    }

    /// Like [`decode`](Self::decode), for when the client has closed its side:
    /// a command cut off inside its body gets the error nsqd reports for a
    /// failed read (e.g. `E_BAD_MESSAGE PUB failed to read message body`).
    /// A cut-off magic or line gives `Ok(None)`, as nsqd closes those silently.
    pub fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Command>, ProtocolError> {
        if let Some(cmd) = self.decode(buf)? {
            return Ok(Some(cmd));
        }
        let err = match &self.state {
            State::Magic | State::Line { .. } | State::Failed(_) => return Ok(None),
            State::BodySize(p) => match p.verb() {
                Verb::Identify | Verb::Auth => {
                    ProtocolError::bad_body(format!("{} failed to read body size", p.verb()))
                }
                v => ProtocolError::bad_message(format!("{v} failed to read message body size")),
            },
            State::Body(p, _) => match p.verb() {
                Verb::Identify | Verb::Auth => {
                    ProtocolError::bad_body(format!("{} failed to read body", p.verb()))
                }
                v => ProtocolError::bad_message(format!("{v} failed to read message body")),
            },
            State::MpubBodySize { .. } => ProtocolError::bad_body("MPUB failed to read body size"),
            State::MpubCount { .. } => ProtocolError::bad_body("MPUB failed to read message count"),
            State::MpubMsgSize(m) => ProtocolError::bad_message(format!(
                "MPUB failed to read message({}) body size",
                m.bodies.len()
            )),
            State::MpubMsgBody(..) => {
                ProtocolError::bad_message("MPUB failed to read message body")
            }
        };
        self.state = State::Failed(err.clone());
        Err(err)
    }

    /// One transition: takes the state, and either sets the next one or
    /// gives the decoder's answer. Each state has its function below.
    fn step(&mut self, buf: &mut BytesMut) -> Step {
        match std::mem::replace(&mut self.state, State::Line { scanned: 0 }) {
            State::Failed(err) => Step::Fatal(err),
            State::Magic => self.step_magic(buf),
            State::Line { scanned } => self.step_line(buf, scanned),
            State::BodySize(pending) => self.step_body_size(buf, pending),
            State::Body(pending, len) => self.step_body(buf, pending, len),
            State::MpubBodySize { topic } => self.step_mpub_body_size(buf, topic),
            State::MpubCount {
                topic,
                declared_len,
            } => self.step_mpub_count(buf, topic, declared_len),
            State::MpubMsgSize(m) => self.step_mpub_msg_size(buf, m),
            State::MpubMsgBody(m, len) => self.step_mpub_msg_body(buf, m, len),
        }
    }

    /// Puts `state` back and asks for more bytes.
    fn wait(&mut self, state: State) -> Step {
        self.state = state;
        Step::NeedMore
    }

    /// Moves on to `state`.
    fn then(&mut self, state: State) -> Step {
        self.state = state;
        Step::Continue
    }

    fn step_magic(&mut self, buf: &mut BytesMut) -> Step {
        if buf.len() < MAGIC_V2.len() {
            return self.wait(State::Magic);
        }
        if &buf[..MAGIC_V2.len()] != MAGIC_V2 {
            return Step::Fatal(ProtocolError::bad_protocol());
        }
        buf.advance(MAGIC_V2.len());
        Step::Continue
    }

    /// The size of a PUB, DPUB, IDENTIFY or AUTH body.
    fn step_body_size(&mut self, buf: &mut BytesMut, pending: Pending) -> Step {
        let Some(size) = take_i32(buf) else {
            return self.wait(State::BodySize(pending));
        };
        match self.check_body_size(&pending, size) {
            Ok(len) => self.then(State::Body(pending, len)),
            Err(err) => Step::Fatal(err),
        }
    }

    fn step_body(&mut self, buf: &mut BytesMut, pending: Pending, len: usize) -> Step {
        if buf.len() < len {
            return self.wait(State::Body(pending, len));
        }
        let body = match pending {
            Pending::Pub { .. } => take_shared_body(&mut self.bodies, buf, len),
            _ => take_body(buf, len),
        };
        Step::Done(pending.finish(body))
    }

    /// MPUB's whole body size, checked against `--max-body-size`.
    fn step_mpub_body_size(&mut self, buf: &mut BytesMut, topic: String) -> Step {
        let Some(size) = take_i32(buf) else {
            return self.wait(State::MpubBodySize { topic });
        };
        if size <= 0 {
            return Step::Fatal(ProtocolError::bad_body(format!(
                "MPUB invalid body size {size}"
            )));
        }
        if u64::from(size.unsigned_abs()) > self.limits.max_body_size {
            return Step::Fatal(ProtocolError::bad_body(format!(
                "MPUB body too big {size} > {}",
                self.limits.max_body_size
            )));
        }
        self.then(State::MpubCount {
            topic,
            declared_len: size,
        })
    }

    /// MPUB's message count, bounded by what the body size can hold.
    fn step_mpub_count(&mut self, buf: &mut BytesMut, topic: String, declared_len: i32) -> Step {
        let Some(count) = take_i32(buf) else {
            return self.wait(State::MpubCount {
                topic,
                declared_len,
            });
        };
        // Each message needs at least a 4-byte size and 1 byte of body.
        let max_count = self.limits.max_body_size.saturating_sub(4) / 5;
        if count <= 0 || u64::from(count.unsigned_abs()) > max_count {
            return Step::Fatal(ProtocolError::bad_body(format!(
                "MPUB invalid message count {count}"
            )));
        }
        let count = count.unsigned_abs() as usize;
        let Some(remaining) = (declared_len.unsigned_abs() as usize).checked_sub(4) else {
            return Step::Fatal(mpub_size_mismatch(declared_len));
        };
        self.then(State::MpubMsgSize(MpubProgress {
            topic,
            declared_len,
            remaining,
            count,
            bodies: Vec::with_capacity(count.min(MPUB_PREALLOC_MAX)),
        }))
    }

    /// The size of MPUB's next message, checked against `--max-msg-size`
    /// and against what is left of the declared body.
    fn step_mpub_msg_size(&mut self, buf: &mut BytesMut, mut m: MpubProgress) -> Step {
        let Some(size) = take_i32(buf) else {
            return self.wait(State::MpubMsgSize(m));
        };
        let index = m.bodies.len();
        if size <= 0 {
            return Step::Fatal(ProtocolError::bad_message(format!(
                "MPUB invalid message({index}) body size {size}"
            )));
        }
        if u64::from(size.unsigned_abs()) > self.limits.max_msg_size {
            return Step::Fatal(ProtocolError::bad_message(format!(
                "MPUB message too big {size} > {}",
                self.limits.max_msg_size
            )));
        }
        let len = size.unsigned_abs() as usize;
        // nsqd trusts the count and ignores the declared body size; rsq
        // holds messages to it, so one MPUB never buffers more than
        // --max-body-size however large the count.
        match m.remaining.checked_sub(4 + len) {
            Some(rest) => m.remaining = rest,
            None => return Step::Fatal(mpub_size_mismatch(m.declared_len)),
        }
        self.then(State::MpubMsgBody(m, len))
    }

    fn step_mpub_msg_body(&mut self, buf: &mut BytesMut, mut m: MpubProgress, len: usize) -> Step {
        if buf.len() < len {
            return self.wait(State::MpubMsgBody(m, len));
        }
        m.bodies.push(take_shared_body(&mut self.bodies, buf, len));
        if m.bodies.len() < m.count {
            return self.then(State::MpubMsgSize(m));
        }
        if m.remaining != 0 {
            return Step::Fatal(mpub_size_mismatch(m.declared_len));
        }
        Step::Done(Command::Mpub {
            topic: m.topic,
            bodies: m.bodies,
        })
    }

    fn step_line(&mut self, buf: &mut BytesMut, scanned: usize) -> Step {
        let window = buf.len().min(MAX_LINE_LEN);
        let newline = buf[scanned.min(window)..window]
            .iter()
            .position(|&b| b == b'\n')
            .map(|i| i + scanned.min(window));
        let Some(end) = newline else {
            if buf.len() >= MAX_LINE_LEN {
                self.verb = None;
                return Step::Fatal(ProtocolError::invalid(format!(
                    "command line too long: no newline within {MAX_LINE_LEN} bytes"
                )));
            }
            self.state = State::Line { scanned: window };
            return Step::NeedMore;
        };
        let raw = buf.split_to(end + 1);
        let mut line = &raw[..end];
        if let Some(stripped) = line.strip_suffix(b"\r") {
            line = stripped;
        }
        let params = Params::split(line);
        self.verb = Verb::from_wire(params.get(0));
        let Some(verb) = self.verb else {
            return Step::Recoverable(ProtocolError::invalid(format!(
                "invalid command {}",
                String::from_utf8_lossy(params.get(0))
            )));
        };
        match self.parse_line(verb, &params) {
            Ok(LineOutcome::Done(cmd)) => Step::Done(cmd),
            Ok(LineOutcome::Then(state)) => {
                self.state = state;
                Step::Continue
            }
            Err(err) if verb.has_body() => Step::Fatal(err),
            Err(err) => Step::Recoverable(err),
        }
    }

    /// The command a line starts, or the error nsqd gives for its
    /// parameters; verbs with more than a parameter count to check have a
    /// function each below.
    fn parse_line(&self, verb: Verb, params: &Params<'_>) -> Result<LineOutcome, ProtocolError> {
        let outcome = match verb {
            Verb::Identify => LineOutcome::Then(State::BodySize(Pending::Identify)),
            Verb::Auth => {
                if params.count != 1 {
                    return Err(ProtocolError::invalid("AUTH invalid number of parameters"));
                }
                LineOutcome::Then(State::BodySize(Pending::Auth))
            }
            Verb::Sub => LineOutcome::Done(parse_sub(params)?),
            Verb::Pub => {
                need_params(params, 2, "PUB insufficient number of parameters")?;
                let topic = topic_name(params.get(1), "PUB topic name")?;
                LineOutcome::Then(State::BodySize(Pending::Pub { topic }))
            }
            Verb::Mpub => {
                need_params(params, 2, "MPUB insufficient number of parameters")?;
                // nsqd repeats the code inside the MPUB description.
                let topic = topic_name(params.get(1), "E_BAD_TOPIC MPUB topic name")?;
                LineOutcome::Then(State::MpubBodySize { topic })
            }
            Verb::Dpub => LineOutcome::Then(State::BodySize(self.parse_dpub(params)?)),
            Verb::Rdy => LineOutcome::Done(Command::Rdy(self.parse_rdy(params)?)),
            Verb::Fin => {
                need_params(params, 2, "FIN insufficient number of params")?;
                LineOutcome::Done(Command::Fin(message_id(params.get(1))?))
            }
            Verb::Touch => {
                need_params(params, 2, "TOUCH insufficient number of params")?;
                LineOutcome::Done(Command::Touch(message_id(params.get(1))?))
            }
            Verb::Req => LineOutcome::Done(parse_req(params)?),
            Verb::Cls => LineOutcome::Done(Command::Cls),
            Verb::Nop => LineOutcome::Done(Command::Nop),
        };
        Ok(outcome)
    }

    /// `DPUB <topic> <defer_ms>`: the deferral within `--max-req-timeout`.
    fn parse_dpub(&self, params: &Params<'_>) -> Result<Pending, ProtocolError> {
        need_params(params, 3, "DPUB insufficient number of parameters")?;
        let topic = topic_name(params.get(1), "DPUB topic name")?;
        let raw = params.get(2);
        let defer_ms = parse_base10(raw).ok_or_else(|| {
            ProtocolError::invalid(format!(
                "DPUB could not parse timeout {}",
                String::from_utf8_lossy(raw)
            ))
        })?;
        let max = self.limits.max_req_timeout_ms;
        if defer_ms > max {
            return Err(ProtocolError::invalid(format!(
                "DPUB timeout {defer_ms} out of range 0-{max}"
            )));
        }
        Ok(Pending::Dpub { topic, defer_ms })
    }

    /// `RDY [<count>]`: a missing count is 1; at most `--max-rdy-count`.
    fn parse_rdy(&self, params: &Params<'_>) -> Result<u64, ProtocolError> {
        let count = if params.count > 1 {
            let raw = params.get(1);
            // nsqd converts the unsigned parse to int64, so counts past
            // i64::MAX come out negative; the cast keeps that text.
            parse_base10(raw).ok_or_else(|| {
                ProtocolError::invalid(format!(
                    "RDY could not parse count {}",
                    String::from_utf8_lossy(raw)
                ))
            })? as i64
        } else {
            1
        };
        let max = self.limits.max_rdy_count;
        if count < 0 || i128::from(count) > i128::from(max) {
            return Err(ProtocolError::invalid(format!(
                "RDY count {count} out of range 0-{max}"
            )));
        }
        Ok(count.unsigned_abs())
    }

    /// Validates a PUB/DPUB/IDENTIFY/AUTH size field, in nsqd's order.
    fn check_body_size(&self, pending: &Pending, size: i32) -> Result<usize, ProtocolError> {
        let verb = pending.verb();
        let limits = &self.limits;
        match pending {
            Pending::Identify | Pending::Auth => {
                if size > 0 && u64::from(size.unsigned_abs()) > limits.max_body_size {
                    return Err(ProtocolError::bad_body(format!(
                        "{verb} body too big {size} > {}",
                        limits.max_body_size
                    )));
                }
                if size <= 0 {
                    return Err(ProtocolError::bad_body(format!(
                        "{verb} invalid body size {size}"
                    )));
                }
            }
            Pending::Pub { .. } | Pending::Dpub { .. } => {
                if size <= 0 {
                    return Err(ProtocolError::bad_message(format!(
                        "{verb} invalid message body size {size}"
                    )));
                }
                if u64::from(size.unsigned_abs()) > limits.max_msg_size {
                    return Err(ProtocolError::bad_message(format!(
                        "{verb} message too big {size} > {}",
                        limits.max_msg_size
                    )));
                }
            }
        }
        Ok(size.unsigned_abs() as usize)
    }
}

enum LineOutcome {
    Done(Command),
    Then(State),
}

/// The space-separated words of a line: the first three, and how many there
/// are in all. nsqd splits on every single space, so `"PUB  t"` has an empty
/// second word; extra words are ignored.
struct Params<'a> {
    words: [&'a [u8]; 3],
    count: usize,
}

impl<'a> Params<'a> {
    fn split(line: &'a [u8]) -> Self {
        let mut words: [&[u8]; 3] = [&[]; 3];
        let mut count = 0;
        for word in line.split(|&b| b == b' ') {
            if let Some(slot) = words.get_mut(count) {
                *slot = word;
            }
            count += 1;
        }
        Params { words, count }
    }

    fn get(&self, i: usize) -> &'a [u8] {
        self.words.get(i).copied().unwrap_or(&[])
    }
}

/// `SUB <topic> <channel>`: both names valid.
fn parse_sub(params: &Params<'_>) -> Result<Command, ProtocolError> {
    need_params(params, 3, "SUB insufficient number of parameters")?;
    let topic = topic_name(params.get(1), "SUB topic name")?;
    let channel = params.get(2);
    let channel = match std::str::from_utf8(channel) {
        Ok(c) if is_valid_name(c) => c.to_owned(),
        _ => {
            return Err(ProtocolError::bad_channel(format!(
                "SUB channel name {} is not valid",
                go_quote(channel)
            )));
        }
    };
    Ok(Command::Sub { topic, channel })
}

/// `REQ <id> <timeout_ms>`: the timeout as sent (the daemon clamps it).
fn parse_req(params: &Params<'_>) -> Result<Command, ProtocolError> {
    need_params(params, 3, "REQ insufficient number of params")?;
    let id = message_id(params.get(1))?;
    let raw = params.get(2);
    let timeout_ms = parse_base10(raw).ok_or_else(|| {
        ProtocolError::invalid(format!(
            "REQ could not parse timeout {}",
            String::from_utf8_lossy(raw)
        ))
    })?;
    Ok(Command::Req { id, timeout_ms })
}

fn need_params(params: &Params<'_>, n: usize, desc: &'static str) -> Result<(), ProtocolError> {
    if params.count < n {
        return Err(ProtocolError::invalid(desc));
    }
    Ok(())
}

fn topic_name(raw: &[u8], what: &str) -> Result<String, ProtocolError> {
    match std::str::from_utf8(raw) {
        Ok(name) if is_valid_name(name) => Ok(name.to_owned()),
        _ => Err(ProtocolError::bad_topic(format!(
            "{what} {} is not valid",
            go_quote(raw)
        ))),
    }
}

fn message_id(raw: &[u8]) -> Result<MessageId, ProtocolError> {
    MessageId::from_slice(raw).ok_or_else(|| ProtocolError::invalid("invalid message ID"))
}

fn mpub_size_mismatch(declared_len: i32) -> ProtocolError {
    ProtocolError::bad_body(format!(
        "MPUB body size {declared_len} does not match its messages"
    ))
}

/// Reads a big-endian 32-bit size as nsqd does (signed, so sizes of 2 GiB and
/// more come out negative and fail the `<= 0` check).
fn take_i32(buf: &mut BytesMut) -> Option<i32> {
    if buf.len() < 4 {
        return None;
    }
    Some(buf.get_i32())
}

/// A body as [`take_body`] takes it, but a small one is copied into the
/// shared chunk `chunk` ([`BODY_CHUNK`]), starting a new chunk when it does
/// not fit.
fn take_shared_body(chunk: &mut BytesMut, buf: &mut BytesMut, len: usize) -> Bytes {
    if len >= COPY_BODY_BELOW {
        return take_body(buf, len);
    }
    if chunk.capacity() - chunk.len() < len {
        *chunk = BytesMut::with_capacity(BODY_CHUNK);
    }
    chunk.extend_from_slice(&buf[..len]);
    buf.advance(len);
    // Within capacity, so `extend_from_slice` never moved the chunk: every
    // body split off it shares one allocation.
    chunk.split().freeze()
}

fn take_body(buf: &mut BytesMut, len: usize) -> Bytes {
    if len < COPY_BODY_BELOW {
        let body = Bytes::copy_from_slice(&buf[..len]);
        buf.advance(len);
        body
    } else {
        buf.split_to(len).freeze()
    }
}

/// nsqd's `ByteToBase10`: digits only (no sign), an empty string is 0, and
/// overflow wraps silently.
fn parse_base10(raw: &[u8]) -> Option<u64> {
    raw.iter().try_fold(0u64, |n, &b| {
        b.is_ascii_digit()
            .then(|| n.wrapping_mul(10).wrapping_add(u64::from(b - b'0')))
    })
}

/// Quotes bytes the way Go's `%q` does for a string, so invalid names appear
/// in error texts exactly as nsqd prints them. Non-ASCII printability is
/// approximated by "not a control or space character".
fn go_quote(raw: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(raw.len() + 2);
    out.push('"');
    for chunk in raw.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\u{7}' => out.push_str("\\a"),
                '\u{8}' => out.push_str("\\b"),
                '\u{c}' => out.push_str("\\f"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '\u{b}' => out.push_str("\\v"),
                ' '..='~' => out.push(c),
                c if (c as u32) < 0x20 || c == '\u{7f}' => {
                    let _ = write!(out, "\\x{:02x}", c as u32);
                }
                c if !c.is_control() && !c.is_whitespace() => out.push(c),
                c if (c as u32) < 0x10000 => {
                    let _ = write!(out, "\\u{:04x}", c as u32);
                }
                c => {
                    let _ = write!(out, "\\U{:08x}", c as u32);
                }
            }
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests;
