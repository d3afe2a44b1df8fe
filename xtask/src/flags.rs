//! Command-line parsing for xtask, kept dependency-free so xtask builds fast.

/// What `cargo xtask help` prints.
pub const USAGE: &str = "usage: cargo xtask <command>

commands:
  ci [--long]      fmt, clippy, tests, docs; --long adds soak, crash and fuzz runs
  bench [CRATE..]  run the benchmarks (all crates, or the named ones: codec, diskqueue,
                   channel, topic) in release mode and print their figures
  help             this text";

/// The parsed command line.
pub struct Flags {
    /// The command to run.
    pub command: Command,
}

/// One xtask command.
pub enum Command {
    /// Everything CI checks.
    Ci {
        /// Also run the long soak, crash and fuzz tests.
        long: bool,
    },
    /// Run benchmarks.
    Bench {
        /// Crate short names to bench; empty means all.
        crates: Vec<String>,
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
                Command::Ci { long }
            }
            Some("bench") => Command::Bench {
                crates: args.collect(),
            },
            None | Some("help" | "--help" | "-h") => Command::Help,
            Some(other) => return Err(format!("unknown command: {other}")),
        };
        Ok(Flags { command })
    }
}
