//! Registration with nsqlookupd: the daemon as a lookupd peer.
//!
//! [`LookupPeers`] keeps one task per configured lookupd TCP address. Each
//! task connects with protocol V1 (magic `"  V1"`), sends IDENTIFY with this
//! daemon's [`PeerIdentity`], then REGISTERs everything the daemon holds
//! (asked of a [`Snapshot`] closure at that moment: one REGISTER per
//! channel, or a topic-only REGISTER for a topic without channels), PINGs
//! every `ping_interval` (15 s, as nsqd) and forwards the REGISTER and
//! UNREGISTER the daemon asks for as topics and channels come and go. A
//! lost connection is re-established with exponential backoff, and
//! everything is registered again from a fresh snapshot, since lookupd
//! forgets a producer's registrations when its connection closes.
//!
//! Ordering: requests queued before a (re)connection are discarded and the
//! snapshot is taken after that, so a REGISTER or UNREGISTER is either
//! reflected in the snapshot or sent after it; a duplicate REGISTER or an
//! UNREGISTER of something not registered is harmless to lookupd. Each
//! peer's queue is bounded (`queue_max`); when it is full the request is
//! dropped and the peer reconnects, which re-registers from the snapshot
//! and so repairs whatever was lost.
//!
//! This module knows nothing of the daemon's types: the daemon passes a
//! snapshot closure and calls [`LookupPeers::register`] and
//! [`LookupPeers::unregister`]. Ephemeral topics and channels are
//! registered like any other, as nsqd does. The protocol's bytes, both
//! directions, are [`rsq_codec::lookup`]'s; this module adds the IDENTIFY
//! JSON, the sockets and the timing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rsq_codec::CodecError;
use rsq_codec::lookup::{MAGIC_V1, Request, ResponseDecoder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// What this daemon tells lookupd about itself in IDENTIFY: the broadcast
/// address and ports clients should use.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PeerIdentity {
    /// The daemon's version.
    pub version: String,
    /// The TCP port clients connect to (the broadcast TCP port).
    pub tcp_port: u16,
    /// The HTTP port (the broadcast HTTP port).
    pub http_port: u16,
    /// The machine's hostname.
    pub hostname: String,
    /// The address clients connect to (`--broadcast-address`).
    pub broadcast_address: String,
}

/// What a lookupd says about itself in reply to IDENTIFY.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
pub(crate) struct LookupdInfo {
    /// Its producer TCP port.
    #[serde(default)]
    pub tcp_port: u16,
    /// Its HTTP port.
    #[serde(default)]
    pub http_port: u16,
    /// Its version.
    #[serde(default)]
    pub version: String,
    /// Its broadcast address.
    #[serde(default)]
    pub broadcast_address: String,
    /// Its hostname.
    #[serde(default)]
    pub hostname: String,
}

/// Everything the daemon currently holds: each topic with its channels.
/// Called on every (re)connection, from the peer's task.
pub type Snapshot = Arc<dyn Fn() -> Vec<(String, Vec<String>)> + Send + Sync>;

/// Timing and bounds of the peer connections.
#[derive(Debug, Clone)]
pub struct LookupConfig {
    /// How often to PING an idle lookupd (nsqd: 15 s).
    pub ping_interval: Duration,
    /// How long to wait for a connection (nsqd: 1 s).
    pub dial_timeout: Duration,
    /// How long one request may take to write and be answered (nsqd: 1 s).
    pub io_timeout: Duration,
    /// First wait before reconnecting after a failure.
    pub backoff_min: Duration,
    /// Longest wait between reconnection attempts.
    pub backoff_max: Duration,
    /// Requests queued per lookupd before it is resynchronized instead.
    pub queue_max: usize,
    /// Largest reply accepted from lookupd, in bytes (nsqd: max-body-size).
    pub response_size_max: usize,
}

impl Default for LookupConfig {
    fn default() -> LookupConfig {
        LookupConfig {
            ping_interval: Duration::from_secs(15),
            dial_timeout: Duration::from_secs(1),
            io_timeout: Duration::from_secs(1),
            backoff_min: Duration::from_millis(500),
            backoff_max: Duration::from_secs(15),
            queue_max: 1024,
            response_size_max: 5 * 1024 * 1024,
        }
    }
}

impl PeerIdentity {
    /// The IDENTIFY request carrying this identity as its JSON body.
    pub(crate) fn identify(&self) -> Request {
        // Serializing plain strings and integers cannot fail.
        let body = serde_json::to_vec(self).unwrap_or_default();
        Request::Identify {
            body: Bytes::from(body),
        }
    }
}

