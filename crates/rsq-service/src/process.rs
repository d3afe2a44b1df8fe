//! The process around a daemon: the runtime its `serve` future runs on and
//! the exit code it leaves, its listeners and the signals that stop it.

use std::fmt::Display;
use std::future::Future;
use std::net::SocketAddr;
use std::process::ExitCode;

use tokio::net::TcpListener;

use crate::{logging, ServiceError};

/// Runs a daemon: installs the logger at `log_level` (see
/// [`logging::init`]), runs `serve` to completion on a multi-thread
/// runtime, and returns the process's exit code: success, or failure once
/// the error is logged (alternate form, so an error chain shows whole).
/// If a logger is already installed it is kept.
pub fn run<F, E>(log_level: &str, serve: F) -> ExitCode
where
    F: Future<Output = Result<(), E>>,
    E: Display,
{
    if let Err(e) = logging::init(log_level) {
        tracing::warn!(error = %e, "keeping the logger already installed");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
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
/// in the error.
pub async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, ServiceError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServiceError::Bind { what, addr, source })
}

/// Resolves on SIGTERM or SIGINT. If a signal cannot be listened for, the
/// failure is logged and it never resolves, rather than stopping the
/// daemon at once.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM");
            return std::future::pending().await;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        r = tokio::signal::ctrl_c() => {
            if let Err(e) = r {
                tracing::error!(error = %e, "cannot listen for SIGINT");
                std::future::pending::<()>().await;
            }
            tracing::info!("SIGINT received");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error;

    use super::*;

    #[tokio::test]
    async fn bind_error_names_the_listener_and_keeps_the_cause() {
        let taken = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = taken.local_addr().expect("addr");
        let err = bind("HTTP", addr).await.expect_err("bound twice");
        assert_eq!(err.to_string(), format!("cannot listen on HTTP {addr}"));
        assert!(err.source().is_some());
        assert!(bind("TCP", "127.0.0.1:0".parse().expect("addr"))
            .await
            .is_ok());
    }

    #[test]
    fn exit_code_says_whether_serve_failed() {
        let ok = run("info", async { Ok::<(), String>(()) });
        assert_eq!(format!("{ok:?}"), format!("{:?}", ExitCode::SUCCESS));
        let failed = run("info", async { Err("listener gone".to_string()) });
        assert_eq!(format!("{failed:?}"), format!("{:?}", ExitCode::FAILURE));
    }
}
