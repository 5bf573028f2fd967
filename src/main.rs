//! The `televibe` binary: parses the command line and hands over to the library.

use clap::Parser;

fn main() -> std::process::ExitCode {
    televibe::cli::run(televibe::cli::Cli::parse())
}
