//! xtask: the project's automation, run as `cargo xtask <command>`.
//!
//! Rust instead of shell scripts, so it runs the same on every machine that
//! has the toolchain. Commands: `ci` (everything CI checks), `bench`, `fuzz` and `sim`.

#![allow(clippy::print_stdout, clippy::print_stderr)]

mod bench;
mod ci;
mod flags;
mod fuzz;
mod msrv;
mod sim;
#[cfg(test)]
mod tidy;

use std::process::ExitCode;

fn main() -> ExitCode {
    let flags = match flags::Flags::parse(std::env::args().skip(1)) {
        Ok(flags) => flags,
        Err(msg) => {
            eprintln!("xtask: {msg}\n\n{}", flags::USAGE);
            return ExitCode::from(2);
        }
    };
    let result = match flags.command {
        flags::Task::Ci { long } => ci::run(long),
        flags::Task::Bench { crates } => bench::run(&crates),
        flags::Task::Fuzz { args } => fuzz::run(&args),
        flags::Task::Sim { args } => sim::run(&args),
        flags::Task::Help => {
            println!("{}", flags::USAGE);
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("xtask: {msg}");
            ExitCode::FAILURE
        }
    }
}
