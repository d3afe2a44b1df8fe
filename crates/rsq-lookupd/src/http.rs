//! The HTTP API: nsqlookupd's routes, response shapes and error bodies.
//!
//! Consumers ask `/lookup?topic=` where a topic is produced; nsqadmin and
//! operators use the rest. Success bodies are JSON (or text for `/ping`,
//! empty for the POST actions); errors are `{"message": "<CODE>"}` with
//! nsqlookupd's status codes. Every response carries
//! `X-NSQ-Content-Type: nsq; version=1.0`.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use rsq_codec::is_valid_name;
use rsq_service::http::{Params, json, nsq_api, ok_empty, required, topic_and_channel};
use rsq_service::{ApiError, ApiResult};
use tokio::net::TcpListener;

use crate::Lookupd;
use crate::options::VERSION;

type Ctx = State<Arc<Lookupd>>;

/// A topic that must be present and valid (`/topic/create`, `/channel/*`).
fn valid_topic(params: &[(String, String)]) -> Result<&str, ApiError> {
    let topic = required(params, "topic", "MISSING_ARG_TOPIC")?;
    if !is_valid_name(topic) {
        return Err(ApiError(StatusCode::BAD_REQUEST, "INVALID_ARG_TOPIC"));
    }
    Ok(topic)
}

fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

/// Builds the router; [`serve`] runs it.
pub fn router(ctx: Arc<Lookupd>) -> Router {
    nsq_api(
        Router::new()
            .route("/ping", get(|| async { "OK" }))
            .route("/info", get(info))
            .route("/lookup", get(lookup))
            .route("/topics", get(topics))
            .route("/channels", get(channels))
            .route("/nodes", get(nodes))
            .route("/topic/create", post(topic_create))
            .route("/topic/delete", post(topic_delete))
            .route("/topic/tombstone", post(topic_tombstone))
            .route("/channel/create", post(channel_create))
            .route("/channel/delete", post(channel_delete)),
    )
    .with_state(ctx)
}

/// Serves the HTTP API on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    ctx: Arc<Lookupd>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(ctx))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn info() -> ApiResult {
    json(&serde_json::json!({ "version": VERSION }))
}

async fn lookup(State(ctx): Ctx, Query(params): Params) -> ApiResult {
    let topic = required(&params, "topic", "MISSING_ARG_TOPIC")?;
    let found = ctx
        .lock_registry()
        .lookup(topic, now(), ctx.opts.liveness())
        .ok_or(ApiError(StatusCode::NOT_FOUND, "TOPIC_NOT_FOUND"))?;
    json(&found)
}

async fn topics(State(ctx): Ctx) -> ApiResult {
    let topics = ctx.lock_registry().topics();
    json(&serde_json::json!({ "topics": topics }))
}

async fn channels(State(ctx): Ctx, Query(params): Params) -> ApiResult {
    let topic = required(&params, "topic", "MISSING_ARG_TOPIC")?;
    let channels = ctx.lock_registry().channels(topic);
    json(&serde_json::json!({ "channels": channels }))
}

async fn nodes(State(ctx): Ctx) -> ApiResult {
    let producers = ctx.lock_registry().nodes(now(), ctx.opts.liveness());
    json(&serde_json::json!({ "producers": producers }))
}

async fn topic_create(State(ctx): Ctx, Query(params): Params) -> ApiResult {
    let topic = valid_topic(&params)?;
    tracing::info!(topic, "DB: adding topic");
    ctx.lock_registry().create_topic(topic);
    ok_empty()
}

async fn topic_delete(State(ctx): Ctx, Query(params): Params) -> ApiResult {
    let topic = required(&params, "topic", "MISSING_ARG_TOPIC")?;
    tracing::info!(topic, "DB: removing topic and its channels");
    ctx.lock_registry().delete_topic(topic);
    ok_empty()
}

async fn topic_tombstone(State(ctx): Ctx, Query(params): Params) -> ApiResult {
    let topic = required(&params, "topic", "MISSING_ARG_TOPIC")?;
    let node = required(&params, "node", "MISSING_ARG_NODE")?;
    let count = ctx.lock_registry().tombstone(topic, node, now());
    tracing::info!(
        topic,
        node,
        producers = count,
        "DB: tombstoned topic producer"
    );
    ok_empty()
}

async fn channel_create(State(ctx): Ctx, Query(params): Params) -> ApiResult {
    let (topic, channel) = topic_and_channel(&params)?;
    tracing::info!(topic, channel, "DB: adding channel");
    ctx.lock_registry().create_channel(topic, channel);
    ok_empty()
}

async fn channel_delete(State(ctx): Ctx, Query(params): Params) -> ApiResult {
    let (topic, channel) = topic_and_channel(&params)?;
    if !ctx.lock_registry().delete_channel(topic, channel) {
        return Err(ApiError(StatusCode::NOT_FOUND, "CHANNEL_NOT_FOUND"));
    }
    tracing::info!(topic, channel, "DB: removed channel");
    ok_empty()
}
