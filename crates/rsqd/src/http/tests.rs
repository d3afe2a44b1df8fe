//! The HTTP API driven by property tests, in process through the router
//! (no socket, the real handlers and daemon state on a temporary data
//! dir): topic and channel requests against a model of what should exist,
//! and arbitrary requests against the rules every answer keeps.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use proptest::prelude::*;
use rsq_channel::SystemClock;
use tower::ServiceExt;

use crate::Nsqd;
use crate::options::Options;

/// One request, as the tests generate it.
#[derive(Debug, Clone)]
enum Req {
    CreateTopic(usize),
    DeleteTopic(usize),
    PauseTopic(usize),
    EmptyTopic(usize),
    CreateChannel(usize, usize),
    DeleteChannel(usize, usize),
    Pub(usize, Vec<u8>),
    /// Anything: method, path, query pairs (values as raw bytes) and body.
    Raw {
        method: Method,
        path: String,
        query: QueryPairs,
        body: Vec<u8>,
    },
}

/// Query pairs, values as raw bytes (percent-encoded when sent).
type QueryPairs = Vec<(String, Vec<u8>)>;

const TOPICS: [&str; 3] = ["a", "b", "c.d_e-1"];
const CHANNELS: [&str; 2] = ["x", "y"];

fn percent(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("%{b:02X}")).collect()
}

impl Req {
    fn request(&self) -> Request<Body> {
        let (method, path, query, body): (Method, &str, QueryPairs, Vec<u8>) = match self {
            Req::CreateTopic(t) => (Method::POST, "/topic/create", topic(*t), vec![]),
            Req::DeleteTopic(t) => (Method::POST, "/topic/delete", topic(*t), vec![]),
            Req::PauseTopic(t) => (Method::POST, "/topic/pause", topic(*t), vec![]),
            Req::EmptyTopic(t) => (Method::POST, "/topic/empty", topic(*t), vec![]),
            Req::CreateChannel(t, c) => (Method::POST, "/channel/create", channel(*t, *c), vec![]),
            Req::DeleteChannel(t, c) => (Method::POST, "/channel/delete", channel(*t, *c), vec![]),
            Req::Pub(t, body) => (Method::POST, "/pub", topic(*t), body.clone()),
            Req::Raw {
                method,
                path,
                query,
                body,
            } => (method.clone(), path.as_str(), query.clone(), body.clone()),
        };
        let query: Vec<String> = query
            .iter()
            .map(|(k, v)| format!("{}={}", percent(k.as_bytes()), percent(v)))
            .collect();
        Request::builder()
            .method(method)
            .uri(format!("{path}?{}", query.join("&")))
            .body(Body::from(body))
            .unwrap()
    }
}

fn topic(t: usize) -> QueryPairs {
    vec![("topic".to_string(), TOPICS[t].as_bytes().to_vec())]
}

fn channel(t: usize, c: usize) -> QueryPairs {
    let mut q = topic(t);
    q.push(("channel".to_string(), CHANNELS[c].as_bytes().to_vec()));
    q
}

fn modelled() -> impl Strategy<Value = Req> {
    let t = 0..TOPICS.len();
    let c = 0..CHANNELS.len();
    prop_oneof![
        t.clone().prop_map(Req::CreateTopic),
        t.clone().prop_map(Req::DeleteTopic),
        t.clone().prop_map(Req::PauseTopic),
        t.clone().prop_map(Req::EmptyTopic),
        (t.clone(), c.clone()).prop_map(|(t, c)| Req::CreateChannel(t, c)),
        (t.clone(), c).prop_map(|(t, c)| Req::DeleteChannel(t, c)),
        (t, proptest::collection::vec(any::<u8>(), 0..3)).prop_map(|(t, b)| Req::Pub(t, b)),
    ]
}

fn raw() -> impl Strategy<Value = Req> {
    let method = proptest::sample::select(vec![
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::HEAD,
    ]);
    let path = proptest::sample::select(
        super::ROUTES
            .iter()
            .chain(&["/config/nope", "/nope", "/"])
            .copied()
            .collect::<Vec<_>>(),
    );
    let key = proptest::sample::select(vec![
        "topic",
        "channel",
        "defer",
        "format",
        "binary",
        "include_clients",
        "include_mem",
    ]);
    let value = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..12),
        proptest::sample::select(vec![
            "a",
            "b#ephemeral",
            "json",
            "text",
            "true",
            "1",
            "-1",
            "99999999999999999999",
            "",
            "a\u{e9}",
            "..",
        ])
        .prop_map(|s| s.as_bytes().to_vec()),
        Just(vec![b'n'; 65]),
    ];
    let body = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..64),
        Just(b"a\nb\n\nc".to_vec()),
        Just(b"\x00\x00\x00\x02\x00\x00\x00\x01a\x00\x00\x00\x09".to_vec()),
        Just(br#"["127.0.0.1:1"]"#.to_vec()),
        Just(b"\"debug\"".to_vec()),
    ];
    (
        method,
        path,
        proptest::collection::vec((key.prop_map(str::to_string), value), 0..4),
        body,
    )
        .prop_map(|(method, path, query, body)| Req::Raw {
            method,
            path: path.to_string(),
            query,
            body,
        })
}

