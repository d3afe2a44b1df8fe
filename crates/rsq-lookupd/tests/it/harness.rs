//! An in-process rsq-lookupd on loopback ports, a raw HTTP/1.1 client, and a
//! producer speaking protocol V1 over real TCP through the shared
//! [`rsq_codec::lookup`] encoder and reply decoder (raw lines for what a
//! real producer would never send). Every wait is bounded.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rsq_codec::lookup::{MAGIC_V1, Request, ResponseDecoder};
use rsq_lookupd::Options;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How long any poll waits before failing the test.
pub const WAIT: Duration = Duration::from_secs(10);

/// A running lookupd.
pub struct Lookupd {
    /// The producer (TCP) address.
    pub tcp: SocketAddr,
    /// The HTTP address.
    pub http: SocketAddr,
    /// Held while lookupd runs: dropping it stops lookupd.
    _stop: oneshot::Sender<()>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl Lookupd {
    /// Starts lookupd with default options on fresh loopback ports.
    pub async fn start() -> Lookupd {
        Lookupd::start_with(Options::default()).await
    }

    /// Starts lookupd with `opts` (its addresses are ignored) on fresh ports.
    pub async fn start_with(opts: Options) -> Lookupd {
        Lookupd::start_on(
            "127.0.0.1:0".parse().unwrap(),
            "127.0.0.1:0".parse().unwrap(),
            opts,
        )
        .await
    }

    /// Starts lookupd on the given addresses.
    pub async fn start_on(tcp: SocketAddr, http: SocketAddr, mut opts: Options) -> Lookupd {
        let tcp = TcpListener::bind(tcp).await.expect("bind tcp");
        let http = TcpListener::bind(http).await.expect("bind http");
        let (tcp_addr, http_addr) = (tcp.local_addr().unwrap(), http.local_addr().unwrap());
        if opts.broadcast_address.is_none() {
            opts.broadcast_address = Some("lookupd.test".into());
        }
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(rsq_lookupd::run(tcp, http, opts, async {
            let _ = stopped.await;
        }));
        Lookupd {
            tcp: tcp_addr,
            http: http_addr,
            _stop: stop,
            task: Some(task),
        }
    }

    /// `GET path`, expecting 200 and a JSON body.
    pub async fn get_json(&self, path: &str) -> serde_json::Value {
        let res = http(self.http, "GET", path).await;
        assert_eq!(res.status, 200, "GET {path}: {}", res.body);
        serde_json::from_str(&res.body).expect("json body")
    }

    /// Any request.
    pub async fn request(&self, method: &str, path: &str) -> Response {
        http(self.http, method, path).await
    }

    /// Polls `GET path` until `check` holds on its JSON (bounded).
    pub async fn wait_json(
        &self,
        path: &str,
        what: &str,
        check: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let res = http(self.http, "GET", path).await;
            if let Ok(value) = serde_json::from_str::<serde_json::Value>(&res.body)
                && res.status == 200
                && check(&value)
            {
                return value;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}: GET {path} -> {} {}",
                res.status,
                res.body
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

/// An HTTP answer.
#[derive(Debug)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// The head, lowercased.
    pub head: String,
    /// The body.
    pub body: String,
}

/// One HTTP/1.1 request on its own connection.
pub async fn http(addr: SocketAddr, method: &str, path: &str) -> Response {
    let exchange = async {
        let mut s = TcpStream::connect(addr).await?;
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await?;
        Ok::<_, std::io::Error>(raw)
    };
    let raw = tokio::time::timeout(WAIT, exchange)
        .await
        .expect("HTTP request timed out")
        .expect("HTTP request failed");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("HTTP head");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    Response {
        status,
        head: head.to_ascii_lowercase(),
        body: body.to_string(),
    }
}

/// A producer: protocol V1 over TCP.
pub struct Producer {
    stream: TcpStream,
    replies: ResponseDecoder,
    buf: BytesMut,
}

impl Producer {
    /// Connects and sends the magic.
    pub async fn connect(addr: SocketAddr) -> Producer {
        let mut p = Producer::connect_raw(addr).await;
        p.send(MAGIC_V1).await;
        p
    }

    /// Connects without sending anything.
    pub async fn connect_raw(addr: SocketAddr) -> Producer {
        Producer {
            stream: TcpStream::connect(addr).await.expect("connect"),
            replies: ResponseDecoder::new(1024 * 1024),
            buf: BytesMut::new(),
        }
    }

    /// Connects, sends the magic and identifies with `broadcast` and ports.
    pub async fn identified(addr: SocketAddr, broadcast: &str, tcp_port: u16) -> Producer {
        let mut p = Producer::connect(addr).await;
        let reply = p.identify(&identify_body(broadcast, tcp_port)).await;
        assert!(reply.starts_with('{'), "IDENTIFY failed: {reply}");
        p
    }

    /// The local address: what lookupd reports as `remote_address`.
    pub fn local_addr(&self) -> SocketAddr {
        self.stream.local_addr().unwrap()
    }

    /// Sends raw bytes.
    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    /// Sends one request, encoded as a producer does.
    pub async fn request(&mut self, request: &Request) {
        let mut bytes = BytesMut::new();
        request.encode(&mut bytes);
        self.send(&bytes).await;
    }

    /// Reads one length-prefixed reply.
    pub async fn reply(&mut self) -> String {
        let read = async {
            // Each pass reads more bytes; the whole read is bounded by WAIT.
            loop {
                if let Some(data) = self.replies.decode(&mut self.buf).expect("reply size") {
                    return Ok::<_, std::io::Error>(data.to_vec());
                }
                if self.stream.read_buf(&mut self.buf).await? == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
            }
        };
        let data = tokio::time::timeout(WAIT, read)
            .await
            .expect("reply timed out")
            .expect("reply");
        String::from_utf8(data).expect("utf8 reply")
    }

    /// Sends one command line (newline added) and reads the reply.
    pub async fn command(&mut self, line: &str) -> String {
        self.send(format!("{line}\n").as_bytes()).await;
        self.reply().await
    }

    /// Sends IDENTIFY with `json` and reads the reply.
    pub async fn identify(&mut self, json: &str) -> String {
        let body = Bytes::copy_from_slice(json.as_bytes());
        self.request(&Request::Identify { body }).await;
        self.reply().await
    }

    /// Whether lookupd has closed the connection (reads EOF, bounded).
    pub async fn is_closed(&mut self) -> bool {
        if !self.buf.is_empty() {
            return false; // Unread reply bytes.
        }
        let mut byte = [0u8; 1];
        matches!(
            tokio::time::timeout(WAIT, self.stream.read(&mut byte)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }
}

/// An IDENTIFY body as nsqd sends it.
pub fn identify_body(broadcast: &str, tcp_port: u16) -> String {
    serde_json::json!({
        "version": "1.3.0",
        "tcp_port": tcp_port,
        "http_port": tcp_port + 1,
        "hostname": format!("{broadcast}-host"),
        "broadcast_address": broadcast,
    })
    .to_string()
}
