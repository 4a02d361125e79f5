//! The buffer between the threads that log and standard error. A thread
//! that logs appends its formatted line to one buffer in memory; a thread
//! of its own (`log-writer`) takes the whole buffer at most every
//! [`GATHER`] and writes it out in one `write(2)`. So under load a line
//! costs its append, not a system call or a thread wake-up of its own:
//! only the first line after each write wakes the writer. An idle process
//! has its writer parked.

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::thread::{self, JoinHandle, Thread};
use std::time::{Duration, Instant};

/// How long the writer lets lines gather after the first one before it
/// writes them out.
const GATHER: Duration = Duration::from_millis(20);

/// How much the buffer holds while standard error does not keep up: about
/// 30,000 access lines, a second of them at 30,000 requests a second. A line
/// that does not fit is dropped and counted, so that a slow standard error
/// never holds up the thread that logs.
const LIMIT_BYTES: usize = 4 << 20;

/// How long stopping waits for the writer to write out what is buffered.
const STOP_WAIT: Duration = Duration::from_secs(1);

/// What the threads that log and the writer share.
#[derive(Debug, Default)]
struct Shared {
    lines: Mutex<Vec<u8>>,
    dropped: AtomicU64,
    stopping: AtomicBool,
    writer: OnceLock<Thread>,
}

/// The logging side: a `MakeWriter` whose writer appends to the buffer.
#[derive(Debug, Clone)]
pub(super) struct Buffer(Arc<Shared>);

/// The writer thread; stopping it writes out every line appended before.
#[derive(Debug)]
pub(super) struct Writer {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// A buffer, and its writer thread writing to `out`. If the thread cannot
/// be started, each line is written to standard error by the thread that
/// logs it.
pub(super) fn start(out: impl Write + Send + 'static) -> (Buffer, Writer) {
    let shared = Arc::new(Shared::default());
    let thread = thread::Builder::new()
        .name("log-writer".to_owned())
        .spawn({
            let shared = shared.clone();
            move || write_out(&shared, out)
        })
        .ok();
    if let Some(thread) = &thread {
        let _ = shared.writer.set(thread.thread().clone());
    }
    let writer = Writer {
        shared: shared.clone(),
        thread,
    };
    (Buffer(shared), writer)
}

fn write_out(shared: &Shared, mut out: impl Write) {
    let mut batch = Vec::new();
    loop {
        // Until the first line after the last write, or the stop.
        thread::park();
        if !shared.stopping.load(Ordering::Acquire) {
            thread::park_timeout(GATHER);
        }
        // Read before taking the lines, so that the last batch holds every
        // line appended before the stop.
        let stopping = shared.stopping.load(Ordering::Acquire);
        std::mem::swap(&mut *shared.lock(), &mut batch);
        // Nothing to do about an error: there is nowhere else to log it.
        let _ = out.write_all(&batch).and_then(|()| out.flush());
        batch.clear();
        if stopping {
            return;
        }
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<u8>> {
        self.lines.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Buffer {
    /// Lines dropped so far because the buffer was full.
    pub(super) fn dropped(&self) -> u64 {
        self.0.dropped.load(Ordering::Relaxed)
    }
}

impl Write for &Buffer {
    /// Appends `line` (the subscriber writes each line whole), or drops it
    /// when the buffer is full.
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        let Some(writer) = self.0.writer.get() else {
            return io::stderr().write_all(line).map(|()| line.len());
        };
        let mut lines = self.0.lock();
        if lines.len() + line.len() > LIMIT_BYTES {
            drop(lines);
            self.0.dropped.fetch_add(1, Ordering::Relaxed);
            return Ok(line.len());
        }
        let first = lines.is_empty();
        lines.extend_from_slice(line);
        drop(lines);
        if first {
            writer.unpark();
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Buffer {
    type Writer = &'a Buffer;

    fn make_writer(&'a self) -> &'a Buffer {
        self
    }
}

impl Drop for Writer {
    /// Writes out every line appended so far and stops the thread, waiting
    /// up to a second for standard error to take them.
    fn drop(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        self.shared.stopping.store(true, Ordering::Release);
        thread.thread().unpark();
        let deadline = Instant::now() + STOP_WAIT;
        while !thread.is_finished() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(1));
        }
        if thread.is_finished() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{self, Write};
    use std::sync::{Arc, Condvar, Mutex};

    use super::{LIMIT_BYTES, start};

    /// What the writer thread wrote, and a gate that holds its writes back
    /// while closed, as a full pipe does.
    #[derive(Clone, Default)]
    struct Out {
        written: Arc<Mutex<Vec<u8>>>,
        closed: Arc<(Mutex<bool>, Condvar)>,
        writing: Arc<(Mutex<bool>, Condvar)>,
    }

    impl Out {
        fn set(flag: &(Mutex<bool>, Condvar), value: bool) {
            *flag.0.lock().unwrap() = value;
            flag.1.notify_all();
        }

        fn wait_until(flag: &(Mutex<bool>, Condvar), value: bool) {
            let mut state = flag.0.lock().unwrap();
            while *state != value {
                state = flag.1.wait(state).unwrap();
            }
        }
    }

    impl Write for Out {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            Out::set(&self.writing, true);
            Out::wait_until(&self.closed, false);
            self.written.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_line_is_written_in_order_by_the_stop() {
        let out = Out::default();
        let (buffer, writer) = start(out.clone());
        for i in 0..1000 {
            (&buffer)
                .write_all(format!("line {i}\n").as_bytes())
                .unwrap();
        }
        drop(writer);
        let expected: String = (0..1000).map(|i| format!("line {i}\n")).collect();
        assert_eq!(
            String::from_utf8(out.written.lock().unwrap().clone()).unwrap(),
            expected
        );
        assert_eq!(buffer.dropped(), 0);
    }

    #[test]
    fn lines_beyond_the_limit_are_dropped_and_counted_while_the_output_is_stuck() {
        let out = Out::default();
        Out::set(&out.closed, true);
        let (buffer, writer) = start(out.clone());
        (&buffer).write_all(b"first\n").unwrap();
        // The writer took the first line and waits for the output.
        Out::wait_until(&out.writing, true);
        let line = [b'x'; 1023]
            .iter()
            .chain(b"\n")
            .copied()
            .collect::<Vec<u8>>();
        let fit = LIMIT_BYTES / line.len();
        for _ in 0..fit + 10 {
            (&buffer).write_all(&line).unwrap();
        }
        assert_eq!(buffer.dropped(), 10);
        Out::set(&out.closed, false);
        drop(writer);
        let written = out.written.lock().unwrap();
        assert_eq!(written.len(), "first\n".len() + fit * line.len());
        assert!(written.starts_with(b"first\nxxx"));
    }
}
