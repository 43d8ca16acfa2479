//! Standard output and error: what a plugin prints during one call, kept up to a bound and
//! logged after the call with the backend's secrets cut out.
//!
//! Printing never fails for the plugin: past the bound, bytes are counted and dropped (a full
//! pipe that refused writes would make Rust's `println!` panic, and the call fail, for a log
//! line).

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};

/// How many bytes a plugin is told it may write at once (`check-write`). The capture takes
/// every write whole, whatever its size; past the call's bound, bytes are counted and dropped.
const WRITE_BUDGET: usize = 64 << 10;

/// One call's stdout or stderr.
#[derive(Clone)]
pub struct Capture {
    captured: Arc<Mutex<Captured>>,
    capacity: usize,
}

#[derive(Default)]
struct Captured {
    kept: Vec<u8>,
    dropped: usize,
}

impl Capture {
    /// A capture that keeps the first `capacity` bytes.
    pub fn new(capacity: usize) -> Capture {
        Capture {
            captured: Arc::default(),
            capacity,
        }
    }

    fn take(&self, bytes: &[u8]) {
        let mut captured = self.captured.lock().unwrap_or_else(|e| e.into_inner());
        let room = self.capacity.saturating_sub(captured.kept.len());
        let kept = bytes.len().min(room);
        captured.kept.extend_from_slice(&bytes[..kept]);
        captured.dropped += bytes.len() - kept;
    }

    /// What was printed, with `secrets` cut out (also a secret cut in two by the bound), its
    /// trailing newlines trimmed; `None` if nothing was.
    pub fn text(&self, secrets: &[String]) -> Option<String> {
        let captured = self.captured.lock().unwrap_or_else(|e| e.into_inner());
        if captured.kept.is_empty() && captured.dropped == 0 {
            return None;
        }
        let text = String::from_utf8_lossy(&captured.kept);
        Some(if captured.dropped > 0 {
            let text = super::redact_cut(&text, secrets);
            format!("{text} [{} more bytes dropped]", captured.dropped)
        } else {
            super::redact(text.trim_end(), secrets)
        })
    }
}

impl IsTerminal for Capture {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for Capture {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl OutputStream for Capture {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        self.take(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        Ok(WRITE_BUDGET)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for Capture {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for Capture {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.take(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets() -> Vec<String> {
        vec!["hunter2".to_string()]
    }

    #[test]
    fn printing_never_fails_and_keeps_the_first_bytes() {
        let capture = Capture::new(16);
        let mut stream = capture.p2_stream();
        assert_eq!(capture.text(&secrets()), None);
        for _ in 0..100 {
            assert!(stream.check_write().unwrap() > 0);
            stream.write(Bytes::from_static(b"0123456789")).unwrap();
        }
        assert_eq!(
            capture.text(&secrets()).unwrap(),
            "0123456789012345 [984 more bytes dropped]"
        );
    }

    #[test]
    fn secrets_are_cut_out_also_when_the_bound_splits_one() {
        let capture = Capture::new(64);
        capture
            .p2_stream()
            .write(Bytes::from_static(b"the token is hunter2\n"))
            .unwrap();
        assert_eq!(capture.text(&secrets()).unwrap(), "the token is [redacted]");

        // The bound falls inside the secret: what is kept of it is cut out too.
        let capture = Capture::new(17);
        capture
            .p2_stream()
            .write(Bytes::from_static(b"the token is hunter2"))
            .unwrap();
        assert_eq!(
            capture.text(&secrets()).unwrap(),
            "the token is [redacted] [3 more bytes dropped]"
        );
    }
}
