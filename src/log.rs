//! Logging that never holds up the server.
//!
//! A loop thread that logs appends the formatted line to a bounded buffer in
//! memory, under a lock held only for that copy: no system call, no
//! waiting. A dedicated thread writes the buffer to standard error. When
//! the buffer is full (the reader is slow or stopped: a pipe nobody reads
//! fills at 64 KiB and then blocks every write) or a write fails (the
//! reader closed the pipe: `EPIPE`), lines are dropped and counted, and
//! [`LogQueue::finish`] reports the count at exit.
//!
//! `tracing-appender`'s non-blocking writer does the same queueing but not
//! the rest: it discards failed writes without counting them, and its guard
//! reports a slow shutdown with `eprintln!`, which blocks on a full pipe and
//! panics on a closed one.

use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use tracing_subscriber::fmt::MakeWriter;

/// Bytes of log text held for the writer thread; lines beyond are dropped.
/// The writer thread holds at most as much again while it writes.
const QUEUE_BYTES: usize = 1024 * 1024;

/// How long [`LogQueue::finish`] waits for the log to take the last lines.
const FINISH_LIMIT: Duration = Duration::from_secs(1);

/// The buffer between the threads that log and the thread that writes;
/// the `tracing` subscriber's writer. Clones share one queue.
#[derive(Clone, Debug)]
pub struct LogQueue {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// Signalled when text arrives in an empty queue: wakes the writer.
    queued: Condvar,
    /// Signalled when the writer has finished a batch.
    written: Condvar,
    /// Lines dropped because the queue was full or their write failed.
    dropped: AtomicU64,
    capacity: usize,
}

#[derive(Debug, Default)]
struct State {
    /// Text waiting for the writer thread.
    text: Vec<u8>,
    /// The writer thread holds a batch it has not finished writing.
    writing: bool,
}

impl LogQueue {
    /// A queue written to standard error by a new thread.
    pub fn to_stderr() -> LogQueue {
        LogQueue::start(io::stderr(), QUEUE_BYTES)
    }

    /// A queue of `capacity` bytes written to `out` by a new thread, which
    /// lives as long as the process.
    fn start(out: impl Write + Send + 'static, capacity: usize) -> LogQueue {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            queued: Condvar::new(),
            written: Condvar::new(),
            dropped: AtomicU64::new(0),
            capacity,
        });
        let writer = Arc::clone(&shared);
        thread::Builder::new()
            .name("evloop-log".into())
            .spawn(move || writer.write_forever(out))
            .expect("spawning the log writer thread");
        LogQueue { shared }
    }

    /// Lines dropped so far.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Waits until everything queued so far is written, or `deadline`
    /// passes; returns whether it all was.
    fn flush(&self, deadline: Instant) -> bool {
        let mut state = self.shared.lock();
        while state.writing || !state.text.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            state = self
                .shared
                .written
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        true
    }

    /// At exit: logs how many lines were dropped, if any, and gives the log
    /// up to a second to take what is queued. A log that takes nothing
    /// (a full pipe nobody reads) loses the rest rather than hold up the exit.
    pub fn finish(&self) {
        let deadline = Instant::now() + FINISH_LIMIT;
        // Count after the queue is written: a failed write drops lines too.
        self.flush(deadline);
        let dropped = self.dropped();
        if dropped > 0 {
            tracing::warn!("{dropped} log lines dropped (the log was too slow or closed)");
            self.flush(deadline);
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock; a poisoned lock still
        // holds consistent text.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `text`, or drops and counts its lines if it does not fit.
    fn push(&self, text: &[u8]) {
        let mut state = self.lock();
        if state.text.len() + text.len() > self.capacity {
            drop(state);
            self.dropped.fetch_add(lines(text), Ordering::Relaxed);
            return;
        }
        let was_empty = state.text.is_empty();
        state.text.extend_from_slice(text);
        drop(state);
        if was_empty {
            self.queued.notify_one();
        }
    }

    /// The writer thread: takes the whole queue at a time and writes it.
    fn write_forever(&self, mut out: impl Write) {
        let mut batch = Vec::new();
        loop {
            {
                let mut state = self.lock();
                state.writing = false;
                self.written.notify_all();
                while state.text.is_empty() {
                    state = self
                        .queued
                        .wait(state)
                        .unwrap_or_else(PoisonError::into_inner);
                }
                std::mem::swap(&mut state.text, &mut batch);
                state.writing = true;
            }
            if let Err(unwritten) = write_text(&mut out, &batch) {
                self.dropped.fetch_add(lines(unwritten), Ordering::Relaxed);
            }
            batch.clear();
        }
    }
}

/// Writes all of `text`; on failure, returns the part not written.
fn write_text<'a>(out: &mut impl Write, mut text: &'a [u8]) -> Result<(), &'a [u8]> {
    while !text.is_empty() {
        match out.write(text) {
            Ok(0) => return Err(text),
            Ok(n) => text = &text[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Err(text),
        }
    }
    Ok(())
}

/// The lines `text` ends or cuts short: every line ends with a newline.
fn lines(text: &[u8]) -> u64 {
    text.iter().filter(|&&b| b == b'\n').count() as u64
}

/// What the subscriber writes one event into.
#[derive(Debug)]
pub struct Enqueue<'a>(&'a Shared);

impl Write for Enqueue<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.push(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LogQueue {
    type Writer = Enqueue<'a>;

    fn make_writer(&'a self) -> Enqueue<'a> {
        Enqueue(&self.shared)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::*;

    /// A writer that fails every write, as a closed pipe does.
    struct Closed;

    impl Write for Closed {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// A writer that blocks until the test lets it write, then passes each
    /// write on to a channel.
    struct Gated {
        open: mpsc::Receiver<()>,
        lines: mpsc::Sender<Vec<u8>>,
    }

    impl Write for Gated {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let _ = self.open.recv();
            let _ = self.lines.send(buf.to_vec());
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn log(queue: &LogQueue, line: &str) {
        queue.make_writer().write_all(line.as_bytes()).unwrap();
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(10)
    }

    #[test]
    fn failed_writes_are_dropped_and_counted() {
        let queue = LogQueue::start(Closed, 1024);
        log(&queue, "one\n");
        log(&queue, "two\nthree\n");
        assert!(queue.flush(soon()));
        assert_eq!(queue.dropped(), 3);
    }

    #[test]
    fn a_stalled_writer_drops_what_does_not_fit_and_writes_the_rest() {
        let (open, gate) = mpsc::channel();
        let (sender, written) = mpsc::channel();
        let queue = LogQueue::start(
            Gated {
                open: gate,
                lines: sender,
            },
            10,
        );
        // The writer takes the first line and blocks writing it; the next
        // fill the queue, and the last does not fit.
        log(&queue, "first\n");
        while !queue.shared.lock().writing {
            thread::yield_now();
        }
        log(&queue, "1234\n");
        log(&queue, "5678\n");
        log(&queue, "lost\n");
        assert_eq!(queue.dropped(), 1);
        assert!(!queue.flush(Instant::now()), "the writer is stalled");
        open.send(()).unwrap();
        open.send(()).unwrap();
        assert!(queue.flush(soon()));
        let text: Vec<u8> = written.try_iter().flatten().collect();
        assert_eq!(text, b"first\n1234\n5678\n");
    }
}
