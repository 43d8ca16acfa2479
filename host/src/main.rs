//! The `platform-gateway` binary: parse the command line and run it. Every command lives in the
//! library's [`platform_gateway::cli`], one file per subcommand, with the exit codes it documents.

use std::process::ExitCode;

use clap::Parser;
use platform_gateway::cli::{self, Cli};

fn main() -> ExitCode {
    cli::run(Cli::parse())
}
