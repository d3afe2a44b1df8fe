//! Replicated topics across three real rsqd processes on loopback: four
//! publishers sending PUB-and-wait to random members, a consumer that FINs
//! on whichever member leads, and the leader SIGKILLed and restarted every
//! few seconds. At the end every acknowledged message has been delivered,
//! and duplicates stay within what was in flight or finished in the last
//! FIN batch at each failover. Then a follower's data dir is wiped while it
//! is down: it is rebuilt from its peers, and losing the leader after
//! that still loses nothing. `RSQ_LONG_TESTS` runs more rounds.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rsq_codec::{Command, Frame};

use crate::harness::{Daemon, V2, http, rng};

/// Members of the test cluster.
const MEMBERS: usize = 3;
/// The consumer's RDY: at most this many messages in flight at a failover.
const RDY: u64 = 50;

/// Three members on loopback, each with its own data dir.
struct Members {
    nodes: Vec<Daemon>,
}

/// Ports the kernel has just handed out (and taken back), for the peer
/// listeners, whose addresses every member must know before any starts.
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("addr").port())
        .collect()
}

impl Members {
    fn start() -> Members {
        Members::start_with(&[])
    }

    /// Three members, each also given `extra` flags.
    fn start_with(extra: &[String]) -> Members {
        let ports = free_ports(MEMBERS);
        let peers: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let list = format!("--cluster-peers={}", peers.join(","));
        let nodes = peers
            .iter()
            .enumerate()
            .map(|(i, me)| {
                let mut flags = vec![
                    format!("--node-id={}", i + 1),
                    format!("--cluster-address={me}"),
                    list.clone(),
                ];
                flags.extend(extra.iter().cloned());
                let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
                Daemon::start(&flags)
            })
            .collect();
        Members { nodes }
    }

    /// The member delivering `topic` now, waiting (bounded) for one.
    fn leader(&mut self, topic: &str) -> usize {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            for (i, node) in self.nodes.iter_mut().enumerate() {
                if !node.is_running() {
                    continue;
                }
                let Ok((200, body)) = http(node.http, "GET", "/stats?format=json", b"") else {
                    continue;
                };
                let stats: serde_json::Value = serde_json::from_str(&body).expect("stats json");
                if stats["replicated_topics"][topic]["delivering"] == true {
                    return i;
                }
            }
            assert!(Instant::now() < deadline, "no member leads {topic}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A member's commit index for `orders` (0 until it has the topic).
fn commit_index(node: &Daemon) -> u64 {
    let Ok((200, body)) = http(node.http, "GET", "/stats?format=json", b"") else {
        return 0;
    };
    let stats: serde_json::Value = serde_json::from_str(&body).expect("stats json");
    stats["replicated_topics"]["orders"]["commit_index"]
        .as_u64()
        .unwrap_or(0)
}

/// A V2 connection to `addr`, or `None` while the member is down.
fn connect(addr: SocketAddr) -> Option<V2> {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    Some(V2::over(stream))
}

/// PUB-and-wait to random members until `stop`, recording each `OK`.
fn publisher(
    addrs: Vec<SocketAddr>,
    n: usize,
    acked: Arc<Mutex<Vec<Bytes>>>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut next = rng(n as u64 + 1);
        let mut seq = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let addr = addrs[(next() % addrs.len() as u64) as usize];
            let Some(mut c) = connect(addr) else {
                std::thread::sleep(Duration::from_millis(50));
                continue;
            };
            // A few publishes per connection, then another member.
            for _ in 0..20 {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                seq += 1;
                let body = Bytes::from(format!("p{n}-{seq}"));
                let cmd = Command::Pub {
                    topic: "orders".into(),
                    body: body.clone(),
                };
                if std::io::Write::write_all(c.stream(), &cmd.to_bytes()).is_err() {
                    break;
                }
                match c.try_frame() {
                    Some(Frame::Response(r)) if &r[..] == b"OK" => {
                        acked.lock().expect("acked").push(body);
                    }
                    Some(Frame::Error(_)) => std::thread::sleep(Duration::from_millis(20)),
                    _ => break,
                }
            }
        }
    })
}

/// Reads messages from one connection, FINning each, until it fails or
/// nothing comes for `quiet`; counts every delivery by body.
fn consume(c: &mut V2, seen: &Mutex<HashMap<Bytes, usize>>, quiet: Duration) {
    loop {
        if c.quiet_for(quiet) {
            return;
        }
        match c.frame_skip_heartbeats() {
            Some(Frame::Message(m)) => {
                *seen
                    .lock()
                    .expect("seen")
                    .entry(m.body.clone())
                    .or_default() += 1;
                c.send(Command::Fin(m.id));
            }
            Some(Frame::Error(e)) => {
                // A FIN for a message the killed leader held comes back
                // E_FIN_FAILED from nobody: the connection is to the new
                // leader only after a reconnect.
                if !e.starts_with(b"E_FIN_FAILED") {
                    return;
                }
            }
            Some(_) => {}
            None => return,
        }
    }
}

