//! The layered byte stream of one connection, and its upgrade after IDENTIFY.
//!
//! Layers, bottom up: the socket (TCP or unix); TLS (rustls) when the client asked
//! `tls_v1`; snappy or deflate when it asked for compression. The reader
//! task owns a [`Source`] and the writer task a [`Sink`], each holding one
//! half of the transport (the socket's halves, or TLS halves after the
//! upgrade) plus its side of the compression ([`Decompressor`] or
//! [`Compressor`], sans-IO, applied to whole buffers).
//!
//! The upgrade happens at an exact point of the byte stream, and TLS needs
//! the socket whole, so the reader (which decoded IDENTIFY) drives it:
//! 1. the session queues the IDENTIFY answer, then asks the writer for its
//!    half with `Outbound::Handoff`; the writer writes and flushes what it
//!    has (the answer goes out plain), hands its [`WriteHalf`] over and waits;
//! 2. the reader reunites the halves into the socket, and gives any
//!    bytes it had already read past IDENTIFY back to the stream below TLS
//!    ([`Rewind`]) — a client that waits for the answer, as nsqd's do, leaves
//!    none;
//! 3. it runs the TLS handshake (5 s limit, as nsqd), splits the TLS stream,
//!    keeps the read half and sends the write half back to the writer, then
//!    queues `OK`, which the writer sends inside TLS;
//! 4. compression: the reader moves its unread bytes into its
//!    [`Decompressor`]'s input, tells the writer `Outbound::Compress`, and
//!    queues `OK`, which leaves compressed.
//!
//! A connection upgrades at most once; a failed handshake closes it.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use rsq_service::Stream;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{tcp, unix};

use super::tls::TlsInfo;
use rsq_compress::{Compression, Compressor, Decompressor};

/// nsqd's TLS handshake deadline.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

type BoxRead = Box<dyn AsyncRead + Send + Unpin>;
type BoxWrite = Box<dyn AsyncWrite + Send + Unpin>;

/// The transport's read half. The plain sockets are variants of their own
/// (not boxed): most connections never upgrade, and their reads stay
/// direct calls.
pub enum ReadHalf {
    /// The TCP socket, not upgraded.
    Tcp(tcp::OwnedReadHalf),
    /// The unix socket, not upgraded.
    Unix(unix::OwnedReadHalf),
    /// Upgraded (TLS).
    Layered(BoxRead),
}

/// The transport's write half.
pub enum WriteHalf {
    /// The TCP socket, not upgraded.
    Tcp(tcp::OwnedWriteHalf),
    /// The unix socket, not upgraded.
    Unix(unix::OwnedWriteHalf),
    /// Upgraded (TLS).
    Layered(BoxWrite),
}

/// Splits a fresh connection into the reader's and the writer's sides.
pub fn split(stream: Stream) -> (Source, Sink) {
    let (r, w) = match stream {
        Stream::Tcp(s) => {
            let (r, w) = s.into_split();
            (ReadHalf::Tcp(r), WriteHalf::Tcp(w))
        }
        Stream::Unix(s) => {
            let (r, w) = s.into_split();
            (ReadHalf::Unix(r), WriteHalf::Unix(w))
        }
    };
    (
        Source {
            io: r,
            inflate: None,
            raw: BytesMut::new(),
        },
        Sink {
            io: w,
            deflate: None,
            scratch: Vec::new(),
        },
    )
}

/// The reader's side: transport read half plus decompression.
pub struct Source {
    io: ReadHalf,
    inflate: Option<Decompressor>,
    /// Compressed bytes read and not yet decoded.
    raw: BytesMut,
}

impl Source {
    /// Appends plain bytes to `buf`; `Ok(0)` only at end of stream.
    pub async fn read_buf(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        let Some(inflate) = self.inflate.as_mut() else {
            return read_half(&mut self.io, buf).await;
        };
        loop {
            let before = buf.len();
            inflate.decompress(&mut self.raw, buf)?;
            if buf.len() > before {
                return Ok(buf.len() - before);
            }
            if read_half(&mut self.io, &mut self.raw).await? == 0 {
                return Ok(0);
            }
        }
    }

    /// Turns on decompression; `unread` are bytes already read from the
    /// transport past the IDENTIFY command, which are compressed.
    pub fn compress(&mut self, kind: Compression, unread: Bytes) {
        self.raw.extend_from_slice(&unread);
        self.inflate = Some(Decompressor::new(kind));
    }

