//! The peer protocol: consensus messages between cluster members over
//! TCP, one frame per message: `[u32 BE length][postcard PeerFrame]`.
//!
//! Each member keeps one outbound connection per peer, fed by a bounded
//! queue: when the queue is full or the peer is down, frames are dropped,
//! which Raft tolerates (it resends what was not acknowledged). Inbound
//! connections are read frame by frame; a frame past [`MAX_FRAME`] or one
//! that does not decode ends that connection, never the daemon.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

/// Largest frame accepted: a batch of appends (`rsq_replica::MAX_APPEND_BYTES`)
/// with room for its framing.
pub(crate) const MAX_FRAME: usize = 2 * rsq_replica::MAX_APPEND_BYTES as usize;

/// Frames queued for one peer before new ones are dropped.
pub(crate) const PEER_QUEUE: usize = 4096;

/// Wait between attempts to connect to a peer that is down.
const RECONNECT: Duration = Duration::from_millis(200);

/// One consensus message for one group.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct PeerFrame {
    /// The replicated topic's name (its group's).
    pub group: String,
    /// The sender's member id.
    pub from: u64,
    /// An encoded `rsq_replica` message.
    pub bytes: Vec<u8>,
}

/// Writes frames for one peer, reconnecting while the daemon runs.
pub(crate) async fn send_to(
    addr: String,
    mut frames: mpsc::Receiver<PeerFrame>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let stream = tokio::select! {
            _ = stop.changed() => return,
            s = TcpStream::connect(&addr) => s,
        };
        let mut stream = match stream {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                BufWriter::new(s)
            }
            Err(e) => {
                tracing::debug!(peer = %addr, error = %e, "cluster peer unreachable");
                // What waited for a dead peer is stale by the time it is up.
                while frames.try_recv().is_ok() {}
                tokio::select! {
                    _ = stop.changed() => return,
                    () = tokio::time::sleep(RECONNECT) => continue,
                }
            }
        };
        loop {
            let frame = tokio::select! {
                _ = stop.changed() => return,
                f = frames.recv() => f,
            };
            let Some(frame) = frame else { return };
            if write_frame(&mut stream, &frame).await.is_err() {
                break;
            }
            // Whatever else is queued goes in the same write.
            let mut failed = false;
            while let Ok(frame) = frames.try_recv() {
                if write_frame(&mut stream, &frame).await.is_err() {
                    failed = true;
                    break;
                }
            }
            if failed || stream.flush().await.is_err() {
                break;
            }
        }
    }
}

async fn write_frame(stream: &mut BufWriter<TcpStream>, frame: &PeerFrame) -> std::io::Result<()> {
    let bytes = postcard::to_stdvec(frame).map_err(std::io::Error::other)?;
    let len = u32::try_from(bytes.len()).map_err(std::io::Error::other)?;
    stream.write_all(&len.to_be_bytes()).await?;
    stream.write_all(&bytes).await
}

/// Where an inbound frame goes: called in the connection's reader task,
/// so a frame reaches its group with one hand-off.
pub(crate) type Route = Arc<dyn Fn(PeerFrame) + Send + Sync>;

/// Accepts peers and hands every frame they send to `route`.
pub(crate) async fn listen(listener: TcpListener, route: Route, mut stop: watch::Receiver<bool>) {
    loop {
        let accepted = tokio::select! {
            _ = stop.changed() => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                tokio::spawn(read_frames(stream, route.clone(), stop.clone()));
            }
            Err(e) => {
                tracing::warn!(error = %e, "cluster listener accept failed");
                tokio::time::sleep(RECONNECT).await;
            }
        }
    }
}

async fn read_frames(mut stream: TcpStream, route: Route, mut stop: watch::Receiver<bool>) {
    let mut buf = Vec::new();
    loop {
        let mut len = [0u8; 4];
        let read = tokio::select! {
            _ = stop.changed() => return,
            r = stream.read_exact(&mut len) => r,
        };
        if read.is_err() {
            return;
        }
        let len = u32::from_be_bytes(len) as usize;
        if len > MAX_FRAME {
            tracing::warn!(
                len,
                "cluster peer sent an oversized frame; closing its connection"
            );
            return;
        }
        buf.resize(len, 0);
        if stream.read_exact(&mut buf).await.is_err() {
            return;
        }
        match postcard::from_bytes::<PeerFrame>(&buf) {
            Ok(frame) => route(frame),
            Err(e) => {
                tracing::warn!(error = %e, "cluster peer sent an undecodable frame; closing its connection");
                return;
            }
        }
    }
}
