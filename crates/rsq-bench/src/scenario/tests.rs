//! The suite's shape: names, topics, flags and bounds.

use super::*;

fn cfg() -> SuiteConfig {
    SuiteConfig {
        duration: Duration::from_secs(10),
        body_size: 200,
        nsq_workers: 2,
        run_id: "bench1-42".into(),
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
