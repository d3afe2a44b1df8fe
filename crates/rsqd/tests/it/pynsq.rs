//! PyPI `pynsq` against rsqd, installed into `target/pyenv` by the test
//! itself when missing (so a fresh machine needs nothing but python3).

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::harness::Daemon;

/// Versions pinned so runs are reproducible; tornado 6.0.4 is the last
/// release pynsq's compressed connections work with, and snappy needs
/// python-snappy 0.7.x (see nsq-reference.md).
const PACKAGES: &[&str] = &["pynsq==0.9.1", "tornado==6.0.4", "python-snappy==0.7.3"];

fn pyenv() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/pyenv")
}

/// The venv's python, creating the venv once (and installing again when
/// `PACKAGES` changed: `.ready` holds the list installed). Tests run in
/// parallel processes, so creation is guarded by an exclusive `flock` on a
/// lock file: the kernel releases it when its holder exits, however it
/// exits, so a run killed mid-install never leaves the next one waiting.
pub fn python() -> PathBuf {
    let env = pyenv();
    let python = env.join("bin/python");
    let ready = env.join(".ready");
    let wanted = PACKAGES.join("\n");
    let is_ready = || std::fs::read_to_string(&ready).is_ok_and(|s| s == wanted);
    if is_ready() {
        return python;
    }
    std::fs::create_dir_all(env.parent().expect("target/pyenv has a parent")).unwrap();
    let lock = std::fs::File::create(env.with_extension("flock")).unwrap();
    // Another test process may be installing: wait for it, bounded (a
    // live holder is a pip still working; a dead one holds nothing).
    let deadline = Instant::now() + Duration::from_secs(300);
    while lock.try_lock().is_err() {
        assert!(
            Instant::now() < deadline,
            "waited 300 s for another test's pip install"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    if !is_ready() {
        let ok = (python.exists()
            || Command::new("python3")
                .args(["-m", "venv"])
                .arg(&env)
                .status()
                .is_ok_and(|s| s.success()))
            && Command::new(env.join("bin/pip"))
                .args(["install", "--quiet", "--disable-pip-version-check"])
                .args(PACKAGES)
                .status()
                .is_ok_and(|s| s.success());
        if ok {
            std::fs::write(&ready, &wanted).unwrap();
        }
    }
    drop(lock);
    assert!(
        is_ready(),
        "could not install {PACKAGES:?} into {}",
        env.display()
    );
    python
}

const SCRIPT: &str = r#"
import sys, functools
import tornado.ioloop
import nsq

tcp, topic, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
received = set()
acked = []
loop = tornado.ioloop.IOLoop.current()

def done_check():
    if len(received) == n and len(acked) == 2:
        reader.close()
        loop.stop()

def on_message(msg):
    body = msg.body.decode()
    if body == "req-me" and msg.attempts == 1:
        msg.requeue(delay=0, backoff=False)
        return
    received.add(body)
    msg.finish()
    done_check()

def on_pub(conn, data):
    if isinstance(data, nsq.Error):
        print("publish error", data, file=sys.stderr); sys.exit(2)
    acked.append(data)
    done_check()

writer = nsq.Writer([tcp])
reader = nsq.Reader(message_handler=on_message, nsqd_tcp_addresses=[tcp],
                    topic=topic, channel="py", max_in_flight=10, lookupd_poll_interval=1)

def publish():
    bodies = ["m%d" % i for i in range(n - 1)]
    writer.mpub(topic, [b.encode() for b in bodies], callback=on_pub)
    for b in ["req-me"]:
        writer.pub(topic, b.encode(), callback=on_pub)

loop.call_later(1.0, publish)
loop.call_later(30.0, lambda: (print("timeout", len(received), len(acked), file=sys.stderr), sys.exit(3)))
loop.start()
print("received", len(received))
"#;

#[test]
fn pynsq_reader_and_writer() {
    let python = python();
    let d = Daemon::start(&[]);
    let mut child = Command::new(python)
        .arg("-c")
        .arg(SCRIPT)
        .arg(d.tcp.to_string())
        .arg("py")
        .arg("50")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("pynsq script did not finish");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = child.wait_with_output().unwrap();
    assert!(
        status.success(),
        "pynsq failed: {status:?} {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("received 50"));
    let s = d.stats();
    let ch = crate::harness::channel_stats(&s, "py", "py").unwrap();
    assert_eq!(ch["requeue_count"], 1);
}

/// A pynsq `Writer` that publishes to `t` and expects a refusal, twice on
/// the same connection; it prints the errors, and fails if a publish is
/// accepted or 20 s pass.
const REFUSED_PRODUCER: &str = r#"
import sys
import tornado.ioloop
import nsq

tcp = sys.argv[1]
errors = []
loop = tornado.ioloop.IOLoop.current()

def on_pub(conn, data):
    if not isinstance(data, nsq.Error):
        print("accepted", data); sys.exit(2)
    errors.append(str(data))
    if len(errors) == 2:
        print("errors", errors)
        loop.stop()
    else:
        writer.pub("t", b"again", callback=on_pub)

writer = nsq.Writer([tcp])
loop.call_later(1.0, lambda: writer.pub("t", b"x", callback=on_pub))
loop.call_later(20.0, lambda: (print("timeout", errors), sys.exit(3)))
loop.start()
"#;

/// Runs [`REFUSED_PRODUCER`] against `tcp` and returns what it printed,
/// after checking it saw `E_PUB_FAILED` twice.
pub fn publish_refused_twice(python: &std::path::Path, tcp: std::net::SocketAddr) -> String {
    let out = std::process::Command::new(python)
        .arg("-c")
        .arg(REFUSED_PRODUCER)
        .arg(tcp.to_string())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.matches("E_PUB_FAILED").count(), 2, "{stdout}");
    stdout
}
