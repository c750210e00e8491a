// Unit tests may use std::fs; clippy.toml steers the rest to fs_err.
#![cfg_attr(test, allow(clippy::disallowed_methods))]

mod cli;

use clap::Parser;

fn main() -> std::process::ExitCode {
    cli::run(cli::Cli::parse())
}
