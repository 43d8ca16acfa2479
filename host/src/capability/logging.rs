//! Logging: `wasi:logging/logging` (contract 0.1) and `replicante:platform/log` (0.2) into the
//! gateway's tracing, tagged with the backend.
//!
//! Messages are capped in size so that a chatty plugin cannot flood the log with one call.

use wasmtime::component::{HasSelf, Linker};

use crate::bindings::{v0_1, v0_2};
use v0_1::wasi::logging::logging::Level;

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

impl Logging {
    /// Log `message` at `level` (the context, when the contract has one, as a field).
    fn emit(&self, level: tracing::Level, context: Option<&str>, message: &str) {
        // Both strings come from the plugin: either may carry a secret.
        let message = super::redact(message, &self.secrets);
        let message = cut(&message);
        let context = context.map(|c| super::redact(c, &self.secrets));
        let context = context.as_deref().map(cut);
        let backend = self.backend.as_str();
        macro_rules! emit {
            ($macro:ident) => {
                match context {
                    Some(context) => tracing::$macro!(target: "plugin", backend, context, "{message}"),
                    None => tracing::$macro!(target: "plugin", backend, "{message}"),
                }
            };
        }
        match level {
            tracing::Level::TRACE => emit!(trace),
            tracing::Level::DEBUG => emit!(debug),
            tracing::Level::INFO => emit!(info),
            tracing::Level::WARN => emit!(warn),
            tracing::Level::ERROR => emit!(error),
        }
    }
}

impl v0_2::replicante::platform::log::Host for Logging {
    fn log(&mut self, level: v0_2::replicante::platform::log::Level, message: String) {
        use v0_2::replicante::platform::log::Level as L;
        let level = match level {
            L::Trace => tracing::Level::TRACE,
            L::Debug => tracing::Level::DEBUG,
            L::Info => tracing::Level::INFO,
            L::Warn => tracing::Level::WARN,
            L::Error => tracing::Level::ERROR,
        };
        self.emit(level, None, &message);
    }
}

impl v0_1::wasi::logging::logging::Host for Logging {
    fn log(&mut self, level: Level, context: String, message: String) {
        let level = match level {
            Level::Trace => tracing::Level::TRACE,
            Level::Debug => tracing::Level::DEBUG,
            Level::Info => tracing::Level::INFO,
            Level::Warn => tracing::Level::WARN,
            Level::Error | Level::Critical => tracing::Level::ERROR,
        };
        self.emit(level, Some(&context), &message);
    }
}

/// Link `wasi:logging/logging` (contract 0.1).
pub fn add_to_linker_v0_1<T: 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> &mut Logging,
) -> wasmtime::Result<()> {
    v0_1::wasi::logging::logging::add_to_linker::<T, HasSelf<Logging>>(linker, get)
}

/// Link `replicante:platform/log` (contract 0.2).
pub fn add_to_linker_v0_2<T: 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> &mut Logging,
) -> wasmtime::Result<()> {
    v0_2::replicante::platform::log::add_to_linker::<T, HasSelf<Logging>>(linker, get)
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
