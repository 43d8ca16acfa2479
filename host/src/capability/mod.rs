//! Host capabilities given to plugins, one module each: what a plugin can reach is exactly
//! what is linked here. Each module owns its per-call state and its linker setup.
//!
//! WASI itself (clocks, random, stdio) is linked with no files, no environment, no sockets and
//! no network names: std's plumbing works, but a plugin reaches nothing outside the sandbox.
//! Outbound HTTP is linked only for backends granted it ([`http`]).
//!
//! Whatever a plugin says (errors, log lines, stderr) passes through [`redact`] first, so the
//! backend's secrets never reach a log or a client.

/// Capabilities a backend is granted beyond its sandbox (from its config's `grants`); none by
/// default.
#[derive(Debug, Clone, Default)]
pub struct Grants {
    /// Outbound HTTP through `wasi:http`, to these destinations only.
    pub http: Option<std::sync::Arc<http::Allowlist>>,
}

/// `text` with every secret replaced by `[redacted]`.
pub fn redact(text: &str, secrets: &[String]) -> String {
    let mut text = text.to_string();
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        if text.contains(secret.as_str()) {
            text = text.replace(secret.as_str(), "[redacted]");
        }
    }
    text
}

pub mod http;
pub mod logging;
pub mod settings;
pub mod state;
