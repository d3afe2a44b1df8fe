//! The `rsq-lookupd` binary: options, then [`rsq_lookupd::run`] on its
//! listeners until a signal, with the process plumbing from `rsq_service`.

use std::process::ExitCode;

use clap::Parser;
use rsq_lookupd::Options;

fn main() -> ExitCode {
    let opts = Options::parse();
    let log_level = opts.log_level.clone();
    rsq_service::run(&log_level, opts.log_format, 0, serve(opts))
}

async fn serve(opts: Options) -> anyhow::Result<()> {
    let tcp = rsq_service::bind("TCP", opts.tcp_address).await?;
    let http = rsq_service::bind("HTTP", opts.http_address).await?;
    rsq_lookupd::run(tcp, http, opts, rsq_service::shutdown_signal()).await?;
    Ok(())
}
