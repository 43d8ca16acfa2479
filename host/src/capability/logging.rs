//! Logging: what a plugin logs (through `wasi:logging/logging` under contract 0.1,
//! `replicante:platform/log` under 0.2: see [`crate::contract`]) into the gateway's tracing,
//! tagged with the backend.
//!
//! A chatty plugin cannot flood the log: messages are cut at a size, one call may log a bounded
//! number of messages and bytes (the rest are counted, dropped, and reported once when the call
//! ends), and control characters are escaped, so a plugin cannot forge a log line with a newline.

use std::sync::Arc;

use crate::metrics::Metrics;

/// The longest message kept; longer ones are cut.
const MAX_MESSAGE: usize = 4096;
/// Messages one call may log.
pub const MAX_MESSAGES_PER_CALL: u32 = 256;
/// Bytes of messages one call may log.
pub const MAX_BYTES_PER_CALL: usize = 64 << 10;

/// The per-call logging capability.
pub struct Logging {
    backend: crate::model::BackendId,
    secrets: Arc<Vec<String>>,
    metrics: Option<Arc<Metrics>>,
    logged: u32,
    bytes: usize,
    dropped: u64,
    call: Option<Arc<super::call::CallContext>>,
}

impl Logging {
    /// Logging for one call of `backend`, with its `secrets` cut out of every message and
    /// context; dropped messages are counted in `metrics`.
    pub fn new(
        backend: crate::model::BackendId,
        secrets: Arc<Vec<String>>,
        metrics: Option<Arc<Metrics>>,
    ) -> Logging {
        Logging {
            backend,
            secrets,
            metrics,
            logged: 0,
            bytes: 0,
            dropped: 0,
            call: None,
        }
    }

    /// The same capability, writing what it logs into `call`'s transcript too.
    pub fn in_call(mut self, call: Arc<super::call::CallContext>) -> Logging {
        self.call = Some(call);
        self
    }

    /// Whether a message of `len` bytes fits the call's allowance (and if so, take it).
    fn admit(&mut self, len: usize) -> bool {
        if self.logged >= MAX_MESSAGES_PER_CALL || self.bytes + len > MAX_BYTES_PER_CALL {
            self.dropped += 1;
            return false;
        }
        self.logged += 1;
        self.bytes += len;
        true
    }
}

impl Drop for Logging {
    /// Report the messages dropped in this call, once.
    fn drop(&mut self) {
        if self.dropped == 0 {
            return;
        }
        tracing::warn!(
            target: "plugin",
            backend = self.backend.as_str(),
            dropped = self.dropped,
            "the plugin logged more than {MAX_MESSAGES_PER_CALL} messages or {} in one call: \
             {} more messages dropped",
            bytesize::ByteSize(MAX_BYTES_PER_CALL as u64),
            self.dropped
        );
        if let Some(metrics) = &self.metrics {
            metrics.record_plugin_log_dropped(self.backend.as_str(), self.dropped);
        }
    }
}

/// `text` with control characters (newlines, carriage returns, escape sequences...) written
/// as escapes, so that one message stays one log line and cannot move a terminal's cursor.
fn escape_controls(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut escaped = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            escaped.extend(c.escape_default());
        } else {
            escaped.push(c);
        }
    }
    std::borrow::Cow::Owned(escaped)
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
    pub fn emit(&mut self, level: tracing::Level, context: Option<&str>, message: &str) {
        let message = cut(message);
        let context = context.map(cut);
        if !self.admit(message.len() + context.map_or(0, str::len)) {
            return;
        }
        // Both strings come from the plugin: either may carry a secret.
        let message = super::redact(message, &self.secrets);
        let message = escape_controls(&message);
        let context = context.map(|c| super::redact(c, &self.secrets));
        let context = context.as_deref().map(escape_controls);
        let context = context.as_deref();
        if let Some(call) = &self.call {
            call.log(&level, &message);
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_newline_cannot_forge_a_log_line() {
        assert_eq!(
            escape_controls("ok\nERROR forged line\r\u{1b}[2J"),
            "ok\\nERROR forged line\\r\\u{1b}[2J"
        );
        assert!(matches!(
            escape_controls("plain é text"),
            std::borrow::Cow::Borrowed(_)
        ));
    }

    #[test]
    fn one_call_logs_a_bounded_number_of_messages_and_bytes() {
        let mut logging = Logging::new(
            crate::model::BackendId::new("b").unwrap(),
            Arc::default(),
            None,
        );
        let admitted = (0..1000).filter(|_| logging.admit(10)).count();
        assert_eq!(admitted, MAX_MESSAGES_PER_CALL as usize);
        assert_eq!(logging.dropped, 1000 - MAX_MESSAGES_PER_CALL as u64);
        let mut logging = Logging::new(
            crate::model::BackendId::new("b").unwrap(),
            Arc::default(),
            None,
        );
        let admitted = (0..100).filter(|_| logging.admit(MAX_MESSAGE)).count();
        assert_eq!(admitted, MAX_BYTES_PER_CALL / MAX_MESSAGE);
        // Dropping it reports and counts once.
        logging.metrics = Some(Arc::new(Metrics::new()));
        let metrics = logging.metrics.clone().unwrap();
        drop(logging);
        assert!(
            metrics
                .encode_prometheus()
                .contains("platform_gateway_plugin_log_dropped_total{backend=\"b\"} 84"),
            "{}",
            metrics.encode_prometheus()
        );
    }

    #[test]
    fn long_messages_are_cut_on_a_char_boundary() {
        let text = "é".repeat(MAX_MESSAGE);
        let kept = cut(&text);
        assert!(kept.len() <= MAX_MESSAGE);
        assert!(kept.chars().all(|c| c == 'é'));
        assert_eq!(cut("short"), "short");
    }
}
