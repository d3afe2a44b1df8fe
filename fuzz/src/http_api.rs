//! Fuzz target: rsqd's HTTP API, the real router and handlers in process
//! (no socket) over one daemon context on a temporary data dir, as a long
//! running daemon sees a stream of requests.
//!
//! Input layout: byte 0 picks the method, byte 1 the route, then the query
//! string's bytes up to the first `0xff`, then the body. Query bytes are
//! sent percent-encoded, so any byte reaches the handlers.
//!
//! Checked: no panic; never a 5xx (but 503 while drain mode is on); nsqd's `X-NSQ-Content-Type` header on
//! every answer; every 4xx body is nsqd's `{"message": CODE}`.

use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use rsqd::{Nsqd, Options};
use tower::ServiceExt;

const METHODS: [Method; 5] = [
    Method::GET,
    Method::POST,
    Method::PUT,
    Method::DELETE,
    Method::HEAD,
];

/// The daemon's routes, then paths it does not serve.
fn routes() -> impl Iterator<Item = &'static str> {
    rsqd::http::ROUTES
        .into_iter()
        .chain(["/config/mem_queue_size", "/nope", "/"])
}

struct Daemon {
    runtime: tokio::runtime::Runtime,
    ctx: Arc<Nsqd>,
    _dir: tempfile::TempDir,
}

fn daemon() -> &'static Daemon {
    static DAEMON: OnceLock<Daemon> = OnceLock::new();
    DAEMON.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let data = format!("--data-path={}", dir.path().display());
        let opts = Options::load_from([
            "rsqd",
            data.as_str(),
            "--max-msg-size=64",
            "--max-body-size=256",
            "--mem-queue-size=100",
        ])
        .expect("options");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let ctx = runtime.block_on(async {
            let ctx = Nsqd::new(opts, Arc::new(rsq_channel::SystemClock)).expect("daemon");
            ctx.load_metadata().await.expect("metadata");
            ctx.start_lookup();
            ctx
        });
        Daemon {
            runtime,
            ctx,
            _dir: dir,
        }
    })
}

/// Runs the target on one input; panics on a finding.
pub fn run(data: &[u8]) {
    let [method, route, rest @ ..] = data else {
        return;
    };
    let (query, body) = match rest.iter().position(|&b| b == 0xff) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[][..]),
    };
    // Keep `=` and `&` so the fuzzer can form pairs; encode everything else.
    let query: String = query
        .iter()
        .map(|&b| match b {
            b'=' | b'&' | b'a'..=b'z' | b'0'..=b'9' | b'_' => char::from(b).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    let method = METHODS[usize::from(*method) % METHODS.len()].clone();
    let count = routes().count();
    let Some(path) = routes().nth(usize::from(*route) % count) else {
        return;
    };
    let request = Request::builder()
        .method(method.clone())
        .uri(format!("{path}?{query}"))
        .body(Body::from(body.to_vec()))
        .expect("request");
    let d = daemon();
    d.runtime.block_on(async {
        let response = rsqd::http::router(d.ctx.clone())
            .oneshot(request)
            .await
            .expect("infallible");
        let status = response.status();
        assert!(response.headers().contains_key("X-NSQ-Content-Type"));
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body");
        // A `PUT /config/drain true` makes publishes and /ping answer 503
        // DRAINING, as they should; any other 5xx is a bug.
        let draining = status == StatusCode::SERVICE_UNAVAILABLE && d.ctx.is_draining();
        assert!(!status.is_server_error() || draining, "{status}: {bytes:?}");
        if status.is_client_error() && method != Method::HEAD {
            let json: serde_json::Value =
                serde_json::from_slice(&bytes).unwrap_or_else(|_| panic!("{status}: {bytes:?}"));
            let code = json["message"].as_str().unwrap_or_default();
            assert!(
                !code.is_empty() && code.bytes().all(|c| c.is_ascii_uppercase() || c == b'_'),
                "{status}: {json}"
            );
        }
    });
}
