//! `healthcheck`: `GET /readyz` for container health checks, where there is no curl.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::Outcome;

#[derive(Args)]
pub(super) struct HealthcheckArgs {
    /// The readiness URL.
    #[arg(
        long,
        env = "PLATFORM_GATEWAY_HEALTHCHECK_URL",
        default_value = "http://127.0.0.1:8080/readyz",
        value_name = "URL"
    )]
    url: String,
    /// The CA bundle (PEM) that signed an `https://` listener's certificate [default: the
    /// public web roots].
    #[arg(long, env = "PLATFORM_GATEWAY_HEALTHCHECK_CA", value_name = "FILE")]
    ca: Option<PathBuf>,
}

pub(super) fn run(args: HealthcheckArgs) -> Outcome {
    let runtime = super::runtime(true)?;
    runtime.block_on(super::admin_client::probe(&args.url, args.ca.as_deref()))?;
    println!("{}: ready", args.url);
    Ok(ExitCode::SUCCESS)
}
