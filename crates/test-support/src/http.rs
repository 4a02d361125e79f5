//! The few plain HTTP/1.0 requests the test servers' APIs need (Prometheus'
//! readiness, Patroni's REST API), without an HTTP client.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Sends `method path` with a JSON `body` (empty for none) to `127.0.0.1:port`
/// and returns the status code and the response body. `timeout` bounds each
/// read and write.
pub(crate) fn request(
    port: u16,
    method: &str,
    path: &str,
    body: &str,
    timeout: Duration,
) -> io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    // HTTP/1.0: the server closes the connection after its answer.
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| io::Error::other(format!("{method} {path}: not an HTTP answer")))?;
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}
