//! One protocol V2 connection to a daemon: magic, commands out, frames in.
//!
//! Every wait is bounded by a deadline passed in by the caller, so a daemon
//! that stops answering ends a benchmark with an error instead of a hang.
//! Heartbeats are answered with `NOP` as they arrive. After
//! [`ClientConnection::negotiate`] the bytes are snappy- or deflate-compressed
//! both ways (rsq-compress), as a client that asked for it in IDENTIFY.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rsq_codec::{Command, DEFAULT_MAX_FRAME_SIZE, Frame, FrameDecoder, HEARTBEAT, MAGIC_V2, OK};
use rsq_compress::{Compression, Compressor, Decompressor};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout_at};

use crate::BenchError;

/// Longest wait for a connect or a command's answer during setup.
pub const SETUP_TIMEOUT: Duration = Duration::from_secs(10);

/// Bytes read from the socket at a time (grown as needed).
const READ_CHUNK_BYTES: usize = 256 * 1024;

/// A connected V2 client.
pub struct ClientConnection {
    addr: SocketAddr,
    stream: TcpStream,
    read_buf: BytesMut,
    decoder: FrameDecoder,
    nop: BytesMut,
    wire: Option<Wire>,
}

/// A compressed connection's state: bytes as they travel, both ways.
struct Wire {
    compressor: Compressor,
    decompressor: Decompressor,
    /// Compressed bytes read and not yet decompressed.
    raw: BytesMut,
    /// Compressed bytes to write.
    out: Vec<u8>,
}

impl ClientConnection {
    /// Connects to `addr` and sends the V2 magic.
    pub async fn connect(addr: SocketAddr) -> Result<ClientConnection, BenchError> {
        let deadline = Instant::now() + SETUP_TIMEOUT;
        let mut stream = timeout_at(deadline, TcpStream::connect(addr))
            .await
            .map_err(|_| BenchError::Timeout(format!("connect to {addr}")))?
            .map_err(|e| BenchError::io(format!("connect to {addr}"), e))?;
        stream
            .set_nodelay(true)
            .map_err(|e| BenchError::io("set TCP_NODELAY", e))?;
        stream
            .write_all(MAGIC_V2)
            .await
            .map_err(|e| BenchError::io(format!("send magic to {addr}"), e))?;
        let mut nop = BytesMut::new();
        Command::Nop.encode(&mut nop);
        Ok(ClientConnection {
            addr,
            stream,
            read_buf: BytesMut::with_capacity(READ_CHUNK_BYTES),
            decoder: FrameDecoder::new(DEFAULT_MAX_FRAME_SIZE),
            nop,
            wire: None,
        })
    }

    /// The daemon's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Writes already-encoded commands.
    pub async fn send(&mut self, bytes: &[u8]) -> Result<(), BenchError> {
        let addr = self.addr;
        let wire_bytes: &[u8] = match &mut self.wire {
            Some(wire) => {
                wire.out.clear();
                wire.compressor
                    .compress(bytes, &mut wire.out)
                    .map_err(|e| BenchError::io(format!("compress for {addr}"), e))?;
                &wire.out
            }
            None => bytes,
        };
        self.stream
            .write_all(wire_bytes)
            .await
            .map_err(|e| BenchError::io(format!("write to {addr}"), e))
    }

