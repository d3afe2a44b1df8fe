//! rsq-sim: runs the seeded simulation of the daemon (`rsqd::sim`) for a
//! range of seeds or one, printing `trace <seed> <hash>` per run and, on a
//! failure, the broken invariant, the trace's tail and the replay command.
//! `cargo xtask sim` builds and runs it.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::process::ExitCode;

use rsqd::sim::{self, Faults};

const USAGE: &str = "usage: rsq-sim [--seeds N] [--seed S] [--first S] [--faults LIST]
  --seeds N      run N seeds (default 100), from --first (default 0)
  --seed S       run seed S only
  --faults LIST  crash,fsync,bitflip, all (default) or none
  --tail N       show the last N events of a failing run (default 40)
  --show         print those events for every run, failing or not";

fn main() -> ExitCode {
    match parse(std::env::args().skip(1)) {
        Ok((seeds, faults, tail, show)) => {
            let mut failed = 0;
            for seed in seeds {
                let outcome = sim::run_showing(seed, faults, tail);
                println!("{} lives={}", outcome.trace_line(), outcome.lives);
                if show {
                    println!("{}", outcome.tail);
                }
                if let Some(failure) = outcome.failure {
                    eprintln!("FAILED {failure}");
                    failed += 1;
                }
            }
            if failed > 0 {
                eprintln!("{failed} seeds failed");
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(msg) => {
            eprintln!("rsq-sim: {msg}\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

type Parsed = (std::ops::Range<u64>, Faults, usize, bool);

fn parse(mut args: impl Iterator<Item = String>) -> Result<Parsed, String> {
    let mut count = 100;
    let mut first = 0;
    let mut one = None;
    let mut faults = Faults::ALL;
    let mut tail = 40;
    let mut show = false;
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        let number = |v: String| v.parse::<u64>().map_err(|e| format!("{v}: {e}"));
        match flag.as_str() {
            "--seeds" => count = number(value()?)?,
            "--first" => first = number(value()?)?,
            "--seed" => one = Some(number(value()?)?),
            "--faults" => faults = Faults::parse(&value()?)?,
            "--tail" => tail = usize::try_from(number(value()?)?).map_err(|e| e.to_string())?,
            "--show" => show = true,
            "-h" | "--help" => return Err("help".to_string()),
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(match one {
        Some(seed) => (seed..seed + 1, faults, tail, show),
        None => (first..first.saturating_add(count), faults, tail, show),
    })
}
