//! Command-line parsing: targets, durations and the checks on them.

use super::*;

#[track_caller]
fn parse(args: &[&str]) -> Options {
    let mut all = vec!["rsq-bench"];
    all.extend_from_slice(args);
    Options::try_parse_from(all).expect("valid arguments")
}

#[track_caller]
fn rejected(args: &[&str]) {
    let mut all = vec!["rsq-bench"];
    all.extend_from_slice(args);
    assert!(Options::try_parse_from(all).is_err(), "{args:?} accepted");
}

#[test]
fn durations() {
    assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
    assert_eq!(parse_duration("2.5s"), Ok(Duration::from_millis(2500)));
    assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
    assert!(parse_duration("0").is_err());
    assert!(parse_duration("-1s").is_err());
    assert!(parse_duration("ten").is_err());
    assert!(parse_duration("inf").is_err());
}

#[test]
fn a_started_daemon_with_its_flags() {
    let options = parse(&[
        "--daemon-bin",
        "/bin/rsqd",
        "--daemon-flag=--sync-every=10000",
        "--duration=2s",
    ]);
    assert_eq!(
        options.target().expect("target"),
        Target::Managed {
            binary: PathBuf::from("/bin/rsqd"),
            flags: vec!["--sync-every=10000".into()],
        }
    );
    assert_eq!(options.duration, Duration::from_secs(2));
    assert_eq!(options.size, 200);
}

#[test]
fn a_running_daemon_by_address() {
    let options = parse(&[
        "--addr=127.0.0.1:4150",
        "--http-addr=127.0.0.1:4151",
        "--pid=42",
        "--scenario=pub",
        "--scenario=nsq",
        "--json=out.json",
    ]);
    assert_eq!(
        options.target().expect("target"),
        Target::External {
            tcp: "127.0.0.1:4150".parse().expect("addr"),
            http: Some("127.0.0.1:4151".parse().expect("addr")),
            pid: Some(42),
        }
    );
    assert_eq!(options.scenario, ["pub", "nsq"]);
    assert_eq!(options.json, Some(PathBuf::from("out.json")));
}

#[test]
fn contradictory_or_missing_targets_are_rejected() {
    rejected(&[]);
    rejected(&["--daemon-bin=/bin/rsqd", "--addr=127.0.0.1:4150"]);
    rejected(&["--addr=localhost"]);
    rejected(&["--addr=127.0.0.1:4150", "--duration=0"]);
    let bad_flag = parse(&["--addr=127.0.0.1:4150", "--daemon-flag=--x"]);
    assert!(bad_flag.target().is_err());
    let pid_without_addr = parse(&["--daemon-bin=/bin/rsqd", "--pid=1"]);
    assert!(pid_without_addr.target().is_err());
}

#[test]
fn suite_settings_are_checked() {
    let options = parse(&["--addr=127.0.0.1:4150", "--size=8"]);
    assert!(
        options.suite_config("r".into()).is_err(),
        "too small for a stamp"
    );
    let options = parse(&["--addr=127.0.0.1:4150", "--scenario=nope"]);
    assert!(options.suite_config("r".into()).is_err());
    let options = parse(&["--addr=127.0.0.1:4150", "--nsq-workers=3"]);
    let cfg = options.suite_config("run1".into()).expect("valid");
    assert_eq!(cfg.nsq_workers, 3);
    assert_eq!(cfg.run_id, "run1");
    assert!(parse(&["--list"]).list);
}
