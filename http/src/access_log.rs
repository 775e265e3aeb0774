//! The access log: lines in the Combined Log Format, buffered in memory by
//! the loops and written by a thread of their own, so that a slow disk or a
//! stalled pipe can cost log lines (counted) but never stall serving.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing::warn;

/// The most bytes of lines waiting for the writer; past it lines are
/// dropped and counted.
const MAX_PENDING: usize = 1 << 20;
/// How often the writer writes what has gathered.
const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// How long dropping the log waits for the last lines to be written.
const CLOSE_PATIENCE: Duration = Duration::from_secs(2);

/// Where access log lines go, written by their own thread.
#[derive(Debug)]
pub struct AccessLog {
    shared: Arc<Shared>,
    writer: Option<JoinHandle<()>>,
    /// Closed by the writer when it ends (in a mutex only to be `Sync`).
    finished: Mutex<mpsc::Receiver<()>>,
}

#[derive(Debug, Default)]
struct Shared {
    pending: Mutex<Pending>,
    wake: Condvar,
    /// Lines dropped or lost since the log started (see [`AccessLog::dropped`]).
    dropped: AtomicU64,
}

#[derive(Debug, Default)]
struct Pending {
    lines: Vec<u8>,
    /// Lines dropped since the writer last looked.
    dropped: u64,
    closing: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        // A panic while holding the lock leaves only bytes behind.
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl AccessLog {
    /// Appends to the file at `path` (created if missing).
    pub fn to_file(path: &Path) -> io::Result<AccessLog> {
        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        AccessLog::start(Box::new(file))
    }

    /// Writes to standard output.
    pub fn to_stdout() -> io::Result<AccessLog> {
        // A handle of its own: the process's `Stdout` lock is not held
        // across the writer's blocking writes.
        let stdout = std::os::fd::AsFd::as_fd(&io::stdout()).try_clone_to_owned()?;
        AccessLog::start(Box::new(File::from(stdout)))
    }

    fn start(mut sink: Box<dyn Write + Send>) -> io::Result<AccessLog> {
        let shared = Arc::new(Shared::default());
        let (done, finished) = mpsc::channel();
        let writer = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("evloop-access-log".into())
                .spawn(move || {
                    write_until_closed(&shared, &mut *sink);
                    drop(done);
                })?
        };
        Ok(AccessLog {
            shared,
            writer: Some(writer),
            finished: Mutex::new(finished),
        })
    }

    /// Lines that never reached the log since it started: dropped because
    /// the writer was too far behind, or lost to a failed write. Counts
    /// only grow (for a metrics counter); the log also warns of each batch.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Adds one line, written by `line` into the pending buffer (which it
    /// must end with `\n`); dropped and counted if the writer is too far
    /// behind.
    pub(crate) fn record(&self, line: impl FnOnce(&mut Vec<u8>)) {
        let mut pending = self.shared.lock();
        if pending.lines.len() >= MAX_PENDING {
            pending.dropped += 1;
            drop(pending);
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        line(&mut pending.lines);
        if pending.lines.len() >= MAX_PENDING / 2 {
            self.shared.wake.notify_one();
        }
    }
}

impl Drop for AccessLog {
    /// Writes what is pending, waiting at most `CLOSE_PATIENCE` for a
    /// writer stuck on a stalled pipe (then leaves it behind).
    fn drop(&mut self) {
        self.shared.lock().closing = true;
        self.shared.wake.notify_one();
        let finished = self
            .finished
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        if finished.recv_timeout(CLOSE_PATIENCE) == Err(mpsc::RecvTimeoutError::Timeout) {
            let pending = self.shared.lock();
            warn!(
                "access log: the writer is stuck (a pipe nobody reads?): {} bytes of lines lost, {} lines dropped",
                pending.lines.len(),
                pending.dropped
            );
        } else if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

/// The writer thread: every [`FLUSH_EVERY`] (or sooner when lines pile up)
/// takes the pending lines and writes them; a failed write loses those
/// lines, counted, and logged once per run of failures.
fn write_until_closed(shared: &Shared, sink: &mut dyn Write) {
    let mut batch = Vec::new();
    let mut failing = false;
    loop {
        let (dropped, closing) = {
            let mut pending = shared.lock();
            if pending.lines.is_empty() && !pending.closing {
                pending = shared
                    .wake
                    .wait_timeout(pending, FLUSH_EVERY)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            std::mem::swap(&mut batch, &mut pending.lines);
            (std::mem::take(&mut pending.dropped), pending.closing)
        };
        if dropped > 0 {
            warn!("access log: {dropped} lines dropped (the log is not keeping up)");
        }
        if !batch.is_empty() {
            match sink.write_all(&batch).and_then(|()| sink.flush()) {
                Ok(()) => failing = false,
                Err(e) => {
                    // Part of the batch may have been written; the count
                    // errs towards lines lost.
                    let lost = batch.iter().filter(|&&b| b == b'\n').count() as u64;
                    shared.dropped.fetch_add(lost, Ordering::Relaxed);
                    if !failing {
                        warn!("access log: write failed, lines lost: {e}");
                        failing = true;
                    }
                }
            }
            batch.clear();
            if batch.capacity() > MAX_PENDING {
                batch = Vec::new();
            }
        }
        if closing && shared.lock().lines.is_empty() {
            return;
        }
    }
}

/// Appends `bytes` as a log field: printable ASCII as is, `"` and `\`
/// and everything else as `\xHH`, so that no client can forge a line or
/// break the quoting.
pub(crate) fn escape_field(bytes: &[u8], out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in bytes {
        if (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\' {
            out.push(b);
        } else {
            out.extend_from_slice(&[
                b'\\',
                b'x',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 15)],
            ]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink that hands what it got to the test.
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_are_written_by_the_time_the_log_is_dropped() {
        let got = Arc::new(Mutex::new(Vec::new()));
        let log = AccessLog::start(Box::new(Shared(Arc::clone(&got)))).unwrap();
        for i in 0..1000 {
            log.record(|out| writeln!(out, "line {i}").unwrap());
        }
        drop(log);
        let got = String::from_utf8(got.lock().unwrap().clone()).unwrap();
        assert_eq!(got.lines().count(), 1000);
        assert!(got.ends_with("line 999\n"));
    }

    #[test]
    fn a_failing_sink_costs_lines_not_the_caller() {
        struct Broken;
        impl Write for Broken {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let log = AccessLog::start(Box::new(Broken)).unwrap();
        for _ in 0..100_000 {
            log.record(|out| out.extend_from_slice(b"0123456789012345678901234567890123456789\n"));
        }
        // Every line is lost: dropped while the writer was behind, or
        // failed in its batch. Once the writer has taken the last batch,
        // the count is all of them.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while log.dropped() < 100_000 {
            assert!(std::time::Instant::now() < deadline, "{}", log.dropped());
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(log.dropped(), 100_000);
        drop(log);
    }

    #[test]
    fn fields_cannot_forge_lines_or_quotes() {
        let mut out = Vec::new();
        escape_field(b"a\"b\\c\nd\xff", &mut out);
        assert_eq!(out, b"a\\x22b\\x5Cc\\x0Ad\\xFF");
    }
}
