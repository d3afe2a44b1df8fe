//! The process around a daemon: the runtime its `serve` future runs on and
//! the exit code it leaves, its listeners and the signals that stop it.

use std::fmt::Display;
use std::future::Future;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::mpsc;

use crate::listen::Bindable;
use crate::{ServiceError, logging};

/// Runs a daemon: installs the logger at `log_level` in `log_format` (see
/// [`logging::init`]), tunes the allocator (see [`crate::allocator`]), runs
/// `serve` to completion on a multi-thread runtime of `worker_threads`
/// workers (0: tokio's default, one per core unless `TOKIO_WORKER_THREADS`
/// says otherwise), and returns the process's exit code: success, or
/// failure once the error is logged (alternate form, so an error chain
/// shows whole). If a logger is already installed it is kept.
pub fn run<F, E>(
    log_level: &str,
    log_format: logging::LogFormat,
    worker_threads: usize,
    serve: F,
) -> ExitCode
where
    F: Future<Output = Result<(), E>>,
    E: Display,
{
    if let Err(e) = logging::init(log_level, log_format) {
        tracing::warn!(error = %e, "keeping the logger already installed");
    }
    crate::allocator::limit_malloc_arenas();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if worker_threads > 0 {
        builder.worker_threads(worker_threads);
    }
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the runtime");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            // Exit now, as on a fatal error: do not wait for tasks still
            // running (a blocked read would hold the process up).
            runtime.shutdown_background();
            ExitCode::FAILURE
        }
    }
}

/// Binds a listener on `addr`; `what` (`TCP`, `HTTP`, `HTTPS`) names it
/// in the error and in the line announcing it (see [`announce`]). A
/// [`SocketAddr`] gives a [`TcpListener`](tokio::net::TcpListener); a
/// [`ListenAddr`](crate::ListenAddr) gives a [`Listener`](crate::Listener),
/// TCP or unix (see [`crate::listen`] for stale socket files).
pub async fn bind<A: Bindable>(what: &'static str, addr: A) -> Result<A::Listener, ServiceError> {
    let (listener, bound) = addr.bind_as(what).await?;
    announce(what, bound);
    Ok(listener)
}

/// The `tracing` target of the lines [`announce`] logs, so a filter such
/// as `RUST_LOG=warn,rsq::listen=info` keeps them and little else.
pub const LISTEN_TARGET: &str = "rsq::listen";

/// Logs, at info level, nsqd's `TCP: listening on ADDR` line with the
/// address actually bound. Started on port 0, a daemon tells whoever
/// started it (tests, tools) its port this way, which a port picked in
/// advance cannot promise: another process may take it first.
/// A unix socket's line holds its path, which [`parse_announcement`]
/// does not read back (the caller chose the path).
pub fn announce(what: &str, addr: impl Display) {
    tracing::info!(target: LISTEN_TARGET, "{what}: listening on {addr}");
}

/// Reads a line [`announce`] logged, as the formatter printed it: the
/// listener's name and address, or `None` for any other line.
///
/// ```
/// use rsq_service::parse_announcement;
///
/// let text = "2026-01-01T00:00:00Z  INFO rsq::listen: TCP: listening on 127.0.0.1:4150";
/// assert_eq!(parse_announcement(text), Some(("TCP", "127.0.0.1:4150".parse().unwrap())));
/// let json = r#"{"fields":{"message":"HTTP: listening on [::1]:4151"}}"#;
/// assert_eq!(parse_announcement(json), Some(("HTTP", "[::1]:4151".parse().unwrap())));
/// assert_eq!(parse_announcement("INFO rsqd: serving"), None);
/// ```
pub fn parse_announcement(line: &str) -> Option<(&str, SocketAddr)> {
    let (head, addr) = line.split_once(": listening on ")?;
    // In a JSON line the name follows the message's opening quote.
    let what = head.rsplit([' ', '"']).next()?;
    // The address ends at whitespace, a colour escape or (JSON) a quote.
    let addr = addr
        .split(|c: char| c.is_whitespace() || c == '\x1b' || c == '"')
        .next()?
        .parse()
        .ok()?;
    Some((what, addr))
}

/// Follows a daemon's log (its stderr, read line by line on a thread of
/// its own), for whoever started it on port 0: each line [`announce`]
/// wrote is sent on the returned channel as the listener's name and
/// address, every other line goes to `other`. The channel closes when the
/// log does.
pub fn follow_announcements<R, F>(log: R, mut other: F) -> mpsc::Receiver<(String, SocketAddr)>
where
    R: std::io::Read + Send + 'static,
    F: FnMut(&str) + Send + 'static,
{
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(log).lines().map_while(Result::ok) {
            match parse_announcement(&line) {
                Some((what, addr)) => {
                    let _ = tx.send((what.to_string(), addr));
                }
                None => other(&line),
            }
        }
    });
    rx
}

