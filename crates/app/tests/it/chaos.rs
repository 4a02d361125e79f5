//! Fault injection against real servers (`just chaos`; `CHAOS=1`): a
//! database that restarts or crashes under load, a pool that runs dry, a
//! server that is down at startup. Every run scans all the server's output
//! for its password.

use std::ffi::OsString;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use db_core::sea_orm::ConnectionTrait;
use serde_json::json;
use test_support::{Backend, PrivatePostgres, StopMode, TestDb, free_port, report};

use crate::cli::{PASSWORD, PASSWORD_ENCODED, os};
use crate::serve::{Running, start};

/// The seed's variables for a private server, with the test password.
fn parts(server: &PrivatePostgres, database: &str) -> Vec<(&'static str, OsString)> {
    vec![
        ("DB_HOST", os("127.0.0.1")),
        ("DB_PORT", os(server.port().to_string())),
        ("DB_NAME", os(database)),
        ("DB_USER", os("postgres")),
        ("DB_PASS", os(PASSWORD)),
    ]
}

fn assert_no_secret_in(lines: &[String]) {
    let leaks: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains(PASSWORD) || l.contains(PASSWORD_ENCODED))
        .collect();
    assert!(leaks.is_empty(), "the password leaked: {leaks:?}");
}

/// One request of [`drive`]'s clients and its answer.
#[derive(Debug, Clone)]
pub(crate) struct Outcome {
    /// When it was sent.
    pub(crate) at: Instant,
    /// The employee's unique name, for a write.
    pub(crate) write: Option<String>,
    /// The answer's status, or why there was none.
    pub(crate) status: Result<u16, String>,
    pub(crate) latency: Duration,
}

/// Clients that keep writing (`POST /employees/`, position `chaos`) and
/// reading until stopped, recording every outcome. Request `n` of client
/// `worker` is a write when `writes(worker, n)` says so.
pub(crate) fn drive(
    base: &str,
    workers: usize,
    writes: fn(usize, u64) -> bool,
    stop: Arc<AtomicBool>,
) -> (Arc<Mutex<Vec<Outcome>>>, Vec<tokio::task::JoinHandle<()>>) {
    drive_with(base, workers, None, stop, move |client, base, worker, n| {
        if writes(worker, n) {
            let name = format!("w{worker}-{n}");
            let body = json!({"full_name": name, "position": "chaos"});
            (
                Some(name),
                client.post(format!("{base}/employees/")).json(&body),
            )
        } else {
            (None, client.get(format!("{base}/employees/?limit=5")))
        }
    })
}

/// When a client's requests are due: one as soon as the last has ended
/// (closed loop, without a pace), or one every `pace` (open loop).
pub(crate) struct Schedule(Option<tokio::time::Interval>);

impl Schedule {
    pub(crate) fn new(pace: Option<Duration>) -> Schedule {
        Schedule(pace.map(|pace| {
            let mut ticks = tokio::time::interval(pace);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            ticks
        }))
    }

    /// Waits until the next request is due, and returns when it was due.
    /// Paced, a client that fell behind sends the requests it owes at once,
    /// and each one's latency counts from when it was due: a stall counts
    /// against every request it held back, not only the one it caught.
    pub(crate) async fn next(&mut self) -> Instant {
        match &mut self.0 {
            Some(ticks) => ticks.tick().await.into_std(),
            None => Instant::now(),
        }
    }
}

