//! The window's exact small cases, histogram accuracy, rotation, merging
//! and memory bound.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::*;

const MIN: Duration = Duration::from_secs(60);

fn window(quantiles: &[f64]) -> E2eLatencyWindow {
    E2eLatencyWindow::new(quantiles.to_vec(), 10 * MIN)
}

/// Nearest-rank percentiles computed the slow, obvious way.
fn exact(values: &[u64], quantiles: &[f64]) -> Vec<(f64, u64)> {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    quantiles
        .iter()
        .map(|q| {
            let r = (q * sorted.len() as f64 - 1e-9).ceil().max(1.0) as usize;
            (*q, sorted[r.min(sorted.len()) - 1])
        })
        .collect()
}

#[test]
fn buckets_tile_the_value_range() {
    assert_eq!(MAX_BUCKETS, 3776);
    let mut next = 0u64;
    for b in 0..MAX_BUCKETS as u16 {
        let (low, width) = bucket_range(b);
        assert_eq!(low, next, "bucket {b}");
        assert_eq!(bucket_of(low), b);
        assert_eq!(bucket_of(low + (width - 1)), b);
        // Width at most 1/64 of the lower bound once past the exact region.
        assert!(width == 1 || width * 64 <= low, "bucket {b}");
        next = low.wrapping_add(width);
    }
    assert_eq!(next, 0, "the last bucket ends at u64::MAX");
}

#[test]
fn empty_window_reports_zeros() {
    let w = window(&[0.99, 0.5]);
    assert_eq!(
        w.snapshot(),
        E2eLatency {
            count: 0,
            percentiles: vec![(0.99, 0), (0.5, 0)],
        }
    );
}

#[test]
fn small_counts_are_exact() {
    let now = Instant::now();
    let mut w = window(&[1.0, 0.99, 0.95, 0.5, 0.01]);
    for v in (1..=100).rev() {
        w.record(v * 1_000_003, now);
    }
    let s = w.snapshot();
    assert_eq!(s.count, 100);
    assert_eq!(
        s.percentiles,
        vec![
            (1.0, 100 * 1_000_003),
            (0.99, 99 * 1_000_003),
            (0.95, 95 * 1_000_003),
            (0.5, 50 * 1_000_003),
            (0.01, 1_000_003),
        ]
    );
    let mut one = window(&[0.5, 1.0]);
    one.record(42, now);
    assert_eq!(one.snapshot().percentiles, vec![(0.5, 42), (1.0, 42)]);
}

#[test]
fn both_halves_stay_exact_up_to_their_caps() {
    let start = Instant::now();
    let mut w = window(&[0.5, 0.9]);
    let mut all = Vec::new();
    for v in 0..EXACT_SAMPLES as u64 {
        w.record(v * 7_919, start);
        all.push(v * 7_919);
    }
    // Into the second half: the first is now the previous one.
    let later = start + 5 * MIN + Duration::from_secs(1);
    for v in 0..EXACT_SAMPLES as u64 {
        w.record(v * 104_729 + 3, later);
        all.push(v * 104_729 + 3);
    }
    let s = w.snapshot();
    assert_eq!(s.count, 2 * EXACT_SAMPLES as u64);
    assert_eq!(s.percentiles, exact(&all, &[0.5, 0.9]));
}

#[test]
fn large_counts_are_within_one_part_in_128() {
    let now = Instant::now();
    let quantiles = [1.0, 0.999, 0.99, 0.95, 0.5, 0.1];
    let mut w = window(&quantiles);
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut all = Vec::new();
    for _ in 0..50_000 {
        // xorshift; latencies from 1 µs to about 17 s, log-uniform-ish.
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let v = 1_000 + (rng >> (30 + rng % 20));
        w.record(v, now);
        all.push(v);
    }
    let s = w.snapshot();
    assert_eq!(s.count, 50_000);
    for ((q, got), (_, want)) in s.percentiles.iter().zip(exact(&all, &quantiles)) {
        let err = got.abs_diff(want) as f64 / want as f64;
        assert!(err <= 1.0 / 128.0, "q {q}: got {got}, want {want}");
    }
    assert_eq!(s.percentiles[0].1, *all.iter().max().unwrap());
}

#[test]
fn window_rotates_every_half() {
    let t0 = Instant::now();
    let half = 5 * MIN;
    let mut w = window(&[1.0]);
    w.record(10, t0);
    w.record(20, t0 + half);
    assert_eq!(w.count(), 2, "a half ends strictly after its length");
    // Past the first half: both still count (previous and current).
    w.record(30, t0 + half + Duration::from_nanos(1));
    assert_eq!(w.count(), 3);
    assert_eq!(w.snapshot().percentiles, vec![(1.0, 30)]);
    // Past the second half: the first half's finishes are gone.
    w.advance(t0 + 2 * half + Duration::from_nanos(1));
    assert_eq!(w.count(), 1);
    assert_eq!(w.snapshot().percentiles, vec![(1.0, 30)]);
    // Idle for a whole window: nothing left.
    w.advance(t0 + 4 * half + Duration::from_secs(1));
    assert_eq!(w.count(), 0);
    assert_eq!(w.snapshot().percentiles, vec![(1.0, 0)]);
    // And it carries on from there.
    w.record(7, t0 + 4 * half + Duration::from_secs(2));
    assert_eq!(w.snapshot().percentiles, vec![(1.0, 7)]);
}

#[test]
fn memory_stays_bounded() {
    let now = Instant::now();
    let mut w = window(&[0.5]);
    let mut v = 1u64;
    for _ in 0..400_000 {
        // Values spread over the whole u64 range.
        v = v.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        w.record(v, now);
    }
    assert_eq!(w.count(), 400_000);
    assert!(w.held() <= MAX_BUCKETS, "held {}", w.held());
    assert!(w.current.exact.is_empty());
    assert!(w.current.exact.capacity() == 0, "samples freed on overflow");
    let later = now + 5 * MIN + Duration::from_secs(1);
    for _ in 0..400_000 {
        v = v.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        w.record(v, later);
    }
    assert!(w.held() <= 2 * MAX_BUCKETS, "held {}", w.held());
}

#[test]
fn merging_equals_recording_everything_in_one() {
    let now = Instant::now();
    let quantiles = [0.99, 0.5];
    for n in [10u64, 200, 5_000] {
        let mut a = window(&quantiles);
        let mut b = window(&quantiles);
        let mut both = window(&quantiles);
        for i in 0..n {
            let v = i * i % 9_973 * 1_000;
            if i % 3 == 0 {
                a.record(v, now);
            } else {
                b.record(v, now);
            }
            both.record(v, now);
        }
        a.merge(&b);
        assert_eq!(a.snapshot(), both.snapshot(), "n {n}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn exact_below_the_cap_close_above(
        values in prop::collection::vec(0u64..10_000_000_000, 1..1_500),
    ) {
        let quantiles = [1.0, 0.99, 0.9, 0.5, 0.25];
        let mut w = window(&quantiles);
        let now = Instant::now();
        for v in &values {
            w.record(*v, now);
        }
        let got = w.snapshot();
        let want = exact(&values, &quantiles);
        prop_assert_eq!(got.count, values.len() as u64);
        if values.len() <= EXACT_SAMPLES {
            prop_assert_eq!(got.percentiles, want);
        } else {
            for ((_, g), (_, w)) in got.percentiles.iter().zip(want) {
                prop_assert!(g.abs_diff(w) as f64 <= w as f64 / 128.0, "{} vs {}", g, w);
            }
        }
    }
}
