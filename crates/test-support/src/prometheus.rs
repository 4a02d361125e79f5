//! A Prometheus server for tests (Debian's `prometheus` package), scraping
//! one target on loopback every half second, queried through its HTTP API.

use std::io;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::http;
use super::postgres_server::free_port;

/// A running Prometheus; killed on drop.
#[derive(Debug)]
pub struct Prometheus {
    _dir: tempfile::TempDir,
    child: Child,
    port: u16,
}

impl Prometheus {
    /// Starts `/usr/bin/prometheus` in a temporary folder on a free loopback
    /// port, scraping `http://{target}/metrics` every 500 ms, and waits until
    /// it is ready.
    pub fn start(target: &str) -> io::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("tracker-prometheus-")
            .tempdir()?;
        let port = free_port()?;
        let config = format!(
            "global:\n  scrape_interval: 500ms\n  scrape_timeout: 400ms\n\
             scrape_configs:\n  - job_name: tracker\n    static_configs:\n      - targets: ['{target}']\n"
        );
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config)?;
        let child = Command::new("/usr/bin/prometheus")
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let prometheus = Prometheus {
            _dir: dir,
            child,
            port,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !prometheus.ready() {
            if Instant::now() > deadline {
                return Err(io::Error::other("prometheus was not ready within 60 s"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(prometheus)
    }

    /// Its HTTP API's base URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Whether `/-/ready` answers 200.
    fn ready(&self) -> bool {
        http::request(self.port, "GET", "/-/ready", "", Duration::from_secs(2))
            .is_ok_and(|(status, _)| status == 200)
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