/// Clients that send `request(client, base, worker, n)` until stopped, on
/// the [`Schedule`] of `pace`, recording every outcome; a request that
/// names a write (`Some(name)`) stores a row by that name.
pub(crate) fn drive_with(
    base: &str,
    workers: usize,
    pace: Option<Duration>,
    stop: Arc<AtomicBool>,
    request: impl Fn(&reqwest::Client, &str, usize, u64) -> (Option<String>, reqwest::RequestBuilder)
    + Clone
    + Send
    + 'static,
) -> (Arc<Mutex<Vec<Outcome>>>, Vec<tokio::task::JoinHandle<()>>) {
    let outcomes = Arc::new(Mutex::new(Vec::new()));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let handles = (0..workers)
        .map(|worker| {
            let (client, base, stop, outcomes, request) = (
                client.clone(),
                base.to_owned(),
                stop.clone(),
                outcomes.clone(),
                request.clone(),
            );
            tokio::spawn(async move {
                let mut schedule = Schedule::new(pace);
                let mut n = 0;
                while !stop.load(Ordering::SeqCst) {
                    n += 1;
                    let start = schedule.next().await;
                    let (write, request) = request(&client, &base, worker, n);
                    let status = request
                        .send()
                        .await
                        .map(|r| r.status().as_u16())
                        .map_err(|e| e.to_string());
                    let failed = status.is_err();
                    outcomes.lock().unwrap().push(Outcome {
                        at: start,
                        write,
                        status,
                        latency: start.elapsed(),
                    });
                    if failed {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            })
        })
        .collect();
    (outcomes, handles)
}

/// Seconds from `back` to the first success that started after it.
pub(crate) fn recovery(outcomes: &[Outcome], back: Instant) -> Option<f64> {
    outcomes
        .iter()
        .filter(|o| o.at >= back && o.status == Ok(200))
        .map(|o| (o.at + o.latency - back).as_secs_f64())
        .reduce(f64::min)
}

/// While clients write and read through `tracker serve` for about 25 s, the
/// private PostgreSQL restarts (fast shutdown), then crashes (immediate
/// shutdown) and comes back. No request hangs past the acquire timeout,
/// failures are 503s, service resumes within 5 s of the server's return
/// without restarting the app, and every acknowledged write is stored.
#[test_support::needs(postgres, chaos)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_database_restarts_under_load_lose_no_acknowledged_write() {
    let server = Arc::new(
        tokio::task::spawn_blocking(|| PrivatePostgres::start(PASSWORD))
            .await
            .unwrap()
            .expect("starting a private PostgreSQL"),
    );
    server.psql("postgres", "CREATE DATABASE tracker").unwrap();
    let mut vars = parts(&server, "tracker");
    vars.extend([
        ("DB_ACQUIRE_TIMEOUT", os("2s")),
        ("DB_CONNECT_TIMEOUT", os("1s")),
        ("RUST_LOG", os("debug")),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", free_port().unwrap());
    let mut app: Running = start(dir.path(), &["serve", "--addr", &addr, "--migrate"], &vars).await;

    let stop = Arc::new(AtomicBool::new(false));
    let (outcomes, clients) = drive(&app.base, 8, |_, n| n % 2 == 0, stop.clone());
    tokio::time::sleep(Duration::from_secs(5)).await;

    let restart = {
        let server = server.clone();
        tokio::task::spawn_blocking(move || {
            server.stop(StopMode::Fast).unwrap();
            server.start_again().unwrap();
            Instant::now()
        })
    };
    let back_after_restart = restart.await.unwrap();
    tokio::time::sleep(Duration::from_secs(8)).await;

    let crash = {
        let server = server.clone();
        tokio::task::spawn_blocking(move || {
            server.stop(StopMode::Immediate).unwrap();
            std::thread::sleep(Duration::from_secs(2));
            server.start_again().unwrap();
            Instant::now()
        })
    };
    let back_after_crash = crash.await.unwrap();
    tokio::time::sleep(Duration::from_secs(8)).await;
    stop.store(true, Ordering::SeqCst);
    for client in clients {
        client.await.unwrap();
    }
    app.terminate();
    let (code, _) = app.wait(Duration::from_secs(15)).await;

    let outcomes = outcomes.lock().unwrap().clone();
    let ok = outcomes.iter().filter(|o| o.status == Ok(200)).count();
    let unavailable = outcomes.iter().filter(|o| o.status == Ok(503)).count();
    let other: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| !matches!(o.status, Ok(200) | Ok(503)))
        .collect();
    let slowest = outcomes.iter().map(|o| o.latency).max().unwrap_or_default();
    let acknowledged: Vec<String> = outcomes
        .iter()
        .filter(|o| o.status == Ok(200))
        .filter_map(|o| o.write.clone())
        .collect();
    let failed_writes = outcomes
        .iter()
        .filter(|o| o.write.is_some() && o.status != Ok(200))
        .count();
    let stored = server
        .psql(
            "tracker",
            "SELECT full_name FROM employees WHERE position = 'chaos'",
        )
        .unwrap();
    let stored: std::collections::HashSet<&str> = stored.lines().collect();
    let lost = acknowledged
        .iter()
        .filter(|n| !stored.contains(n.as_str()))
        .count();
    let recovered_restart = recovery(&outcomes, back_after_restart);
    let recovered_crash = recovery(&outcomes, back_after_crash);
    report(&format!(
        "restart under load: {} requests, {ok} ok, {unavailable} x 503, {} other; slowest {:.2}s; \
         writes acknowledged {}, failed {failed_writes}, acknowledged but lost {lost}; \
         first success {:.2}s after the restart, {:.2}s after the crash",
        outcomes.len(),
        other.len(),
        slowest.as_secs_f64(),
        acknowledged.len(),
        recovered_restart.unwrap_or(f64::NAN),
        recovered_crash.unwrap_or(f64::NAN),
    ));

    assert_eq!(code, Some(0), "the app exited badly");
    assert!(
        other.is_empty(),
        "answers other than 200 and 503: {:?}",
        &other[..other.len().min(5)]
    );
    assert_eq!(lost, 0, "acknowledged writes lost");
    assert!(unavailable > 0, "the restarts were not noticed");
    assert!(
        slowest < Duration::from_secs(5),
        "a request took {slowest:?} (acquire timeout 2s)"
    );
    assert!(
        recovered_restart.is_some_and(|s| s <= 5.0),
        "recovery after the restart: {recovered_restart:?}"
    );
    assert!(
        recovered_crash.is_some_and(|s| s <= 5.0),
        "recovery after the crash: {recovered_crash:?}"
    );
    assert_no_secret_in(&app.all_logs().await);
}

/// A pool of 2 and 50 concurrent requests that the database holds up: the
/// excess get 503 after the acquire timeout instead of hanging, and the app
/// serves normally afterwards.
#[test_support::needs(postgres, chaos)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_an_exhausted_pool_answers_503_then_recovers() {
    let t = TestDb::new(Backend::Postgres).await;
    migration::up(&t.settings, Duration::from_secs(60))
        .await
        .unwrap();
    let vars = [
        t.settings.url.child_env(),
        ("DB_MAX_CONNECTIONS", os("2")),
        ("DB_ACQUIRE_TIMEOUT", os("1s")),
        // The two requests that hold the connections wait 3 s for the lock,
        // longer than the default operation timeout.
        ("DB_OPERATION_TIMEOUT", os("10s")),
    ];
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", free_port().unwrap());
    let mut app = start(dir.path(), &["serve", "--addr", &addr], &vars).await;

    // Hold a lock every list request waits for: the first two requests hold
    // both pooled connections while they wait.
    let blocker = t.db.begin().await.unwrap();
    blocker
        .execute_unprepared("LOCK TABLE tasks IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let client = reqwest::Client::new();
    let requests: Vec<_> = (0..50)
        .map(|_| {
            let (client, url) = (client.clone(), format!("{}/tasks/", app.base));
            tokio::spawn(async move {
                let start = Instant::now();
                let status = client.get(url).send().await.map(|r| r.status().as_u16());
                (status, start.elapsed())
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(3)).await;
    blocker.rollback().await.unwrap();
    let mut answers = Vec::new();
    for request in requests {
        answers.push(request.await.unwrap());
    }
    let ok = answers.iter().filter(|(s, _)| matches!(s, Ok(200))).count();
    let unavailable: Vec<Duration> = answers
        .iter()
        .filter(|(s, _)| matches!(s, Ok(503)))
        .map(|(_, d)| *d)
        .collect();
    let slowest_503 = unavailable.iter().max().copied().unwrap_or_default();
    let after = client
        .get(format!("{}/tasks/", app.base))
        .send()
        .await
        .unwrap()
        .status();
    report(&format!(
        "pool exhaustion: pool 2, 50 requests: {ok} ok, {} x 503 (slowest 503 after {:.2}s, acquire timeout 1s); then {}",
        unavailable.len(),
        slowest_503.as_secs_f64(),
        after
    ));
    app.terminate();
    app.wait(Duration::from_secs(10)).await;
    assert_eq!(ok + unavailable.len(), 50, "{answers:?}");
    assert_eq!(
        ok, 2,
        "only the two requests holding connections wait for the lock"
    );
    assert!(
        slowest_503 < Duration::from_secs(3),
        "a 503 took {slowest_503:?}"
    );
    assert_eq!(after, 200);
}

/// Down for longer than the connect deadline: `serve` exits 1 with one
/// clear line. Down for less: it waits, migrates and serves.
#[test_support::needs(postgres, chaos)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_startup_waits_for_the_database_within_the_deadline() {
    let server = Arc::new(
        tokio::task::spawn_blocking(|| PrivatePostgres::init(PASSWORD))
            .await
            .unwrap()
            .expect("initialising a private PostgreSQL"),
    );
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", free_port().unwrap());

    let mut vars = parts(&server, "postgres");
    vars.push(("DB_CONNECT_DEADLINE", os("2s")));
    let started = Instant::now();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_tracker"));
    command
        .args(["serve", "--addr", &addr])
        .current_dir(dir.path())
        .env_clear();
    for (name, value) in &vars {
        command.env(name, value);
    }
    let output = command.output().unwrap();
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let last = stderr.lines().last().unwrap_or_default().to_owned();
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        last.starts_with(&format!(
            "error: cannot connect to postgres 127.0.0.1:{}/postgres: connection refused (gave up after 2s",
            server.port()
        )),
        "{stderr}"
    );
    assert_no_secret_in(&stderr.lines().map(str::to_owned).collect::<Vec<_>>());

    let mut vars = parts(&server, "postgres");
    vars.push(("DB_CONNECT_DEADLINE", os("60s")));
    let starter = {
        let server = server.clone();
        std::thread::spawn(move || {
            // The database comes up a little after the app.
            std::thread::sleep(Duration::from_secs(2));
            server.start_again()
        })
    };
    let waited = Instant::now();
    let mut app = start(dir.path(), &["serve", "--addr", &addr, "--migrate"], &vars).await;
    let up_after = waited.elapsed();
    starter.join().unwrap().unwrap();
    let ready = reqwest::get(format!("{}/ready", app.base))
        .await
        .unwrap()
        .status();
    report(&format!(
        "startup: server down past a 2s deadline -> exit 1 after {:.2}s; down for 2s with a 60s deadline -> serving after {:.2}s",
        took.as_secs_f64(),
        up_after.as_secs_f64()
    ));
    app.terminate();
    app.wait(Duration::from_secs(10)).await;
    assert_eq!(ready, 200);
    assert!(up_after >= Duration::from_secs(2));
    assert_no_secret_in(&app.all_logs().await);
}
