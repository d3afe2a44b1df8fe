//! Command-line parsing for xtask, kept dependency-free so xtask builds fast.

/// What `cargo xtask help` prints.
pub const USAGE: &str = "usage: cargo xtask <command>

commands:
  ci [--long]      fmt, the MSRV check, clippy, docs, doctests, tests; --long adds
                   soak and crash runs and 60 s of each fuzz target
  bench [NAME..] [daemon [ARGS..]]
                   run the benchmarks in release mode and print their figures: all, or
                   the named ones (codec, diskqueue, channel, topic, daemon). `daemon` is
                   the end-to-end suite (rsq-bench against a release rsqd it starts per
                   scenario); arguments after it go to rsq-bench, e.g.
                   `daemon --addr 127.0.0.1:4150 --http-addr 127.0.0.1:4151 --pid PID`
                   to measure a running nsqd, `--json PATH`, `--scenario NAME`,
                   `--duration 10s`, `--help`
  fuzz [TARGET] [--seconds N]
                   run the cargo-fuzz targets in fuzz/ (all, or TARGET) for N seconds
                   each (default 30); installs cargo-fuzz into target/tools if missing
  sim [--seeds N] [--first S] [--seed S] [--faults LIST] [--tail N] [--show]
                   the seeded simulation of the daemon (rsqd::sim): N seeds from S
                   (default 100 from 0), or seed S alone; faults crash,fsync,bitflip,
                   all (default) or none. Prints `trace <seed> <hash>` per run; a
                   failure prints the trace's last N events (--show: every run's)
                   and its replay command
  help             this text";

/// The parsed command line.
pub struct Flags {
    /// The command to run.
    pub command: Task,
}

/// One xtask command.
pub enum Task {
    /// Everything CI checks.
    Ci {
        /// Also run the long soak, crash and fuzz tests.
        long: bool,
    },
    /// Run benchmarks.
    Bench {
        /// Benchmark names (crate short names or `daemon`), then, after
        /// `daemon`, the suite's own arguments; empty means all.
        crates: Vec<String>,
    },
    /// Run the fuzz targets.
    Fuzz {
        /// An optional target name and `--seconds N`.
        args: Vec<String>,
    },
    /// Run the seeded simulation.
    Sim {
        /// The runner's arguments (`--seeds N`, `--seed S`, ...).
        args: Vec<String>,
    },
    /// Print usage.
    Help,
}

impl Flags {
    /// Parses the arguments after `cargo xtask`.
    pub fn parse(mut args: impl Iterator<Item = String>) -> Result<Flags, String> {
        let command = match args.next().as_deref() {
            Some("ci") => {
                let mut long = false;
                for arg in args {
                    match arg.as_str() {
                        "--long" => long = true,
                        other => return Err(format!("unknown flag for ci: {other}")),
                    }
                }
                Task::Ci { long }
            }
            Some("bench") => Task::Bench {
                crates: args.collect(),
            },
            Some("fuzz") => Task::Fuzz {
                args: args.collect(),
            },
            Some("sim") => Task::Sim {
                args: args.collect(),
            },
            None | Some("help" | "--help" | "-h") => Task::Help,
            Some(other) => return Err(format!("unknown command: {other}")),
        };
        Ok(Flags { command })
    }
}