    /// IDENTIFY asking for `kind`, then switch this connection to it as
    /// nsqd sequences it: the JSON answer arrives plain, the `OK` after it
    /// already compressed.
    pub async fn negotiate(&mut self, kind: Compression) -> Result<(), BenchError> {
        let body = match kind {
            Compression::Snappy => r#"{"feature_negotiation":true,"snappy":true}"#.to_string(),
            Compression::Deflate(level) => {
                format!(r#"{{"feature_negotiation":true,"deflate":true,"deflate_level":{level}}}"#)
            }
        };
        self.send_command(&Command::Identify(Bytes::from(body)))
            .await?;
        let deadline = Instant::now() + SETUP_TIMEOUT;
        match self.next_frame(deadline).await? {
            Some(Frame::Response(json)) if json.first() == Some(&b'{') => {}
            Some(frame) => return Err(self.unexpected(&frame)),
            None => return Err(BenchError::Timeout("IDENTIFY answer".to_string())),
        }
        // Whatever followed the JSON answer is already compressed.
        let raw = self.read_buf.split();
        self.wire = Some(Wire {
            compressor: Compressor::new(kind),
            decompressor: Decompressor::new(kind),
            raw,
            out: Vec::new(),
        });
        self.decompress_raw()?;
        match self.next_frame(deadline).await? {
            Some(Frame::Response(ok)) if ok.as_ref() == OK => Ok(()),
            Some(frame) => Err(self.unexpected(&frame)),
            None => Err(BenchError::Timeout("compressed OK".to_string())),
        }
    }

    /// Moves what can be decompressed from the raw buffer to the frame buffer.
    fn decompress_raw(&mut self) -> Result<(), BenchError> {
        let addr = self.addr;
        let Some(wire) = &mut self.wire else {
            return Ok(());
        };
        loop {
            let (before_in, before_out) = (wire.raw.len(), self.read_buf.len());
            wire.decompressor
                .decompress(&mut wire.raw, &mut self.read_buf)
                .map_err(|e| BenchError::io(format!("decompress from {addr}"), e))?;
            if wire.raw.is_empty()
                || (wire.raw.len() == before_in && self.read_buf.len() == before_out)
            {
                return Ok(());
            }
        }
    }

    /// Encodes and writes one command.
    pub async fn send_command(&mut self, command: &Command) -> Result<(), BenchError> {
        let mut buf = BytesMut::new();
        command.encode(&mut buf);
        self.send(&buf).await
    }

    /// Sends `command` and waits (bounded) for its `OK`.
    pub async fn request_ok(&mut self, command: &Command) -> Result<(), BenchError> {
        self.send_command(command).await?;
        let deadline = Instant::now() + SETUP_TIMEOUT;
        match self.next_frame(deadline).await? {
            Some(Frame::Response(body)) if body.as_ref() == OK => Ok(()),
            Some(frame) => Err(self.unexpected(&frame)),
            None => Err(BenchError::Timeout(format!("answer to {command:?}"))),
        }
    }

    /// The next frame other than a heartbeat, or `None` if `deadline`
    /// passes first. Heartbeats are answered with `NOP` here.
    pub async fn next_frame(&mut self, deadline: Instant) -> Result<Option<Frame>, BenchError> {
        loop {
            if let Some(frame) = self.try_frame()? {
                if matches!(&frame, Frame::Response(body) if body.as_ref() == HEARTBEAT) {
                    let nop = self.nop.clone();
                    self.send(&nop).await?;
                    continue;
                }
                return Ok(Some(frame));
            }
            if !self.fill(deadline).await? {
                return Ok(None);
            }
        }
    }

    /// A frame already buffered, without reading the socket (heartbeats
    /// included; callers that use this answer them with [`Self::answer_heartbeat`]).
    pub fn try_frame(&mut self) -> Result<Option<Frame>, BenchError> {
        self.decoder
            .decode(&mut self.read_buf)
            .map_err(|source| BenchError::Codec {
                addr: self.addr,
                source,
            })
    }

    /// Whether `frame` is a heartbeat; if so, answers it with `NOP`.
    pub async fn answer_heartbeat(&mut self, frame: &Frame) -> Result<bool, BenchError> {
        if matches!(frame, Frame::Response(body) if body.as_ref() == HEARTBEAT) {
            let nop = self.nop.clone();
            self.send(&nop).await?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Reads more bytes into the buffer; `false` if `deadline` passed first.
    pub async fn fill(&mut self, deadline: Instant) -> Result<bool, BenchError> {
        if self.read_buf.capacity() - self.read_buf.len() < READ_CHUNK_BYTES / 4 {
            self.read_buf.reserve(READ_CHUNK_BYTES);
        }
        let target = match &mut self.wire {
            Some(wire) => &mut wire.raw,
            None => &mut self.read_buf,
        };
        match timeout_at(deadline, self.stream.read_buf(target)).await {
            Err(_) => Ok(false),
            Ok(Ok(0)) => Err(BenchError::Closed(self.addr)),
            Ok(Ok(_)) => {
                self.decompress_raw()?;
                Ok(true)
            }
            Ok(Err(e)) => Err(BenchError::io(format!("read from {}", self.addr), e)),
        }
    }

    /// The error for a frame that should not have come.
    pub fn unexpected(&self, frame: &Frame) -> BenchError {
        let what = match frame {
            Frame::Response(body) => format!("response {:?}", String::from_utf8_lossy(body)),
            Frame::Error(body) => format!("error {:?}", String::from_utf8_lossy(body)),
            Frame::Message(_) => "an unexpected message".to_string(),
        };
        BenchError::Protocol {
            addr: self.addr,
            what,
        }
    }
}
