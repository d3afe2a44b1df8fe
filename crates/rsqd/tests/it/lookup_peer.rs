//! rsqd's lookupd peer client ([`rsqd::lookup::LookupPeers`]) in process
//! against the real rsq-lookupd (in process too, on loopback ports):
//! IDENTIFY and the snapshot's REGISTERs on connect, REGISTER/UNREGISTER
//! as things change, re-registration after lookupd restarts,
//! resynchronization after a queue overflow, and removal on shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rsq_lookupd::Options;
use rsqd::lookup::{LookupConfig, LookupPeers, PeerIdentity, Snapshot};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How long any poll waits before failing the test.
const WAIT: Duration = Duration::from_secs(10);

/// Runs `f` with a bound on its duration.
async fn bounded<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, f)
        .await
        .unwrap_or_else(|_| panic!("{what} took longer than {WAIT:?}"))
}

/// rsq-lookupd running on the test's runtime.
struct Lookupd {
    tcp: SocketAddr,
    http: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl Lookupd {
    async fn start() -> Lookupd {
        let any = "127.0.0.1:0".parse().unwrap();
        Lookupd::start_on(any, any, Options::default()).await
    }

    async fn start_on(tcp: SocketAddr, http: SocketAddr, opts: Options) -> Lookupd {
        let tcp = tokio::net::TcpListener::bind(tcp).await.unwrap();
        let http = tokio::net::TcpListener::bind(http).await.unwrap();
        let (tcp_addr, http_addr) = (tcp.local_addr().unwrap(), http.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(rsq_lookupd::run(tcp, http, opts, async {
            let _ = stopped.await;
        }));
        Lookupd {
            tcp: tcp_addr,
            http: http_addr,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Shuts down and waits (bounded) for `run` to return.
    async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            bounded("lookupd stop", task).await.unwrap().unwrap();
        }
    }

    /// `GET path`: status and body (one connection, bounded).
    async fn get(&self, path: &str) -> (u16, String) {
        let exchange = async {
            let mut s = tokio::net::TcpStream::connect(self.http).await?;
            let req = format!(
                "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
                self.http
            );
            s.write_all(req.as_bytes()).await?;
            let mut raw = Vec::new();
            s.read_to_end(&mut raw).await?;
            Ok::<_, std::io::Error>(String::from_utf8_lossy(&raw).into_owned())
        };
        let text = bounded("GET", exchange).await.unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
        (status, body.to_string())
    }

    /// `GET path`, expecting 200 and a JSON body.
    async fn get_json(&self, path: &str) -> serde_json::Value {
        let (status, body) = self.get(path).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap()
    }

    /// Polls `GET path` until `check` holds on its JSON (bounded).
    async fn wait_json(
        &self,
        path: &str,
        what: &str,
        check: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let (status, body) = self.get(path).await;
            if let Ok(value) = serde_json::from_str::<serde_json::Value>(&body)
                && status == 200
                && check(&value)
            {
                return value;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}: GET {path} -> {status} {body}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Lookupd {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// The daemon's topics as the test changes them: topic -> channels.
type State = Arc<Mutex<Vec<(String, Vec<String>)>>>;

fn state(topics: &[(&str, &[&str])]) -> State {
    Arc::new(Mutex::new(
        topics
            .iter()
            .map(|(t, cs)| (t.to_string(), cs.iter().map(|c| c.to_string()).collect()))
            .collect(),
    ))
}

fn snapshot(state: &State) -> Snapshot {
    let state = state.clone();
    Arc::new(move || state.lock().unwrap().clone())
}

fn identity(name: &str, tcp_port: u16) -> PeerIdentity {
    PeerIdentity {
        version: "0.1.0".into(),
        tcp_port,
        http_port: tcp_port + 1,
        hostname: format!("{name}-host"),
        broadcast_address: name.into(),
    }
}

fn fast() -> LookupConfig {
    LookupConfig {
        backoff_min: Duration::from_millis(20),
        backoff_max: Duration::from_millis(200),
        ..LookupConfig::default()
    }
}

fn broadcast_addresses(lookup: &serde_json::Value) -> Vec<String> {
    let mut names: Vec<String> = lookup["producers"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .map(|p| p["broadcast_address"].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[tokio::test]
async fn peer_identifies_registers_and_follows_changes() {
    let lookupd = Lookupd::start().await;
    let daemon = state(&[("a", &[]), ("b", &["c1", "c2#ephemeral"])]);
    let peers = LookupPeers::new(identity("rsqd1", 4150), fast(), snapshot(&daemon));
    peers.set_addresses(&[lookupd.tcp.to_string()]);
    assert_eq!(peers.addresses(), [lookupd.tcp.to_string()]);

    let nodes = lookupd
        .wait_json("/nodes", "rsqd1 registered", |v| {
            v["producers"][0]["topics"] == json!(["a", "b"])
        })
        .await;
    let node = &nodes["producers"][0];
    assert_eq!(node["broadcast_address"], "rsqd1");
    assert_eq!(node["hostname"], "rsqd1-host");
    assert_eq!(
        (node["tcp_port"].as_u64(), node["http_port"].as_u64()),
        (Some(4150), Some(4151))
    );
    assert_eq!(node["version"], "0.1.0");
    let b = lookupd.get_json("/lookup?topic=b").await;
    assert_eq!(b["channels"], json!(["c1", "c2#ephemeral"]));

    // The daemon creates and deletes things.
    peers.register("x", None);
    peers.register("x", Some("y#ephemeral"));
    lookupd
        .wait_json("/channels?topic=x", "x/y registered", |v| {
            v["channels"] == json!(["y#ephemeral"])
        })
        .await;
    peers.unregister("x", Some("y#ephemeral"));
    peers.unregister("x", None);
    peers.unregister("b", Some("c2#ephemeral"));
    lookupd
        .wait_json("/lookup?topic=x", "x unregistered", |v| {
            v["producers"] == json!([]) && v["channels"] == json!([])
        })
        .await;
    lookupd
        .wait_json("/channels?topic=b", "b/c2 unregistered", |v| {
            v["channels"] == json!(["c1"])
        })
        .await;

    // Shutdown closes the connection: lookupd forgets the daemon.
    bounded("shutdown", peers.shutdown()).await;
    assert!(peers.addresses().is_empty());
    lookupd
        .wait_json("/nodes", "rsqd1 gone", |v| v["producers"] == json!([]))
        .await;
    let a = lookupd.get_json("/lookup?topic=a").await;
    assert_eq!(a["producers"], json!([]));
}

#[tokio::test]
async fn two_daemons_one_lookupd() {
    let lookupd = Lookupd::start().await;
    let d1 = state(&[("t", &["c"])]);
    let d2 = state(&[("t", &[]), ("only2", &[])]);
    let p1 = LookupPeers::new(identity("rsqd1", 4150), fast(), snapshot(&d1));
    let p2 = LookupPeers::new(identity("rsqd2", 4250), fast(), snapshot(&d2));
    p1.set_addresses(&[lookupd.tcp.to_string()]);
    p2.set_addresses(&[lookupd.tcp.to_string()]);
    let t = lookupd
        .wait_json("/lookup?topic=t", "both producers of t", |v| {
            broadcast_addresses(v) == ["rsqd1", "rsqd2"]
        })
        .await;
    assert_eq!(t["channels"], json!(["c"]));
    let only2 = lookupd.get_json("/lookup?topic=only2").await;
    assert_eq!(broadcast_addresses(&only2), ["rsqd2"]);
    // Removing the lookupd address from one daemon disconnects it.
    p1.set_addresses(&[]);
    lookupd
        .wait_json("/lookup?topic=t", "rsqd1 gone", |v| {
            broadcast_addresses(v) == ["rsqd2"]
        })
        .await;
    p2.shutdown().await;
}

#[tokio::test]
async fn peer_reregisters_after_lookupd_restarts() {
    let mut lookupd = Lookupd::start().await;
    let (tcp, http) = (lookupd.tcp, lookupd.http);
    let daemon = state(&[("before", &["c"])]);
    let peers = LookupPeers::new(identity("rsqd1", 4150), fast(), snapshot(&daemon));
    // A lookupd that is not up yet is retried too.
    let later_addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    peers.set_addresses(&[tcp.to_string(), later_addr.to_string()]);
    lookupd
        .wait_json("/lookup?topic=before", "registered", |v| {
            broadcast_addresses(v) == ["rsqd1"]
        })
        .await;

    lookupd.stop().await;
    // While lookupd is down the daemon gains a topic; requests sent now are
    // lost, and the snapshot on reconnect covers them.
    daemon
        .lock()
        .unwrap()
        .push(("during".to_string(), vec!["d".to_string()]));
    peers.register("during", Some("d"));
    let lookupd = Lookupd::start_on(tcp, http, Options::default()).await;
    lookupd
        .wait_json("/lookup?topic=during", "re-registered after restart", |v| {
            broadcast_addresses(v) == ["rsqd1"] && v["channels"] == json!(["d"])
        })
        .await;
    let before = lookupd.get_json("/lookup?topic=before").await;
    assert_eq!(broadcast_addresses(&before), ["rsqd1"]);

    // The lookupd that was never up comes up on its address and gets
    // everything too.
    let second = Lookupd::start_on(
        later_addr,
        "127.0.0.1:0".parse().unwrap(),
        Options::default(),
    )
    .await;
    second
        .wait_json("/topics", "second lookupd registered", |v| {
            v["topics"] == json!(["before", "during"])
        })
        .await;
    peers.shutdown().await;
}

#[tokio::test]
async fn queue_overflow_resynchronizes_from_the_snapshot() {
    let lookupd = Lookupd::start().await;
    let daemon = state(&[]);
    let config = LookupConfig {
        queue_max: 1,
        ..fast()
    };
    let peers = LookupPeers::new(identity("rsqd1", 4150), config, snapshot(&daemon));
    peers.set_addresses(&[lookupd.tcp.to_string()]);
    lookupd
        .wait_json("/nodes", "connected", |v| {
            v["producers"].as_array().is_some_and(|p| p.len() == 1)
        })
        .await;
    // Far more requests than the queue holds, all at once.
    let names: Vec<String> = (0..50).map(|i| format!("t{i:02}")).collect();
    for name in &names {
        daemon.lock().unwrap().push((name.clone(), Vec::new()));
        peers.register(name, None);
    }
    lookupd
        .wait_json("/topics", "every topic registered", |v| {
            v["topics"]
                .as_array()
                .is_some_and(|t| t.len() == names.len())
        })
        .await;
    let nodes = lookupd.get_json("/nodes").await;
    assert_eq!(
        nodes["producers"][0]["topics"].as_array().unwrap().len(),
        50
    );
    peers.shutdown().await;
}
