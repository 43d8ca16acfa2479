//! Host capabilities given to plugins, one module each: what a plugin can reach is exactly
//! what is linked here. Each module owns its per-call state and its linker setup.
//!
//! WASI itself (clocks, random, stdio) is linked with no files, no environment, no sockets and
//! no network names: std's plumbing works, but a plugin reaches nothing outside the sandbox.
//! Outbound HTTP is linked only for backends granted it ([`http`]).
//!
//! Every string a plugin hands the host (error messages, log messages and contexts, stdout,
//! stderr, the address of a denied HTTP request) passes through [`redact`] before it reaches a
//! log or a client, so the backend's secrets never do.

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

/// Like [`redact`], for a text cut at a size bound: a secret the cut split in two is cut out
/// too (a text that ends with the start of a secret ends with `[redacted]`).
pub fn redact_cut(text: &str, secrets: &[String]) -> String {
    let mut text = redact(text, secrets);
    let split = secrets
        .iter()
        .filter(|s| !s.is_empty())
        .filter_map(|secret| {
            (1..secret.len())
                .rev()
                .filter(|&n| secret.is_char_boundary(n))
                .find(|&n| text.ends_with(&secret[..n]))
        })
        .max();
    if let Some(length) = split {
        text.truncate(text.len() - length);
        text.push_str("[redacted]");
    }
    text
}

pub mod http;
pub mod logging;
pub mod settings;
pub mod state;
pub mod stdio;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_copy_of_every_secret_is_cut_out() {
        let secrets = vec!["hunter2".to_string(), String::new(), "s3cr3t".to_string()];
        assert_eq!(
            redact("hunter2 and s3cr3t and hunter2", &secrets),
            "[redacted] and [redacted] and [redacted]"
        );
        assert_eq!(redact("nothing to hide", &secrets), "nothing to hide");
    }

    #[test]
    fn a_secret_split_by_a_cut_is_cut_out_too() {
        let secrets = vec!["hunter2".to_string()];
        assert_eq!(
            redact_cut("the token is hunt", &secrets),
            "the token is [redacted]"
        );
        assert_eq!(
            redact_cut("hunter2, hunter", &secrets),
            "[redacted], [redacted]"
        );
        assert_eq!(redact_cut("the end", &secrets), "the end");
    }
}
