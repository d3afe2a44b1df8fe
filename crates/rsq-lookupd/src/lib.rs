//! rsq-lookupd: nsqlookupd rebuilt. Producers (nsqd, rsqd) register their
//! topics and channels over TCP; consumers and tools ask over HTTP where a
//! topic is produced.
//!
//! - [`registry`]: the registration database as plain data (no IO, time
//!   passed in as `now`);
//! - [`session`]: one producer connection's protocol state, applied to the
//!   registry (the protocol's bytes are [`rsq_codec::lookup`]'s);
//! - [`tcp`] and [`http`]: the thin servers;
//! - [`options`]: nsqlookupd's flags.
//!
//! [`run`] takes bound listeners and a shutdown future, so tests bind
//! `127.0.0.1:0` and stop cleanly.

pub mod http;
pub mod options;
pub mod registry;
pub mod session;
pub mod tcp;

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::net::TcpListener;
use tokio::sync::watch;

pub use options::Options;
pub use registry::Registry;
pub use session::ServerInfo;

/// The daemon's shared state: options, what it tells producers about
/// itself, and the registry both servers read and change.
pub struct Lookupd {
    /// The options it was started with.
    pub opts: Options,
    /// The IDENTIFY reply: real ports, broadcast address, hostname, version.
    pub server: ServerInfo,
    registry: Mutex<Registry>,
}

impl Lookupd {
    /// State for a lookupd whose listeners are on `tcp_port` and `http_port`.
    pub fn new(opts: Options, tcp_port: u16, http_port: u16) -> Lookupd {
        let server = ServerInfo {
            tcp_port,
            http_port,
            version: options::VERSION.to_string(),
            broadcast_address: opts.effective_broadcast_address(),
            hostname: rsq_service::hostname(),
        };
        Lookupd {
            opts,
            server,
            registry: Mutex::new(Registry::new()),
        }
    }

    /// The registry, locked. Hold it for one operation, never across an
    /// `.await`.
    pub fn lock_registry(&self) -> MutexGuard<'_, Registry> {
        // Every registry operation completes or panics before changing
        // anything observable to another caller, so a poisoned lock still
        // guards consistent data.
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Runs lookupd on bound listeners until `shutdown` resolves, then stops
/// accepting and closes every producer connection.
pub async fn run(
    tcp: TcpListener,
    http: TcpListener,
    opts: Options,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let tcp_addr = tcp.local_addr()?;
    let http_addr = http.local_addr()?;
    let ctx = Arc::new(Lookupd::new(opts, tcp_addr.port(), http_addr.port()));
    tracing::info!(
        tcp = %tcp_addr,
        http = %http_addr,
        broadcast_address = %ctx.server.broadcast_address,
        "rsq-lookupd {} serving",
        options::VERSION
    );
    let (stop_tx, stop_rx) = watch::channel(false);
    let tcp_task = tokio::spawn(tcp::serve(tcp, ctx.clone(), stop_rx.clone()));
    let mut http_stop = stop_rx;
    let http_task = tokio::spawn(http::serve(http, ctx, async move {
        let _ = http_stop.wait_for(|stop| *stop).await;
    }));
    shutdown.await;
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    if let Err(e) = tcp_task.await {
        tracing::error!(error = %e, "TCP server task failed");
    }
    let result = match http_task.await {
        Ok(result) => result,
        Err(e) => Err(std::io::Error::other(e)),
    };
    tracing::info!("rsq-lookupd stopped");
    result
}
