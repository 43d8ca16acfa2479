//! Telemetry: logs and spans through `tracing`, on stderr so that stdout stays free for command
//! output, as text or as one JSON object per line.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// For people: `2026-11-28T10:00:00.000000Z  INFO target: message key=value`.
    #[default]
    Text,
    /// For log collectors: one JSON object per line, the event's fields at the top level.
    Json,
}

/// The log filter `directives` (a level such as `debug`, or `RUST_LOG` syntax such as
/// `info,plugin=debug`), checked.
pub fn filter(directives: &str) -> Result<EnvFilter, String> {
    EnvFilter::try_new(directives).map_err(|e| format!("invalid log filter `{directives}`: {e}"))
}

/// Install the global subscriber. Call once, from the binary. `filter` is what to log: when
/// `None`, `RUST_LOG`, else `info`.
pub fn init(filter: Option<EnvFilter>, format: LogFormat) {
    let filter = filter
        .or_else(|| EnvFilter::try_from_default_env().ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}
