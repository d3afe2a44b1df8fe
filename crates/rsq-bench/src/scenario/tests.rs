//! The suite's shape: names, topics, flags and bounds.

use super::*;

fn cfg() -> SuiteConfig {
    SuiteConfig {
        duration: Duration::from_secs(10),
        body_size: 200,
        nsq_workers: 2,
        run_id: "bench1-42".into(),
        backlog: 1_000_001,
    }
}

#[test]
fn every_name_builds_a_scenario_and_topics_are_distinct() {
    let scenarios = suite(&cfg(), &[]).expect("suite");
    assert_eq!(scenarios.len(), SCENARIO_NAMES.len());
    let mut topics: Vec<&String> = scenarios.iter().flat_map(|s| &s.topics).collect();
    let before = topics.len();
    topics.sort();
    topics.dedup();
    assert_eq!(topics.len(), before, "scenarios share a topic");
    for topic in topics {
        assert!(rsq_codec::is_valid_name(topic), "{topic}");
    }
    for s in &scenarios {
        assert!(!s.phases.is_empty(), "{}", s.name);
        for phase in &s.phases {
            for w in &phase.writers {
                w.validate().expect("valid writer");
                assert!(w.topics.iter().all(|t| s.topics.contains(t)), "{}", s.name);
            }
            for r in phase.readers.iter().chain(&phase.idle) {
                assert!(s.topics.contains(&r.topic), "{}", s.name);
                assert!(r.rdy <= 2500, "{}: RDY above nsqd's max", s.name);
            }
        }
    }
}

#[test]
fn the_nsq_scenario_mirrors_the_bench_tools() {
    let s = scenario("nsq", &cfg()).expect("exists");
    let [write, read] = &s.phases[..] else {
        panic!("two phases");
    };
    assert_eq!(write.writers.len(), 2);
    assert!(
        write
            .writers
            .iter()
            .all(|w| w.batch == 200 && w.window == 1)
    );
    assert!(write.readers.is_empty());
    assert!(read.writers.is_empty());
    assert_eq!(read.readers.len(), 2);
    assert!(
        read.readers
            .iter()
            .all(|r| r.rdy == 2500 && r.channel == "ch")
    );
}

#[test]
fn the_nsq_scenario_writes_then_reads_exactly_its_backlog() {
    let s = scenario("nsq", &cfg()).expect("exists");
    let [write, read] = &s.phases[..] else {
        panic!("two phases");
    };
    let bounds: Vec<u64> = write.writers.iter().map(|w| w.max_msgs).collect();
    assert_eq!(bounds, [500_001, 500_000]);
    assert_eq!(write.duration, Some(BACKLOG_TIME_MAX));
    assert_eq!(read.duration, Some(BACKLOG_TIME_MAX));
    assert!(s.description.contains("1000001"), "{}", s.description);
    // One message for two writers: one writer, one message.
    let one = scenario(
        "nsq",
        &SuiteConfig {
            backlog: 1,
            ..cfg()
        },
    )
    .expect("exists");
    let bounds: Vec<u64> = one.phases[0].writers.iter().map(|w| w.max_msgs).collect();
    assert_eq!(bounds, [1]);
    // 0 keeps the timed phases.
    let timed = scenario(
        "nsq",
        &SuiteConfig {
            backlog: 0,
            ..cfg()
        },
    )
    .expect("exists");
    assert!(timed.phases.iter().all(|p| p.duration.is_none()));
    assert_eq!(timed.phases[0].writers.len(), 2);
    assert!(
        timed.phases[0]
            .writers
            .iter()
            .all(|w| w.max_msgs == WriterConfig::new("t", 200, 200).max_msgs)
    );
}

#[test]
fn shares_add_up_and_differ_by_at_most_one() {
    for (total, n) in [(0, 3), (1, 3), (10, 3), (2_000_000, 2), (7, 1), (5, 0)] {
        let parts: Vec<u64> = (0..n.max(1)).map(|i| build::share(total, n, i)).collect();
        assert_eq!(parts.iter().sum::<u64>(), total, "{total} over {n}");
        let (min, max) = (parts.iter().min(), parts.iter().max());
        assert!(max.zip(min).is_some_and(|(a, b)| a - b <= 1), "{parts:?}");
    }
}

#[test]
fn paced_scenarios_pace_one_pipelined_publisher_for_one_consumer() {
    for (name, rate) in [
        ("paced1k", 1_000),
        ("paced10k", 10_000),
        ("paced50k", 50_000),
    ] {
        let s = scenario(name, &cfg()).expect("exists");
        let [phase] = &s.phases[..] else {
            panic!("one phase");
        };
        let [writer] = &phase.writers[..] else {
            panic!("one writer");
        };
        assert_eq!(writer.rate_msgs_per_sec, Some(rate), "{name}");
        assert_eq!(writer.batch, 1, "{name}");
        assert_eq!(writer.window, build::PIPELINE_WINDOW, "{name}");
        let [reader] = &phase.readers[..] else {
            panic!("one reader");
        };
        assert_eq!(reader.rdy, 2500, "{name}");
    }
}

#[test]
fn topics_pipelined_differs_from_topics_only_in_its_window() {
    let plain = scenario("topics", &cfg()).expect("exists");
    let piped = scenario("topics-pipelined", &cfg()).expect("exists");
    let (a, b) = (&plain.phases[0], &piped.phases[0]);
    assert_eq!(a.writers.len(), b.writers.len());
    assert_eq!(a.readers.len(), b.readers.len());
    for (x, y) in a.writers.iter().zip(&b.writers) {
        assert_eq!(x.window, 1);
        assert_eq!(y.window, build::PIPELINE_WINDOW);
        assert_eq!((x.batch, x.topics.len()), (y.batch, y.topics.len()));
    }
}

#[test]
fn only_the_disk_and_durable_scenarios_need_daemon_flags() {
    for s in suite(&cfg(), &[]).expect("suite") {
        let want: &[&str] = match s.name {
            "disk" => &["--mem-queue-size=0"],
            "durable" => &["--durable"],
            _ => &[],
        };
        assert_eq!(s.daemon_flags, want, "{}", s.name);
    }
}

#[test]
fn selection_keeps_suite_order_and_rejects_unknown_names() {
    let picked = suite(&cfg(), &["conns".into(), "pub".into()]).expect("known");
    let names: Vec<&str> = picked.iter().map(|s| s.name).collect();
    assert_eq!(names, ["pub", "conns"]);
    assert!(suite(&cfg(), &["nope".into()]).is_err());
}

#[test]
fn many_topics_and_connections_are_as_named() {
    let topics = scenario("topics", &cfg()).expect("exists");
    assert_eq!(topics.topics.len(), 1000);
    let writers = &topics.phases[0].writers;
    let covered: usize = writers.iter().map(|w| w.topics.len()).sum();
    assert_eq!(covered, 1000);
    assert_eq!(topics.phases[0].readers.len(), 1000);
    let conns = scenario("conns", &cfg()).expect("exists");
    assert_eq!(conns.phases[0].idle.len(), 1000);
    assert_eq!(conns.phases[0].readers.len(), 1);
}
