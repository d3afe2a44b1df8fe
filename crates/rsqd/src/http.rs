//! The HTTP API: nsqd's routes, status codes and JSON error bodies.
//!
//! Every response carries `X-NSQ-Content-Type: nsq; version=1.0`; errors are
//! `{"message": "<CODE>"}` with nsqd's status code, so tools that read
//! nsqd's API (nsqadmin, nsq_stat, curl scripts) read rsqd's.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use rsq_codec::is_valid_name;
use rsq_service::Listener;
use rsq_service::http::{
    JSON_CONTENT_TYPE, Params, json, nsq_api, ok_empty, param, required, topic_and_channel,
};
use rsq_service::{ApiError, ApiResult};

use crate::options::VERSION;
use crate::stats::{self, StatsFilter};
use crate::tcp::tls::{TlsListener, TlsRequired, tls_required};
use crate::{Nsqd, NsqdError};

mod pprof;

type Ctx = State<Arc<Nsqd>>;

fn ok_text(text: &'static str) -> ApiResult {
    Ok(text.into_response())
}

fn parse_bool(value: Option<&str>, default: bool) -> Result<bool, ApiError> {
    match value {
        None => Ok(default),
        Some("true" | "1") => Ok(true),
        Some("false" | "0") => Ok(false),
        Some(_) => Err(ApiError(StatusCode::BAD_REQUEST, "INVALID_REQUEST")),
    }
}

/// Every path the API serves (`/config/{opt}` by three of its options), for
/// tests, fuzzers and tools that want to visit them all.
pub const ROUTES: [&str; 20] = [
    "/ping",
    "/info",
    "/stats",
    "/cluster",
    "/metrics",
    "/pub",
    "/mpub",
    "/topic/create",
    "/topic/delete",
    "/topic/empty",
    "/topic/pause",
    "/topic/unpause",
    "/channel/create",
    "/channel/delete",
    "/channel/empty",
    "/channel/pause",
    "/channel/unpause",
    "/config/drain",
    "/config/log_level",
    "/config/nsqlookupd_tcp_addresses",
];

/// Builds the router; `serve` runs it.
pub fn router(ctx: Arc<Nsqd>) -> Router {
    let body_limit = usize::try_from(ctx.opts.max_body_size.max(ctx.opts.max_msg_size))
        .unwrap_or(usize::MAX)
        .saturating_add(1);
    nsq_api(
        Router::new()
            .route("/ping", get(ping))
            .route("/info", get(info))
            .route("/stats", get(stats_handler))
            .route("/cluster", get(cluster_handler))
            .route("/metrics", get(metrics_handler))
            .route("/pub", post(publish))
            .route("/mpub", post(multi_publish))
            .route("/topic/create", post(topic_create))
            .route("/topic/delete", post(topic_delete))
            .route("/topic/empty", post(topic_empty))
            .route("/topic/pause", post(topic_pause))
            .route("/topic/unpause", post(topic_unpause))
            .route("/channel/create", post(channel_create))
            .route("/channel/delete", post(channel_delete))
            .route("/channel/empty", post(channel_empty))
            .route("/channel/pause", post(channel_pause))
            .route("/channel/unpause", post(channel_unpause))
            .route("/config/{opt}", get(config_get).put(config_put))
            .route("/debug/pprof/profile", get(pprof::profile))
            .layer(DefaultBodyLimit::max(body_limit)),
    )
    .with_state(ctx)
}

/// Serves the HTTP API on `listener` (TCP or unix socket) until `shutdown`
/// resolves.
pub(crate) async fn serve(
    listener: Listener,
    ctx: Arc<Nsqd>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = if tls_required(&ctx.opts) == TlsRequired::Yes {
        // `--tls-required=true`: plain HTTP only points at HTTPS.
        let port = info_port(&ctx.opts.https_address);
        Router::new().fallback(move || async move {
            let body = serde_json::json!({ "message": "TLS_REQUIRED", "https_port": port });
            (
                StatusCode::FORBIDDEN,
                [(header::CONTENT_TYPE, JSON_CONTENT_TYPE)],
                body.to_string(),
            )
                .into_response()
        })
    } else {
        router(ctx)
    };
    match listener {
        Listener::Tcp(l) => axum::serve(l, app).with_graceful_shutdown(shutdown).await,
        Listener::Unix(l, _file) => {
            // `_file` lives until the server stops, then removes the socket.
            axum::serve(l, app).with_graceful_shutdown(shutdown).await
        }
    }
}