/// A daemon context on a fresh data dir, run on a fresh runtime.
fn with_daemon(flags: &[&str], test: impl AsyncFnOnce(Arc<Nsqd>)) {
    let dir = tempfile::tempdir().unwrap();
    let data = format!("--data-path={}", dir.path().display());
    let mut args = vec!["rsqd", data.as_str()];
    args.extend_from_slice(flags);
    let opts = Options::load_from(args).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let ctx = Nsqd::new(opts, Arc::new(SystemClock)).unwrap();
        ctx.load_metadata().await.unwrap();
        ctx.start_lookup();
        test(ctx.clone()).await;
        ctx.shutdown().await;
    });
}

/// Sends `req` and checks what every answer must be: nsqd's header, never
/// a server error, and an error body that is nsqd's `{"message": CODE}`.
async fn send(ctx: &Arc<Nsqd>, req: Request<Body>) -> (StatusCode, Vec<u8>) {
    let method = req.method().clone();
    let res = super::router(ctx.clone()).oneshot(req).await.unwrap();
    let status = res.status();
    assert!(
        res.headers().contains_key("X-NSQ-Content-Type"),
        "nsqd's content-type header"
    );
    let body = axum::body::to_bytes(res.into_body(), usize::MAX)
        .await
        .unwrap()
        .to_vec();
    // `PUT /config/drain true` makes publishes and /ping answer 503, as
    // they should; any other 5xx is a bug.
    let draining = status == StatusCode::SERVICE_UNAVAILABLE && ctx.is_draining();
    assert!(!status.is_server_error() || draining, "{status}: {body:?}");
    if status.is_client_error() && method != Method::HEAD {
        let json: serde_json::Value = serde_json::from_slice(&body)
            .unwrap_or_else(|_| panic!("{status} body is not JSON: {body:?}"));
        let code = json["message"].as_str().unwrap_or_default();
        assert!(
            !code.is_empty() && code.chars().all(|c| c.is_ascii_uppercase() || c == '_'),
            "{status} body {json}"
        );
    }
    (status, body)
}

/// Topic name to channel names, as `/stats` shows them.
async fn listed(ctx: &Arc<Nsqd>) -> BTreeMap<String, BTreeSet<String>> {
    let get = Request::get("/stats?format=json")
        .body(Body::empty())
        .unwrap();
    let (status, body) = send(ctx, get).await;
    assert_eq!(status, StatusCode::OK);
    let stats: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let mut listed = BTreeMap::new();
    for topic in stats["topics"].as_array().into_iter().flatten() {
        let channels = topic["channels"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| c["channel_name"].as_str().unwrap().to_string())
            .collect();
        listed.insert(topic["topic_name"].as_str().unwrap().to_string(), channels);
    }
    listed
}

#[test]
fn every_listed_route_is_served() {
    with_daemon(&[], async |ctx| {
        for path in super::ROUTES {
            let mut answered = false;
            for method in [Method::GET, Method::POST] {
                let req = Request::builder()
                    .method(method)
                    .uri(path)
                    .body(Body::empty())
                    .unwrap();
                let (status, _) = send(&ctx, req).await;
                answered |=
                    status != StatusCode::NOT_FOUND && status != StatusCode::METHOD_NOT_ALLOWED;
            }
            assert!(answered, "{path} is not served");
        }
    });
}

