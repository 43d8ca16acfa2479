//! The log writer: a request's line is appended to a buffer in memory, and a thread of its own
//! writes what gathered to stderr in one write at most every [`BATCH`]. A line costs its
//! formatting and a copy; the writing thread is woken once per batch, not per line, and a slow
//! stderr (a full pipe, a stalled log shipper) costs dropped lines, counted, never a waiting
//! request.
//!
//! tracing-appender's non-blocking writer, used before, hands each line over on its own: an
//! allocation, a wake-up of its thread and a `write` per line, about a tenth of the CPU of a
//! busy gateway (docs/performance.md). It has no way to batch, so this is our own.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// How long the writing thread lets lines gather after the first one of a batch.
pub const BATCH: Duration = Duration::from_millis(10);

/// The most bytes of lines held for the writing thread; a line past it is dropped and counted.
pub const LIMIT: usize = 8 * 1024 * 1024;

/// A buffer kept between batches at most this big; a larger one (after a burst) is given back.
const KEPT: usize = 256 * 1024;

/// Where log lines go: hand it to `tracing_subscriber::fmt::layer().with_writer`.
#[derive(Clone)]
pub struct BatchWriter {
    shared: Arc<Shared>,
}

/// Stops the writing thread when dropped, after it wrote every line it was given.
pub struct Guard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    dropped: AtomicU64,
    limit: usize,
}

#[derive(Default)]
struct State {
    lines: Vec<u8>,
    /// The writing thread waits for a first line (only then is there anyone to wake).
    waiting: bool,
    closing: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl BatchWriter {
    /// A writer whose lines a thread named `name` writes to `out`.
    pub fn new<W: Write + Send + 'static>(name: &str, out: W) -> (BatchWriter, Guard) {
        BatchWriter::with_limit(name, out, LIMIT)
    }

    fn with_limit<W: Write + Send + 'static>(
        name: &str,
        mut out: W,
        limit: usize,
    ) -> (BatchWriter, Guard) {
        let shared = Arc::new(Shared {
            state: Mutex::default(),
            wake: Condvar::new(),
            dropped: AtomicU64::new(0),
            limit,
        });
        let worker = shared.clone();
        let thread = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || worker.run(&mut out))
            .expect("cannot start the log writer thread");
        (
            BatchWriter {
                shared: shared.clone(),
            },
            Guard {
                shared,
                thread: Some(thread),
            },
        )
    }

    /// Lines dropped since start because the buffer was full.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }
}

impl Shared {
    fn run(&self, out: &mut dyn Write) {
        let mut spare = Vec::new();
        loop {
            let mut state = self.lock();
            while state.lines.is_empty() && !state.closing {
                state.waiting = true;
                state = self.wake.wait(state).unwrap_or_else(|e| e.into_inner());
                state.waiting = false;
            }
            let closing = state.closing;
            drop(state);
            if closing {
                let batch = std::mem::take(&mut self.lock().lines);
                let _ = out.write_all(&batch);
                let _ = out.flush();
                return;
            }
            std::thread::sleep(BATCH);
            let mut batch = std::mem::replace(&mut self.lock().lines, std::mem::take(&mut spare));
            // A failed write loses this batch; there is nowhere else to report it.
            let _ = out.write_all(&batch);
            let _ = out.flush();
            batch.clear();
            if batch.capacity() > KEPT {
                batch.shrink_to(KEPT);
            }
            spare = batch;
        }
    }
}

/// One line's writer (the fmt layer formats a line, then writes it in one `write_all`).
pub struct LineWriter<'a>(&'a Shared);

impl Write for LineWriter<'_> {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        let mut state = self.0.lock();
        if state.lines.len() + line.len() > self.0.limit {
            drop(state);
            self.0.dropped.fetch_add(1, Ordering::Relaxed);
            return Ok(line.len());
        }
        state.lines.extend_from_slice(line);
        let wake = state.waiting;
        state.waiting = false;
        drop(state);
        if wake {
            self.0.wake.notify_one();
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for BatchWriter {
    type Writer = LineWriter<'a>;

    fn make_writer(&'a self) -> LineWriter<'a> {
        LineWriter(&self.shared)
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.shared.lock().closing = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the writing thread wrote, and in how many writes.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<(Vec<u8>, usize)>>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let mut sink = self.0.lock().unwrap();
            sink.0.extend_from_slice(buf);
            sink.1 += 1;
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_are_written_in_order_in_few_writes_and_all_of_them_by_the_guard() {
        let sink = Sink::default();
        let (writer, guard) = BatchWriter::new("test-log-writer", sink.clone());
        let mut expected = Vec::new();
        for i in 0..10_000 {
            let line = format!("line {i}\n");
            writer.make_writer().write_all(line.as_bytes()).unwrap();
            expected.extend_from_slice(line.as_bytes());
        }
        drop(guard);
        let (written, writes) = sink.0.lock().unwrap().clone();
        assert_eq!(
            written, expected,
            "every line, in order, after the guard is dropped"
        );
        // Lines written faster than one batch's time share writes: far fewer than the lines.
        assert!(writes < 1_000, "{writes} writes for 10,000 lines");
        assert_eq!(writer.dropped(), 0);
    }

    #[test]
    fn a_line_reaches_the_output_without_the_guard_being_dropped() {
        let sink = Sink::default();
        let (writer, _guard) = BatchWriter::new("test-log-writer", sink.clone());
        writer.make_writer().write_all(b"one line\n").unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while sink.0.lock().unwrap().0.is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "the line was never written"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(sink.0.lock().unwrap().0, b"one line\n");
    }

    /// A writer that blocks until told to go on, as a full pipe does; `(entered, go)`.
    struct Stalled(Arc<(Mutex<(bool, bool)>, Condvar)>, Sink);

    impl Write for Stalled {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let (flags, cv) = &*self.0;
            let mut flags = flags.lock().unwrap();
            flags.0 = true;
            cv.notify_all();
            while !flags.1 {
                flags = cv.wait(flags).unwrap();
            }
            self.1.write(buf)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stalled_output_drops_and_counts_lines_past_the_limit_and_never_blocks_a_writer() {
        let gate = Arc::new((Mutex::new((false, false)), Condvar::new()));
        let sink = Sink::default();
        let (writer, guard) =
            BatchWriter::with_limit("test-log-writer", Stalled(gate.clone(), sink.clone()), 100);
        // The first line is taken by the writing thread, which then stalls on it.
        writer.make_writer().write_all(&[b'a'; 10]).unwrap();
        {
            let (flags, cv) = &*gate;
            let mut flags = flags.lock().unwrap();
            while !flags.0 {
                flags = cv.wait(flags).unwrap();
            }
        }
        // These fill the buffer (100 bytes) and then overflow it: none of them blocks.
        for _ in 0..30 {
            writer.make_writer().write_all(&[b'b'; 10]).unwrap();
        }
        assert_eq!(writer.dropped(), 20, "10 lines fit in 100 bytes, 20 do not");
        gate.0.lock().unwrap().1 = true;
        gate.1.notify_all();
        drop(guard);
        let written = sink.0.lock().unwrap().0.clone();
        assert_eq!(written, [[b'a'; 10].as_slice(), &[b'b'; 100]].concat());
    }
}
