//! The answer shapes, read back as a client sees them, and a router
//! completed by [`nsq_api`] driven in process.

#![allow(clippy::unwrap_used)]

use axum::body::{Body, to_bytes};
use axum::http::{Method, Request};
use axum::routing::{get, post};
use tower::ServiceExt;

use super::*;

/// Status, content type, X-NSQ-Content-Type and body of an answer.
async fn read(res: Response) -> (StatusCode, Option<String>, Option<String>, String) {
    let status = res.status();
    let header = |name: &str| {
        res.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
    };
    let content_type = header("content-type");
    let nsq = header("x-nsq-content-type");
    let body = to_bytes(res.into_body(), usize::MAX).await.unwrap();
    (
        status,
        content_type,
        nsq,
        String::from_utf8(body.to_vec()).unwrap(),
    )
}

#[tokio::test]
async fn api_error_is_a_json_message() {
    let (status, content_type, _, body) =
        read(ApiError(StatusCode::BAD_REQUEST, "MISSING_ARG_TOPIC").into_response()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(content_type.as_deref(), Some(JSON_CONTENT_TYPE));
    assert_eq!(body, r#"{"message":"MISSING_ARG_TOPIC"}"#);
}

#[tokio::test]
async fn json_and_empty_answers() {
    let (status, content_type, _, body) =
        read(json(&serde_json::json!({"topics": ["a"]})).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(content_type.as_deref(), Some(JSON_CONTENT_TYPE));
    assert_eq!(body, r#"{"topics":["a"]}"#);
    let (status, _, _, body) = read(ok_empty().unwrap()).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, ""));
}

#[track_caller]
fn check_params(pairs: &[(&str, &str)], expected: Result<(&str, &str), &'static str>) {
    let params: Vec<(String, String)> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let got = topic_and_channel(&params).map_err(|e| {
        assert_eq!(e.0, StatusCode::BAD_REQUEST);
        e.1
    });
    assert_eq!(got, expected);
}

#[test]
fn topic_and_channel_checks_in_order() {
    check_params(&[("topic", "t"), ("channel", "c")], Ok(("t", "c")));
    check_params(
        &[("channel", "c"), ("topic", "t"), ("topic", "u")],
        Ok(("t", "c")),
    );
    check_params(&[("channel", "c")], Err("MISSING_ARG_TOPIC"));
    check_params(
        &[("topic", "t t"), ("channel", "c")],
        Err("INVALID_ARG_TOPIC"),
    );
    check_params(&[("topic", "t")], Err("MISSING_ARG_CHANNEL"));
    check_params(
        &[("topic", "t"), ("channel", "")],
        Err("INVALID_ARG_CHANNEL"),
    );
    check_params(&[], Err("MISSING_ARG_TOPIC"));
}

async fn call(app: &Router, method: Method, path: &str) -> (StatusCode, Option<String>, String) {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .body(Body::empty())
        .unwrap();
    let (status, _, nsq, body) = read(app.clone().oneshot(req).await.unwrap()).await;
    (status, nsq, body)
}

#[tokio::test]
async fn nsq_api_adds_fallbacks_and_header() {
    let app = nsq_api(
        Router::new()
            .route("/ping", get(|| async { "OK" }))
            .route("/act", post(|| async { ok_empty() })),
    );
    let nsq = Some("nsq; version=1.0".to_string());
    assert_eq!(
        call(&app, Method::GET, "/ping").await,
        (StatusCode::OK, nsq.clone(), "OK".to_string())
    );
    assert_eq!(
        call(&app, Method::POST, "/act").await,
        (StatusCode::OK, nsq.clone(), String::new())
    );
    assert_eq!(
        call(&app, Method::GET, "/nope").await,
        (
            StatusCode::NOT_FOUND,
            nsq.clone(),
            r#"{"message":"NOT_FOUND"}"#.to_string()
        )
    );
    assert_eq!(
        call(&app, Method::GET, "/act").await,
        (
            StatusCode::METHOD_NOT_ALLOWED,
            nsq,
            r#"{"message":"METHOD_NOT_ALLOWED"}"#.to_string()
        )
    );
}
