//! The `rsqd` binary: options, then [`rsqd::run`] on its listeners until a
//! signal, with the process plumbing from `rsq_service`; or, as
//! `rsqd downgrade`, [`rsqd::downgrade::run`] on a stopped daemon's data
//! directory.

use std::process::ExitCode;

use rsqd::downgrade::{self, DowngradeOptions};
use rsqd::{DirLock, Options};

fn main() -> ExitCode {
    if std::env::args_os()
        .nth(1)
        .is_some_and(|arg| arg == downgrade::SUBCOMMAND)
    {
        return downgrade_main();
    }
    let opts = match Options::load() {
        Ok(opts) => opts,
        Err(e) => return options_error(e),
    };
    let log_level = opts.log_level.clone();
    let workers = opts.worker_threads;
    rsq_service::run(&log_level, opts.log_format, workers, serve(opts))
}

/// Reports options that did not parse; clap's own errors (and --help,
/// --version) print themselves with the right exit status.
fn options_error(e: anyhow::Error) -> ExitCode {
    if let Some(clap_err) = e.downcast_ref::<clap::Error>() {
        clap_err.exit();
    }
    #[allow(clippy::print_stderr)]
    {
        eprintln!("rsqd: {e:#}");
    }
    ExitCode::from(2)
}

async fn serve(opts: Options) -> anyhow::Result<()> {
    // Before listening, as nsqd: a second daemon on the same directory
    // refuses to start whatever ports it was given.
    let lock = DirLock::create_and_acquire(&opts.data_path)?;
    let tcp = rsq_service::bind("TCP", opts.tcp_address.clone()).await?;
    let http = rsq_service::bind("HTTP", opts.http_address.clone()).await?;
    rsqd::run(opts, lock, tcp, http, rsq_service::stop_signals()).await
}

/// `rsqd downgrade [FLAGS]`: logs one line per queue, prints the summary.
fn downgrade_main() -> ExitCode {
    let opts = match DowngradeOptions::load_from(std::env::args_os().skip(1)) {
        Ok(opts) => opts,
        Err(e) => return options_error(e),
    };
    #[allow(clippy::print_stderr)]
    if let Err(e) = rsq_service::logging::init(&opts.log_level, opts.log_format) {
        eprintln!("rsqd downgrade: {e}");
    }
    match downgrade::run(&opts) {
        Ok(summary) => {
            #[allow(clippy::print_stdout)]
            {
                println!("{summary}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!("rsqd downgrade: {e}");
            ExitCode::FAILURE
        }
    }
}
