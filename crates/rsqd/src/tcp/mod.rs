//! The TCP server: protocol V2 for producers and consumers, on a TCP port
//! or a unix socket (`--tcp-address` takes either; the name is nsqd's).
//!
//! `serve` accepts connections until shutdown; each connection is one
//! task of two halves (`duplex.rs`): a reader (`session.rs`) driving the V2
//! protocol's state machine, which does no IO (the rsq-protocol crate,
//! configured by [`protocol_config`]), and a writer that owns the socket's
//! write half and drives the outbound machine (`rsq_protocol::Output`:
//! gathered message frames, heartbeats) in `writer.rs`, fed by the
//! reader through `outbound.rs`; each half sleeps on one `LazyTimer`
//! (`timer.rs`). The bytes between them and the socket pass
//! through the layers of `stream.rs`: TLS (`tls.rs`) and snappy or deflate
//! (the `rsq-compress` crate), negotiated in IDENTIFY, over either kind of
//! socket. A unix client has no IP: `/stats` shows it at `@` (Go's name
//! for an unnamed unix peer), its default client id and hostname are empty
//! and the auth server gets an empty `remote_ip`, as with nsqd.

mod duplex;
mod outbound;
mod session;
mod stream;
mod timer;
pub(crate) mod tls;
mod writer;

use std::sync::Arc;

use rsq_service::{Listener, Stream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::Nsqd;
use timer::LazyTimer;

pub(crate) use rsq_protocol::{IdentifyRequest, Negotiated};

use crate::options::{Options, VERSION};

/// What the V2 state machine needs of the options, once per listener:
/// limits, defaults, the upgrades offered (`tls_available` says whether a
/// TLS configuration exists), the AUTH and TLS-required gates.
pub(crate) fn protocol_config(opts: &Options, tls_available: bool) -> rsq_protocol::ProtocolConfig {
    rsq_protocol::ProtocolConfig {
        max_msg_size: opts.max_msg_size,
        max_body_size: opts.max_body_size,
        max_rdy_count: opts.max_rdy_count,
        max_req_timeout: opts.max_req_timeout,
        msg_timeout: opts.msg_timeout,
        max_msg_timeout: opts.max_msg_timeout,
        max_heartbeat_interval: opts.max_heartbeat_interval,
        max_output_buffer_size: opts.max_output_buffer_size,
        output_buffer_timeout: opts.output_buffer_timeout,
        min_output_buffer_timeout: opts.min_output_buffer_timeout,
        max_output_buffer_timeout: opts.max_output_buffer_timeout,
        snappy: opts.snappy,
        deflate: opts.deflate,
        max_deflate_level: opts.max_deflate_level,
        auth_required: !opts.auth_http_addresses.is_empty(),
        tls_required: tls::tls_required(opts),
        tls_available,
        version: VERSION,
    }
}

/// The TLS server configuration, when `--tls-cert` and `--tls-key` are set
/// (built by [`tls::server_config`]).
pub(crate) type TlsConfig = Option<Arc<rustls::ServerConfig>>;

/// Accepts clients on `listener` (TCP or unix socket) until `shutdown`
/// turns true, then closes every connection and returns once they are all
/// gone (dropping the listener removes its socket file). `tls` is offered
/// to clients that ask `tls_v1` in IDENTIFY.
pub(crate) async fn serve(
    listener: Listener,
    ctx: Arc<Nsqd>,
    tls: TlsConfig,
    mut shutdown: watch::Receiver<bool>,
) {
    let protocol = Arc::new(protocol_config(&ctx.opts, tls.is_some()));
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, addr)) => {
                    if let Stream::Tcp(tcp) = &stream
                        && let Err(e) = tcp.set_nodelay(true)
                    {
                        tracing::debug!(error = %e, "set_nodelay");
                    }
                    let ctx = ctx.clone();
                    let shutdown = shutdown.clone();
                    connections.spawn(session::run(
                        stream,
                        addr,
                        ctx,
                        protocol.clone(),
                        tls.clone(),
                        shutdown,
                    ));
                }
                Err(e) => {
                    // Out of file descriptors and the like: log, back off a
                    // little, keep serving the clients we have.
                    tracing::error!(error = %e, "TCP accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = shutdown.changed() => break,
        }
    }
    tracing::info!("TCP: closing {} connections", connections.len());
    while connections.join_next().await.is_some() {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_protocol_defaults_are_the_options_defaults() -> anyhow::Result<()> {
        let from_options = protocol_config(&Options::load_from(["rsqd"])?, false);
        let defaults = rsq_protocol::ProtocolConfig::default();
        assert_eq!(from_options, defaults);
        Ok(())
    }

    /// Both halves take their instants from the daemon's clock: under
    /// tokio's paused time a silent client gets its heartbeat one
    /// interval in and is closed two intervals in, at once in real time.
    /// (With the OS clock the machines found nothing due when their timers
    /// fired, and the heartbeat waited 30 real seconds.)
    #[tokio::test(start_paused = true)]
    async fn heartbeats_and_the_read_deadline_follow_the_daemons_clock() -> anyhow::Result<()> {
        use std::time::Duration;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let dir = tempfile::tempdir()?;
        let data = format!("--data-path={}", dir.path().display());
        let ctx = Nsqd::new(
            Options::load_from(["rsqd", data.as_str()])?,
            Arc::new(rsq_channel::SystemClock),
        )?;
        let addr = rsq_service::ListenAddr::from(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
        let listener = rsq_service::bind("TCP", addr).await?;
        let rsq_service::ListenAddr::Tcp(bound) = listener.local_addr()? else {
            anyhow::bail!("a TCP listener without a TCP address");
        };
        let (stop, stopped) = watch::channel(false);
        let server = tokio::spawn(serve(listener, ctx, None, stopped));

        // The OS's clock, to tell a wait in paused time from a real one.
        let real = std::time::Instant::now();
        let started = tokio::time::Instant::now();
        let mut client = tokio::net::TcpStream::connect(bound).await?;
        client.write_all(rsq_codec::MAGIC_V2).await?;
        let mut frame = [0u8; 19];
        client.read_exact(&mut frame).await?;
        assert!(frame.ends_with(b"_heartbeat_"), "{frame:?}");
        let at = started.elapsed();
        assert!(
            (Duration::from_secs(30)..Duration::from_secs(31)).contains(&at),
            "first heartbeat after {at:?}"
        );
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).await?;
        let at = started.elapsed();
        assert!(
            (Duration::from_secs(60)..Duration::from_secs(61)).contains(&at),
            "closed after {at:?}"
        );
        assert!(
            real.elapsed() < Duration::from_secs(10),
            "the connection waited {:?} of real time",
            real.elapsed()
        );

        stop.send(true)?;
        server.await?;
        Ok(())
    }
}
