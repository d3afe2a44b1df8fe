//! The producer TCP server: accepts nsqd connections and moves bytes
//! between each socket and its [`Session`].
//!
//! Per connection: read the magic (anything but `"  V1"` gets a
//! length-prefixed `E_BAD_PROTOCOL` and a close), then decode requests,
//! apply each under the registry lock (never held across an `.await`) and
//! write the reply. An error reply closes the connection. However the
//! connection ends (EOF, error, shutdown), the producer's registrations are
//! removed before the task finishes.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::Lookupd;
use crate::session::Session;
use rsq_codec::lookup::{MAGIC_V1, RequestDecoder, encode_response};

/// Accepts producers on `listener` until `shutdown` turns true, then closes
/// every connection (dropping its registrations) and returns.
pub async fn serve(listener: TcpListener, ctx: Arc<Lookupd>, mut shutdown: watch::Receiver<bool>) {
    let mut connections = JoinSet::new();
    let stop_connections = shutdown.clone();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, remote)) => {
                    let ctx = ctx.clone();
                    let stop = stop_connections.clone();
                    connections.spawn(async move {
                        handle_connection(stream, remote, ctx, stop).await;
                    });
                }
                Err(e) => {
                    // Usually EMFILE; back off a little rather than spin.
                    tracing::error!(error = %e, "TCP accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
            // Reap finished connections so the set does not grow.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = stopped(&mut shutdown) => break,
        }
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

/// Resolves once `shutdown` is true (or its sender is gone).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is dropped here, not held in a select.
    let _ = shutdown.wait_for(|stop| *stop).await;
}

async fn handle_connection(
    mut stream: TcpStream,
    remote: SocketAddr,
    ctx: Arc<Lookupd>,
    mut shutdown: watch::Receiver<bool>,
) {
    tracing::debug!(client = %remote, "TCP: new client");
    let mut session = Session::new(remote.to_string());
    tokio::select! {
        result = serve_producer(&mut stream, &mut session, &ctx) => {
            if let Err(e) = result {
                tracing::debug!(client = %remote, error = %e, "connection ended");
            }
        }
        _ = stopped(&mut shutdown) => {}
    }
    session.handle_close(&mut ctx.lock_registry());
    let _ = stream.shutdown().await;
    tracing::debug!(client = %remote, "TCP: client closed");
}

async fn serve_producer(
    stream: &mut TcpStream,
    session: &mut Session,
    ctx: &Lookupd,
) -> std::io::Result<()> {
    let mut magic = [0u8; 4];
    stream.read_exact(&mut magic).await?;
    let mut out = BytesMut::new();
    if &magic != MAGIC_V1 {
        tracing::warn!(magic = ?magic, "bad protocol magic");
        encode_response(b"E_BAD_PROTOCOL", &mut out);
        return stream.write_all(&out).await;
    }
    let mut decoder = RequestDecoder::new();
    let mut buf = BytesMut::with_capacity(4096);
    loop {
        // Answer every complete request before reading again.
        loop {
            let request = match decoder.decode(&mut buf) {
                Ok(Some(request)) => request,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "protocol error");
                    encode_response(e.to_string().as_bytes(), &mut out);
                    return stream.write_all(&out).await;
                }
            };
            let now = tokio::time::Instant::now().into_std();
            let reply = session.handle(request, &mut ctx.lock_registry(), &ctx.server, now);
            match reply {
                Ok(data) => encode_response(&data, &mut out),
                Err(e) => {
                    tracing::warn!(error = %e, "protocol error");
                    encode_response(e.to_string().as_bytes(), &mut out);
                    return stream.write_all(&out).await;
                }
            }
        }
        if !out.is_empty() {
            stream.write_all(&out).await?;
            out.clear();
        }
        if stream.read_buf(&mut buf).await? == 0 {
            return Ok(());
        }
    }
}
