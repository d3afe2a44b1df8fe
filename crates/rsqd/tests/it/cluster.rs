//! Two real rsqd and one rsq-lookupd (in-process on its own runtime):
//! registration at start and on create, unregistration on delete and
//! shutdown, re-registration after lookupd restarts, and run-time changes of
//! the lookupd list through `/config/nsqlookupd_tcp_addresses`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{Daemon, http};

/// rsq-lookupd on a background runtime.
pub struct Lookupd {
    /// Its TCP (producer protocol) address.
    pub tcp: SocketAddr,
    /// Its HTTP address.
    pub http: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    rt: tokio::runtime::Runtime,
}

impl Lookupd {
    /// Starts lookupd on these addresses (`127.0.0.1:0` for any port).
    pub fn start(tcp: &str, http: &str) -> Lookupd {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (tcp, http, stop, task) = rt.block_on(async {
            let tcp = tokio::net::TcpListener::bind(tcp).await.unwrap();
            let http = tokio::net::TcpListener::bind(http).await.unwrap();
            let addrs = (tcp.local_addr().unwrap(), http.local_addr().unwrap());
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let opts = rsq_lookupd::Options::default();
            let task = tokio::spawn(rsq_lookupd::run(tcp, http, opts, async {
                let _ = stopped.await;
            }));
            (addrs.0, addrs.1, stop, task)
        });
        Lookupd {
            tcp,
            http,
            stop: Some(stop),
            task: Some(task),
            rt,
        }
    }

    fn stop(&mut self) {
        let _ = self.stop.take().map(|s| s.send(()));
        if let Some(task) = self.task.take() {
            self.rt.block_on(task).unwrap().unwrap();
        }
    }

