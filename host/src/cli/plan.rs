//! `platform-gateway plan provision|deprovision REQUEST.json`: what a running gateway would do
//! with a request, from its admin API (`POST /admin/plan/...`), printed readably.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, ValueEnum};

use super::admin_client::{Client, TIMEOUT};
use super::status::StatusArgs;
use super::{Outcome, Output};
use crate::api::plan::PlanAnswer;

/// Which operation to plan.
#[derive(Clone, Copy, ValueEnum)]
pub(super) enum Operation {
    /// `POST /provision`.
    Provision,
    /// `POST /deprovision`.
    Deprovision,
}

#[derive(Args)]
pub(super) struct PlanArgs {
    /// The operation.
    #[arg(value_enum)]
    operation: Operation,
    /// The request: the JSON body the public endpoint takes (`-` for stdin).
    request: PathBuf,
    #[command(flatten)]
    pub(super) admin: StatusArgs,
}

pub(super) fn run(args: PlanArgs) -> Outcome {
    let text = if args.request.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).context("reading the request from stdin")?
    } else {
        std::fs::read_to_string(&args.request)
            .with_context(|| format!("reading {}", args.request.display()))?
    };
    let body: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not JSON", args.request.display()))?;
    let path = match args.operation {
        Operation::Provision => "/admin/plan/provision",
        Operation::Deprovision => "/admin/plan/deprovision",
    };
    let client = Client::new(args.admin.admin(), &args.admin.access())?;
    // A plan calls plugins: it may take as long as their deadlines.
    let limit = TIMEOUT * 6;
    let answer = super::runtime(true)?.block_on(async {
        tokio::time::timeout(limit, client.post(path, &body))
            .await
            .map_err(|_| {
                anyhow::anyhow!("{}{path} did not answer within {limit:?}", client.base())
            })?
    })?;
    match args.admin.output.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&answer)?),
        Output::Text => {
            let plan: PlanAnswer =
                serde_json::from_value(answer).context("the gateway's answer is not a plan")?;
            print!("{}", plan.render());
        }
    }
    Ok(ExitCode::SUCCESS)
}
