//! Logs that machines can read: `--log-format=json` writes one JSON object
//! per line, and text lines carry no colour codes when stderr is not a
//! terminal, whether or not `NO_COLOR` is set.

use std::io::Read;
use std::process::{Command as Process, Stdio};
use std::time::Duration;

use crate::harness::{Daemon, run_to_exit, wait_exit};

/// Flags for an rsqd that listens on TCP, then fails to bind HTTP on
/// `taken` and exits, having logged both.
fn failing_start(data: &std::path::Path, taken: std::net::SocketAddr) -> Vec<String> {
    vec![
        "--tcp-address=127.0.0.1:0".to_string(),
        format!("--http-address={taken}"),
        format!("--data-path={}", data.display()),
    ]
}

#[test]
fn json_logs_are_one_object_per_line() {
    // A daemon that logs, serves and is scraped with the JSON format (the
    // harness reads its listening lines back from JSON too).
    let d = Daemon::start(&["--log-format=json"]);
    d.connect().publish("t", b"m");
    // Another rsqd listens on TCP, cannot bind HTTP and exits.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut args = failing_start(dir.path(), taken.local_addr().unwrap());
    args.push("--log-format=json".into());
    let (code, _, stderr) = run_to_exit(&args, "info");
    assert!(code.is_some_and(|c| c != 0), "{code:?}: {stderr}");
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    assert!(lines.len() >= 2, "{stderr}");
    for line in &lines {
        for key in ["timestamp", "level", "target", "message"] {
            assert!(line[key].is_string(), "{key} in {line}");
        }
        assert!(line["fields"].is_object(), "{line}");
    }
    let listening = lines
        .iter()
        .find(|l| l["target"] == "rsq::listen")
        .expect("a listening line");
    assert_eq!(listening["level"], "INFO");
    assert!(
        listening["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("TCP: listening on 127.0.0.1:")),
        "{listening}"
    );
    let refusal = lines.last().expect("a last line");
    assert_eq!(refusal["level"], "ERROR", "{stderr}");
    assert!(
        refusal["message"]
            .as_str()
            .is_some_and(|m| m.contains("cannot listen on HTTP")),
        "{refusal}"
    );
}

#[test]
fn text_logs_to_a_pipe_have_no_colour_codes() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dir = tempfile::tempdir().unwrap();
    // NO_COLOR unset: a pipe is not a terminal, so no colour either.
    let mut child = Process::new(env!("CARGO_BIN_EXE_rsqd"))
        .args(failing_start(dir.path(), taken.local_addr().unwrap()))
        .env_remove("NO_COLOR")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn rsqd");
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr piped")
        .read_to_string(&mut stderr)
        .expect("read stderr");
    let code = wait_exit(&mut child, Duration::from_secs(60));
    assert!(code.is_some_and(|c| c != 0), "{code:?}: {stderr}");
    assert!(stderr.contains("ERROR"), "{stderr}");
    assert!(
        stderr.contains("INFO rsq::listen: TCP: listening on"),
        "{stderr}"
    );
    assert!(!stderr.contains('\x1b'), "colour codes in {stderr:?}");
}

#[test]
fn an_unknown_log_format_is_refused() {
    let (code, _, stderr) = run_to_exit(&["--log-format=logfmt".to_string()], "info");
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("invalid log format \"logfmt\": use text or json"),
        "{stderr}"
    );
}