    /// Reunites this side with the writer's half, performs the TLS
    /// handshake over the socket with `unread` replayed first, and keeps
    /// the TLS read half; gives the TLS write half to send back.
    pub async fn upgrade_tls(
        &mut self,
        write: WriteHalf,
        unread: Bytes,
        config: Arc<rustls::ServerConfig>,
    ) -> io::Result<(WriteHalf, TlsInfo)> {
        let placeholder = ReadHalf::Layered(Box::new(tokio::io::empty()));
        let (r, w, info) = match (std::mem::replace(&mut self.io, placeholder), write) {
            (ReadHalf::Tcp(r), WriteHalf::Tcp(w)) => {
                handshake(r.reunite(w).map_err(mismatch)?, unread, config).await?
            }
            (ReadHalf::Unix(r), WriteHalf::Unix(w)) => {
                handshake(r.reunite(w).map_err(mismatch)?, unread, config).await?
            }
            _ => return Err(io::Error::other("connection already upgraded")),
        };
        self.io = ReadHalf::Layered(r);
        Ok((WriteHalf::Layered(w), info))
    }
}

fn mismatch<E>(_: E) -> io::Error {
    io::Error::other("socket halves do not match")
}

/// The TLS handshake over `socket`, `unread` replayed first; gives the TLS
/// stream's halves.
async fn handshake<S>(
    socket: S,
    unread: Bytes,
    config: Arc<rustls::ServerConfig>,
) -> io::Result<(BoxRead, BoxWrite, TlsInfo)>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let accept = acceptor.accept(Rewind {
        unread,
        inner: socket,
    });
    let tls = tokio::time::timeout(HANDSHAKE_TIMEOUT, accept)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))??;
    let info = TlsInfo::of(tls.get_ref().1);
    let (r, w) = tokio::io::split(tls);
    Ok((Box::new(r), Box::new(w), info))
}

async fn read_half(io: &mut ReadHalf, buf: &mut BytesMut) -> io::Result<usize> {
    match io {
        ReadHalf::Tcp(r) => r.read_buf(buf).await,
        ReadHalf::Unix(r) => r.read_buf(buf).await,
        ReadHalf::Layered(r) => r.read_buf(buf).await,
    }
}

/// The writer's side: compression plus the transport write half.
pub struct Sink {
    io: WriteHalf,
    deflate: Option<Compressor>,
    scratch: Vec<u8>,
}

impl Sink {
    /// Writes `data` (plain frames) through the layers and flushes them.
    pub async fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        let bytes: &[u8] = match self.deflate.as_mut() {
            Some(c) => {
                self.scratch.clear();
                c.compress(data, &mut self.scratch)?;
                &self.scratch
            }
            None => data,
        };
        match &mut self.io {
            WriteHalf::Tcp(w) => w.write_all(bytes).await,
            WriteHalf::Unix(w) => w.write_all(bytes).await,
            WriteHalf::Layered(w) => {
                w.write_all(bytes).await?;
                w.flush().await
            }
        }
    }

    /// Turns on compression for everything written from now on.
    pub fn compress(&mut self, kind: Compression) {
        self.deflate = Some(Compressor::new(kind));
    }

    /// Takes the transport half out for an upgrade (leaving a sink that
    /// discards); see the module doc.
    pub fn take(&mut self) -> WriteHalf {
        std::mem::replace(
            &mut self.io,
            WriteHalf::Layered(Box::new(tokio::io::sink())),
        )
    }

    /// Puts the upgraded transport half in place.
    pub fn put(&mut self, io: WriteHalf) {
        self.io = io;
    }

    /// Shuts the write direction down (TLS: sends close_notify).
    pub async fn shutdown(&mut self) -> io::Result<()> {
        match &mut self.io {
            WriteHalf::Tcp(w) => w.shutdown().await,
            WriteHalf::Unix(w) => w.shutdown().await,
            WriteHalf::Layered(w) => w.shutdown().await,
        }
    }
}

/// A stream that first yields bytes already read from it.
pub struct Rewind<S> {
    unread: Bytes,
    inner: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.unread.is_empty() {
            let n = self.unread.len().min(buf.remaining());
            buf.put_slice(&self.unread[..n]);
            self.unread.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
