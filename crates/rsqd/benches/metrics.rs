//! Benchmark: one `GET /metrics` scrape (the `/stats` snapshot, encoding and
//! the HTTP answer, through the real router in process) of a daemon with
//! 10,000 topics of one channel each, and the heap bytes a scrape leaves
//! allocated (nothing per topic may stay behind), counted by a global
//! allocator that wraps the system's.

#![allow(clippy::print_stdout, clippy::unwrap_used)] // a benchmark reports on stdout
#![allow(unsafe_code)] // the counting allocator

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use rsq_channel::SystemClock;
use rsqd::{Nsqd, Options};
use tower::ServiceExt;

const TOPICS: usize = 10_000;
const SCRAPES: usize = 20;

/// Heap bytes allocated and not yet freed.
static LIVE: AtomicI64 = AtomicI64::new(0);

struct Counting;

// SAFETY: every call is forwarded unchanged to `System`, which upholds
// `GlobalAlloc`'s contract; the counter only observes sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as i64, Ordering::Relaxed);
        // SAFETY: the caller's layout is passed on as given.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as i64, Ordering::Relaxed);
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size as i64 - layout.size() as i64, Ordering::Relaxed);
        // SAFETY: as `dealloc`, and `new_size` is the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

async fn scrape(ctx: &Arc<Nsqd>) -> (Duration, usize) {
    let started = Instant::now();
    let req = Request::get("/metrics").body(Body::empty()).unwrap();
    let res = rsqd::http::router(ctx.clone()).oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let body = axum::body::to_bytes(res.into_body(), usize::MAX)
        .await
        .unwrap();
    (started.elapsed(), body.len())
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let data = format!("--data-path={}", dir.path().display());
    let opts = Options::load_from(["rsqd", data.as_str()]).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let ctx = Nsqd::new(opts, Arc::new(SystemClock)).unwrap();
        ctx.load_metadata().await.unwrap();
        let started = Instant::now();
        for t in 0..TOPICS {
            let topic = format!("topic-{t:05}");
            ctx.get_or_create_channel(&topic, "channel").await.unwrap();
        }
        println!(
            "created {TOPICS} topics with one channel each in {:.1?}",
            started.elapsed()
        );
        let (first, bytes) = scrape(&ctx).await;
        let mut times = Vec::with_capacity(SCRAPES);
        let before = LIVE.load(Ordering::Relaxed);
        for _ in 0..SCRAPES {
            times.push(scrape(&ctx).await.0);
        }
        let left = LIVE.load(Ordering::Relaxed) - before;
        times.sort();
        println!(
            "/metrics, {TOPICS} topics x 1 channel: {bytes} bytes; first scrape {first:.1?}, \
             median of {SCRAPES} {:.1?}, max {:.1?}; heap left allocated by {SCRAPES} \
             scrapes: {left} bytes",
            times[SCRAPES / 2],
            times[SCRAPES - 1],
        );
        ctx.shutdown().await;
    });
}
