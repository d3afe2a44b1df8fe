//! `/proc` parsing on fixed text, and a sample of this very process.

use super::*;

const STATUS: &str =
    "Name:\trsqd\nVmPeak:\t  123456 kB\nVmHWM:\t   26624 kB\nVmRSS:\t   20480 kB\nThreads:\t4\n";

#[test]
fn status_values_in_kib() {
    assert_eq!(parse_status_kib(STATUS, "VmHWM"), Some(26624));
    assert_eq!(parse_status_kib(STATUS, "VmRSS"), Some(20480));
    assert_eq!(parse_status_kib(STATUS, "VmSwap"), None);
    assert_eq!(parse_status_kib(STATUS, "Threads"), Some(4));
    assert_eq!(parse_status_kib("VmRSS:\tlots kB\n", "VmRSS"), None);
}

#[test]
fn cpu_ticks_count_fields_after_the_name() {
    // A name with spaces and a parenthesis must not shift the fields.
    let stat = "4242 (rsq d) x) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 4 0 1000 0 0";
    assert_eq!(parse_stat_cpu_ticks(stat), Some(325));
    assert_eq!(parse_stat_cpu_ticks("4242 (short) S 1 2"), None);
    assert_eq!(parse_stat_cpu_ticks("no parenthesis"), None);
}

#[test]
fn cpu_percent_is_of_one_core() {
    let sample = ProcessSample {
        peak_rss_kib: 1,
        cpu_secs: 3.0,
        wall_secs: 2.0,
    };
    assert_eq!(sample.cpu_percent(), 150.0);
    let idle = ProcessSample {
        wall_secs: 0.0,
        ..sample
    };
    assert_eq!(idle.cpu_percent(), 0.0);
}

#[test]
fn this_process_can_be_sampled() {
    let sampler = ProcessSampler::start(std::process::id());
    let sample = sampler.finish(true).expect("own /proc entry is readable");
    assert!(sample.peak_rss_kib > 0);
    assert!(sample.cpu_secs >= 0.0);
}
