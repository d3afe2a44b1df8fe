//! The data directory lock: one process at a time on a `--data-path`, as
//! nsqd's `internal/dirlock` enforces. A second rsqd, an `rsqd downgrade`
//! on a directory in use, or an rsqd on a directory another program has
//! flocked (as Go nsqd does) refuses to start, names the directory and
//! exits non-zero, leaving the running daemon and its files alone.

use std::fs::File;

use crate::harness::{Daemon, daemon_args, run_to_exit};

#[test]
fn a_second_rsqd_or_a_downgrade_on_a_dir_in_use_is_refused() {
    let mut d = Daemon::start(&[]);
    d.connect().publish("kept", b"before");
    let data = d.data_path().to_path_buf();
    let in_use = format!("data path {} is in use", data.display());

    let (code, _, stderr) = run_to_exit(&daemon_args(&data), "warn");
    assert!(code.is_some_and(|c| c != 0), "{code:?}: {stderr}");
    assert!(stderr.contains(&in_use), "{stderr}");
    // It refused before listening.
    assert!(!stderr.contains("listening on"), "{stderr}");

    let meta_before = std::fs::read(data.join("nsqd.dat")).unwrap();
    let (code, stdout, stderr) = run_to_exit(
        &[
            "downgrade".into(),
            format!("--data-path={}", data.display()),
        ],
        "info",
    );
    assert!(code.is_some_and(|c| c != 0), "{code:?}: {stdout} {stderr}");
    assert!(stderr.contains(&in_use), "{stderr}");
    assert_eq!(std::fs::read(data.join("nsqd.dat")).unwrap(), meta_before);

    // The first daemon never noticed.
    let mut c = d.connect();
    c.subscribe("kept", "c");
    c.send(rsq_codec::Command::Rdy(1));
    assert_eq!(&c.expect_message().body[..], b"before");
    drop(c);

    // Once it has stopped, the lock is free again.
    assert_eq!(d.terminate(), Some(0));
    d.restart();
    assert_eq!(d.http("GET", "/ping", b"").0, 200);
}

#[test]
fn a_dir_another_program_has_locked_is_refused() {
    // The lock Go nsqd's dirlock takes: flock(LOCK_EX|LOCK_NB) on the
    // directory, here held by the test process.
    let dir = tempfile::tempdir().unwrap();
    let held = File::open(dir.path()).unwrap();
    held.try_lock().unwrap();
    let (code, _, stderr) = run_to_exit(&daemon_args(dir.path()), "warn");
    assert!(code.is_some_and(|c| c != 0), "{code:?}: {stderr}");
    assert!(
        stderr.contains(&format!("data path {} is in use", dir.path().display())),
        "{stderr}"
    );
    assert!(!dir.path().join("nsqd.dat").exists());
    drop(held);
    let d = Daemon::start_in(dir, &[]);
    assert_eq!(d.http("GET", "/ping", b"").0, 200);
}

#[test]
fn downgrade_refuses_a_dir_that_is_not_a_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), b"not nsqd").unwrap();
    let (code, _, stderr) = run_to_exit(
        &[
            "downgrade".into(),
            format!("--data-path={}", dir.path().display()),
        ],
        "info",
    );
    assert!(code.is_some_and(|c| c != 0), "{code:?}: {stderr}");
    assert!(
        stderr.contains(&format!(
            "{} is not an rsqd or nsqd data directory: it holds no nsqd.dat",
            dir.path().display()
        )),
        "{stderr}"
    );
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["notes.txt"]);

    let missing = dir.path().join("missing");
    let (code, _, stderr) = run_to_exit(
        &[
            "downgrade".into(),
            format!("--data-path={}", missing.display()),
        ],
        "info",
    );
    assert!(code.is_some_and(|c| c != 0), "{code:?}: {stderr}");
    assert!(stderr.contains("no such directory"), "{stderr}");
    assert!(!missing.exists());
}
