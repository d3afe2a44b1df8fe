//! The `rsq-lookupd` binary: options, logging, listeners and signals around
//! [`rsq_lookupd::run`].

use anyhow::Context;
use clap::Parser;
use rsq_lookupd::Options;
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

fn main() {
    let opts = Options::parse();
    let level = match opts.log_level.as_str() {
        "fatal" => "error",
        other => other,
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level)),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the runtime");
            std::process::exit(1);
        }
    };
    if let Err(e) = runtime.block_on(serve(opts)) {
        tracing::error!("{e:#}");
        std::process::exit(1);
    }
}

async fn serve(opts: Options) -> anyhow::Result<()> {
    let tcp = TcpListener::bind(opts.tcp_address)
        .await
        .with_context(|| format!("cannot listen on TCP {}", opts.tcp_address))?;
    let http = TcpListener::bind(opts.http_address)
        .await
        .with_context(|| format!("cannot listen on HTTP {}", opts.http_address))?;
    rsq_lookupd::run(tcp, http, opts, shutdown_signal()).await?;
    Ok(())
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
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
