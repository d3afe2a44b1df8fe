//! Starting and stopping a real `rsqd`, and two small clients: raw HTTP/1.1
//! and protocol V2 built on rsq-codec. Every wait here is bounded.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command as Process, Stdio};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rsq_codec::{Command, DEFAULT_MAX_FRAME_SIZE, Frame, FrameDecoder, MAGIC_V2, Message};

/// A small deterministic random generator (xorshift64) for tests, seeded
/// so a failure can be replayed.
pub fn rng(seed: u64) -> impl FnMut() -> u64 {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    }
}

/// Loopback, port chosen by the kernel when bound.
const ANY_PORT: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);

/// A running `rsqd` child process with its own data directory.
pub struct Daemon {
    child: Option<Child>,
    /// TCP address.
    pub tcp: SocketAddr,
    /// HTTP address.
    pub http: SocketAddr,
    /// HTTPS address, when TLS is configured.
    pub https: Option<SocketAddr>,
    data: PathBuf,
    _dir: Option<tempfile::TempDir>,
    extra: Vec<String>,
    env: Vec<(String, String)>,
}

impl Daemon {
    /// Starts a daemon with default options plus `extra` flags, on ports
    /// the kernel picks (so parallel tests never race for one).
    pub fn start(extra: &[&str]) -> Daemon {
        Daemon::start_in(tempfile::tempdir().expect("tempdir"), extra)
    }

    /// As [`Daemon::start`], with these environment variables set for it.
    pub fn start_with_env(extra: &[&str], env: &[(&str, &str)]) -> Daemon {
        Daemon::start_in_with_env(tempfile::tempdir().expect("tempdir"), extra, env)
    }

    /// As [`Daemon::start`], on the data directory `dir` (which may hold
    /// data already), kept until the daemon is dropped.
    pub fn start_in(dir: tempfile::TempDir, extra: &[&str]) -> Daemon {
        Daemon::start_in_with_env(dir, extra, &[])
    }

    fn start_in_with_env(dir: tempfile::TempDir, extra: &[&str], env: &[(&str, &str)]) -> Daemon {
        let data = dir.path().to_path_buf();
        let mut d = Daemon {
            child: None,
            tcp: ANY_PORT,
            http: ANY_PORT,
            https: None,
            data,
            _dir: Some(dir),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        d.spawn();
        d
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).expect("daemon running")
    }

    /// The data directory.
    pub fn data_path(&self) -> &Path {
        &self.data
    }

    /// Starts `rsqd` on the addresses held (port 0 the first time), learns
    /// the ports it bound from the lines it announces them in, and waits
    /// (bounded) until its HTTP server answers.
    fn spawn(&mut self) {
        let mut command = Process::new(env!("CARGO_BIN_EXE_rsqd"));
        command
            .arg(format!("--tcp-address={}", self.tcp))
            .arg(format!("--http-address={}", self.http))
            .arg(format!("--data-path={}", self.data.display()));
        if !self.extra.iter().any(|f| f.starts_with("--https-address")) {
            command.arg(format!(
                "--https-address={}",
                self.https.unwrap_or(ANY_PORT)
            ));
        }
        let log = std::env::var("RSQ_TEST_LOG").unwrap_or_else(|_| "warn".into());
        let mut child = command
            .args(&self.extra)
            .env(
                "RUST_LOG",
                format!("{log},{}=info", rsq_service::LISTEN_TARGET),
            )
            .env("NO_COLOR", "1")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn rsqd");
        let stderr = child.stderr.take().expect("stderr piped");
        let listeners = rsq_service::follow_announcements(stderr, |line| eprintln!("{line}"));
        self.child = Some(child);
        let tls = self.extra.iter().any(|f| f.starts_with("--tls-cert"));
        let deadline = Instant::now() + Duration::from_secs(20);
        let (mut tcp, mut http_bound, mut https) = (false, false, !tls);
        while !(tcp && http_bound && https) {
            let wait = deadline.saturating_duration_since(Instant::now());
            match listeners.recv_timeout(wait) {
                Ok((what, addr)) => match what.as_str() {
                    "TCP" => (self.tcp, tcp) = (addr, true),
                    "HTTP" => (self.http, http_bound) = (addr, true),
                    "HTTPS" => (self.https, https) = (Some(addr), true),
                    _ => {}
                },
                Err(_) => {
                    let status = self
                        .child
                        .as_mut()
                        .and_then(|c| c.try_wait().ok().flatten());
                    panic!("rsqd did not announce its listeners (exit status {status:?})");
                }
            }
        }
        // Bound is not yet serving: metadata loads first. Any HTTP answer
        // (403 too, under --tls-required) means the servers run.
        while http(self.http, "GET", "/ping", b"").is_err() {
            assert!(Instant::now() < deadline, "rsqd did not serve HTTP in time");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGTERM and waits (bounded) for a clean exit; returns its status code.
    pub fn terminate(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        terminate(&mut child)
    }

    /// Sends SIGTERM and returns at once (the daemon may go on running).
    pub fn signal_term(&self) {
        let pid = i32::try_from(self.pid()).expect("pid");
        // SAFETY: kill(2) with the pid of a child we spawned and have not
        // reaped (so it cannot have been reused), and a valid signal.
        #[allow(unsafe_code)]
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }

    /// Waits up to `limit` for the daemon to exit on its own (else kills it
    /// and fails); returns its status code.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let mut child = self.child.take().expect("daemon running");
        wait_exit(&mut child, limit)
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().expect("wait").is_none())
    }

