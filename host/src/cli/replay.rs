//! `platform-gateway replay --config FILE --backend NAME --candidate NEW.wasm CALLS.jsonl`: run
//! a backend's recorded calls against another build, offline, and report what it does
//! differently (see [`crate::replay`]). Exit 0 when every call did the same, 1 otherwise.

use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Args;

use super::{Outcome, Output, OutputArgs};
use crate::config::Config;
use crate::recording::Entry;
use crate::replay::{self, Report, Rules};
use crate::runtime::Runtime;

#[derive(Args)]
pub(super) struct ReplayArgs {
    /// The gateway's config: the backend's settings, limits and grants come from it.
    #[arg(long, short, value_name = "FILE")]
    config: PathBuf,
    /// The backend whose calls were recorded.
    #[arg(long, value_name = "NAME")]
    backend: String,
    /// The build to replay them against [default: the backend's own plugin].
    #[arg(long, value_name = "WASM")]
    candidate: Option<PathBuf>,
    /// A TOML file whose top-level keys replace the backend's settings.
    #[arg(long, value_name = "FILE")]
    settings: Option<PathBuf>,
    /// A difference to set aside: a glob over its path (`/answer/ok/node_ids`,
    /// `/requests/*/body/InstanceType`; `*` stays within a segment). Repeatable.
    #[arg(long, value_name = "GLOB")]
    ignore: Vec<String>,
    /// The recorded calls, JSON lines (`recordings export`), `-` for stdin.
    calls: PathBuf,
    #[command(flatten)]
    output: OutputArgs,
}

impl ReplayArgs {
    pub(super) fn output(&self) -> Output {
        self.output.output
    }
}

/// The config with the backend's plugin (and settings) replaced, read by the gateway's own
/// parser; the backend alone, without its candidate or recording.
fn config(args: &ReplayArgs) -> anyhow::Result<Config> {
    let text = std::fs::read_to_string(&args.config)
        .with_context(|| format!("cannot read {}", args.config.display()))?;
    // Checked as written first, so that a mistake is named at its line.
    Config::parse(&args.config, &text)?;
    let mut table: toml::Table = toml::from_str(&text)?;
    let Some(backend) = table
        .get_mut("backends")
        .and_then(|b| b.get_mut(&args.backend))
        .and_then(toml::Value::as_table_mut)
    else {
        bail!(
            "{} has no backend `{}`",
            args.config.display(),
            args.backend
        );
    };
    if let Some(candidate) = &args.candidate {
        let path = std::path::absolute(candidate)?;
        backend.insert("plugin".into(), path.display().to_string().into());
    }
    if let Some(path) = &args.settings {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let settings: toml::Table =
            toml::from_str(&text).with_context(|| format!("{} is not TOML", path.display()))?;
        backend.insert("settings".into(), settings.into());
    }
    backend.remove("candidate");
    backend.remove("record");
    Ok(Config::parse(&args.config, &toml::to_string(&table)?)?)
}

pub(super) fn run(args: ReplayArgs) -> Outcome {
    let rules = Rules::new(&args.ignore).map_err(anyhow::Error::msg)?;
    let config = config(&args)?;
    let backend_config = config
        .backends
        .values()
        .find(|b| b.name.as_str() == args.backend)
        .context("the backend is gone from the config")?
        .clone();
    let text = super::read_input(&args.calls)?;
    let mut entries = Vec::new();
    for (n, line) in text.as_bytes().lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let entry: Entry = serde_json::from_str(&line).with_context(|| {
            format!(
                "{} line {}: not a recorded call",
                args.calls.display(),
                n + 1
            )
        })?;
        if entry.backend != args.backend {
            bail!(
                "{} line {}: a call of backend `{}`, not `{}`",
                args.calls.display(),
                n + 1,
                entry.backend,
                args.backend
            );
        }
        entries.push(entry);
    }
    let cache = Some(config.cache_dir.clone()).filter(|dir| dir.is_dir());
    let runtime = Runtime::new(cache, config.cache_max, backend_config.limits.concurrency)?;
    let backend = Arc::new(crate::gateway::load_backend(
        &runtime,
        &backend_config,
        config.max_plugin_size,
        None,
    )?);
    let report = super::runtime(false)?.block_on(async {
        let mut report = Report::default();
        for entry in &entries {
            report.add(replay::replay(&backend, entry, &rules).await);
        }
        report
    });
    match args.output.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Output::Text => print!("{}", report.render()),
    }
    Ok(if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