#[test]
fn metrics_answer_in_prometheus_text_format() {
    with_daemon(&[], async |ctx| {
        for (uri, content_type) in [
            ("/metrics", "text/plain; version=0.0.4; charset=utf-8"),
            (
                "/metrics?format=text&x=1",
                "text/plain; version=0.0.4; charset=utf-8",
            ),
            (
                "/metrics?format=openmetrics",
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            ),
        ] {
            let req = Request::get(uri).body(Body::empty()).unwrap();
            let res = super::router(ctx.clone()).oneshot(req).await.unwrap();
            assert_eq!(res.status(), StatusCode::OK, "{uri}");
            assert_eq!(res.headers()["content-type"], content_type, "{uri}");
        }
        let req = Request::get("/metrics?format=xml")
            .body(Body::empty())
            .unwrap();
        let (status, body) = send(&ctx, req).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body, br#"{"message":"INVALID_FORMAT"}"#);
    });
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Topic and channel requests answer as nsqd's do, and `/stats` then
    /// lists exactly what the model says exists.
    #[test]
    fn topics_and_channels_match_the_model(reqs in proptest::collection::vec(modelled(), 1..20)) {
        with_daemon(&[], async |ctx| {
            let mut model: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
            for req in &reqs {
                let (status, body) = send(&ctx, req.request()).await;
                let code = |s: &str| format!(r#"{{"message":"{s}"}}"#).into_bytes();
                let expect = match req {
                    Req::CreateTopic(t) => {
                        model.entry(TOPICS[*t].to_string()).or_default();
                        (StatusCode::OK, vec![])
                    }
                    Req::DeleteTopic(t) | Req::PauseTopic(t) | Req::EmptyTopic(t) => {
                        let exists = model.contains_key(TOPICS[*t]);
                        if matches!(req, Req::DeleteTopic(_)) {
                            model.remove(TOPICS[*t]);
                        }
                        if exists {
                            (StatusCode::OK, vec![])
                        } else {
                            (StatusCode::NOT_FOUND, code("TOPIC_NOT_FOUND"))
                        }
                    }
                    Req::CreateChannel(t, c) => match model.get_mut(TOPICS[*t]) {
                        Some(channels) => {
                            channels.insert(CHANNELS[*c].to_string());
                            (StatusCode::OK, vec![])
                        }
                        None => (StatusCode::NOT_FOUND, code("TOPIC_NOT_FOUND")),
                    },
                    Req::DeleteChannel(t, c) => match model.get_mut(TOPICS[*t]).map(|chans| chans.remove(CHANNELS[*c])) {
                        None => (StatusCode::NOT_FOUND, code("TOPIC_NOT_FOUND")),
                        Some(true) => (StatusCode::OK, vec![]),
                        Some(false) => (StatusCode::NOT_FOUND, code("CHANNEL_NOT_FOUND")),
                    },
                    Req::Pub(_, body) if body.is_empty() => (StatusCode::BAD_REQUEST, code("MSG_EMPTY")),
                    Req::Pub(t, _) => {
                        model.entry(TOPICS[*t].to_string()).or_default();
                        (StatusCode::OK, b"OK".to_vec())
                    }
                    Req::Raw { .. } => unreachable!("not generated here"),
                };
                assert_eq!((status, body), expect, "{req:?}");
            }
            assert_eq!(listed(&ctx).await, model);
        });
    }

    /// Arbitrary requests (methods, paths, query bytes, bodies): every
    /// answer keeps the rules in `send`, and the daemon still answers
    /// `/ping` and `/stats` afterwards.
    #[test]
    fn arbitrary_requests_get_nsqds_answers(reqs in proptest::collection::vec(raw(), 1..24)) {
        with_daemon(&["--max-msg-size=32", "--max-body-size=64"], async |ctx| {
            for req in &reqs {
                send(&ctx, req.request()).await;
            }
            let ping = Request::get("/ping").body(Body::empty()).unwrap();
            assert_eq!(send(&ctx, ping).await, (StatusCode::OK, b"OK".to_vec()));
            listed(&ctx).await;
        });
    }
}

/// A body past the router's limit (max of the two size flags) gets nsqd's
/// JSON, not axum's plain-text 413, whether its length is declared or it
/// is streamed in chunks.
#[test]
fn bodies_past_the_limit_get_nsqds_json() {
    with_daemon(&["--max-msg-size=10", "--max-body-size=100"], async |ctx| {
        for (path, code) in [
            ("/pub?topic=t", "MSG_TOO_BIG"),
            ("/mpub?topic=t", "BODY_TOO_BIG"),
        ] {
            let declared = Request::post(path)
                .body(Body::from(vec![b'x'; 500]))
                .unwrap();
            let chunks = chunked(vec![b'y'; 500]);
            let streamed = Request::post(path).body(chunks).unwrap();
            for req in [declared, streamed] {
                let (status, body) = send(&ctx, req).await;
                assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{path}");
                let expected = format!(r#"{{"message":"{code}"}}"#);
                assert_eq!(String::from_utf8_lossy(&body), expected, "{path}");
            }
        }
    });
}

/// A body of unknown length (no size hint, so sent chunked), in 50-byte
/// chunks.
struct Chunked(std::collections::VecDeque<axum::body::Bytes>);

impl hyper::body::Body for Chunked {
    type Data = axum::body::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        std::task::Poll::Ready(self.0.pop_front().map(|c| Ok(hyper::body::Frame::data(c))))
    }
}

fn chunked(bytes: Vec<u8>) -> Body {
    Body::new(Chunked(
        bytes
            .chunks(50)
            .map(axum::body::Bytes::copy_from_slice)
            .collect(),
    ))
}
