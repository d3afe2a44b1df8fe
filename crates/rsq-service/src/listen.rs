//! Where a daemon listens: a TCP address or a unix socket path, as nsqd's
//! `--tcp-address`, `--http-address` and `--https-address` take them, and
//! the listeners, streams and peer addresses of either kind.
//!
//! nsqd tells the two apart by whether the text splits as `host:port`
//! (Go's `net.SplitHostPort`); [`ListenAddr`]'s parser does the same, with
//! one refinement: text holding a `/` is always a path, so
//! `/run/nsq:1/tcp.sock` is a socket, not a host named `/run/nsq`. A
//! relative path without a `/` that happens to end in `:digits` needs a
//! leading `./`.
//!
//! A unix listener owns its socket file ([`SocketFile`]): binding removes a
//! stale file left by a crashed daemon (a socket nothing accepts on), and
//! dropping the listener removes the file it made. A live socket, or a path
//! holding anything but a socket, is never removed.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::str::FromStr;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};

use crate::ServiceError;

/// An address to listen on.
///
/// Parsed as nsqd tells them apart:
///
/// ```
/// use rsq_service::ListenAddr;
///
/// let tcp: ListenAddr = "127.0.0.1:4150".parse().unwrap();
/// assert_eq!(tcp, ListenAddr::Tcp("127.0.0.1:4150".parse().unwrap()));
/// assert_eq!(tcp.port(), Some(4150));
/// let host: ListenAddr = "localhost:4151".parse().unwrap();
/// assert_eq!(host, ListenAddr::Host { host: "localhost".into(), port: 4151 });
/// let unix: ListenAddr = "/run/nsq:1/tcp.sock".parse().unwrap();
/// assert!(unix.is_unix() && unix.port().is_none());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ListenAddr {
    /// A TCP address given as `ip:port` (`[v6]:port` for IPv6).
    Tcp(SocketAddr),
    /// A TCP address given as `hostname:port`, resolved when bound (the
    /// first of its addresses that binds is used).
    Host {
        /// The host name, e.g. `localhost`.
        host: String,
        /// The port.
        port: u16,
    },
    /// A unix socket path.
    Unix(PathBuf),
}

impl ListenAddr {
    /// The TCP port, or `None` for a unix socket.
    pub fn port(&self) -> Option<u16> {
        match self {
            ListenAddr::Tcp(addr) => Some(addr.port()),
            ListenAddr::Host { port, .. } => Some(*port),
            ListenAddr::Unix(_) => None,
        }
    }

    /// Whether this is a unix socket path.
    pub fn is_unix(&self) -> bool {
        matches!(self, ListenAddr::Unix(_))
    }
}

impl From<SocketAddr> for ListenAddr {
    fn from(addr: SocketAddr) -> Self {
        ListenAddr::Tcp(addr)
    }
}

impl FromStr for ListenAddr {
    type Err = ServiceError;

    /// `ip:port`, `[v6]:port`, `:port` (every interface, as Go's `:4150`),
    /// `hostname:port`, or else a unix socket path.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = |reason| ServiceError::InvalidListenAddr {
            addr: s.to_string(),
            reason,
        };
        if s.is_empty() {
            return Err(invalid("empty"));
        }
        if let Ok(addr) = s.parse::<SocketAddr>() {
            return Ok(ListenAddr::Tcp(addr));
        }
        if s.contains('/') {
            return Ok(ListenAddr::Unix(PathBuf::from(s)));
        }
        let Some((host, port)) = s.rsplit_once(':') else {
            return Ok(ListenAddr::Unix(PathBuf::from(s)));
        };
        if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid("the port must be a number"));
        }
        let port: u16 = port.parse().map_err(|_| invalid("the port is too large"))?;
        if host.is_empty() {
            return Ok(ListenAddr::Tcp(SocketAddr::new(
                IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                port,
            )));
        }
        if host.contains(':') || host.starts_with('[') {
            return Err(invalid(
                "not a valid IPv6 address (write it as [addr]:port)",
            ));
        }
        Ok(ListenAddr::Host {
            host: host.to_string(),
            port,
        })
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Tcp(addr) => addr.fmt(f),
            ListenAddr::Host { host, port } => write!(f, "{host}:{port}"),
            ListenAddr::Unix(path) => path.display().fmt(f),
        }
    }
}

impl serde::Serialize for ListenAddr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for ListenAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A connected client's address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PeerAddr {
    /// A TCP peer.
    Tcp(SocketAddr),
    /// A unix socket peer. Clients connect from unnamed sockets, which Go
    /// (so nsqd's `/stats`) shows as `@`; this shows the same.
    Unix,
}

impl PeerAddr {
    /// The peer's IP address; `None` for a unix socket.
    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            PeerAddr::Tcp(addr) => Some(addr.ip()),
            PeerAddr::Unix => None,
        }
    }
}

impl fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerAddr::Tcp(addr) => addr.fmt(f),
            PeerAddr::Unix => f.write_str("@"),
        }
    }
}

impl From<SocketAddr> for PeerAddr {
    fn from(addr: SocketAddr) -> Self {
        PeerAddr::Tcp(addr)
    }
}

