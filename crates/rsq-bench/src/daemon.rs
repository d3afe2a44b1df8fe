//! The daemon under test: one started for a scenario (any binary taking
//! nsqd's flag names, rsqd or nsqd), or one already running elsewhere.
//!
//! A started daemon gets free loopback ports, its own temporary data
//! directory and the scenario's extra flags, and is killed when the
//! scenario ends, so scenarios never share backlogs and its `VmHWM` is the
//! scenario's peak. A running daemon is reached by address only; the HTTP
//! client here deletes each scenario's topics afterwards.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::BenchError;

/// Longest wait for a started daemon to answer `/ping`.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Longest wait for one HTTP request.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(30);

/// Which daemon the suite runs against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Start `binary` for every scenario with nsqd's flag names.
    Managed {
        /// Path to the daemon binary.
        binary: PathBuf,
        /// Flags added to every start.
        flags: Vec<String>,
    },
    /// A daemon already running; scenarios needing other flags are skipped.
    External {
        /// Its TCP (protocol V2) address.
        tcp: SocketAddr,
        /// Its HTTP address, used to delete topics after each scenario.
        http: Option<SocketAddr>,
        /// Its process id, to sample memory and CPU.
        pid: Option<u32>,
    },
}

/// A free loopback port: bound, then released for the daemon to take.
pub fn free_port() -> Result<u16, BenchError> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| BenchError::io("find a free port", e))
}

/// A daemon process started for one scenario; killed on drop.
pub struct ManagedDaemon {
    child: Child,
    /// Its TCP address.
    pub tcp: SocketAddr,
    /// Its HTTP address.
    pub http: SocketAddr,
    dir: tempfile::TempDir,
    binary: PathBuf,
    flags: Vec<String>,
}

impl ManagedDaemon {
    /// Starts `binary` on free loopback ports with a fresh data directory
    /// and `flags`, and waits (bounded) until it answers on both ports.
    pub fn start(binary: &Path, flags: &[String]) -> Result<ManagedDaemon, BenchError> {
        let dir = tempfile::Builder::new()
            .prefix("rsq-bench-")
            .tempdir()
            .map_err(|e| BenchError::io("create a temporary directory", e))?;
        std::fs::create_dir(dir.path().join("data"))
            .map_err(|e| BenchError::io("create data directory", e))?;
        let tcp = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let http = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let child = spawn(binary, flags, dir.path(), tcp, http)?;
        let mut daemon = ManagedDaemon {
            child,
            tcp,
            http,
            dir,
            binary: binary.to_path_buf(),
            flags: flags.to_vec(),
        };
        daemon.wait_ready(START_TIMEOUT)?;
        Ok(daemon)
    }

    /// Stops the daemon cleanly (SIGTERM, waiting at most `bound`) and
    /// starts it again on the same ports and data, waiting at most `bound`
    /// until it answers. Returns how long the shutdown and the start took.
    pub fn restart(&mut self, bound: Duration) -> Result<(Duration, Duration), BenchError> {
        let stopping = Instant::now();
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .map_err(|e| BenchError::io("run kill", e))?;
        if !status.success() {
            return Err(BenchError::Daemon(format!("kill -TERM failed: {status}")));
        }
        loop {
            if let Some(status) = self
                .child
                .try_wait()
                .map_err(|e| BenchError::io("wait for the daemon", e))?
            {
                if !status.success() {
                    return Err(BenchError::Daemon(format!(
                        "exited with {status} at SIGTERM: {}",
                        self.log_tail()
                    )));
                }
                break;
            }
            if stopping.elapsed() > bound {
                return Err(BenchError::Timeout(format!(
                    "the daemon to exit within {bound:?}"
                )));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let stopped = stopping.elapsed();
        let starting = Instant::now();
        self.child = spawn(
            &self.binary,
            &self.flags,
            self.dir.path(),
            self.tcp,
            self.http,
        )?;
        self.wait_ready(bound)?;
        Ok((stopped, starting.elapsed()))
    }

    fn wait_ready(&mut self, bound: Duration) -> Result<(), BenchError> {
        let deadline = Instant::now() + bound;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(BenchError::Daemon(format!(
                    "exited at start ({status}): {}",
                    self.log_tail()
                )));
            }
            let ping = http_request(self.http, "GET", "/ping", b"");
            if matches!(ping, Ok((200, _)))
                && TcpStream::connect_timeout(&self.tcp, Duration::from_secs(1)).is_ok()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(BenchError::Daemon(format!(
                    "not ready within {bound:?}: {}",
                    self.log_tail()
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The last lines the daemon logged, for error messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(5)..].join(" | ")
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the process (no clean shutdown: its data is thrown away) and
    /// removes its directory.
    pub fn stop(mut self) {
        self.kill();
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `binary` in `dir` (data in `dir/data`, log appended to
/// `dir/daemon.log`).
fn spawn(
    binary: &Path,
    flags: &[String],
    dir: &Path,
    tcp: SocketAddr,
    http: SocketAddr,
) -> Result<Child, BenchError> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("daemon.log"))
        .map_err(|e| BenchError::io("open daemon log", e))?;
    Command::new(binary)
        .arg(format!("--tcp-address={tcp}"))
        .arg(format!("--http-address={http}"))
        .arg(format!("--data-path={}", dir.join("data").display()))
        .arg("--log-level=warn")
        .args(flags)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| BenchError::io(format!("start {}", binary.display()), e))
}

impl Drop for ManagedDaemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One HTTP/1.1 request on its own connection; the status and body.
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
) -> Result<(u16, String), BenchError> {
    let context = format!("{method} http://{addr}{path}");
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|e| BenchError::io(&context, e))?;
    stream
        .set_read_timeout(Some(HTTP_TIMEOUT))
        .map_err(|e| BenchError::io(&context, e))?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream
        .write_all(head.as_bytes())
        .and_then(|()| stream.write_all(body))
        .map_err(|e| BenchError::io(&context, e))?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .map_err(|e| BenchError::io(&context, e))?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| BenchError::Daemon(format!("{context}: bad answer {text:?}")))?;
    let body = text
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_string());
    Ok((status, body))
}
