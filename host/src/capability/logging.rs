//! Logging: `wasi:logging/logging` into the gateway's tracing, tagged with the backend.
//!
//! Messages are capped in size so that a chatty plugin cannot flood the log with one call.

use wasmtime::component::{HasSelf, Linker};

use crate::bindings::wasi::logging::logging::{Host, Level, add_to_linker as link};

/// The longest message kept; longer ones are cut.
const MAX_MESSAGE: usize = 4096;

/// The per-call logging capability.
pub struct Logging {
    backend: crate::model::BackendId,
    secrets: std::sync::Arc<Vec<String>>,
}

impl Logging {
    /// Logging for one call of `backend`, with its `secrets` cut out of every message and
    /// context.
    pub fn new(backend: crate::model::BackendId, secrets: std::sync::Arc<Vec<String>>) -> Logging {
        Logging { backend, secrets }
    }
}

fn cut(text: &str) -> &str {
    if text.len() <= MAX_MESSAGE {
        return text;
    }
    let mut end = MAX_MESSAGE;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

impl Host for Logging {
    fn log(&mut self, level: Level, context: String, message: String) {
        let backend = self.backend.as_str();
        // Both strings come from the plugin: either may carry a secret.
        let context = super::redact(&context, &self.secrets);
        let message = super::redact(&message, &self.secrets);
        let (context, message) = (cut(&context), cut(&message));
        match level {
            Level::Trace => tracing::trace!(target: "plugin", backend, context, "{message}"),
            Level::Debug => tracing::debug!(target: "plugin", backend, context, "{message}"),
            Level::Info => tracing::info!(target: "plugin", backend, context, "{message}"),
            Level::Warn => tracing::warn!(target: "plugin", backend, context, "{message}"),
            Level::Error | Level::Critical => {
                tracing::error!(target: "plugin", backend, context, "{message}")
            }
        }
    }
}

/// Link `wasi:logging/logging`.
pub fn add_to_linker<T: 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> &mut Logging,
) -> wasmtime::Result<()> {
    link::<T, HasSelf<Logging>>(linker, get)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_messages_are_cut_on_a_char_boundary() {
        let text = "é".repeat(MAX_MESSAGE);
        let kept = cut(&text);
        assert!(kept.len() <= MAX_MESSAGE);
        assert!(kept.chars().all(|c| c == 'é'));
        assert_eq!(cut("short"), "short");
    }
}
