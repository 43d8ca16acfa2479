//! Host capabilities given to plugins, one module each: what a plugin can reach is exactly
//! what is linked here. Each module owns its per-call state and the version-free core of its
//! operations; each contract version's module ([`crate::contract`]) links them in that version's
//! words.
//!
//! WASI itself (clocks, random, stdio) is linked with no files, no environment, no sockets and
//! no network names: std's plumbing works, but a plugin reaches nothing outside the sandbox.
//! Outbound HTTP is linked only for backends granted it ([`http`]).
//!
//! Every string a plugin hands the host (error messages, log messages and contexts, stdout,
//! stderr, the address of a denied HTTP request) passes through [`redact`] before it reaches a
//! log or a client, so the backend's secrets never do.

/// Every form in which a plugin or a library may pass `secrets` on, longest first, for
/// [`redact`]: each secret as it is, JSON-escaped (a secret with a quote or a backslash, inside a
/// JSON body or error), and base64-encoded (standard and URL-safe alphabets, with and without
/// padding: HTTP Basic credentials, tokens in headers). Longest first, so a secret that contains
/// another is cut out whole, whatever order the config lists them in. Shorter than 4 characters,
/// an encoded form would match too much ordinary text and is left out.
pub fn secret_forms(secrets: &[String]) -> Vec<String> {
    use base64::Engine;
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let mut forms: Vec<String> = Vec::new();
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        forms.push(secret.clone());
        let json = serde_json::to_string(secret).unwrap_or_default();
        if let Some(inner) = json.strip_prefix('"').and_then(|j| j.strip_suffix('"')) {
            forms.push(inner.to_string());
        }
        if secret.len() >= 4 {
            for engine in [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD] {
                forms.push(engine.encode(secret));
            }
        }
    }
    forms.retain(|f| !f.is_empty());
    forms.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
    forms.dedup();
    forms
}

/// `text` with every secret replaced by `[redacted]`. `secrets` is [`secret_forms`]' list (in
/// that order: longest first).
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

pub mod call;
pub mod grants;
pub mod http;
pub mod logging;
pub mod reads;
pub mod settings;
pub mod state;
pub mod stdio;
pub mod tape;

pub use grants::Grants;

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
    fn a_secret_inside_another_and_encoded_forms_are_cut_out_whole() {
        // The shorter secret listed first: it must not cut the longer one in pieces.
        let secrets = secret_forms(&["pass".to_string(), "my-pass-word".to_string()]);
        assert_eq!(redact("it is my-pass-word", &secrets), "it is [redacted]");
        assert_eq!(redact("it is pass", &secrets), "it is [redacted]");

        let secret = "qu\"ote\\d-s3cret";
        let secrets = secret_forms(&[secret.to_string()]);
        let json = serde_json::json!({ "key": secret }).to_string();
        assert!(!redact(&json, &secrets).contains("s3cret"), "{json}");
        use base64::Engine;
        for encoded in [
            base64::engine::general_purpose::STANDARD.encode(secret),
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret),
        ] {
            let text = format!("Authorization: Basic {encoded}");
            assert_eq!(redact(&text, &secrets), "Authorization: Basic [redacted]");
        }
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
