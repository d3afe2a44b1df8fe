//! The shapes of NSQ's HTTP API answers, as nsqd and nsqlookupd give them.
//!
//! Errors are `{"message": "<CODE>"}` with a status code; JSON bodies are
//! `application/json; charset=utf-8`; unknown paths are `404 NOT_FOUND`,
//! known paths with another method `405 METHOD_NOT_ALLOWED`; and every
//! answer carries `X-NSQ-Content-Type: nsq; version=1.0`. Tools written
//! against nsqd's API (nsqadmin, nsq_stat, curl scripts) rely on all four.

use axum::Router;
use axum::extract::Query;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rsq_codec::is_valid_name;

/// The `Content-Type` of every JSON answer, errors included.
pub const JSON_CONTENT_TYPE: &str = "application/json; charset=utf-8";

/// A request's query pairs in order, repeated keys kept.
pub type Params = Query<Vec<(String, String)>>;

/// An HTTP error as NSQ reports it: a status and a code such as
/// `MISSING_ARG_TOPIC`, answered as `{"message": "<code>"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiError(pub StatusCode, pub &'static str);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "message": self.1 }).to_string();
        (self.0, [(header::CONTENT_TYPE, JSON_CONTENT_TYPE)], body).into_response()
    }
}

/// What a handler returns: an answer, or an NSQ error.
pub type ApiResult = Result<Response, ApiError>;

/// `200` with `value` as a JSON body (`500 INTERNAL_ERROR` if it does not
/// serialize).
pub fn json<T: serde::Serialize + ?Sized>(value: &T) -> ApiResult {
    let body = serde_json::to_vec(value)
        .map_err(|_| ApiError(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR"))?;
    Ok(([(header::CONTENT_TYPE, JSON_CONTENT_TYPE)], body).into_response())
}

/// `200` with an empty body, as NSQ answers its POST actions.
pub fn ok_empty() -> ApiResult {
    Ok(StatusCode::OK.into_response())
}

/// The first value of query parameter `key`, if given.
pub fn param<'a>(params: &'a [(String, String)], key: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// The first value of `key`, or `400 <missing>` (e.g. `MISSING_ARG_TOPIC`).
pub fn required<'a>(
    params: &'a [(String, String)],
    key: &str,
    missing: &'static str,
) -> Result<&'a str, ApiError> {
    param(params, key).ok_or(ApiError(StatusCode::BAD_REQUEST, missing))
}

/// A valid `topic` and `channel`, as the `/channel/*` actions need them:
/// `400` with `MISSING_ARG_TOPIC`, `INVALID_ARG_TOPIC`,
/// `MISSING_ARG_CHANNEL` or `INVALID_ARG_CHANNEL`, checked in that order.
pub fn topic_and_channel(params: &[(String, String)]) -> Result<(&str, &str), ApiError> {
    let topic = required(params, "topic", "MISSING_ARG_TOPIC")?;
    if !is_valid_name(topic) {
        return Err(ApiError(StatusCode::BAD_REQUEST, "INVALID_ARG_TOPIC"));
    }
    let channel = required(params, "channel", "MISSING_ARG_CHANNEL")?;
    if !is_valid_name(channel) {
        return Err(ApiError(StatusCode::BAD_REQUEST, "INVALID_ARG_CHANNEL"));
    }
    Ok((topic, channel))
}

/// Completes a daemon's router as an NSQ API: `404 NOT_FOUND` for unknown
/// paths, `405 METHOD_NOT_ALLOWED` for a known path's other methods, and
/// `X-NSQ-Content-Type` on every answer. Call it after adding the routes
/// (and their layers): later routes would miss the header.
pub fn nsq_api<S: Clone + Send + Sync + 'static>(router: Router<S>) -> Router<S> {
    router
        .fallback(|| async { ApiError(StatusCode::NOT_FOUND, "NOT_FOUND") })
        .method_not_allowed_fallback(|| async {
            ApiError(StatusCode::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED")
        })
        .layer(axum::middleware::map_response(nsq_content_type))
}

/// Marks an answer as NSQ's API version 1.0.
async fn nsq_content_type(mut res: Response) -> Response {
    res.headers_mut().insert(
        "X-NSQ-Content-Type",
        HeaderValue::from_static("nsq; version=1.0"),
    );
    res
}

#[cfg(test)]
mod tests;
