//! rsqd: the daemon. Flags, the TCP (protocol V2) and HTTP servers, the
//! metadata file, stats and shutdown, composed from the rsq crates.
//!
#![doc = include_str!("../README.md")]
//!
//! ## What is in it
//!
//! The binary (`main.rs`) parses options, binds the listeners and calls
//! [`run`]; tests start the real binary. This crate is the only one that
//! maps library errors to nsqd's protocol and HTTP error codes.

// The public modules are the pieces the integration tests, benchmarks
// and fuzz targets drive directly; each keeps only those items public.
// Everything else is the daemon's own.
pub(crate) mod auth;
pub(crate) mod channel_handle;
pub(crate) mod client;
pub(crate) mod cluster;
pub(crate) mod dead_letter;
pub(crate) mod dirlock;
pub mod downgrade;
pub(crate) mod error;
pub(crate) mod factory;
pub mod http;
pub mod lookup;
pub mod metadata;
pub(crate) mod metrics;
pub(crate) mod nsqd;
pub(crate) mod options;
/// The seeded simulation of the whole daemon (`cargo xtask sim`): built for
/// rsqd's tests and with the `sim` feature (which the `rsq-sim` binary
/// needs), never into the daemon.
#[cfg(any(test, feature = "sim"))]
pub mod sim;
pub(crate) mod stats;
pub(crate) mod statsd;
pub(crate) mod tcp;
pub mod world;

use std::sync::Arc;

use rsq_channel::SystemClock;
use rsq_service::{Listener, StopSignal};
use tokio::sync::watch;

// `Nsqd` is what the benchmarks and the HTTP fuzz target build a daemon
// from; `get_or_create_channel` answers with the other three.
pub use channel_handle::{ChannelHandle, DaemonTopic};
pub use error::NsqdError;
// Until the TCP session moves to the new name.
pub use dirlock::{DirLock, DirLockError};
pub use error::NsqdError as ContextError;
pub use nsqd::Nsqd;
pub use options::{Options, SigtermMode};
pub use world::World;

/// Runs the daemon on bound listeners (TCP or unix socket) until a stop
/// signal arrives on `signals` (or, in drain mode, until drained), then
/// stops accepting, closes clients, flushes every queue to disk and writes
/// metadata. Returns once everything accepted is safe on disk, and the
/// listeners' socket files are removed.
///
/// With `--sigterm-mode=drain` the first SIGTERM turns drain mode on (as
/// `PUT /config/drain` does) and a SIGTERM while draining flushes at once;
/// SIGINT always flushes. Once drained, the daemon stops as after a flush.
///
/// `lock` is the lock on `opts.data_path` ([`DirLock::create_and_acquire`],
/// taken before binding, as nsqd does): it is held until everything is on
/// disk, so no other process opens the queues while this one runs.
pub async fn run(
    mut opts: Options,
    lock: DirLock,
    tcp: Listener,
    http: Listener,
    mut signals: tokio::sync::mpsc::UnboundedReceiver<StopSignal>,
) -> anyhow::Result<()> {
    let tls = tcp::tls::server_config(&opts)?;
    let https = match &tls {
        Some(config) => {
            let listener = rsq_service::bind("HTTPS", opts.https_address.clone()).await?;
            opts.https_address = listener.local_addr()?;
            Some((listener, config.clone()))
        }
        None => None,
    };
    // From here on the options hold the bound addresses, so a port 0
    // shows as the port taken in /info, to lookupd and in statsd, and the
    // broadcast ports default to them, as nsqd's do (a unix socket has no
    // port: its broadcast port stays 0 unless given).
    opts.tcp_address = tcp.local_addr()?;
    opts.http_address = http.local_addr()?;
    if opts.broadcast_tcp_port == 0 {
        opts.broadcast_tcp_port = opts.tcp_address.port().unwrap_or(0);
    }
    if opts.broadcast_http_port == 0 {
        opts.broadcast_http_port = opts.http_address.port().unwrap_or(0);
    }
    let ctx = Nsqd::new(opts, Arc::new(SystemClock))?;
    ctx.load_metadata().await?;
    let (stop_tx, stop_rx) = watch::channel(false);
    ctx.start_cluster(stop_rx.clone()).await?;
    tracing::info!(
        tcp = %ctx.opts.tcp_address,
        http = %ctx.opts.http_address,
        data_path = %ctx.opts.data_path.display(),
        "rsqd {} serving",
        options::VERSION
    );
    ctx.start_lookup();
    let statsd_task = (!ctx.opts.statsd_address.is_empty())
        .then(|| tokio::spawn(statsd::run(ctx.clone(), stop_rx.clone())));
    let tcp_task = tokio::spawn(tcp::serve(tcp, ctx.clone(), tls, stop_rx.clone()));
    let https_task = https.map(|(listener, config)| {
        let mut stop = stop_rx.clone();
        tokio::spawn(http::serve_tls(listener, config, ctx.clone(), async move {
            let _ = stop.changed().await;
        }))
    });
    let mut http_stop = stop_rx.clone();
    let http_task = tokio::spawn(http::serve(http, ctx.clone(), async move {
        let _ = http_stop.changed().await;
    }));

    let mut listening = true;
    loop {
        tokio::select! {
            signal = signals.recv(), if listening => match signal {
                Some(StopSignal::Terminate)
                    if ctx.opts.sigterm_mode == SigtermMode::Drain && !ctx.is_draining() =>
                {
                    ctx.set_draining(true);
                }
                Some(_) => break,
                // Nobody can signal any more: only draining can end it.
                None => listening = false,
            },
            () = ctx.drained() => break,
        }
    }
    tracing::info!("shutting down");
    // Leave the lookupds first, so consumers stop discovering this node
    // while it drains.
    ctx.stop_lookup().await;
    let _ = stop_tx.send(true);
    if let Some(task) = statsd_task
        && let Err(e) = task.await
    {
        tracing::error!(error = %e, "statsd task failed");
    }
    if let Err(e) = tcp_task.await {
        tracing::error!(error = %e, "TCP server task failed");
    }
    match http_task.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "HTTP server failed"),
        Err(e) => tracing::error!(error = %e, "HTTP server task failed"),
    }
    if let Some(task) = https_task {
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "HTTPS server failed"),
            Err(e) => tracing::error!(error = %e, "HTTPS server task failed"),
        }
    }
    ctx.shutdown().await;
    tracing::info!("rsqd stopped");
    drop(lock);
    Ok(())
}
