//! A database that stops answering with its connections open (`just
//! chaos`): a private PostgreSQL paused with `SIGSTOP` of its postmaster and
//! every backend, under HTTP load through `tracker serve` with the default
//! settings, then resumed with `SIGCONT`. Each test prints its figures and
//! holds the service to the same targets: no request slower than 8 s,
//! failures are 503s only, no acknowledged write lost, writes succeed again
//! within 2 s of the server's return, and SIGTERM ends the process with
//! code 0 within 10 s.

use std::collections::{BTreeMap, HashSet};
use std::ffi::OsString;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use test_support::{PrivatePostgres, free_port, report};

use crate::chaos::{Outcome, drive, recovery};
use crate::cli::{PASSWORD, os};
use crate::serve::{Running, start};

/// How long each pause lasts.
const PAUSE: Duration = Duration::from_secs(20);
/// The slowest request allowed.
const SLOWEST: Duration = Duration::from_secs(8);
/// How soon writes must succeed again once the server answers.
const BACK_WITHIN: f64 = 2.0;
/// How soon SIGTERM must end the process.
const EXIT_WITHIN: Duration = Duration::from_secs(10);

/// What the clients saw.
pub(crate) struct Tally {
    pub(crate) requests: usize,
    /// Failed requests by status (`error` when no answer came).
    pub(crate) failed: BTreeMap<String, usize>,
    pub(crate) slowest: Duration,
    /// Writes answered 200, and how many of them are not in the database.
    pub(crate) acknowledged: usize,
    pub(crate) lost: usize,
}

impl Tally {
    /// The outcomes against `stored`, the names of the employees in the
    /// database.
    pub(crate) fn of(outcomes: &[Outcome], stored: &HashSet<&str>) -> Tally {
        let mut failed = BTreeMap::new();
        for o in outcomes.iter().filter(|o| o.status != Ok(200)) {
            let key = match &o.status {
                Ok(code) => code.to_string(),
                Err(_) => "error".to_owned(),
            };
            *failed.entry(key).or_insert(0) += 1;
        }
        let acknowledged: Vec<&str> = outcomes
            .iter()
            .filter(|o| o.status == Ok(200))
            .filter_map(|o| o.write.as_deref())
            .collect();
        Tally {
            requests: outcomes.len(),
            failed,
            slowest: outcomes.iter().map(|o| o.latency).max().unwrap_or_default(),
            acknowledged: acknowledged.len(),
            lost: acknowledged.iter().filter(|n| !stored.contains(*n)).count(),
        }
    }

    /// Whether every failure was a 503.
    pub(crate) fn only_503s(&self) -> bool {
        self.failed.keys().all(|status| status == "503")
    }

    pub(crate) fn line(&self) -> String {
        format!(
            "{} requests, failed {:?}, slowest {:.2}s, writes acknowledged {}, lost {}",
            self.requests,
            self.failed,
            self.slowest.as_secs_f64(),
            self.acknowledged,
            self.lost
        )
    }

    /// Asserts the targets every pause test shares.
    pub(crate) fn assert_targets(&self) {
        assert!(
            self.only_503s(),
            "failures other than 503: {:?}",
            self.failed
        );
        assert!(
            self.slowest <= SLOWEST,
            "a request took {:?}, more than {SLOWEST:?}",
            self.slowest
        );
        assert_eq!(self.lost, 0, "acknowledged writes lost");
    }
}

/// Sends SIGTERM and waits for the exit: its code, and how long it took.
pub(crate) async fn stop(app: &mut Running) -> (Option<i32>, Duration) {
    app.terminate();
    app.wait(EXIT_WITHIN + Duration::from_secs(5)).await
}

/// Asserts that the process exited with code 0 within the target.
pub(crate) fn assert_exit((code, took): (Option<i32>, Duration), app: &Running) {
    assert_eq!(code, Some(0), "exit code; logs: {:?}", app.logs());
    assert!(took <= EXIT_WITHIN, "exited {took:?} after SIGTERM");
}

/// A private server with the database `tracker`.
async fn private_server() -> Arc<PrivatePostgres> {
    let server = tokio::task::spawn_blocking(|| {
        let server = PrivatePostgres::start(PASSWORD).expect("starting a private PostgreSQL");
        server.psql("postgres", "CREATE DATABASE tracker").unwrap();
        server
    })
    .await
    .unwrap();
    Arc::new(server)
}