    /// Polls `GET path` until `check` holds (bounded).
    pub fn wait(&self, path: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let (status, body) = http(self.http, "GET", path, b"").unwrap();
            if let Ok(v) = serde_json::from_str::<Value>(&body)
                && status == 200
                && check(&v)
            {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {status} {body}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn tcp_ports(v: &Value) -> Vec<u64> {
    let mut ports: Vec<u64> = v["producers"]
        .as_array()
        .map(|ps| ps.iter().filter_map(|p| p["tcp_port"].as_u64()).collect())
        .unwrap_or_default();
    ports.sort();
    ports
}

fn sorted(mut ports: Vec<u64>) -> Vec<u64> {
    ports.sort();
    ports
}

#[test]
fn two_daemons_and_one_lookupd() {
    let mut lookupd = Lookupd::start("127.0.0.1:0", "127.0.0.1:0");
    let flag = format!("--lookupd-tcp-address={}", lookupd.tcp);
    let mut a = Daemon::start(&[&flag, "--broadcast-address=127.0.0.1"]);
    let mut b = Daemon::start(&[&flag, "--broadcast-address=127.0.0.1"]);
    let (a_port, b_port) = (u64::from(a.tcp.port()), u64::from(b.tcp.port()));

    // Created topics and channels are registered, ephemeral ones too.
    assert_eq!(
        a.http("POST", "/channel/create?topic=t&channel=c", b"").0,
        404
    );
    assert_eq!(a.http("POST", "/topic/create?topic=t", b"").0, 200);
    assert_eq!(
        a.http("POST", "/channel/create?topic=t&channel=c", b"").0,
        200
    );
    assert_eq!(b.http("POST", "/topic/create?topic=t", b"").0, 200);
    assert_eq!(
        b.http("POST", "/channel/create?topic=t&channel=e%23ephemeral", b"")
            .0,
        200
    );
    assert_eq!(b.http("POST", "/topic/create?topic=only_b", b"").0, 200);
    let t = lookupd.wait("/lookup?topic=t", "both daemons produce t", |v| {
        tcp_ports(v) == sorted(vec![a_port, b_port]) && v["channels"] == json!(["c", "e#ephemeral"])
    });
    let http_ports: Vec<u64> = sorted(
        t["producers"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|p| p["http_port"].as_u64())
            .collect(),
    );
    assert_eq!(
        http_ports,
        sorted(vec![u64::from(a.http.port()), u64::from(b.http.port())])
    );
    assert_eq!(t["producers"][0]["broadcast_address"], "127.0.0.1");
    let only_b = lookupd.wait("/lookup?topic=only_b", "only b", |v| {
        tcp_ports(v) == [b_port]
    });
    assert_eq!(only_b["channels"], json!([]));

    // Deleting on a daemon unregisters it.
    assert_eq!(a.http("POST", "/topic/delete?topic=t", b"").0, 200);
    lookupd.wait("/lookup?topic=t", "a gone from t", |v| {
        tcp_ports(v) == [b_port]
    });
    assert_eq!(
        b.http("POST", "/channel/delete?topic=t&channel=e%23ephemeral", b"")
            .0,
        200
    );
    lookupd.wait("/channels?topic=t", "ephemeral channel gone", |v| {
        v["channels"] == json!(["c"])
    });

    // A lookupd restart: every daemon reconnects and registers again,
    // including what it loaded from nsqd.dat.
    let (tcp, http_addr) = (lookupd.tcp.to_string(), lookupd.http.to_string());
    lookupd.stop();
    drop(lookupd);
    assert_eq!(a.http("POST", "/topic/create?topic=while_down", b"").0, 200);
    let lookupd = Lookupd::start(&tcp, &http_addr);
    lookupd.wait("/lookup?topic=while_down", "re-registered", |v| {
        tcp_ports(v) == [a_port]
    });
    lookupd.wait("/lookup?topic=only_b", "re-registered", |v| {
        tcp_ports(v) == [b_port]
    });

    // Run-time change of the lookupd list.
    let (status, body) = a.http("GET", "/config/nsqlookupd_tcp_addresses", b"");
    assert_eq!((status, body), (200, json!([tcp]).to_string()));
    let (status, body) = a.http("PUT", "/config/nsqlookupd_tcp_addresses", b"[]");
    assert_eq!((status, body.as_str()), (200, "[]"));
    lookupd.wait("/nodes", "a left", |v| tcp_ports(v) == [b_port]);
    let body = json!([tcp]).to_string();
    assert_eq!(
        a.http("PUT", "/config/nsqlookupd_tcp_addresses", body.as_bytes())
            .0,
        200
    );
    lookupd.wait("/nodes", "a back", |v| {
        tcp_ports(v) == sorted(vec![a_port, b_port])
    });
    assert_eq!(
        a.http("PUT", "/config/nsqlookupd_tcp_addresses", b"nope").0,
        400
    );

    // A daemon that shuts down leaves at once.
    assert_eq!(b.terminate(), Some(0));
    lookupd.wait("/nodes", "b gone", |v| tcp_ports(v) == [a_port]);
    a.terminate();
}

/// A consumer that finds daemons through lookupd (tokio-nsq's lookupd
/// mode) receives what is published to either daemon.
#[test]
fn lookupd_discovery_reaches_both_daemons() {
    let lookupd = Lookupd::start("127.0.0.1:0", "127.0.0.1:0");
    let flag = format!("--lookupd-tcp-address={}", lookupd.tcp);
    let a = Daemon::start(&[&flag, "--broadcast-address=127.0.0.1"]);
    let b = Daemon::start(&[&flag, "--broadcast-address=127.0.0.1"]);
    for d in [&a, &b] {
        assert_eq!(d.http("POST", "/topic/create?topic=disc", b"").0, 200);
    }
    lookupd.wait("/lookup?topic=disc", "both registered", |v| {
        tcp_ports(v).len() == 2
    });
    for (d, body) in [(&a, "from-a"), (&b, "from-b")] {
        assert_eq!(
            d.http("POST", "/pub?topic=disc", body.as_bytes()),
            (200, "OK".to_string())
        );
    }
    let lookup_http = format!("http://{}", lookupd.http);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let got = rt.block_on(async move {
        let mut consumer = tokio_nsq::NSQConsumerConfig::new(
            tokio_nsq::NSQTopic::new("disc").unwrap(),
            tokio_nsq::NSQChannel::new("c").unwrap(),
        )
        .set_max_in_flight(10)
        .set_sources(tokio_nsq::NSQConsumerConfigSources::Lookup(
            tokio_nsq::NSQConsumerLookupConfig::new()
                .set_poll_interval(Duration::from_millis(500))
                .set_addresses([lookup_http].into_iter().collect()),
        ))
        .build();
        let mut got = Vec::new();
        while got.len() < 2 {
            let msg = tokio::time::timeout(Duration::from_secs(20), consumer.consume_filtered())
                .await
                .expect("consumer timed out")
                .expect("consumer closed");
            got.push(String::from_utf8(msg.body.clone()).unwrap());
            msg.finish().await;
        }
        got.sort();
        got
    });
    assert_eq!(got, ["from-a", "from-b"]);
}

/// `--broadcast-tcp-port` and `--broadcast-http-port` replace the bound
/// ports in what lookupd hands out (a daemon behind a port mapping); 0, the
/// default, means the bound ports, which `/config` then reports.
#[test]
fn broadcast_ports_are_what_lookupd_hands_out() {
    let lookupd = Lookupd::start("127.0.0.1:0", "127.0.0.1:0");
    let flag = format!("--lookupd-tcp-address={}", lookupd.tcp);
    let mapped = Daemon::start(&[
        &flag,
        "--broadcast-address=127.0.0.1",
        "--broadcast-tcp-port=5150",
        "--broadcast-http-port=5151",
    ]);
    let plain = Daemon::start(&[&flag, "--broadcast-address=127.0.0.1"]);
    for d in [&mapped, &plain] {
        assert_eq!(d.http("POST", "/topic/create?topic=ports", b"").0, 200);
    }
    let plain_tcp = u64::from(plain.tcp.port());
    let v = lookupd.wait("/lookup?topic=ports", "both registered", |v| {
        tcp_ports(v) == sorted(vec![5150, plain_tcp])
    });
    let http_ports = sorted(
        v["producers"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|p| p["http_port"].as_u64())
            .collect(),
    );
    assert_eq!(http_ports, sorted(vec![5151, u64::from(plain.http.port())]));
    assert_eq!(
        mapped.http("GET", "/config/broadcast_http_port", b""),
        (200, "5151".to_string())
    );
    assert_eq!(
        plain.http("GET", "/config/broadcast_tcp_port", b""),
        (200, plain_tcp.to_string())
    );
}
