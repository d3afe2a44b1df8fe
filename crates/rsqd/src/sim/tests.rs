//! The simulation's fixed seeds (run by `cargo test`, so by `cargo xtask
//! ci`; `--long` sweeps more) and its determinism check.

use super::{Faults, Outcome, run};

/// Seeds every CI run replays with every fault. Among them the seeds that
/// found bugs, fixed since: seed 9 (a quarantined segment's handed-out
/// reads were dropped from the uncommitted ones, so the channel's next
/// commit covered records still in flight, lost at the next crash), seed
/// 13 (the topic pump committed its reads after a channel's put failed on
/// an fsync error, losing an acknowledged message) and seed 84 (traces
/// differed between processes: the channel driver's `select!` picked among
/// ready branches at random).
const FIXED_SEEDS: std::ops::Range<u64> = 0..500;

/// Under `RSQ_LONG_TESTS` (`cargo xtask ci --long`).
const LONG_SEEDS: std::ops::Range<u64> = 0..3_000;

/// Seeds whose failure is known and not fixed yet, skipped by the sweeps
/// and replayed by [`open_findings`].
const OPEN: &[u64] = &[
    // A DPUB acknowledged in a life after an fsync failure and a
    // quarantined topic segment is never delivered: the topic's file still
    // holds it through the next life, then it is gone. Not diagnosed.
    80,
];

#[track_caller]
fn check(outcome: &Outcome) {
    if let Some(failure) = &outcome.failure {
        panic!("{}\n{failure}", outcome.trace_line());
    }
}

#[test]
fn fixed_seeds_hold_every_invariant() {
    let seeds = if std::env::var("RSQ_LONG_TESTS").is_ok() {
        LONG_SEEDS
    } else {
        FIXED_SEEDS
    };
    for seed in seeds.filter(|s| !OPEN.contains(s)) {
        check(&run(seed, Faults::ALL));
    }
}

/// The open findings, still failing: `cargo test -- --ignored` shows them.
#[test]
#[ignore = "known failures, not fixed yet (OPEN)"]
fn open_findings() {
    for &seed in OPEN {
        check(&run(seed, Faults::ALL));
    }
}

/// One seed, one run: the same seed twice gives the same trace, event for
/// event (message ids, deliveries, cuts and flips included).
#[test]
fn a_seed_replays_its_trace_exactly() {
    for seed in [7, 84, 1_000_003] {
        let first = run(seed, Faults::ALL);
        let second = run(seed, Faults::ALL);
        check(&first);
        assert!(
            first.events > 50,
            "seed {seed}: only {} events",
            first.events
        );
        assert_eq!(
            first.trace_line(),
            second.trace_line(),
            "seed {seed} ran twice with different traces"
        );
    }
}

#[test]
fn fault_lists_parse_back() {
    for list in ["all", "none", "crash", "crash,bitflip", "fsync"] {
        let faults = Faults::parse(list).expect("a fault list");
        assert_eq!(Faults::parse(&faults.list()), Ok(faults), "{list}");
    }
    assert!(Faults::parse("partition").is_err());
}
