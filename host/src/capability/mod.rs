//! Host capabilities given to plugins, one module each: what a plugin can reach is exactly
//! what is linked here. Each module owns its per-call state and its linker setup.
//!
//! WASI itself (clocks, random, stdio) is linked with no files, no environment, no sockets and
//! no network names: std's plumbing works, but a plugin reaches nothing outside the sandbox.
//! Outbound HTTP is linked only for backends granted it ([`http`]).
//!
//! Whatever a plugin says (errors, log lines, stderr) passes through [`redact`] first, so the
//! backend's secrets never reach a log or a client.

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
