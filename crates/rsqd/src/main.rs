//! The `rsqd` binary: options, logging, listeners and signals around [`rsqd::run`].

use anyhow::Context;
use rsqd::Options;
use tokio::net::TcpListener;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter};

fn main() {
    let opts = match Options::load() {
        Ok(opts) => opts,
        Err(e) => {
            // clap's own errors (and --help, --version) print themselves
            // with the right exit status.
            if let Some(clap_err) = e.downcast_ref::<clap::Error>() {
                clap_err.exit();
            }
            #[allow(clippy::print_stderr)]
            {
                eprintln!("rsqd: {e:#}");
            }
            std::process::exit(2);
        }
    };
    let level = rsqd::logging::filter_for(&opts.log_level);
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let (filter, handle) = reload::Layer::new(filter);
    tracing_subscriber::registry()
        .with(filter)
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .init();
    rsqd::logging::install(
        &opts.log_level,
        Box::new(move |level| {
            handle
                .reload(EnvFilter::new(level))
                .map_err(|e| e.to_string())
        }),
    );
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
    rsqd::run(opts, tcp, http, shutdown_signal()).await
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
