//! A writer process with `sync_every = 1` is killed with SIGKILL at random
//! points; every record it acknowledged must be found when the queue is
//! reopened. The test re-executes its own binary in child mode.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rsq_diskqueue::{BackendQueue, DiskQueue};

use crate::{Rng, config, drain, record};

const CHILD_ENV: &str = "RSQ_DISKQUEUE_CRASH_CHILD";

/// Child mode only (a no-op otherwise): put records forever, printing
/// `ack <id>` after each put returns.
#[test]
fn child_writer() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (dir, start) = spec.split_once('|').unwrap();
    let start: u64 = start.parse().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let mut c = config(Path::new(dir));
        c.sync_every = 1;
        let q = DiskQueue::open(c).unwrap();
        let mut out = std::io::stdout();
        for id in start..start + 10_000_000 {
            q.put(record(id, (id % 300) as usize)).await.unwrap();
            writeln!(out, "ack {id}").unwrap();
            out.flush().unwrap();
        }
    });
}

#[tokio::test]
async fn acknowledged_records_survive_sigkill() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let rounds = if std::env::var("RSQ_LONG_TESTS").is_ok() {
        40
    } else {
        4
    };
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("crash test seed {seed}");
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    for round in 0..rounds {
        let start = round * 10_000_000;
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "crash::child_writer",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, format!("{}|{start}", dir.path().display()))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut acked = Vec::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(id) = line.strip_prefix("ack ") {
                    acked.push(id.parse::<u64>().unwrap());
                    let _ = tx.send(());
                }
            }
            acked
        });
        // Let it get going, then kill it at a random point.
        rx.recv_timeout(Duration::from_secs(60))
            .expect("child acknowledged nothing");
        std::thread::sleep(Duration::from_millis(rng.below(150)));
        child.kill().unwrap();
        child.wait().unwrap();
        let acked = reader.join().unwrap();
        let last = *acked.last().unwrap();

        let q = DiskQueue::open(config(dir.path())).unwrap();
        let found = drain(&q);
        assert!(
            found.windows(2).all(|w| w[0] < w[1]),
            "round {round}: order broken"
        );
        assert!(
            found.iter().all(|&id| id >= start && id <= last + 1),
            "round {round}: unknown record"
        );
        let found: HashSet<u64> = found.into_iter().collect();
        let missing: Vec<u64> = acked
            .iter()
            .copied()
            .filter(|id| !found.contains(id))
            .collect();
        assert!(
            missing.is_empty(),
            "round {round}: acknowledged records lost: {missing:?}"
        );
        eprintln!("round {round}: {} acknowledged, all found", acked.len());
        q.close().await.unwrap();
    }
}