/// Resolves on the first SIGTERM or SIGINT ([`stop_signals`]'s first). If
/// neither can be listened for, the failure is logged and it never
/// resolves, rather than stopping the daemon at once.
pub async fn shutdown_signal() {
    if stop_signals().recv().await.is_none() {
        std::future::pending::<()>().await;
    }
}

/// A signal asking a daemon to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopSignal {
    /// SIGTERM.
    Terminate,
    /// SIGINT.
    Interrupt,
}

/// Every SIGTERM and SIGINT from now on, in order, for a daemon that acts
/// on more than the first (rsqd's drain mode: the first SIGTERM drains, the
/// next flushes). A signal that cannot be listened for is logged and never
/// arrives. Spawns a task, so it must be called inside a tokio runtime.
pub fn stop_signals() -> tokio::sync::mpsc::UnboundedReceiver<StopSignal> {
    use tokio::signal::unix::{SignalKind, signal};
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut term = signal(SignalKind::terminate())
            .map_err(|e| tracing::error!(error = %e, "cannot listen for SIGTERM"))
            .ok();
        let mut int = signal(SignalKind::interrupt())
            .map_err(|e| tracing::error!(error = %e, "cannot listen for SIGINT"))
            .ok();
        loop {
            let got = tokio::select! {
                Some(()) = async { term.as_mut()?.recv().await } => StopSignal::Terminate,
                Some(()) = async { int.as_mut()?.recv().await } => StopSignal::Interrupt,
                else => return,
            };
            tracing::info!(signal = ?got, "stop signal received");
            if tx.send(got).is_err() {
                return;
            }
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use std::error::Error;

    use tokio::net::TcpListener;

    use super::*;

    #[test]
    fn announcements_are_read_back_from_formatted_lines() {
        let line =
            "2026-11-25T12:27:04.580213Z  INFO rsq::listen: HTTPS: listening on 127.0.0.1:4443";
        assert_eq!(
            parse_announcement(line),
            Some(("HTTPS", SocketAddr::from(([127, 0, 0, 1], 4443))))
        );
        let coloured =
            "\x1b[32m INFO\x1b[0m \x1b[2mrsq::listen\x1b[0m: TCP: listening on [::1]:4150\x1b[0m";
        assert_eq!(
            parse_announcement(coloured).map(|(w, a)| (w, a.port())),
            Some(("TCP", 4150))
        );
        let json = r#"{"timestamp":"2026-12-02T15:00:00.1Z","level":"INFO","target":"rsq::listen","message":"HTTP: listening on 127.0.0.1:4151","fields":{}}"#;
        assert_eq!(
            parse_announcement(json),
            Some(("HTTP", SocketAddr::from(([127, 0, 0, 1], 4151))))
        );
        assert_eq!(parse_announcement("INFO rsqd: serving"), None);
        assert_eq!(parse_announcement("TCP: listening on nowhere"), None);
    }

    #[test]
    fn following_a_log_splits_announcements_from_other_lines() {
        let log =
            "Z  WARN rsqd: slow disk\nZ  INFO rsq::listen: TCP: listening on 127.0.0.1:4150\n";
        let (tx, others) = std::sync::mpsc::channel();
        let announced = follow_announcements(std::io::Cursor::new(log), move |line| {
            let _ = tx.send(line.to_string());
        });
        let got: Vec<(String, SocketAddr)> = announced.iter().collect();
        assert_eq!(
            got,
            [("TCP".to_string(), SocketAddr::from(([127, 0, 0, 1], 4150)))]
        );
        assert_eq!(
            others.iter().collect::<Vec<_>>(),
            ["Z  WARN rsqd: slow disk"]
        );
    }

    #[tokio::test]
    async fn bind_error_names_the_listener_and_keeps_the_cause() {
        let taken = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = taken.local_addr().expect("addr");
        let err = bind("HTTP", addr).await.expect_err("bound twice");
        assert_eq!(err.to_string(), format!("cannot listen on HTTP {addr}"));
        assert!(err.source().is_some());
        assert!(
            bind("TCP", "127.0.0.1:0".parse::<SocketAddr>().expect("addr"))
                .await
                .is_ok()
        );
    }

    #[test]
    fn exit_code_says_whether_serve_failed() {
        let ok = run("info", logging::LogFormat::Text, 0, async {
            Ok::<(), String>(())
        });
        assert_eq!(format!("{ok:?}"), format!("{:?}", ExitCode::SUCCESS));
        let failed = run("info", logging::LogFormat::Text, 1, async {
            Err("listener gone".to_string())
        });
        assert_eq!(format!("{failed:?}"), format!("{:?}", ExitCode::FAILURE));
    }
}
