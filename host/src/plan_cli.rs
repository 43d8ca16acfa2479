//! `platform-gateway plan provision|deprovision REQUEST.json`: what a running gateway would do
//! with a request, from its admin API (`POST /admin/plan/...`), printed readably.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, ValueEnum};
use platform_gateway::api::plan::PlanAnswer;

/// Which operation to plan.
#[derive(Clone, Copy, ValueEnum)]
pub enum Operation {
    /// `POST /provision`.
    Provision,
    /// `POST /deprovision`.
    Deprovision,
}

#[derive(Args)]
pub struct PlanArgs {
    /// The operation.
    #[arg(value_enum)]
    operation: Operation,
    /// The request: the JSON body the public endpoint takes (`-` for stdin).
    request: PathBuf,
    #[command(flatten)]
    admin: crate::StatusArgs,
}

impl PlanArgs {
    /// How to print the result.
    pub fn output(&self) -> crate::Output {
        self.admin.output.output
    }
}

pub fn plan(args: PlanArgs) -> anyhow::Result<ExitCode> {
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
    let admin = &args.admin;
    let access = platform_gateway::status::Access {
        token: admin.admin_token.as_deref(),
        ca: admin.admin_ca.as_deref(),
        cert: admin.admin_cert.as_deref(),
        key: admin.admin_key.as_deref(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let answer = runtime.block_on(platform_gateway::status::post(
        &admin.admin,
        path,
        &access,
        &body,
    ))?;
    match args.output() {
        crate::Output::Json => println!("{}", serde_json::to_string_pretty(&answer)?),
        crate::Output::Text => {
            let plan: PlanAnswer =
                serde_json::from_value(answer).context("the gateway's answer is not a plan")?;
            print!("{}", plan.render());
        }
    }
    Ok(ExitCode::SUCCESS)
}
