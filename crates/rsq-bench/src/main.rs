//! `rsq-bench`: runs the benchmark suite against a daemon it starts
//! (`--daemon-bin`) or one already running (`--addr`) and prints a table.

use std::io::Write;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::Parser;
use rsq_bench::daemon::Target;
use rsq_bench::options::Options;
use rsq_bench::report::{JsonReport, table};
use rsq_bench::scale;
use rsq_bench::scenario::{SCENARIO_NAMES, run_suite, suite};

/// Writes a line to stdout or stderr. A binary's output is its product,
/// so it is written directly; a closed pipe is not worth a panic.
macro_rules! say {
    ($stream:ident, $($arg:tt)*) => {{
        let _ = writeln!(std::io::$stream(), $($arg)*);
    }};
}

fn main() -> ExitCode {
    let options = Options::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RSQ_BENCH_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("rsq_bench=info,warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let run_id = format!("bench{}-{}", secs % 100_000, std::process::id());
    let result = options
        .suite_config(run_id)
        .and_then(|cfg| Ok((cfg.clone(), suite(&cfg, &options.scenario)?)));
    let (cfg, scenarios) = match result {
        Ok(found) => found,
        Err(e) => {
            say!(stderr, "rsq-bench: {e}");
            return ExitCode::from(2);
        }
    };
    if options.list {
        for name in SCENARIO_NAMES {
            if let Some(s) = scenarios.iter().find(|s| s.name == *name) {
                say!(stdout, "{:<8} {}", s.name, s.description);
            }
        }
        return ExitCode::SUCCESS;
    }
    let target = match options.target() {
        Ok(target) => target,
        Err(e) => {
            say!(stderr, "rsq-bench: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            say!(stderr, "rsq-bench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    if !options.scale.is_empty() {
        return scale_curve(&runtime, &target, &options);
    }
    let described = match &target {
        Target::Managed { binary, flags } => format!("{} {}", binary.display(), flags.join(" "))
            .trim()
            .to_string(),
        Target::External { tcp, .. } => tcp.to_string(),
    };
    say!(
        stderr,
        "rsq-bench: {} scenarios against {described}, {:?} per phase, {} B bodies",
        scenarios.len(),
        cfg.duration,
        cfg.body_size
    );
    let rows = runtime.block_on(run_suite(&target, &cfg, &scenarios));
    say!(stdout, "{}", table(&rows));
    if let Some(path) = &options.json {
        let report = JsonReport::new(described, cfg.duration.as_secs_f64(), cfg.body_size, &rows);
        if let Err(e) = std::fs::write(path, report.to_json()) {
            say!(stderr, "rsq-bench: cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
        say!(stderr, "rsq-bench: wrote {}", path.display());
    }
    if rows.iter().any(|r| r.error.is_some()) {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// `--scale`: the idle-topic curve, one fresh daemon per count.
fn scale_curve(runtime: &tokio::runtime::Runtime, target: &Target, options: &Options) -> ExitCode {
    let Target::Managed { binary, flags } = target else {
        say!(stderr, "rsq-bench: --scale needs --daemon-bin");
        return ExitCode::from(2);
    };
    let mut rows = Vec::new();
    for &topics in &options.scale {
        say!(
            stderr,
            "rsq-bench: scale: {topics} topics with a channel each"
        );
        match runtime.block_on(scale::measure(binary, flags, topics, options.scale_idle)) {
            Ok(row) => rows.push(row),
            Err(e) => {
                say!(stderr, "rsq-bench: scale at {topics} topics failed: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    say!(stdout, "{}", scale::table(&rows));
    ExitCode::SUCCESS
}