/// A socket file this process made; dropping it removes the file, unless
/// something else has replaced it since.
#[derive(Debug)]
pub struct SocketFile {
    path: PathBuf,
    /// Device and inode of the file made, so a file that replaced it is
    /// left alone.
    id: Option<(u64, u64)>,
}

impl SocketFile {
    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        let same = match std::fs::symlink_metadata(&self.path) {
            Ok(meta) => self.id == Some((meta.dev(), meta.ino())),
            Err(_) => false,
        };
        if same && let Err(e) = std::fs::remove_file(&self.path) {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot remove socket file");
        }
    }
}

/// A bound listener of either kind.
#[derive(Debug)]
pub enum Listener {
    /// A TCP listener.
    Tcp(TcpListener),
    /// A unix socket listener and the socket file it owns.
    Unix(UnixListener, SocketFile),
}

impl Listener {
    /// The address bound: the TCP address with the port taken, or the
    /// socket's path.
    pub fn local_addr(&self) -> io::Result<ListenAddr> {
        match self {
            Listener::Tcp(l) => l.local_addr().map(ListenAddr::Tcp),
            Listener::Unix(_, file) => Ok(ListenAddr::Unix(file.path.clone())),
        }
    }

    /// Accepts a connection.
    pub async fn accept(&self) -> io::Result<(Stream, PeerAddr)> {
        match self {
            Listener::Tcp(l) => {
                let (s, addr) = l.accept().await?;
                Ok((Stream::Tcp(s), PeerAddr::Tcp(addr)))
            }
            Listener::Unix(l, _) => {
                let (s, _) = l.accept().await?;
                Ok((Stream::Unix(s), PeerAddr::Unix))
            }
        }
    }
}

/// A connection of either kind; reads and writes go to the socket beneath.
#[derive(Debug)]
pub enum Stream {
    /// A TCP connection.
    Tcp(TcpStream),
    /// A unix socket connection.
    Unix(UnixStream),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Unix(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Tcp(s) => s.is_write_vectored(),
            Stream::Unix(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// An address [`crate::bind`] can bind: a [`SocketAddr`] gives a
/// [`TcpListener`], a [`ListenAddr`] a [`Listener`] of its kind.
pub trait Bindable: fmt::Display + Send {
    /// What binding gives.
    type Listener: Send;

    /// Binds, without announcing. `what` names the listener in errors.
    fn bind_as(
        self,
        what: &'static str,
    ) -> impl std::future::Future<Output = Result<(Self::Listener, String), ServiceError>> + Send;
}

impl Bindable for SocketAddr {
    type Listener = TcpListener;

    async fn bind_as(self, what: &'static str) -> Result<(TcpListener, String), ServiceError> {
        let listener = TcpListener::bind(self)
            .await
            .map_err(|source| bind_error(what, self, source))?;
        let bound = listener.local_addr().unwrap_or(self);
        Ok((listener, bound.to_string()))
    }
}

impl Bindable for ListenAddr {
    type Listener = Listener;

    async fn bind_as(self, what: &'static str) -> Result<(Listener, String), ServiceError> {
        let listener = match &self {
            ListenAddr::Tcp(addr) => TcpListener::bind(addr).await,
            ListenAddr::Host { host, port } => TcpListener::bind((host.as_str(), *port)).await,
            ListenAddr::Unix(path) => {
                let (listener, file) = bind_unix(path)
                    .await
                    .map_err(|source| bind_error(what, self.clone(), source))?;
                let shown = self.to_string();
                return Ok((Listener::Unix(listener, file), shown));
            }
        }
        .map_err(|source| bind_error(what, self.clone(), source))?;
        let shown = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| self.to_string());
        Ok((Listener::Tcp(listener), shown))
    }
}

fn bind_error(what: &'static str, addr: impl Into<ListenAddr>, source: io::Error) -> ServiceError {
    ServiceError::Bind {
        what,
        addr: addr.into(),
        source,
    }
}

/// How long a connect may take to tell a live socket from a stale one.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Binds a unix socket at `path`, replacing a stale socket file.
async fn bind_unix(path: &Path) -> io::Result<(UnixListener, SocketFile)> {
    let listener = match UnixListener::bind(path) {
        Ok(l) => l,
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
            let meta = std::fs::symlink_metadata(path)?;
            if !meta.file_type().is_socket() {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    "the path exists and is not a socket",
                ));
            }
            match tokio::time::timeout(PROBE_TIMEOUT, UnixStream::connect(path)).await {
                Err(_) | Ok(Ok(_)) => {
                    return Err(io::Error::new(
                        io::ErrorKind::AddrInUse,
                        "another process is listening on this socket",
                    ));
                }
                Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    tracing::info!(path = %path.display(), "removing stale socket file");
                    std::fs::remove_file(path)?;
                    UnixListener::bind(path)?
                }
                Ok(Err(e)) => return Err(e),
            }
        }
        Err(e) => return Err(e),
    };
    let id = std::fs::symlink_metadata(path)
        .ok()
        .map(|m| (m.dev(), m.ino()));
    Ok((
        listener,
        SocketFile {
            path: path.to_path_buf(),
            id,
        },
    ))
}

#[cfg(test)]
mod tests;