    /// SIGKILL, no cleanup.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the daemon again on the ports it had and the same data directory.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop the daemon first");
        self.spawn();
    }

    /// A protocol V2 connection, magic sent.
    pub fn connect(&self) -> V2 {
        V2::connect(self.tcp)
    }

    /// An HTTP request; the body of the answer as text.
    pub fn http(&self, method: &str, path: &str, body: &[u8]) -> (u16, String) {
        http(self.http, method, path, body).expect("http request")
    }

    /// Checks that every publish path refuses, without closing anything:
    /// HTTP `/pub` and `/mpub` answer `status` with `{"message":"<reason>"}`,
    /// `/ping` answers 503 starting `ping`, and on one V2 connection PUB
    /// (twice), MPUB and DPUB get their `E_*_FAILED ... <reason>` error while
    /// the connection stays open and quiet.
    pub fn assert_publishes_refused(&self, status: u16, reason: &str, ping: &str) {
        let answer = format!(r#"{{"message":"{reason}"}}"#);
        for (path, body) in [("/pub?topic=t", &b"late"[..]), ("/mpub?topic=t", b"a\nb")] {
            let (got, body) = self.http("POST", path, body);
            assert_eq!((got, body.as_str()), (status, answer.as_str()), "{path}");
        }
        let (got, body) = self.http("GET", "/ping", b"");
        assert_eq!(got, 503, "/ping while refusing: {body}");
        assert!(body.starts_with(ping), "{body}");
        let mut p = self.connect();
        let publishes = [
            Command::Pub {
                topic: "t".into(),
                body: Bytes::from_static(b"late"),
            },
            Command::Pub {
                topic: "t".into(),
                body: Bytes::from_static(b"again"),
            },
            Command::Mpub {
                topic: "t".into(),
                bodies: vec![Bytes::from_static(b"a"), Bytes::from_static(b"b")],
            },
            Command::Dpub {
                topic: "t".into(),
                defer_ms: 100,
                body: Bytes::from_static(b"later"),
            },
        ];
        for (cmd, error) in publishes.into_iter().zip([
            "E_PUB_FAILED PUB",
            "E_PUB_FAILED PUB",
            "E_MPUB_FAILED MPUB",
            "E_DPUB_FAILED DPUB",
        ]) {
            p.send(cmd);
            let e = p.expect_error();
            assert!(e.starts_with(&format!("{error} failed {reason}")), "{e}");
        }
        p.send(Command::Nop);
        assert!(
            p.quiet_for(Duration::from_millis(100)),
            "connection still open and quiet"
        );
    }

    /// `/stats?format=json` parsed.
    pub fn stats(&self) -> serde_json::Value {
        let (status, body) = self.http("GET", "/stats?format=json", b"");
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).expect("stats json")
    }

    /// Polls `check` against fresh stats until it holds (bounded).
    pub fn wait_stats(&self, what: &str, check: impl Fn(&serde_json::Value) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let stats = self.stats();
            if check(&stats) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {stats:#}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Sends SIGTERM to `child` and waits (bounded) for it to exit; returns
/// its status code.
pub fn terminate(child: &mut Child) -> Option<i32> {
    let pid = i32::try_from(child.id()).expect("pid");
    // SAFETY: kill(2) with a pid we spawned and still own (not yet reaped,
    // so the pid cannot have been reused) and a valid signal.
    #[allow(unsafe_code)]
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
    wait_exit(child, Duration::from_secs(30))
}

/// Waits up to `limit` for `child` to exit (then kills it and fails);
/// returns its status code.
pub fn wait_exit(child: &mut Child, limit: Duration) -> Option<i32> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("rsqd did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `rsqd` with `args` for a command expected to exit on its own (a
/// refused start, `rsqd downgrade`), logging at `log` (a `RUST_LOG`
/// filter); waits (bounded) and returns its exit code, stdout and stderr.
pub fn run_to_exit(args: &[String], log: &str) -> (Option<i32>, String, String) {
    let mut child = Process::new(env!("CARGO_BIN_EXE_rsqd"))
        .args(args)
        .env("RUST_LOG", log)
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn rsqd");
    // Read both pipes while waiting, so a chatty child never blocks on a
    // full pipe.
    let read_all = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let stdout = read_all(Box::new(child.stdout.take().expect("stdout piped")));
    let stderr = read_all(Box::new(child.stderr.take().expect("stderr piped")));
    let code = wait_exit(&mut child, Duration::from_secs(60));
    let stdout = stdout.join().expect("stdout reader");
    let stderr = stderr.join().expect("stderr reader");
    (code, stdout, stderr)
}

/// The flags that start `rsqd` on `data` with every listener on a
/// kernel-chosen loopback port.
pub fn daemon_args(data: &Path) -> Vec<String> {
    vec![
        format!("--tcp-address={ANY_PORT}"),
        format!("--http-address={ANY_PORT}"),
        format!("--https-address={ANY_PORT}"),
        format!("--data-path={}", data.display()),
    ]
}

/// Finds a channel's stats in `/stats` JSON.
pub fn channel_stats<'a>(
    stats: &'a serde_json::Value,
    topic: &str,
    channel: &str,
) -> Option<&'a serde_json::Value> {
    stats["topics"]
        .as_array()?
        .iter()
        .find(|t| t["topic_name"] == topic)?["channels"]
        .as_array()?
        .iter()
        .find(|c| c["channel_name"] == channel)
}

/// A minimal HTTP/1.1 client: one request per connection.
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
) -> std::io::Result<(u16, String)> {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    http_over(s, &addr.to_string(), method, path, body)
}