/// `tracker serve --migrate` on `tracker` of `server`, with `extra` variables.
async fn serve(server: &PrivatePostgres, extra: &[(&'static str, OsString)]) -> Running {
    let mut vars = vec![("DATABASE_URL", os(server.url("tracker")))];
    vars.extend(extra.iter().cloned());
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", free_port().unwrap());
    start(dir.path(), &["serve", "--addr", &addr, "--migrate"], &vars).await
}

/// The names of the employees the clients wrote, as stored.
fn stored(server: &PrivatePostgres) -> String {
    server
        .psql(
            "tracker",
            "SELECT full_name FROM employees WHERE position = 'chaos'",
        )
        .unwrap()
}

/// One series of `/metrics`, `name{labels}` exactly as rendered.
async fn metric(base: &str, series: &str) -> Option<f64> {
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let prefix = format!("{series} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .and_then(|value| value.parse().ok())
}

/// Waits (up to 10 s) until `series` satisfies `ok`; its last value.
async fn metric_settles(base: &str, series: &str, ok: impl Fn(f64) -> bool) -> Option<f64> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let value = metric(base, series).await;
        if value.is_some_and(&ok) || Instant::now() > deadline {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Runs `f` on `server` off the runtime's threads (starting and stopping a
/// server waits for it).
pub(crate) async fn blocking(
    server: &Arc<PrivatePostgres>,
    f: fn(&PrivatePostgres) -> std::io::Result<()>,
) {
    let server = server.clone();
    tokio::task::spawn_blocking(move || f(&server))
        .await
        .unwrap()
        .unwrap();
}

/// A write that reached the database, which then stopped answering, gets a
/// 503 that says its outcome is unknown, where a read gets the usual one;
/// once the server answers again, writes succeed.
#[test_support::needs(postgres)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_the_database_did_not_confirm_answers_503_saying_so() {
    let server = private_server().await;
    let mut app = serve(
        &server,
        &[
            ("DB_OPERATION_TIMEOUT", os("1s")),
            ("DB_ACQUIRE_TIMEOUT", os("1s")),
        ],
    )
    .await;
    let client = reqwest::Client::new();
    let post = async |name: &str| {
        let response = client
            .post(format!("{}/employees/", app.base))
            .json(&json!({"full_name": name, "position": "dev"}))
            .send()
            .await
            .unwrap();
        (
            response.status().as_u16(),
            response.json::<Value>().await.unwrap(),
        )
    };
    assert_eq!(post("confirmed").await.0, 200);

    blocking(&server, PrivatePostgres::pause).await;
    assert_eq!(
        post("unconfirmed").await,
        (
            503,
            json!({"detail": "Database unavailable: the write may or may not have been saved; read it back before retrying it"})
        )
    );
    let read = client
        .get(format!("{}/employees/", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 503);
    assert_eq!(
        read.json::<Value>().await.unwrap(),
        json!({"detail": "Database unavailable, try again later"})
    );
    blocking(&server, PrivatePostgres::resume).await;

    // Whether "unconfirmed" was saved depends on how far its statement got
    // (a statement new to its connection is prepared in a round trip of its
    // own before it is sent); either way, writes work again.
    assert_eq!(post("after").await.0, 200);
    assert!(
        app.logged(
            "the write may or may not have been saved",
            Duration::from_secs(5)
        )
        .await,
        "{:?}",
        app.logs()
    );
    let exit = stop(&mut app).await;
    assert_exit(exit, &app);
}

/// The primary paused for 20 s while 8 clients write and read: requests
/// fail with 503 within the bounds, never hang; writes succeed again at once
/// after SIGCONT; the pool is back to normal (nothing checked out, no more
/// connections than before); SIGTERM then stops the process.
#[test_support::needs(postgres, chaos)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_a_paused_primary_fails_fast_and_recovers_at_once() {
    let server = private_server().await;
    let mut app = serve(&server, &[]).await;
    let stop_clients = Arc::new(AtomicBool::new(false));
    let (outcomes, clients) = drive(
        &app.base,
        8,
        |worker, _| worker % 2 == 0,
        stop_clients.clone(),
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    let open_before = metric(&app.base, r#"db_pool_connections{pool="primary"}"#).await;
    let discarded_series = r#"db_pool_connections_discarded_total{pool="primary"}"#;
    let discarded_before = metric(&app.base, discarded_series).await;

    blocking(&server, PrivatePostgres::pause).await;
    tokio::time::sleep(PAUSE).await;
    blocking(&server, PrivatePostgres::resume).await;
    let back = Instant::now();
    tokio::time::sleep(Duration::from_secs(8)).await;
    stop_clients.store(true, Ordering::SeqCst);
    for client in clients {
        client.await.unwrap();
    }

    let in_use = metric_settles(
        &app.base,
        r#"db_pool_in_use_connections{pool="primary"}"#,
        |v| v == 0.0,
    )
    .await;
    let open = metric(&app.base, r#"db_pool_connections{pool="primary"}"#).await;
    let discarded = metric(&app.base, discarded_series).await;
    let exit = stop(&mut app).await;

    let outcomes = outcomes.lock().unwrap().clone();
    let stored = stored(&server);
    let tally = Tally::of(&outcomes, &stored.lines().collect());
    let writes: Vec<Outcome> = outcomes
        .iter()
        .filter(|o| o.write.is_some())
        .cloned()
        .collect();
    let writes_back = recovery(&writes, back);
    report(&format!(
        "paused primary (20 s, 4 writing and 4 reading clients, default settings): {}; \
         a write sent after SIGCONT succeeded after {:.2}s; pool before the pause: open {open_before:?}, discarded {discarded_before:?}; \
         after it: in use {in_use:?}, open {open:?}, discarded {discarded:?}; SIGTERM to exit {:?} in {:.2}s",
        tally.line(),
        writes_back.unwrap_or(f64::NAN),
        exit.0,
        exit.1.as_secs_f64(),
    ));
    tally.assert_targets();
    assert!(
        tally.failed.contains_key("503"),
        "the pause was not noticed"
    );
    assert!(
        writes_back.is_some_and(|s| s <= BACK_WITHIN),
        "writes came back after {writes_back:?}s"
    );
    assert_eq!(in_use, Some(0.0), "connections still checked out");
    assert!(open.is_some_and(|n| n <= 10.0), "{open:?} connections open");
    assert_eq!(discarded_before, Some(0.0), "discarded under normal load");
    assert!(
        discarded.is_some_and(|n| n > 0.0),
        "no connection was discarded"
    );
    assert_exit(exit, &app);
}

/// The replica paused for 20 s while 4 clients read: reads move to the
/// primary (the first ones after the operation timeout), none fails; once
/// the replica answers, reads go back to it.
#[test_support::needs(postgres, chaos)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_a_paused_replica_leaves_reads_to_the_primary() {
    let server = private_server().await;
    let replica = {
        let server = server.clone();
        tokio::task::spawn_blocking(move || server.start_replica().expect("starting a replica"))
            .await
            .unwrap()
    };
    let replica = Arc::new(replica);
    let mut app = serve(&server, &[("DB_REPLICA_URLS", os(replica.url("tracker")))]).await;
    // The migrations reach the replica before its reads start.
    let deadline = Instant::now() + Duration::from_secs(20);
    while reqwest::get(format!("{}/employees/", app.base))
        .await
        .unwrap()
        .status()
        != 200
    {
        assert!(
            Instant::now() < deadline,
            "the replica never had the schema"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let up = r#"db_replica_up{pool="replica1"}"#;
    let stop_clients = Arc::new(AtomicBool::new(false));
    let (outcomes, clients) = drive(&app.base, 4, |_, _| false, stop_clients.clone());
    tokio::time::sleep(Duration::from_secs(5)).await;

    blocking(&replica, PrivatePostgres::pause).await;
    tokio::time::sleep(PAUSE).await;
    let down_during = metric(&app.base, up).await;
    blocking(&replica, PrivatePostgres::resume).await;
    let back = Instant::now();
    let up_again = metric_settles(&app.base, up, |v| v == 1.0).await;
    let replica_back = back.elapsed();
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop_clients.store(true, Ordering::SeqCst);
    for client in clients {
        client.await.unwrap();
    }
    let exit = stop(&mut app).await;

    let outcomes = outcomes.lock().unwrap().clone();
    let tally = Tally::of(&outcomes, &HashSet::new());
    let reads_back = recovery(&outcomes, back);
    report(&format!(
        "paused replica (20 s, 4 reading clients, default settings): {}; replica up during the pause {down_during:?}, \
         reads on it again {:.2}s after SIGCONT; SIGTERM to exit {:?} in {:.2}s",
        tally.line(),
        replica_back.as_secs_f64(),
        exit.0,
        exit.1.as_secs_f64(),
    ));
    tally.assert_targets();
    assert!(tally.failed.is_empty(), "reads failed: {:?}", tally.failed);
    assert_eq!(down_during, Some(0.0), "the paused replica was not skipped");
    assert_eq!(up_again, Some(1.0), "reads did not return to the replica");
    assert!(
        reads_back.is_some_and(|s| s <= BACK_WITHIN),
        "{reads_back:?}"
    );
    assert_exit(exit, &app);
}

/// SIGTERM in the middle of a pause of the primary, under load: the
/// requests in flight end within their bounds, the pools close without
/// waiting for the server, and the process exits with code 0 within 10 s.
#[test_support::needs(postgres, chaos)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_sigterm_during_a_pause_exits_0_within_10_s() {
    let server = private_server().await;
    let mut app = serve(&server, &[]).await;
    let stop_clients = Arc::new(AtomicBool::new(false));
    let (outcomes, clients) = drive(
        &app.base,
        8,
        |worker, _| worker % 2 == 0,
        stop_clients.clone(),
    );
    tokio::time::sleep(Duration::from_secs(5)).await;

    blocking(&server, PrivatePostgres::pause).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let exit = stop(&mut app).await;
    stop_clients.store(true, Ordering::SeqCst);
    for client in clients {
        client.await.unwrap();
    }
    blocking(&server, PrivatePostgres::resume).await;

    // Requests sent after the listener closed find nobody listening: the
    // targets hold for those that were answered.
    let (answered, refused): (Vec<Outcome>, Vec<Outcome>) = outcomes
        .lock()
        .unwrap()
        .iter()
        .cloned()
        .partition(|o| o.status.is_ok());
    let stored = stored(&server);
    let tally = Tally::of(&answered, &stored.lines().collect());
    report(&format!(
        "SIGTERM 3 s into a pause of the primary (4 writing and 4 reading clients, default settings): \
         exit {:?} after {:.2}s; answered: {}; refused once the listener closed: {}",
        exit.0,
        exit.1.as_secs_f64(),
        tally.line(),
        refused.len(),
    ));
    assert_exit(exit, &app);
    tally.assert_targets();
}
