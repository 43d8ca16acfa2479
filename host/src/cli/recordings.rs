//! `platform-gateway recordings export NAME`: a backend's recorded calls, from a running
//! gateway's admin API (`GET /admin/recordings/NAME`), to stdout as JSON lines, for
//! `platform-gateway replay`.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};

use super::Outcome;
use super::admin_client::Client;
use super::status::StatusArgs;

#[derive(Subcommand)]
pub(super) enum RecordingsCommand {
    /// Write a backend's recorded calls to stdout, one JSON object a line.
    Export(ExportArgs),
}

#[derive(Args)]
pub(super) struct ExportArgs {
    /// The backend.
    backend: String,
    #[command(flatten)]
    admin: StatusArgs,
}

pub(super) fn run(command: RecordingsCommand) -> Outcome {
    let RecordingsCommand::Export(args) = command;
    let client = Client::new(args.admin.admin(), &args.admin.access())?;
    let path = format!("/admin/recordings/{}", args.backend);
    // A large ring takes a while to read: more than one status call's time.
    let text = super::runtime(true)?.block_on(async { client.text(&path).await })?;
    std::io::stdout()
        .write_all(text.as_bytes())
        .context("writing the recordings")?;
    Ok(ExitCode::SUCCESS)
}