/// Subscribes to the leader; `None` if it is not (or no longer) leading.
fn subscribe(addr: SocketAddr) -> Option<V2> {
    let mut c = connect(addr)?;
    c.send(Command::Sub {
        topic: "orders".into(),
        channel: "work".into(),
    });
    match c.frame_skip_heartbeats() {
        Some(Frame::Response(r)) if &r[..] == b"OK" => {}
        _ => return None,
    }
    c.send(Command::Rdy(RDY));
    Some(c)
}

/// Creates `orders` with `replicas=3` and its channel `work`; returns
/// the leader.
fn create_orders(members: &mut Members) -> usize {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) =
            members.nodes[0].http("POST", "/topic/create?topic=orders&replicas=3", b"");
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "create failed: {status} {body}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let leader = members.leader("orders");
    let (status, _) =
        members.nodes[leader].http("POST", "/channel/create?topic=orders&channel=work", b"");
    assert_eq!(status, 200);
    leader
}

fn run(rounds: usize) {
    let mut members = Members::start();
    create_orders(&mut members);

    let addrs: Vec<SocketAddr> = members.nodes.iter().map(|d| d.tcp).collect();
    let acked = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::new(Mutex::new(HashMap::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let publishers: Vec<_> = (0..4)
        .map(|n| publisher(addrs.clone(), n, acked.clone(), stop.clone()))
        .collect();
    let consumer = {
        let (addrs, seen, stop) = (addrs.clone(), seen.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                for addr in &addrs {
                    if let Some(mut c) = subscribe(*addr) {
                        consume(&mut c, &seen, Duration::from_millis(500));
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };

    let mut failovers = 0;
    for _ in 0..rounds {
        std::thread::sleep(Duration::from_secs(3));
        let leader = members.leader("orders");
        let before = acked.lock().expect("acked").len();
        members.nodes[leader].kill();
        let killed = Instant::now();
        let new_leader = members.leader("orders");
        eprintln!(
            "failover: member {leader} killed after {before} acknowledged, member {new_leader} leads after {:?}",
            killed.elapsed()
        );
        failovers += 1;
        members.nodes[leader].restart();
    }
    // A follower whose data dir is wiped while it is down rejoins and is
    // rebuilt from its peers; then losing the leader still loses nothing.
    let leader = members.leader("orders");
    let wiped = (leader + 1) % MEMBERS;
    members.nodes[wiped].kill();
    let dir = members.nodes[wiped].data_path().to_path_buf();
    std::fs::remove_dir_all(&dir).expect("wipe");
    std::fs::create_dir_all(&dir).expect("recreate");
    members.nodes[wiped].restart();
    let caught_up = Instant::now();
    let target = commit_index(&members.nodes[leader]);
    while commit_index(&members.nodes[wiped]) < target {
        assert!(
            caught_up.elapsed() < Duration::from_secs(30),
            "wiped member did not catch up to {target}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!(
        "wiped member {wiped} caught up to index {target} in {:?}",
        caught_up.elapsed()
    );
    members.nodes[leader].kill();
    members.leader("orders");
    failovers += 1;
    members.nodes[leader].restart();

    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    for p in publishers {
        p.join().expect("publisher");
    }
    consumer.join().expect("consumer");

    // Whatever is left comes out of the last leader.
    let acked = acked.lock().expect("acked").clone();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let missing = acked
            .iter()
            .filter(|b| !seen.lock().expect("seen").contains_key(*b))
            .count();
        if missing == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} of {} acknowledged messages never delivered",
            acked.len()
        );
        let leader = members.leader("orders");
        if let Some(mut c) = subscribe(addrs[leader]) {
            consume(&mut c, &seen, Duration::from_secs(1));
        }
    }
    let seen = seen.lock().expect("seen");
    let duplicates: usize = seen.values().map(|n| n - 1).sum();
    eprintln!(
        "replicated: {} acknowledged, {} delivered, {duplicates} duplicates over {failovers} failovers",
        acked.len(),
        seen.len()
    );
    assert!(
        acked.len() > 100,
        "too few publishes were acknowledged: {}",
        acked.len()
    );
    // At a failover a new leader delivers again what was in flight
    // (at most RDY) or finished in the last FIN batch window.
    let bound = failovers * (RDY as usize + 200);
    assert!(
        duplicates <= bound,
        "{duplicates} duplicates over {failovers} failovers (bound {bound})"
    );
}

#[test]
fn replicated_topic_loses_nothing_acknowledged_across_leader_sigkills() {
    let rounds = if std::env::var_os("RSQ_LONG_TESTS").is_some() {
        20
    } else {
        3
    };
    run(rounds);
}

const PYNSQ_PUBLISH: &str = r#"
import sys, tornado.ioloop, nsq
tcp, topic, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
acked = [0]
loop = tornado.ioloop.IOLoop.current()
writer = nsq.Writer([tcp])
def on_pub(conn, data):
    if isinstance(data, nsq.Error):
        print("publish error", data, file=sys.stderr); sys.exit(2)
    acked[0] += 1
    if acked[0] == n:
        loop.stop()
def publish():
    for i in range(n):
        writer.pub(topic, ("py-%d" % i).encode(), callback=on_pub)
loop.call_later(1.0, publish)
loop.call_later(30.0, lambda: (print("timeout", acked[0], file=sys.stderr), sys.exit(3)))
loop.start()
"#;

/// tokio-nsq publishes `prefix-0..n` to `addr`, each waiting for its OK.
async fn tokio_nsq_publish(addr: SocketAddr, prefix: &str, n: usize) {
    let limit = Duration::from_secs(20);
    let mut p = tokio_nsq::NSQProducerConfig::new(addr.to_string()).build();
    match tokio::time::timeout(limit, p.consume()).await {
        Ok(Some(tokio_nsq::NSQEvent::Healthy())) => {}
        other => panic!("tokio-nsq producer did not connect: {other:?}"),
    }
    let topic = tokio_nsq::NSQTopic::new("orders").expect("topic");
    for i in 0..n {
        p.publish(&topic, format!("{prefix}-{i}").into_bytes())
            .await
            .expect("publish");
        match tokio::time::timeout(limit, p.consume()).await {
            Ok(Some(tokio_nsq::NSQEvent::Ok())) => {}
            other => panic!("expected OK from a follower, got {other:?}"),
        }
    }
}

/// pynsq and tokio-nsq publish to a follower; a tokio-nsq consumer that
/// finds the topic through rsq-lookupd receives everything, through a
/// SIGKILL of the leader, with no client change.
#[test]
fn real_clients_publish_to_a_follower_and_consume_through_a_failover() {
    let python = crate::pynsq::python();
    let lookupd = crate::cluster::Lookupd::start("127.0.0.1:0", "127.0.0.1:0");
    let mut members = Members::start_with(&[
        format!("--lookupd-tcp-address={}", lookupd.tcp),
        "--broadcast-address=127.0.0.1".to_string(),
    ]);
    let leader = create_orders(&mut members);
    let follower = (leader + 1) % MEMBERS;
    let (status, body) = members.nodes[follower].http("GET", "/cluster", b"");
    assert_eq!(status, 200, "{body}");
    let cluster: serde_json::Value = serde_json::from_str(&body).expect("cluster json");
    assert_eq!(cluster["members"].as_array().map(Vec::len), Some(MEMBERS));
    assert_eq!(cluster["members"][follower]["this_member"], true);
    assert_eq!(cluster["replicated_topics"]["orders"]["role"], "follower");

    let out = std::process::Command::new(python)
        .arg("-c")
        .arg(PYNSQ_PUBLISH)
        .arg(members.nodes[follower].tcp.to_string())
        .arg("orders")
        .arg("50")
        .output()
        .expect("run pynsq");
    assert!(
        out.status.success(),
        "pynsq publish to a follower failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(tokio_nsq_publish(members.nodes[follower].tcp, "tn", 50));

    let seen = Arc::new(Mutex::new(HashMap::<String, usize>::new()));
    let lookup = format!("http://{}", lookupd.http);
    let consumer = {
        let seen = seen.clone();
        rt.spawn(async move {
            let mut c = tokio_nsq::NSQConsumerConfig::new(
                tokio_nsq::NSQTopic::new("orders").expect("topic"),
                tokio_nsq::NSQChannel::new("work").expect("channel"),
            )
            .set_max_in_flight(20)
            .set_sources(tokio_nsq::NSQConsumerConfigSources::Lookup(
                tokio_nsq::NSQConsumerLookupConfig::new()
                    .set_poll_interval(Duration::from_millis(500))
                    .set_addresses([lookup].into_iter().collect()),
            ))
            .build();
            while let Some(msg) = c.consume_filtered().await {
                let body = String::from_utf8_lossy(&msg.body).to_string();
                *seen.lock().expect("seen").entry(body).or_default() += 1;
                msg.finish().await;
            }
        })
    };
    let wait_for = |what: &str, want: &dyn Fn(&HashMap<String, usize>) -> bool| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !want(&seen.lock().expect("seen")) {
            assert!(Instant::now() < deadline, "consumer never received {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let all = |prefix: &'static str, n: usize| {
        move |s: &HashMap<String, usize>| (0..n).all(|i| s.contains_key(&format!("{prefix}-{i}")))
    };
    wait_for("pynsq's and tokio-nsq's messages", &|s| {
        all("py", 50)(s) && all("tn", 50)(s)
    });

    members.nodes[leader].kill();
    let new_leader = members.leader("orders");
    let survivor = (0..MEMBERS)
        .find(|&i| i != leader && i != new_leader)
        .expect("a follower survives");
    rt.block_on(tokio_nsq_publish(members.nodes[survivor].tcp, "after", 50));
    wait_for(
        "the messages published after the failover",
        &all("after", 50),
    );
    consumer.abort();
    members.nodes[leader].restart();
}