/// [`http`] over a unix socket.
pub fn http_unix(
    socket: &Path,
    method: &str,
    path: &str,
    body: &[u8],
) -> std::io::Result<(u16, String)> {
    let s = UnixStream::connect(socket)?;
    http_over(s, "localhost", method, path, body)
}

/// One request on a fresh connection `s` to `host`.
fn http_over<S: Socket>(
    mut s: S,
    host: &str,
    method: &str,
    path: &str,
    body: &[u8],
) -> std::io::Result<(u16, String)> {
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad response {text:?}")))?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok((status, body))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// A blocking socket the test clients speak over: TCP or unix.
pub trait Socket: Read + Write {
    /// As the std sockets' `set_read_timeout`.
    fn set_read_timeout(&self, d: Option<Duration>) -> std::io::Result<()>;
}

impl Socket for TcpStream {
    fn set_read_timeout(&self, d: Option<Duration>) -> std::io::Result<()> {
        TcpStream::set_read_timeout(self, d)
    }
}

impl Socket for UnixStream {
    fn set_read_timeout(&self, d: Option<Duration>) -> std::io::Result<()> {
        UnixStream::set_read_timeout(self, d)
    }
}

/// A blocking protocol V2 client for tests, over TCP unless told.
pub struct V2<S: Socket = TcpStream> {
    stream: S,
    buf: BytesMut,
    frames: FrameDecoder,
    /// A frame `quiet_for` saw and kept for the next read.
    pending: Option<Frame>,
}

impl V2 {
    /// Connects and sends the magic.
    pub fn connect(addr: SocketAddr) -> V2 {
        V2::over(TcpStream::connect(addr).expect("connect"))
    }
}

impl V2<UnixStream> {
    /// Connects to a unix socket and sends the magic.
    pub fn connect_unix(path: &Path) -> V2<UnixStream> {
        V2::over(UnixStream::connect(path).expect("connect"))
    }
}

impl<S: Socket> V2<S> {
    /// Sends the magic on a connected `stream`.
    pub fn over(mut stream: S) -> V2<S> {
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        stream.write_all(MAGIC_V2).expect("magic");
        V2 {
            stream,
            buf: BytesMut::new(),
            frames: FrameDecoder::new(DEFAULT_MAX_FRAME_SIZE * 8),
            pending: None,
        }
    }

    /// Sends raw bytes.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
    }

    /// Sends a command.
    pub fn send(&mut self, cmd: Command) {
        let bytes = cmd.to_bytes();
        self.send_raw(&bytes);
    }

    /// The next frame; `None` when the server closed the connection.
    pub fn frame(&mut self) -> Option<Frame> {
        if let Some(frame) = self.pending.take() {
            return Some(frame);
        }
        loop {
            if let Some(frame) = self.frames.decode(&mut self.buf).expect("frame") {
                return Some(frame);
            }
            let mut chunk = [0u8; 64 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
                Err(e) => panic!("read: {e}"),
            }
        }
    }

    /// The socket, for tests that write raw bytes and handle failures.
    pub fn stream(&mut self) -> &mut S {
        &mut self.stream
    }

    /// Bytes read from the socket but not yet decoded: what followed the
    /// last frame, e.g. the first compressed bytes after IDENTIFY.
    pub fn unread(&self) -> &[u8] {
        &self.buf
    }

    /// The next frame, or `None` if the connection failed or closed.
    pub fn try_frame(&mut self) -> Option<Frame> {
        if let Some(frame) = self.pending.take() {
            return Some(frame);
        }
        loop {
            match self.frames.decode(&mut self.buf) {
                Ok(Some(frame)) => return Some(frame),
                Ok(None) => {}
                Err(_) => return None,
            }
            let mut chunk = [0u8; 64 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// The next frame that is not a heartbeat.
    pub fn frame_skip_heartbeats(&mut self) -> Option<Frame> {
        loop {
            match self.frame()? {
                Frame::Response(b) if &b[..] == b"_heartbeat_" => continue,
                other => return Some(other),
            }
        }
    }

    /// Expects a response frame with this body.
    #[track_caller]
    pub fn expect_response(&mut self, expected: &[u8]) {
        match self.frame_skip_heartbeats() {
            Some(Frame::Response(b)) => assert_eq!(
                String::from_utf8_lossy(&b),
                String::from_utf8_lossy(expected)
            ),
            other => panic!(
                "expected response {:?}, got {other:?}",
                String::from_utf8_lossy(expected)
            ),
        }
    }

    /// Expects `OK`.
    #[track_caller]
    pub fn expect_ok(&mut self) {
        self.expect_response(b"OK");
    }

    /// Expects an error frame; returns its text.
    #[track_caller]
    pub fn expect_error(&mut self) -> String {
        match self.frame_skip_heartbeats() {
            Some(Frame::Error(b)) => String::from_utf8_lossy(&b).into_owned(),
            other => panic!("expected error frame, got {other:?}"),
        }
    }

    /// Expects the server to close the connection.
    #[track_caller]
    pub fn expect_closed(&mut self) {
        match self.frame_skip_heartbeats() {
            None => {}
            Some(other) => panic!("expected close, got {other:?}"),
        }
    }

    /// Expects a message frame.
    #[track_caller]
    pub fn expect_message(&mut self) -> Message {
        match self.frame_skip_heartbeats() {
            Some(Frame::Message(m)) => m,
            other => panic!("expected message, got {other:?}"),
        }
    }

    /// True if nothing but heartbeats arrives within `d`.
    pub fn quiet_for(&mut self, d: Duration) -> bool {
        self.stream.set_read_timeout(Some(d)).expect("timeout");
        if self.pending.is_some() {
            return false;
        }
        let result = loop {
            if let Ok(Some(frame)) = self.frames.decode(&mut self.buf) {
                match frame {
                    Frame::Response(b) if &b[..] == b"_heartbeat_" => continue,
                    other => {
                        self.pending = Some(other);
                        break false;
                    }
                }
            }
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) => break false,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    break true;
                }
                Err(_) => break false,
            }
        };
        self.stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        result
    }

    /// IDENTIFY with a JSON body; expects the response.
    pub fn identify(&mut self, json: &str) -> Frame {
        self.send(Command::Identify(Bytes::copy_from_slice(json.as_bytes())));
        self.frame_skip_heartbeats().expect("identify response")
    }

    /// SUB and expect OK.
    pub fn subscribe(&mut self, topic: &str, channel: &str) {
        self.send(Command::Sub {
            topic: topic.into(),
            channel: channel.into(),
        });
        self.expect_ok();
    }

    /// PUB and expect OK.
    pub fn publish(&mut self, topic: &str, body: &[u8]) {
        self.send(Command::Pub {
            topic: topic.into(),
            body: Bytes::copy_from_slice(body),
        });
        self.expect_ok();
    }
}
