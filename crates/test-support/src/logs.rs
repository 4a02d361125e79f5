//! What a test binary logs, kept in memory for its tests to read.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

/// The buffer every line goes to.
fn buffer() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOG: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOG.get_or_init(|| {
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || Sink(sink.clone()))
            .init();
        log
    })
}

/// Sends what this test binary logs (at `info` and above) to memory, from
/// now on: one global subscriber, installed by the first call. (A
/// subscriber set for one thread misses events: while it is the only one,
/// tracing caches "nobody listens" for a call site that another test's
/// thread reaches first.)
pub fn capture_logs() {
    buffer();
}

/// Everything logged since [`capture_logs`], as text.
pub fn logged() -> String {
    String::from_utf8_lossy(&buffer().lock().unwrap_or_else(|e| e.into_inner())).into_owned()
}

struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let mut log = self.0.lock().unwrap_or_else(|e| e.into_inner());
        log.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
