//! `completions`: a shell's completion script for every command and flag.

use std::process::ExitCode;

use clap::CommandFactory;

use super::{Cli, Outcome};

pub(super) fn run(shell: clap_complete::Shell) -> Outcome {
    let mut command = Cli::command();
    clap_complete::generate(
        shell,
        &mut command,
        "platform-gateway",
        &mut std::io::stdout(),
    );
    Ok(ExitCode::SUCCESS)
}
