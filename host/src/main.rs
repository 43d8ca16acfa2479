//! The `platform-gateway` binary: parse the command line and run it. Every command lives in the
//! library's [`platform_gateway::cli`], one file per subcommand, with the exit codes it documents.

use std::process::ExitCode;

use clap::Parser;
use platform_gateway::cli::{self, Cli};

/// mimalloc instead of the C library's allocator: a call allocates and frees many small
/// objects on whichever worker thread runs it, which glibc's arenas (and musl's allocator, in
/// the static build) serve slowly; see docs/performance.md for what it changed.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    cli::run(Cli::parse())
}