/// The REGISTERs that announce `snapshot`: one per channel, or one
/// topic-only REGISTER for a topic without channels (as nsqd sends them).
pub(crate) fn registrations(snapshot: Vec<(String, Vec<String>)>) -> Vec<Request> {
    let mut commands = Vec::new();
    for (topic, channels) in snapshot {
        if channels.is_empty() {
            commands.push(Request::register(&topic, None));
        } else {
            for channel in channels {
                commands.push(Request::register(&topic, Some(&channel)));
            }
        }
    }
    commands
}

/// Exponential backoff between reconnection attempts.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// Starts at `min`, doubles up to `max`.
    pub fn new(min: Duration, max: Duration) -> Backoff {
        Backoff {
            min,
            max: max.max(min),
            next: min,
        }
    }

    /// The wait before the next attempt; the one after will be longer.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        delay
    }

    /// A connection succeeded: the next failure waits `min` again.
    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

/// Why a lookupd connection failed or ended.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LookupError {
    /// The socket failed or lookupd closed it.
    #[error("lookupd connection: {0}")]
    Io(#[from] std::io::Error),
    /// A connect, write or reply did not happen within its timeout.
    #[error("lookupd timed out during {0}")]
    Timeout(&'static str),
    /// lookupd answered with an error (it then closes the connection).
    #[error("lookupd refused {command}: {reply}")]
    Refused {
        /// The command's first line.
        command: String,
        /// lookupd's `E_*` reply.
        reply: String,
    },
    /// A reply announced more bytes than `response_size_max`.
    #[error("lookupd reply: {0}")]
    Reply(#[from] CodecError),
    /// lookupd sent bytes nobody asked for.
    #[error("lookupd sent unsolicited data")]
    Unsolicited,
    /// Requests were dropped from a full queue; reconnect to resynchronize.
    #[error("request queue overflowed; resynchronizing")]
    Resync,
}

/// One open lookupd connection.
struct Connection {
    stream: TcpStream,
    io_timeout: Duration,
    replies: ResponseDecoder,
    /// Bytes read and not yet decoded as a reply.
    input: BytesMut,
}

impl Connection {
    async fn open(address: &str, config: &LookupConfig) -> Result<Connection, LookupError> {
        let stream = tokio::time::timeout(config.dial_timeout, TcpStream::connect(address))
            .await
            .map_err(|_| LookupError::Timeout("connect"))??;
        stream.set_nodelay(true)?;
        let mut conn = Connection {
            stream,
            io_timeout: config.io_timeout,
            replies: ResponseDecoder::new(config.response_size_max),
            input: BytesMut::new(),
        };
        tokio::time::timeout(conn.io_timeout, conn.stream.write_all(MAGIC_V1))
            .await
            .map_err(|_| LookupError::Timeout("magic"))??;
        Ok(conn)
    }

    /// Sends one command and reads its reply; an `E_*` reply is an error.
    async fn request(&mut self, command: &Request) -> Result<Bytes, LookupError> {
        let mut bytes = BytesMut::new();
        command.encode(&mut bytes);
        tokio::time::timeout(self.io_timeout, self.stream.write_all(&bytes))
            .await
            .map_err(|_| LookupError::Timeout("write"))??;
        let reply = tokio::time::timeout(self.io_timeout, self.read_reply())
            .await
            .map_err(|_| LookupError::Timeout("reply"))??;
        if reply.starts_with(b"E_") {
            let first_line = bytes[..].split(|&b| b == b'\n').next().unwrap_or_default();
            return Err(LookupError::Refused {
                command: String::from_utf8_lossy(first_line).into_owned(),
                reply: String::from_utf8_lossy(&reply).into_owned(),
            });
        }
        Ok(reply)
    }

    /// Reads one reply. Each pass reads more bytes or fails; the reply's
    /// size is bounded by the decoder and the caller bounds the time.
    async fn read_reply(&mut self) -> Result<Bytes, LookupError> {
        loop {
            if let Some(reply) = self.replies.decode(&mut self.input)? {
                return Ok(reply);
            }
            if self.stream.read_buf(&mut self.input).await? == 0 {
                return Err(LookupError::Io(std::io::ErrorKind::UnexpectedEof.into()));
            }
        }
    }

    /// Resolves when lookupd closes the connection (or sends anything
    /// unasked) while we are idle. Cancel-safe.
    async fn closed(&mut self) -> LookupError {
        if !self.input.is_empty() {
            return LookupError::Unsolicited; // Bytes after the last reply.
        }
        let mut probe = [0u8; 1];
        match self.stream.read(&mut probe).await {
            Ok(0) => LookupError::Io(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(_) => LookupError::Unsolicited,
            Err(e) => LookupError::Io(e),
        }
    }
}

/// Resolves once `stop` is true or its sender is gone.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is dropped here, not held across a select.
    let _ = stop.wait_for(|s| *s).await;
}

/// What one peer task needs.
struct PeerTask {
    address: String,
    identity: PeerIdentity,
    config: LookupConfig,
    snapshot: Snapshot,
    commands: mpsc::Receiver<Request>,
    resync: Arc<AtomicBool>,
    stop: watch::Receiver<bool>,
}

impl PeerTask {
    async fn run(mut self) {
        let mut backoff = Backoff::new(self.config.backoff_min, self.config.backoff_max);
        let mut stop = self.stop.clone();
        loop {
            if self.commands.is_closed() {
                return; // LookupPeers is gone.
            }
            let session = async {
                let mut conn = self.connect().await?;
                backoff.reset();
                self.serve(&mut conn).await
            };
            let error = tokio::select! {
                result = session => match result {
                    Ok(()) => return, // LookupPeers is gone.
                    Err(e) => e,
                },
                _ = stopped(&mut stop) => return,
            };
            let delay = backoff.next_delay();
            tracing::warn!(lookupd = %self.address, error = %error, retry_in = ?delay, "LOOKUP connection failed");
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = stopped(&mut stop) => return,
            }
        }
    }

    /// Connects, identifies and registers everything in a fresh snapshot.
    async fn connect(&mut self) -> Result<Connection, LookupError> {
        // Whatever was queued so far is covered by the snapshot below.
        while self.commands.try_recv().is_ok() {}
        self.resync.store(false, Ordering::SeqCst);
        tracing::debug!(lookupd = %self.address, "LOOKUP connecting");
        let mut conn = Connection::open(&self.address, &self.config).await?;
        let reply = conn.request(&self.identity.identify()).await?;
        match serde_json::from_slice::<LookupdInfo>(&reply) {
            Ok(info) => tracing::info!(lookupd = %self.address, peer = ?info, "LOOKUP connected"),
            Err(_) => tracing::info!(lookupd = %self.address, "LOOKUP connected (no peer info)"),
        }
        let commands = registrations((self.snapshot)());
        let count = commands.len();
        for command in &commands {
            conn.request(command).await?;
        }
        tracing::debug!(lookupd = %self.address, registrations = count, "LOOKUP registered");
        Ok(conn)
    }

    /// Forwards queued commands and PINGs until the connection fails.
    /// Returns `Ok` only when the queue's sender is gone.
    async fn serve(&mut self, conn: &mut Connection) -> Result<(), LookupError> {
        let period = self.config.ping_interval;
        let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let command = tokio::select! {
                command = self.commands.recv() => match command {
                    Some(command) => command,
                    None => return Ok(()),
                },
                _ = ping.tick() => Request::Ping,
                error = conn.closed() => return Err(error),
            };
            if self.resync.swap(false, Ordering::SeqCst) {
                return Err(LookupError::Resync);
            }
            conn.request(&command).await?;
        }
    }
}