/// A listener's port as nsqd's `/info` shows it: -1 for a unix socket.
fn info_port(addr: &rsq_service::ListenAddr) -> i32 {
    addr.port().map_or(-1, i32::from)
}

/// Serves the HTTP API over TLS (`--https-address`) until `shutdown` resolves.
pub(crate) async fn serve_tls(
    listener: Listener,
    config: Arc<rustls::ServerConfig>,
    ctx: Arc<Nsqd>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(TlsListener::new(listener, config)?, router(ctx))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn ping(State(ctx): Ctx) -> Response {
    if ctx.is_draining() {
        // Load balancers move publishers away from a draining node.
        return (StatusCode::SERVICE_UNAVAILABLE, "NOK - draining").into_response();
    }
    if let Some(why) = ctx.disk_full() {
        // Publishes are refused until usage falls to the low-water mark.
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("NOK - disk full: {why}"),
        )
            .into_response();
    }
    match ctx.health() {
        None => "OK".into_response(),
        Some(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("NOK - {e}")).into_response(),
    }
}

async fn info(State(ctx): Ctx) -> ApiResult {
    let opts = &ctx.opts;
    json(&serde_json::json!({
        "version": VERSION,
        "broadcast_address": opts.effective_broadcast_address(),
        "hostname": crate::options::hostname(),
        "http_port": info_port(&opts.http_address),
        "tcp_port": info_port(&opts.tcp_address),
        "start_time": ctx.start_time,
        "draining": ctx.is_draining(),
        "max_heartbeat_interval": opts.max_heartbeat_interval.as_nanos() as u64,
        "max_output_buffer_size": opts.max_output_buffer_size,
        "max_output_buffer_timeout": opts.max_output_buffer_timeout.as_nanos() as u64,
        "max_deflate_level": opts.max_deflate_level,
    }))
}

/// rsq only: this member's cluster, its members and replicated topics;
/// 400 `NOT_A_CLUSTER_MEMBER` without `--cluster-address`.
async fn cluster_handler(State(ctx): Ctx) -> ApiResult {
    let cluster = ctx
        .cluster()
        .ok_or(ApiError(StatusCode::BAD_REQUEST, "NOT_A_CLUSTER_MEMBER"))?;
    json(&serde_json::json!({
        "members": cluster.members(),
        "replicated_topics": stats::replicated_topics(&ctx),
    }))
}

async fn stats_handler(State(ctx): Ctx, Query(params): Params) -> ApiResult {
    let filter = StatsFilter {
        topic: param(&params, "topic").map(str::to_string),
        channel: param(&params, "channel").map(str::to_string),
        include_clients: parse_bool(param(&params, "include_clients"), true)?,
        include_mem: parse_bool(param(&params, "include_mem"), true)?,
    };
    let stats = stats::collect(&ctx, &filter);
    if param(&params, "format") == Some("json") {
        json(&stats)
    } else {
        let now = ctx.clock.unix_nanos() / 1_000_000_000;
        Ok(stats::render_text(&stats, now).into_response())
    }
}

