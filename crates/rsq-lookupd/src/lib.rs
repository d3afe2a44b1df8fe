//! rsq-lookupd: nsqlookupd rebuilt. Producers (nsqd, rsqd) register their
//! topics and channels over TCP; consumers and tools ask over HTTP where a
//! topic is produced.
//!
#![doc = include_str!("../README.md")]
//!
//! ## What is in it
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
///
/// A lookupd on ports the system picks, answering a producer's `PING`,
/// then stopped:
///
/// ```
/// use rsq_codec::lookup::{Request, ResponseDecoder, MAGIC_V1};
/// use tokio::io::{AsyncReadExt, AsyncWriteExt};
/// use tokio::net::{TcpListener, TcpStream};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
/// runtime.block_on(async {
///     let tcp = TcpListener::bind("127.0.0.1:0").await?;
///     let http = TcpListener::bind("127.0.0.1:0").await?;
///     let tcp_addr = tcp.local_addr()?;
///     let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
///     let daemon = tokio::spawn(rsq_lookupd::run(tcp, http, Default::default(), async {
///         let _ = stopped.await;
///     }));
///
///     let mut producer = TcpStream::connect(tcp_addr).await?;
///     let mut out = bytes::BytesMut::from(&MAGIC_V1[..]);
///     Request::Ping.encode(&mut out);
///     producer.write_all(&out).await?;
///     let mut replies = ResponseDecoder::new(1024);
///     let mut input = bytes::BytesMut::new();
///     let reply = loop {
///         if let Some(reply) = replies.decode(&mut input)? {
///             break reply;
///         }
///         assert!(producer.read_buf(&mut input).await? > 0, "lookupd closed");
///     };
///     assert_eq!(reply, "OK");
///
///     let _ = stop.send(());
///     daemon.await??;
///     Ok::<(), Box<dyn std::error::Error>>(())
/// })
/// # }
/// ```
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