/// One configured lookupd and its task.
struct Peer {
    address: String,
    commands: mpsc::Sender<Request>,
    resync: Arc<AtomicBool>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Peer {
    fn send(&self, command: Request) {
        if let Err(e) = self.commands.try_send(command) {
            // A full queue (lookupd slow or down) or a finished task: drop
            // the request and resynchronize from a snapshot instead.
            tracing::debug!(lookupd = %self.address, error = %e, "LOOKUP queue full; will resync");
            self.resync.store(true, Ordering::SeqCst);
        }
    }
}

/// The daemon's lookupd connections. See the module documentation.
pub struct LookupPeers {
    identity: PeerIdentity,
    config: LookupConfig,
    snapshot: Snapshot,
    peers: Mutex<Vec<Peer>>,
}

impl LookupPeers {
    /// Peers that will identify as `identity` and announce `snapshot()`;
    /// none is connected until [`LookupPeers::set_addresses`].
    pub fn new(identity: PeerIdentity, config: LookupConfig, snapshot: Snapshot) -> LookupPeers {
        LookupPeers {
            identity,
            config,
            snapshot,
            peers: Mutex::new(Vec::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Peer>> {
        // Each critical section is one push, retain or iteration.
        self.peers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Connects to exactly these lookupd TCP addresses (`host:port`):
    /// starts a task for each new one and stops those no longer listed
    /// (their connections close, so those lookupds forget this daemon).
    /// Must be called within a tokio runtime.
    pub fn set_addresses(&self, addresses: &[String]) {
        let mut peers = self.lock();
        peers.retain(|peer| {
            let keep = addresses.contains(&peer.address);
            if !keep {
                tracing::info!(lookupd = %peer.address, "LOOKUP removing peer");
                let _ = peer.stop.send(true);
            }
            keep
        });
        for address in addresses {
            if peers.iter().any(|p| &p.address == address) {
                continue;
            }
            tracing::info!(lookupd = %address, "LOOKUP adding peer");
            let (tx, rx) = mpsc::channel(self.config.queue_max.max(1));
            let (stop_tx, stop_rx) = watch::channel(false);
            let resync = Arc::new(AtomicBool::new(false));
            let task = PeerTask {
                address: address.clone(),
                identity: self.identity.clone(),
                config: self.config.clone(),
                snapshot: self.snapshot.clone(),
                commands: rx,
                resync: resync.clone(),
                stop: stop_rx,
            };
            peers.push(Peer {
                address: address.clone(),
                commands: tx,
                resync,
                stop: stop_tx,
                task: tokio::spawn(task.run()),
            });
        }
    }

    /// The configured lookupd addresses, in the order they were added.
    pub fn addresses(&self) -> Vec<String> {
        self.lock().iter().map(|p| p.address.clone()).collect()
    }

    fn broadcast(&self, command: Request) {
        for peer in self.lock().iter() {
            peer.send(command.clone());
        }
    }

    /// A topic (`channel` `None`) or channel was created: REGISTER it with
    /// every lookupd. Never blocks.
    pub fn register(&self, topic: &str, channel: Option<&str>) {
        self.broadcast(Request::register(topic, channel));
    }

    /// A topic (`channel` `None`) or channel was deleted: UNREGISTER it
    /// with every lookupd. Never blocks.
    pub fn unregister(&self, topic: &str, channel: Option<&str>) {
        self.broadcast(Request::unregister(topic, channel));
    }

    /// Stops every peer task and closes its connection (so lookupd drops
    /// this daemon's registrations); waits for them up to `io_timeout`.
    pub async fn shutdown(&self) {
        let peers: Vec<Peer> = std::mem::take(&mut *self.lock());
        for peer in &peers {
            let _ = peer.stop.send(true);
        }
        for peer in peers {
            let mut task = peer.task;
            if tokio::time::timeout(self.config.io_timeout, &mut task)
                .await
                .is_err()
            {
                task.abort();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> PeerIdentity {
        PeerIdentity {
            version: "0.1.0".into(),
            tcp_port: 4150,
            http_port: 4151,
            hostname: "h".into(),
            broadcast_address: "b".into(),
        }
    }

    fn register(topic: &str, channel: Option<&str>) -> Request {
        Request::register(topic, channel)
    }

    #[test]
    fn identify_carries_the_identity_as_json() {
        let mut out = BytesMut::new();
        identity().identify().encode(&mut out);
        let body = out.strip_prefix(b"IDENTIFY\n".as_slice()).expect("header");
        let (size, json) = body.split_at(4);
        assert_eq!(
            u32::from_be_bytes(size.try_into().expect("4 bytes")) as usize,
            json.len()
        );
        let value: serde_json::Value = serde_json::from_slice(json).expect("json");
        assert_eq!(
            value,
            serde_json::json!({"version": "0.1.0", "tcp_port": 4150, "http_port": 4151,
                               "hostname": "h", "broadcast_address": "b"})
        );
        // The fields in declaration order, exactly as before the codec move.
        assert_eq!(
            json,
            br#"{"version":"0.1.0","tcp_port":4150,"http_port":4151,"hostname":"h","broadcast_address":"b"}"#
        );
    }

    #[test]
    fn snapshot_registers_channels_or_the_bare_topic() {
        let snapshot = vec![
            ("a".to_string(), vec![]),
            ("b".to_string(), vec!["c1".to_string(), "c2".to_string()]),
        ];
        assert_eq!(
            registrations(snapshot),
            [
                register("a", None),
                register("b", Some("c1")),
                register("b", Some("c2"))
            ]
        );
        assert!(registrations(Vec::new()).is_empty());
    }

    #[test]
    fn backoff_doubles_to_its_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        let delays: Vec<_> = (0..5).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(delays, [100, 200, 350, 350, 350]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(100));
    }

    #[test]
    fn lookupd_info_tolerates_missing_fields() {
        let info: LookupdInfo =
            serde_json::from_str(r#"{"tcp_port":4160,"version":"1.3.0","extra":1}"#).expect("json");
        assert_eq!(info.tcp_port, 4160);
        assert_eq!(info.http_port, 0);
    }
}