/// `/metrics`: Prometheus' text format (`format=openmetrics` for
/// OpenMetrics). Other query parameters are ignored; a `format` not served
/// is `400 {"message":"INVALID_FORMAT"}`.
async fn metrics_handler(State(ctx): Ctx, Query(params): Params) -> ApiResult {
    let format = crate::metrics::Format::from_param(param(&params, "format"))
        .ok_or(ApiError(StatusCode::BAD_REQUEST, "INVALID_FORMAT"))?;
    let filter = StatsFilter::default();
    let stats = stats::collect(&ctx, &filter);
    let now = ctx.clock.unix_nanos() / 1_000_000_000;
    let body = crate::metrics::render(stats, now, format).map_err(|_| {
        tracing::error!("/metrics could not be encoded");
        ApiError(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR")
    })?;
    Ok(([(header::CONTENT_TYPE, format.content_type())], body).into_response())
}

fn topic_param(params: &[(String, String)]) -> Result<&str, ApiError> {
    let topic = required(params, "topic", "MISSING_ARG_TOPIC")?;
    if !is_valid_name(topic) {
        return Err(ApiError(StatusCode::BAD_REQUEST, "INVALID_TOPIC"));
    }
    Ok(topic)
}

fn nsqd_error(e: NsqdError) -> ApiError {
    match e {
        NsqdError::Exiting => ApiError(StatusCode::SERVICE_UNAVAILABLE, "EXITING"),
        NsqdError::TopicNotFound => ApiError(StatusCode::NOT_FOUND, "TOPIC_NOT_FOUND"),
        NsqdError::ChannelNotFound => ApiError(StatusCode::NOT_FOUND, "CHANNEL_NOT_FOUND"),
        NsqdError::Replication(why) => {
            tracing::warn!(%why, "replicated topic refused an HTTP request");
            ApiError(StatusCode::SERVICE_UNAVAILABLE, "NO_QUORUM")
        }
        NsqdError::NotLeader(why) => {
            tracing::debug!(%why, "replicated topic led elsewhere");
            ApiError(StatusCode::SERVICE_UNAVAILABLE, "NOT_LEADER")
        }
        other => {
            tracing::error!(error = %other, "HTTP request failed");
            ApiError(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR")
        }
    }
}

async fn put_messages(ctx: &Nsqd, topic_name: &str, msgs: Vec<rsq_codec::Message>) -> ApiResult {
    if ctx.is_exiting() {
        return Err(ApiError(StatusCode::SERVICE_UNAVAILABLE, "EXITING"));
    }
    match ctx.publish(topic_name, msgs).await {
        Ok(()) => ok_text("OK"),
        Err(NsqdError::Topic(rsq_topic::TopicError::Exiting)) => {
            Err(ApiError(StatusCode::SERVICE_UNAVAILABLE, "EXITING"))
        }
        Err(NsqdError::Draining) => Err(ApiError(StatusCode::SERVICE_UNAVAILABLE, "DRAINING")),
        Err(NsqdError::DiskFull(_)) => Err(ApiError(StatusCode::INSUFFICIENT_STORAGE, "DISK_FULL")),
        Err(e) => Err(nsqd_error(e)),
    }
}

/// A request body, or nsqd's JSON answer when it could not be read: 413
/// with `too_big` past the router's body limit (axum's own answer is plain
/// text), else 500 `INTERNAL_ERROR` as nsqd's failed read.
fn read_body(
    body: Result<Bytes, BytesRejection>,
    too_big: &'static str,
) -> Result<Bytes, ApiError> {
    body.map_err(|e| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError(StatusCode::PAYLOAD_TOO_LARGE, too_big),
        _ => ApiError(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR"),
    })
}

async fn publish(
    State(ctx): Ctx,
    Query(params): Params,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let body = read_body(body, "MSG_TOO_BIG")?;
    if body.len() as u64 > ctx.opts.max_msg_size {
        return Err(ApiError(StatusCode::PAYLOAD_TOO_LARGE, "MSG_TOO_BIG"));
    }
    if body.is_empty() {
        return Err(ApiError(StatusCode::BAD_REQUEST, "MSG_EMPTY"));
    }
    let topic = topic_param(&params)?;
    let mut msg = ctx.new_message(body).await.map_err(nsqd_error)?;
    if let Some(defer) = param(&params, "defer") {
        let ms: u64 = defer
            .parse()
            .map_err(|_| ApiError(StatusCode::BAD_REQUEST, "INVALID_DEFER"))?;
        let delay = Duration::from_millis(ms);
        if delay > ctx.opts.max_req_timeout {
            return Err(ApiError(StatusCode::BAD_REQUEST, "INVALID_DEFER"));
        }
        msg.deferred = Some(delay);
    }
    put_messages(&ctx, topic, vec![msg]).await
}

async fn multi_publish(
    State(ctx): Ctx,
    Query(params): Params,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let body = read_body(body, "BODY_TOO_BIG")?;
    if body.len() as u64 > ctx.opts.max_body_size {
        return Err(ApiError(StatusCode::PAYLOAD_TOO_LARGE, "BODY_TOO_BIG"));
    }
    let topic = topic_param(&params)?;
    let binary = match param(&params, "binary") {
        None | Some("false" | "0") => false,
        Some("true" | "1") => true,
        Some(other) => {
            tracing::warn!(
                value = other,
                "/mpub binary param is not a boolean; treating as true"
            );
            true
        }
    };
    let bodies = if binary {
        parse_binary_mpub(&body, ctx.opts.max_msg_size)?
    } else {
        let mut bodies = Vec::new();
        let text = body
            .strip_suffix(b"\n")
            .map_or(body.clone(), |b| body.slice_ref(b));
        let mut start = 0;
        for line in text.split(|&b| b == b'\n') {
            let line_start = start;
            start += line.len() + 1;
            if line.is_empty() {
                continue;
            }
            if line.len() as u64 > ctx.opts.max_msg_size {
                return Err(ApiError(StatusCode::PAYLOAD_TOO_LARGE, "MSG_TOO_BIG"));
            }
            bodies.push(text.slice(line_start..line_start + line.len()));
        }
        bodies
    };
    if bodies.is_empty() {
        return Err(ApiError(StatusCode::BAD_REQUEST, "MSG_EMPTY"));
    }
    let msgs = ctx.new_messages(bodies).await.map_err(nsqd_error)?;
    put_messages(&ctx, topic, msgs).await
}

/// Binary `/mpub`: `[4-byte count]([4-byte size][body])*`, as TCP MPUB's body.
fn parse_binary_mpub(body: &Bytes, max_msg_size: u64) -> Result<Vec<Bytes>, ApiError> {
    let bad_body = ApiError(StatusCode::BAD_REQUEST, "BAD_BODY");
    let bad_message = || ApiError(StatusCode::BAD_REQUEST, "BAD_MESSAGE");
    let read_u32 = |at: usize| -> Option<usize> {
        let bytes: [u8; 4] = body.get(at..at + 4)?.try_into().ok()?;
        usize::try_from(u32::from_be_bytes(bytes)).ok()
    };
    let count = read_u32(0).ok_or(bad_body)?;
    if count == 0 || count > body.len() / 4 {
        return Err(ApiError(StatusCode::BAD_REQUEST, "BAD_BODY"));
    }
    let mut at = 4;
    let mut bodies = Vec::with_capacity(count);
    for _ in 0..count {
        let size = read_u32(at).ok_or_else(bad_message)?;
        if size == 0 {
            return Err(bad_message());
        }
        if size as u64 > max_msg_size {
            return Err(ApiError(StatusCode::PAYLOAD_TOO_LARGE, "MSG_TOO_BIG"));
        }
        at += 4;
        if at + size > body.len() {
            return Err(bad_message());
        }
        bodies.push(body.slice(at..at + size));
        at += size;
    }
    Ok(bodies)
}

async fn topic_create(State(ctx): Ctx, Query(params): Params) -> ApiResult {
    let topic = topic_param(&params)?;
    let replicas = match params.iter().find(|(k, _)| k == "replicas") {
        Some((_, v)) => v
            .parse::<usize>()
            .map_err(|_| ApiError(StatusCode::BAD_REQUEST, "INVALID_REPLICAS"))?,
        None => 1,
    };
    if replicas > 1 {
        // rsq only: a replicated topic, over every cluster member.
        let cluster = ctx
            .cluster()
            .filter(|c| c.size() == replicas && !rsq_codec::is_ephemeral(topic))
            .ok_or(ApiError(StatusCode::BAD_REQUEST, "INVALID_REPLICAS"))?;
        cluster.create(topic).await.map_err(nsqd_error)?;
        return ok_empty();
    }
    ctx.get_or_create_topic(topic).await.map_err(nsqd_error)?;
    ok_empty()
}

fn existing_topic(
    ctx: &Nsqd,
    params: &[(String, String)],
) -> Result<Arc<crate::DaemonTopic>, ApiError> {
    let name = required(params, "topic", "MISSING_ARG_TOPIC")?;
    ctx.topic(name)
        .ok_or(ApiError(StatusCode::NOT_FOUND, "TOPIC_NOT_FOUND"))
}

async fn topic_delete(State(ctx): Ctx, Query(params): Params) -> ApiResult {
    let topic = existing_topic(&ctx, &params)?;
    ctx.delete_topic(topic.name()).await.map_err(nsqd_error)?;
    ok_empty()
}

async fn topic_empty(State(ctx): Ctx, Query(params): Params) -> ApiResult {
    let topic = existing_topic(&ctx, &params)?;
    topic
        .empty()
        .await
        .map_err(|e| nsqd_error(NsqdError::Topic(e)))?;
    ok_empty()
}

async fn topic_pause(State(ctx): Ctx, Query(params): Params) -> ApiResult {
    let topic = existing_topic(&ctx, &params)?;
    topic.pause();
    ctx.mark_changed(topic.name());
    ctx.persist_metadata_logged().await;
    ok_empty()
}

async fn topic_unpause(State(ctx): Ctx, Query(params): Params) -> ApiResult {
    let topic = existing_topic(&ctx, &params)?;
    topic.unpause();
    ctx.mark_changed(topic.name());
    ctx.persist_metadata_logged().await;
    ok_empty()
}

/// `/channel/create`, with rsq's optional `max_attempts=N` (0 to 65535;
/// 0 turns the limit off for the channel): the channel's own attempt limit
/// in place of `--max-attempts`, applied to an existing channel too and
/// persisted in `nsqd.dat`. Anything else, or a limit on a dead-letter
/// topic's channel (they never dead-letter), is 400 `INVALID_MAX_ATTEMPTS`,
/// and nothing is created.
async fn channel_create(State(ctx): Ctx, Query(params): Params) -> ApiResult {
    let (topic, channel) = topic_and_channel(&params)?;
    let max_attempts = max_attempts_param(&params, topic)?;
    if ctx.topic(topic).is_none() {
        return Err(ApiError(StatusCode::NOT_FOUND, "TOPIC_NOT_FOUND"));
    }
    let (topic, channel) = ctx
        .get_or_create_channel(topic, channel)
        .await
        .map_err(nsqd_error)?;
    if let Some(max_attempts) = max_attempts {
        ctx.set_max_attempts(&topic, &channel, max_attempts).await;
    }
    ok_empty()
}

/// The `max_attempts` of `/channel/create`: digits only, within `u16`.
fn max_attempts_param(params: &[(String, String)], topic: &str) -> Result<Option<u16>, ApiError> {
    const INVALID: ApiError = ApiError(StatusCode::BAD_REQUEST, "INVALID_MAX_ATTEMPTS");
    let Some(value) = param(params, "max_attempts") else {
        return Ok(None);
    };
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(INVALID);
    }
    let n: u16 = value.parse().map_err(|_| INVALID)?;
    if n > 0 && crate::dead_letter::is_dead_letter_topic(topic) {
        return Err(INVALID);
    }
    Ok(Some(n))
}

fn existing_channel(
    ctx: &Nsqd,
    params: &[(String, String)],
) -> Result<Arc<crate::ChannelHandle>, ApiError> {
    let (topic, channel) = topic_and_channel(params)?;
    ctx.topic(topic)
        .ok_or(ApiError(StatusCode::NOT_FOUND, "TOPIC_NOT_FOUND"))?
        .channel(channel)
        .ok_or(ApiError(StatusCode::NOT_FOUND, "CHANNEL_NOT_FOUND"))
}

async fn channel_delete(State(ctx): Ctx, Query(params): Params) -> ApiResult {
    let (topic, channel) = topic_and_channel(&params)?;
    ctx.delete_channel(topic, channel)
        .await
        .map_err(nsqd_error)?;
    ok_empty()
}

async fn channel_empty(State(ctx): Ctx, Query(params): Params) -> ApiResult {
    let chan = existing_channel(&ctx, &params)?;
    chan.empty().await.map_err(|e| {
        tracing::error!(error = %e, "channel empty failed");
        ApiError(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR")
    })?;
    ok_empty()
}

async fn channel_pause(State(ctx): Ctx, Query(params): Params) -> ApiResult {
    existing_channel(&ctx, &params)?.pause();
    ctx.mark_changed(topic_param(&params)?);
    ctx.persist_metadata_logged().await;
    ok_empty()
}

async fn channel_unpause(State(ctx): Ctx, Query(params): Params) -> ApiResult {
    existing_channel(&ctx, &params)?.unpause();
    ctx.mark_changed(topic_param(&params)?);
    ctx.persist_metadata_logged().await;
    ok_empty()
}

async fn config_get(State(ctx): Ctx, Path(opt): Path<String>) -> ApiResult {
    if opt == "drain" {
        return json(&ctx.is_draining());
    }
    if opt == "log_level" {
        return json(
            &rsq_service::logging::current().unwrap_or_else(|| ctx.opts.log_level.clone()),
        );
    }
    if opt == "nsqlookupd_tcp_addresses" {
        // The live list: PUT may have changed it since start.
        let addresses = ctx
            .lookup()
            .map(|peers| peers.addresses())
            .unwrap_or_else(|| ctx.opts.lookupd_tcp_address.clone());
        return json(&addresses);
    }
    let all = serde_json::to_value(&*ctx.opts)
        .map_err(|_| ApiError(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR"))?;
    match all.get(&opt) {
        Some(value) => json(value),
        None => Err(ApiError(StatusCode::BAD_REQUEST, "INVALID_OPTION")),
    }
}

async fn config_put(
    State(ctx): Ctx,
    Path(opt): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let body = read_body(body, "INVALID_VALUE")?;
    // As nsqd: only the log level and the lookupd addresses change at run
    // time; rsq adds drain mode (`true` or `false`, bare or quoted).
    if opt == "drain" {
        let text = String::from_utf8_lossy(&body);
        let on = match text.trim().trim_matches('"') {
            "true" => true,
            "false" => false,
            _ => return Err(ApiError(StatusCode::BAD_REQUEST, "INVALID_VALUE")),
        };
        ctx.set_draining(on);
        return json(&ctx.is_draining());
    }
    if opt == "log_level" {
        // The body is the level, bare or as a JSON string.
        let text = String::from_utf8_lossy(&body);
        let level = text.trim().trim_matches('"');
        return match rsq_service::logging::set_level(level) {
            Ok(level) => json(&level),
            Err(_) => Err(ApiError(StatusCode::BAD_REQUEST, "INVALID_VALUE")),
        };
    }
    if opt != "nsqlookupd_tcp_addresses" {
        return Err(ApiError(StatusCode::BAD_REQUEST, "INVALID_OPTION"));
    }
    let addresses: Vec<String> = serde_json::from_slice(&body)
        .map_err(|_| ApiError(StatusCode::BAD_REQUEST, "INVALID_VALUE"))?;
    let Some(peers) = ctx.lookup() else {
        return Err(ApiError(StatusCode::SERVICE_UNAVAILABLE, "EXITING"));
    };
    peers.set_addresses(&addresses);
    json(&peers.addresses())
}

#[cfg(test)]
mod tests;
