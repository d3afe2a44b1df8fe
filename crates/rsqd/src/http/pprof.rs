//! `GET /debug/pprof/profile?seconds=N`: a CPU profile of the whole daemon
//! in pprof's format (a gzip-compressed `profile.proto`), what nsqd serves
//! at the same path through Go's `net/http/pprof` and what `go tool pprof`
//! reads.
//!
//! The sampler is pprof-rs (the `pprof` crate, maintained by TiKV, which
//! profiles TiKV in production the same way): a `SIGPROF` timer
//! (`setitimer(ITIMER_PROF)`, the mechanism Go's profiler uses) samples
//! whichever thread is on a CPU, unwinds its stack in the signal handler
//! and counts stacks; the report symbolizes them from the binary's own
//! debug info. It needs no system library beyond libc and no build tool
//! beyond cargo: default features are off (they add a C++ demangler that
//! needs a C++ compiler), and `prost-codec` compiles its pre-generated
//! protobuf code, so no `protoc` either. The profile is encoded in
//! process; nothing is written to disk. Alternatives are worse fits:
//! `perf` is a separate tool and needs privileges, and the `cpuprofiler`
//! crate binds gperftools, a C++ library a fresh machine lacks.
//!
//! As in Go, one profile runs at a time (the timer and the sample table
//! are the process's): a second request while one runs gets `500` and
//! Go's message. The request waits on a tokio timer, so no runtime
//! thread is held while it samples; starting the profiler (its first use
//! loads the unwinder) and building the report (symbolization, encoding,
//! gzip) run on the blocking pool. A missing `seconds` is 30, as Go's; a
//! `seconds` that is not a whole number in `1..=`[`SECONDS_MAX`] is
//! refused with `400 {"message":"INVALID_ARG_SECONDS"}` (Go profiles 30 s
//! instead, which a typo should not cost).

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::extract::Query;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rsq_service::ApiError;
use rsq_service::http::{Params, param};

/// Seconds profiled when the request does not say, as Go's handler.
pub(crate) const SECONDS_DEFAULT: u64 = 30;

/// The longest profile a request may ask for, in seconds.
pub(crate) const SECONDS_MAX: u64 = 300;

/// Samples per second of CPU time: pprof-rs's default, just under Go's
/// 100 so the timer does not run in lockstep with other periodic work.
const FREQUENCY_HZ: i32 = 99;

/// Libraries whose frames the signal handler does not unwind through, as
/// pprof-rs advises: unwinding from inside them (the dynamic loader's
/// locks, the vDSO's clock) can deadlock or crash.
const UNWIND_BLOCKLIST: [&str; 4] = ["libc", "libgcc", "pthread", "vdso"];

/// Set while a profile runs: the profiler is one per process.
static RUNNING: AtomicBool = AtomicBool::new(false);

/// What can go wrong while profiling.
#[derive(Debug, thiserror::Error)]
enum ProfileError {
    /// The profiler could not start (pprof-rs's own message).
    #[error("Could not enable CPU profiling: {0}")]
    Start(::pprof::Error),
    /// The samples could not be turned into a profile.
    #[error("Could not build the CPU profile: {0}")]
    Report(::pprof::Error),
    /// The profile could not be compressed.
    #[error("Could not compress the CPU profile: {0}")]
    Gzip(std::io::Error),
    /// A blocking-pool task did not finish (the runtime is shutting down).
    #[error("CPU profiling was interrupted: {0}")]
    Task(tokio::task::JoinError),
}

/// The right to run the one profile, given back when dropped (also when
/// the request goes away mid-profile).
struct Exclusive;

impl Exclusive {
    fn take() -> Option<Exclusive> {
        RUNNING
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .ok()
            .map(|_| Exclusive)
    }
}

impl Drop for Exclusive {
    fn drop(&mut self) {
        RUNNING.store(false, Ordering::Release);
    }
}

/// The profile's length from the `seconds` parameter.
fn seconds(value: Option<&str>) -> Result<u64, ApiError> {
    let Some(text) = value else {
        return Ok(SECONDS_DEFAULT);
    };
    text.parse::<u64>()
        .ok()
        .filter(|s| (1..=SECONDS_MAX).contains(s))
        .ok_or(ApiError(StatusCode::BAD_REQUEST, "INVALID_ARG_SECONDS"))
}

/// The handler of `GET /debug/pprof/profile`.
pub(crate) async fn profile(Query(params): Params) -> Response {
    let seconds = match seconds(param(&params, "seconds")) {
        Ok(seconds) => seconds,
        Err(e) => return e.into_response(),
    };
    let Some(exclusive) = Exclusive::take() else {
        return failed("Could not enable CPU profiling: cpu profiling already in use");
    };
    match run(exclusive, Duration::from_secs(seconds)).await {
        Ok(body) => {
            let mut res = body.into_response();
            let headers = res.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            headers.insert(
                header::CONTENT_DISPOSITION,
                HeaderValue::from_static(r#"attachment; filename="profile""#),
            );
            headers.insert(
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            );
            res
        }
        Err(e) => {
            tracing::warn!(error = %e, "CPU profile failed");
            failed(&e.to_string())
        }
    }
}

/// Samples for `length`, then answers the gzipped profile.
async fn run(exclusive: Exclusive, length: Duration) -> Result<Vec<u8>, ProfileError> {
    let guard = tokio::task::spawn_blocking(|| {
        ::pprof::ProfilerGuardBuilder::default()
            .frequency(FREQUENCY_HZ)
            .blocklist(&UNWIND_BLOCKLIST)
            .build()
    })
    .await
    .map_err(ProfileError::Task)?
    .map_err(ProfileError::Start)?;
    tracing::info!(seconds = length.as_secs(), "CPU profile started");
    tokio::time::sleep(length).await;
    tokio::task::spawn_blocking(move || {
        let body = encode(&guard);
        // Stop sampling before others may start.
        drop(guard);
        drop(exclusive);
        body
    })
    .await
    .map_err(ProfileError::Task)?
}

/// The samples so far as a gzip-compressed `profile.proto`.
fn encode(guard: &::pprof::ProfilerGuard<'_>) -> Result<Vec<u8>, ProfileError> {
    use ::pprof::protos::Message;
    let profile = guard
        .report()
        .build()
        .and_then(|report| report.pprof())
        .map_err(ProfileError::Report)?;
    let raw = profile.encode_to_vec();
    let mut gz = flate2::write::GzEncoder::new(
        Vec::with_capacity(raw.len() / 4),
        flate2::Compression::default(),
    );
    gz.write_all(&raw).map_err(ProfileError::Gzip)?;
    gz.finish().map_err(ProfileError::Gzip)
}

/// `500` with `message` as text, as Go's pprof handler answers.
fn failed(message: &str) -> Response {
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        format!("{message}\n"),
    )
        .into_response()
}

#[cfg(test)]
mod tests;
