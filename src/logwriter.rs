//! The log writer: request threads hand finished lines to a queue, and one background thread writes
//! them out in batches.
//!
//! A writer thread that sleeps until a line arrives has to be woken for nearly every line, and a
//! wake is a system call and a context switch on the request's thread; with a line per request that
//! was the largest single cost of logging under load (perf: about a tenth of the server's CPU went
//! to waking and running `tracing-appender`'s worker, one `write` per line). Here the writer wakes
//! on its own every [`FLUSH_INTERVAL`], drains the queue into a buffer and writes it with a few
//! large writes; a request only pushes into a bounded queue and never blocks or wakes anyone.
//!
//! The price: a line reaches stdout up to one interval late, and when the queue is full (the output
//! stalls) lines are dropped rather than stalling requests; the drops are counted in
//! `session_pool_log_lines_dropped_total`.

use std::io::{self, BufWriter, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// How long a line may wait in the queue.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(20);

/// Lines the queue holds at most.
pub const QUEUE_LINES: usize = 128 * 1024;

/// Hands lines to the background writer; what `tracing_subscriber::fmt` writes through.
#[derive(Debug, Clone)]
pub struct LogWriter {
    lines: SyncSender<Vec<u8>>,
}

/// Stops the background writer when dropped, after it has written every queued line; waits for it at
/// most [`SHUTDOWN_WAIT`], so an output nobody reads (a stopped pipe) cannot keep the process alive.
#[derive(Debug)]
pub struct LogWriterGuard {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    done: Receiver<()>,
}

/// How long dropping the guard waits for the last lines to be written.
pub const SHUTDOWN_WAIT: Duration = Duration::from_secs(2);

/// Starts the background thread that writes to `out` every `interval`.
///
/// # Errors
/// When the thread cannot be spawned.
pub fn spawn<W: Write + Send + 'static>(
    out: W,
    interval: Duration,
    capacity: usize,
) -> io::Result<(LogWriter, LogWriterGuard)> {
    let (lines, queue) = mpsc::sync_channel(capacity);
    let stop = Arc::new(AtomicBool::new(false));
    let (finished, done) = mpsc::channel();
    let thread = std::thread::Builder::new().name("log-writer".into()).spawn({
        let stop = Arc::clone(&stop);
        move || {
            write_batches(&queue, BufWriter::with_capacity(64 * 1024, out), interval, capacity, &stop);
            // The guard may have stopped waiting already; then nobody needs to hear it.
            let _ = finished.send(());
        }
    })?;
    Ok((LogWriter { lines }, LogWriterGuard { stop, thread: Some(thread), done }))
}

fn write_batches(
    queue: &Receiver<Vec<u8>>,
    mut out: impl Write,
    interval: Duration,
    capacity: usize,
    stop: &AtomicBool,
) {
    loop {
        // Read the flag before draining, so the last drain sees every line sent before the stop; it
        // takes at most a queue's worth, so lines still arriving cannot keep it going.
        let stopping = stop.load(Ordering::Acquire);
        let mut budget = if stopping { capacity } else { usize::MAX };
        let disconnected = loop {
            if budget == 0 {
                break false;
            }
            budget -= 1;
            match queue.try_recv() {
                // A log line that cannot be written has nowhere better to go.
                Ok(line) => drop(out.write_all(&line)),
                Err(TryRecvError::Empty) => break false,
                Err(TryRecvError::Disconnected) => break true,
            }
        };
        drop(out.flush());
        if stopping || disconnected {
            return;
        }
        std::thread::park_timeout(interval);
    }
}

impl Drop for LogWriterGuard {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            // A writer blocked on its output is left behind; the process exits without it.
            if self.done.recv_timeout(SHUTDOWN_WAIT).is_ok() {
                drop(thread.join());
            }
        }
    }
}

impl Write for LogWriter {
    /// Queues `buf` as one line (`tracing_subscriber::fmt` writes each event with one call).
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.lines.try_send(buf.to_vec()) {
            Ok(()) | Err(TrySendError::Disconnected(_)) => {}
            Err(TrySendError::Full(_)) => metrics::counter!("session_pool_log_lines_dropped_total").increment(1),
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LogWriter {
    type Writer = LogWriter;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// An output the test can read back, counting the writes that reach it.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<(Vec<u8>, usize)>>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let mut inner = self.0.lock().unwrap();
            inner.0.extend_from_slice(buf);
            inner.1 += 1;
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_line_is_written_in_order_and_in_few_writes_by_the_time_the_guard_drops() {
        let sink = Sink::default();
        let (writer, guard) = spawn(sink.clone(), Duration::from_secs(3600), 10_000).unwrap();
        for i in 0..1000 {
            writer.make_writer().write_all(format!("line {i}\n").as_bytes()).unwrap();
        }
        drop(guard);
        let (bytes, writes) = std::mem::take(&mut *sink.0.lock().unwrap());
        let expected: String = (0..1000).map(|i| format!("line {i}\n")).collect();
        assert_eq!(String::from_utf8(bytes).unwrap(), expected);
        assert!(writes < 10, "{writes} writes for 1000 lines");
    }

    #[test]
    fn lines_arrive_within_an_interval_without_any_wake() {
        let sink = Sink::default();
        let (writer, _guard) = spawn(sink.clone(), Duration::from_millis(10), 100).unwrap();
        writer.make_writer().write_all(b"hello\n").unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while sink.0.lock().unwrap().0.is_empty() {
            assert!(std::time::Instant::now() < deadline, "the line never arrived");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(sink.0.lock().unwrap().0, b"hello\n");
    }

    /// An output that blocks forever, like a pipe whose reader stopped.
    struct Blocked;

    impl Write for Blocked {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            loop {
                std::thread::park();
            }
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn dropping_the_guard_does_not_wait_forever_on_a_blocked_output() {
        let (writer, guard) = spawn(Blocked, Duration::from_millis(1), 100).unwrap();
        writer.make_writer().write_all(&[b'x'; 100_000]).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let started = std::time::Instant::now();
        drop(guard);
        assert!(started.elapsed() < SHUTDOWN_WAIT + Duration::from_secs(5), "{:?}", started.elapsed());
    }

    #[test]
    fn a_full_queue_drops_lines_instead_of_blocking() {
        let sink = Sink::default();
        let (writer, guard) = spawn(sink.clone(), Duration::from_secs(3600), 4).unwrap();
        // The writer drains once at start; give it that moment, then fill the queue past its size.
        std::thread::sleep(Duration::from_millis(50));
        for i in 0..10 {
            writer.make_writer().write_all(format!("{i}\n").as_bytes()).unwrap();
        }
        drop(guard);
        let written = String::from_utf8(std::mem::take(&mut sink.0.lock().unwrap().0)).unwrap();
        assert_eq!(written, "0\n1\n2\n3\n");
    }
}
