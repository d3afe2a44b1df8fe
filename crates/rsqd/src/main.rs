//! The `rsqd` binary: options, then [`rsqd::run`] on its listeners until a
//! signal, with the process plumbing from `rsq_service`.

use std::process::ExitCode;

use rsqd::{DirLock, Options};

fn main() -> ExitCode {
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
            return ExitCode::from(2);
        }
    };
    let log_level = opts.log_level.clone();
    rsq_service::run(&log_level, serve(opts))
}

async fn serve(opts: Options) -> anyhow::Result<()> {
    // Before listening, as nsqd: a second daemon on the same directory
    // refuses to start whatever ports it was given.
    let lock = DirLock::create_and_acquire(&opts.data_path)?;
    let tcp = rsq_service::bind("TCP", opts.tcp_address.clone()).await?;
    let http = rsq_service::bind("HTTP", opts.http_address.clone()).await?;
    rsqd::run(opts, lock, tcp, http, rsq_service::shutdown_signal()).await
}
