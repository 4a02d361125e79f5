//! `tracker serve` as a process: first run on SQLite, the migration policy
//! on servers, JSON logs, and graceful shutdown under load.

use std::ffi::OsString;
use std::io::Write;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use test_support::{Backend, TestDb, free_port, original_app};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// A running `tracker` process and the lines it wrote to standard error.
pub(crate) struct Running {
    child: Child,
    pub(crate) base: String,
    stderr: Arc<Mutex<Vec<String>>>,
    /// Reads standard error until the process closes it.
    reader: tokio::task::JoinHandle<()>,
    /// While true, the reader reads nothing: the pipe fills up and the
    /// process's writes to standard error wait.
    paused: tokio::sync::watch::Sender<bool>,
}

/// Starts `tracker ARGS` in `dir` and waits until it says where it serves.
pub(crate) async fn start(
    dir: &std::path::Path,
    args: &[&str],
    vars: &[(&str, OsString)],
) -> Running {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tracker"));
    command
        .args(args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (name, value) in vars {
        command.env(name, value);
    }
    let mut child = command.spawn().expect("starting tracker");
    let stderr = Arc::new(Mutex::new(Vec::new()));
    let (found_tx, mut found_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let sink = stderr.clone();
    let (paused, mut pause) = tokio::sync::watch::channel(false);
    let reader = tokio::spawn(async move {
        loop {
            if pause.wait_for(|paused| !paused).await.is_err() {
                return;
            }
            let Ok(Some(line)) = lines.next_line().await else {
                return;
            };
            if let Some(rest) = line.split("serving http://").nth(1) {
                let addr = rest
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .trim_end_matches('"');
                let _ = found_tx.send(addr.to_owned());
            }
            sink.lock().unwrap().push(line);
        }
    });
    let addr = tokio::time::timeout(Duration::from_secs(60), found_rx.recv())
        .await
        .unwrap_or_else(|_| panic!("tracker did not start: {:?}", stderr.lock().unwrap()))
        .unwrap_or_else(|| panic!("tracker exited: {:?}", stderr.lock().unwrap()));
    Running {
        child,
        base: format!("http://{addr}"),
        stderr,
        reader,
        paused,
    }
}

impl Running {
    pub(crate) fn terminate(&self) {
        let pid = self.child.id().expect("running");
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit; returns its code and how long it took.
    pub(crate) async fn wait(&mut self, limit: Duration) -> (Option<i32>, Duration) {
        let start = Instant::now();
        let status = tokio::time::timeout(limit, self.child.wait())
            .await
            .unwrap_or_else(|_| {
                let logs = self.logs();
                let last = &logs[logs.len().saturating_sub(20)..];
                panic!("tracker still running after {limit:?}; its last lines: {last:#?}")
            })
            .unwrap();
        (status.code(), start.elapsed())
    }

    /// The lines read from standard error so far.
    pub(crate) fn logs(&self) -> Vec<String> {
        self.stderr.lock().unwrap().clone()
    }

    /// Whether a line containing `text` is written within `limit`: the
    /// process writes its log out every few milliseconds, not line by line.
    pub(crate) async fn logged(&self, text: &str, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            if self.logs().iter().any(|l| l.contains(text)) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stops reading the process's standard error (`true`) or goes on
    /// reading it (`false`).
    pub(crate) fn pause_stderr(&self, paused: bool) {
        self.paused.send_replace(paused);
    }

    /// Every line the process wrote to standard error, once it has exited
    /// (after [`wait`](Self::wait)) and the stream has ended.
    pub(crate) async fn all_logs(self) -> Vec<String> {
        tokio::time::timeout(Duration::from_secs(10), self.reader)
            .await
            .expect("standard error still open 10 s after the exit")
            .unwrap();
        self.stderr.lock().unwrap().clone()
    }
}

/// A bad `SHUTDOWN_GRACE`, `READ_TIMEOUT` or `RUST_LOG` stops `serve` (with
/// or without the subcommand) before it starts, with exit code 2 and a line
/// that names it, whether it is set in the environment or in `.env`.
#[test]
fn a_bad_serve_variable_exits_2_naming_it() {
    let dir = sqlite_dir();
    let cases = [
        (
            "RUST_LOG",
            "sqlx=verbose",
            "error: RUST_LOG=\"sqlx=verbose\": ",
        ),
        (
            "SHUTDOWN_GRACE",
            "soon",
            "error: invalid value 'soon' for '--shutdown-grace <SHUTDOWN_GRACE>': \
             expected a duration with a unit, like 8s or 500ms, up to 24 days",
        ),
        (
            "READ_TIMEOUT",
            "0s",
            "error: invalid value '0s' for '--read-timeout <READ_TIMEOUT>': \
             expected a duration greater than zero with a unit, like 30s, up to 24 days",
        ),
        // Far longer, a connection's read timer would overflow the clock.
        (
            "READ_TIMEOUT",
            "300000000000y",
            "error: invalid value '300000000000y' for '--read-timeout <READ_TIMEOUT>': \
             expected a duration greater than zero with a unit, like 30s, up to 24 days",
        ),
    ];
    for (var, value, expected) in cases {
        for args in [&["serve"][..], &[]] {
            let output = crate::cli::tracker(dir.path(), args, &[(var, OsString::from(value))]);
            let (_, stderr) = crate::cli::text(&output);
            assert_eq!(output.status.code(), Some(2), "{var}: {stderr}");
            assert!(stderr.starts_with(expected), "{stderr}");
        }
        std::fs::write(dir.path().join(".env"), format!("{var}={value}\n")).unwrap();
        let output = crate::cli::tracker(dir.path(), &["serve"], &[]);
        let (_, stderr) = crate::cli::text(&output);
        assert_eq!(output.status.code(), Some(2), ".env {var}: {stderr}");
        assert!(stderr.starts_with(expected), ".env: {stderr}");
        std::fs::remove_file(dir.path().join(".env")).unwrap();
    }
}

/// What the server at `base` sends on a new connection that sends
/// `request` and then nothing, until it closes the connection, and when it
/// closed it; `None` if it is still open 10 s later.
async fn answer_to_a_stalled(base: &str, request: &str) -> (String, Option<Duration>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let sent = Instant::now();
    let mut answer = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .ok()
        .map(|read| {
            read.unwrap();
            sent.elapsed()
        });
    (String::from_utf8_lossy(&answer).into_owned(), closed)
}

/// A client that stops sending holds its connection for at most
/// `READ_TIMEOUT`: a connection with a request's head cut off, or idle,
/// is closed (there is no request to answer); a body that stops
/// coming is answered 408 as JSON, and nothing is written. Meanwhile other
/// clients are served.
#[tokio::test]
async fn a_client_that_stops_sending_is_let_go_after_the_read_timeout() {
    let dir = sqlite_dir();
    let addr = format!("127.0.0.1:{}", free_port().unwrap());
    let vars = [("READ_TIMEOUT", OsString::from("1s"))];
    let mut server = start(dir.path(), &["serve", "--addr", &addr], &vars).await;
    let base = server.base.clone();
    let head = "GET /health HTTP/1.1\r\nHost: x\r\n";
    let idle = "GET /health HTTP/1.1\r\nHost: x\r\n\r\n";
    let body = "POST /employees/ HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
                Content-Length: 40\r\n\r\n{\"full_name\": \"Ann\"";
    let (cut, idle, stalled, served) = tokio::join!(
        answer_to_a_stalled(&base, head),
        answer_to_a_stalled(&base, idle),
        answer_to_a_stalled(&base, body),
        async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            reqwest::get(format!("{base}/employees/")).await.unwrap()
        }
    );
    assert_eq!(served.status(), 200);
    assert_eq!(served.text().await.unwrap(), "[]");
    let within = |closed: Option<Duration>| {
        closed.is_some_and(|d| d >= Duration::from_millis(900) && d < Duration::from_secs(5))
    };
    assert_eq!(cut.0, "", "{cut:?}");
    assert!(within(cut.1), "{cut:?}");
    assert!(idle.0.starts_with("HTTP/1.1 200 "), "{idle:?}");
    assert!(within(idle.1), "{idle:?}");
    assert!(stalled.0.starts_with("HTTP/1.1 408 "), "{stalled:?}");
    assert!(
        stalled
            .0
            .ends_with(r#"{"detail":"Request Timeout: the body stopped coming"}"#),
        "{stalled:?}"
    );
    assert!(within(stalled.1), "{stalled:?}");
    let employees = reqwest::get(format!("{base}/employees/")).await.unwrap();
    assert_eq!(employees.text().await.unwrap(), "[]");
    server.terminate();
    assert_eq!(server.wait(Duration::from_secs(10)).await.0, Some(0));
}

fn sqlite_dir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

#[tokio::test]
async fn a_fresh_checkout_serves_from_sqlite_and_creates_an_employee() {
    let dir = sqlite_dir();
    let addr = format!("127.0.0.1:{}", free_port().unwrap());
    let mut server = start(dir.path(), &["serve", "--addr", &addr], &[]).await;
    let response = reqwest::Client::new()
        .post(format!("{}/employees/", server.base))
        .header("content-type", "application/json")
        .body(r#"{"full_name":"Ann","position":"dev"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.text().await.unwrap(),
        r#"{"full_name":"Ann","position":"dev","id":1,"tasks":[]}"#
    );
    assert!(dir.path().join("data/tracker.db").is_file());
    server.terminate();
    assert_eq!(server.wait(Duration::from_secs(10)).await.0, Some(0));
    let logs = server.all_logs().await;
    assert!(
        logs.iter()
            .any(|l| l.contains("applied migration m20261124_000001")),
        "{logs:?}"
    );
    assert!(
        logs.iter()
            .any(|l| l.contains("uri=/employees") && l.contains("status=200")),
        "{logs:?}"
    );
}

test_support::backend_tests! {
    /// The original app's database, served with `--migrate` (on SQLite
    /// without it: migrations always apply there): adopted, then served.
    async fn serving_the_original_database_adopts_it(t: TestDb) {
        original_app::create(&t.db).await;
        let dir = sqlite_dir();
        let addr = format!("127.0.0.1:{}", free_port().unwrap());
        let mut args = vec!["serve", "--addr", &addr];
        if t.backend() != Backend::Sqlite {
            args.push("--migrate");
        }
        let vars = [t.settings.url.child_env()];
        let mut server = start(dir.path(), &args, &vars).await;
        let response = reqwest::get(format!("{}/employees/5/", server.base)).await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.text().await.unwrap(), r#"{"full_name":"O'Brien  ","position":"lead","id":5}"#);
        server.terminate();
        assert_eq!(server.wait(Duration::from_secs(10)).await.0, Some(0));
        let logs = server.all_logs().await;
        assert!(
            logs.iter().any(|l| l.contains("the tables of migration m20261124_000001_create_employees_and_tasks already exist with its shape; recorded it as applied without running it")),
            "{logs:?}"
        );
        assert!(logs.iter().any(|l| l.contains("applied migration m20261125_000001")), "{logs:?}");
        assert!(!logs.iter().any(|l| l.contains("applied migration m20261124_000001")), "{logs:?}");
    }
}

/// Plain `cargo run` (no subcommand) serves on 127.0.0.1:8000. Runs only
/// when that port is free on this machine.
#[tokio::test]
async fn no_subcommand_means_serve_on_port_8000() {
    if std::net::TcpListener::bind("127.0.0.1:8000").is_err() {
        // Written straight to the stream: the harness captures `eprintln!`.
        let _ = writeln!(
            std::io::stderr(),
            "note: port 8000 is busy: the test of the default address did not run"
        );
        return;
    }
    let dir = sqlite_dir();
    let mut server = start(dir.path(), &[], &[]).await;
    assert_eq!(server.base, "http://127.0.0.1:8000");
    let health = reqwest::get(format!("{}/health", server.base))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    server.terminate();
    assert_eq!(server.wait(Duration::from_secs(10)).await.0, Some(0));
}

#[tokio::test]
async fn logs_can_be_json_lines() {
    let dir = sqlite_dir();
    let addr = format!("127.0.0.1:{}", free_port().unwrap());
    let mut server = start(dir.path(), &["--log-json", "serve", "--addr", &addr], &[]).await;
    reqwest::get(format!("{}/tasks/", server.base))
        .await
        .unwrap();
    server.terminate();
    server.wait(Duration::from_secs(10)).await;
    let logs = server.all_logs().await;
    assert!(!logs.is_empty());
    for line in &logs {
        let parsed: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}"));
        assert!(parsed["level"].is_string(), "{line}");
    }
}

/// On a server database, pending migrations stop startup with the command
/// to run; `--migrate` applies them (under the lock) and serves.
#[test_support::needs(postgres)]
#[tokio::test]
async fn pending_migrations_on_a_server_need_migrate() {
    let t = TestDb::new(Backend::Postgres).await;
    let dir = sqlite_dir();
    let vars = [t.settings.url.child_env()];
    let addr = format!("127.0.0.1:{}", free_port().unwrap());
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_tracker"))
        .args(["serve", "--addr", &addr])
        .current_dir(dir.path())
        .env_clear()
        .envs([t.settings.url.child_env()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    let names: Vec<String> = <migration::Migrator as migration::MigratorTrait>::migrations()
        .iter()
        .map(|m| m.name().to_owned())
        .collect();
    let expected = format!(
        "has {} pending migration(s) ({}): run `tracker migrate up` first, or start with --migrate",
        names.len(),
        names.join(", ")
    );
    assert!(last.contains(&expected), "{stderr}");

    let mut server = start(dir.path(), &["serve", "--addr", &addr, "--migrate"], &vars).await;
    let tasks = reqwest::get(format!("{}/tasks/", server.base))
        .await
        .unwrap();
    assert_eq!(tasks.status(), 200);
    server.terminate();
    assert_eq!(server.wait(Duration::from_secs(10)).await.0, Some(0));
}

/// `serve --migrate` waits for the migration lock that another process
/// holds at most `--lock-timeout`, then exits 1 saying what it waited for.
#[test_support::needs(postgres)]
#[tokio::test]
async fn serve_migrate_waits_for_another_migrator_at_most_its_lock_timeout() {
    let t = TestDb::new(Backend::Postgres).await;
    let lock = db_core::Lock::new("migration", Duration::from_secs(5));
    let held = t.db.hold(&lock).await.unwrap();
    let dir = sqlite_dir();
    let addr = format!("127.0.0.1:{}", free_port().unwrap());
    let output = Command::new(env!("CARGO_BIN_EXE_tracker"))
        .args([
            "serve",
            "--addr",
            &addr,
            "--migrate",
            "--lock-timeout",
            "1s",
        ])
        .current_dir(dir.path())
        .env_clear()
        .envs([t.settings.url.child_env()])
        .output()
        .await
        .unwrap();
    held.release().await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(last.contains("timed out after 1s"), "{stderr}");
    assert!(
        last.contains("waiting for the migration lock ("),
        "{stderr}"
    );
}

/// SIGTERM while clients keep writing: the process exits 0 within 10 s, no
/// request gets an error status, and every write that reached the database
/// got its 200 (and every 200 is in the database). Requests the server never
/// read (refused, or reset while queued when the listener closed) fail on
/// the client; none of them is a write the server did.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_answers_what_it_accepted_and_exits_0() {
    let dir = sqlite_dir();
    let addr = format!("127.0.0.1:{}", free_port().unwrap());
    let mut server = start(dir.path(), &["serve", "--addr", &addr], &[]).await;
    // A new connection per request, so no request races a keep-alive close.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for worker in 0..8 {
        let (client, base, stop) = (client.clone(), server.base.clone(), stop.clone());
        clients.push(tokio::spawn(async move {
            let (mut ok, mut unserved, mut bad) = (0u32, 0u32, Vec::new());
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                n += 1;
                let body = json!({"full_name": format!("w{worker}-{n}"), "position": "load"});
                match client
                    .post(format!("{base}/employees/"))
                    .json(&body)
                    .send()
                    .await
                {
                    Ok(response) if response.status() == 200 => ok += 1,
                    Ok(response) => bad.push(format!("status {}", response.status())),
                    Err(_) => {
                        unserved += 1;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
            (ok, unserved, bad)
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.terminate();
    let (code, took) = server.wait(Duration::from_secs(10)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (mut ok, mut unserved, mut bad) = (0, 0, Vec::new());
    for client in clients {
        let (o, u, b) = client.await.unwrap();
        ok += o;
        unserved += u;
        bad.extend(b);
    }
    assert_eq!(code, Some(0), "exit code; logs: {:?}", server.logs());
    assert!(took < Duration::from_secs(10));
    assert!(ok > 0 && unserved > 0, "ok {ok}, unserved {unserved}");
    assert!(bad.is_empty(), "{bad:?}");
    let db = db_core::Db::connect(&db_core::Settings::new(
        db_core::url::DatabaseUrl::sqlite_file(dir.path().join("data/tracker.db")),
    ))
    .await
    .unwrap();
    let tracker = tracker::Tracker::new(db);
    let stored = tracker
        .list_employees(tracker::Page {
            limit: 1_000_000,
            ..tracker::Page::default()
        })
        .await
        .unwrap()
        .len();
    assert_eq!(stored, ok as usize, "rows written vs 200 answers");
}
