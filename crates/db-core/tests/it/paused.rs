//! A server that stops answering with its connections open: a private
//! PostgreSQL paused with `SIGSTOP` (postmaster and every backend), then
//! resumed. Every wait is bounded, a connection that owes the server an
//! answer is closed instead of reused, no pool permit is left taken, a
//! write whose end was not confirmed says so, and reads move off a paused
//! replica.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use db_core::{Db, Error, Lock, Session, SessionOptions, Settings, url::DatabaseUrl};
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use test_support::PrivatePostgres;

use crate::metrics;

/// The bounds of these tests: short, so that they run quickly.
const ACQUIRE: Duration = Duration::from_secs(1);
const OPERATION: Duration = Duration::from_secs(1);

/// Scheduling on a busy machine: what a bound may be overrun by.
const SLACK: Duration = Duration::from_secs(2);

async fn start_server() -> Arc<PrivatePostgres> {
    let server = tokio::task::spawn_blocking(|| PrivatePostgres::start("paused-pw"))
        .await
        .unwrap()
        .expect("starting a private PostgreSQL");
    Arc::new(server)
}

fn settings(server: &PrivatePostgres) -> Settings {
    let url = DatabaseUrl::parse(&server.url("postgres"), "DATABASE_URL").unwrap();
    let mut s = Settings::new(url);
    s.acquire_timeout = ACQUIRE;
    s.operation_timeout = Some(OPERATION);
    s.min_connections = 0;
    s
}

async fn scalar<T: sea_orm::TryGetable>(session: &Session, sql: &str) -> Result<T, Error> {
    let row = session
        .query_one_raw(Statement::from_string(DbBackend::Postgres, sql))
        .await?
        .expect("one row");
    Ok(row.try_get_by_index::<T>(0)?)
}

/// The server process of a new session on `db`'s primary pool.
async fn backend_pid(db: &Db) -> Result<i32, Error> {
    let session = db.session(SessionOptions::read_only().on_primary()).await?;
    scalar(&session, "SELECT pg_backend_pid()").await
}

/// A statement on a pooled connection to a paused server fails as
/// unavailable within the operation timeout, and one that needs a new
/// connection within the acquire timeout: never more than both.
#[test_support::needs(postgres)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_on_a_paused_server_is_unavailable_within_its_bounds() {
    let server = start_server().await;
    let db = Db::connect(&settings(&server)).await.unwrap();
    backend_pid(&db).await.unwrap();

    server.pause().unwrap();
    // Asking for the version, on the idle pooled connection, is a read:
    // its outcome is never in doubt.
    let err = db.health().await.unwrap_err();
    assert!(err.is_unavailable() && !err.is_outcome_unknown(), "{err:?}");
    for _ in 0..3 {
        let start = Instant::now();
        let err = backend_pid(&db).await.unwrap_err();
        let took = start.elapsed();
        assert!(err.is_unavailable(), "{err:?}");
        assert!(took <= ACQUIRE + OPERATION + SLACK, "took {took:?}: {err}");
    }
    let err = backend_pid(&db).await.unwrap_err();
    let shown = db_core::error::Report(&err).to_string();
    assert!(
        shown.contains("no answer within 1s (DB_OPERATION_TIMEOUT)")
            || shown.contains("no database connection available within the acquire timeout"),
        "{shown}"
    );
    server.resume().unwrap();
    backend_pid(&db).await.unwrap();
    db.close().await;
}

/// A lock held on a connection of its own, which has no operation timeout:
/// taking it from a paused server, and releasing it there, end within the
/// lock's timeout; once the server answers again, the lock is free.
#[test_support::needs(postgres)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_on_a_paused_server_ends_within_its_timeout() {
    let server = start_server().await;
    let db = Db::connect(&settings(&server)).await.unwrap();
    let lock = Lock::new("paused", Duration::from_secs(1));
    // A pooled connection, idle, for the lock to take.
    backend_pid(&db).await.unwrap();

    server.pause().unwrap();
    let start = Instant::now();
    let err = db.hold(&lock).await.unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    let shown = db_core::error::Report(&err).to_string();
    assert!(
        shown.contains("no answer within 1s (the lock's timeout)"),
        "{shown}"
    );
    assert!(start.elapsed() <= Duration::from_secs(1) + SLACK);
    server.resume().unwrap();

    let mut held = hold_soon(&db, &lock).await;
    server.pause().unwrap();
    // Watching the lock and what a migration waits for: bounded too.
    let start = Instant::now();
    let err = held.blockers(1).await.unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    let err = held.check().await.unwrap_err();
    let shown = db_core::error::Report(&err).to_string();
    assert!(
        shown.contains("the connection that held the lock is gone or gives no answer"),
        "{shown}"
    );
    assert!(start.elapsed() <= Duration::from_secs(2) + SLACK);
    let start = Instant::now();
    held.release().await;
    assert!(start.elapsed() <= Duration::from_secs(1) + SLACK);
    server.resume().unwrap();
    let patient = Lock::new("paused", Duration::from_secs(10));
    hold_soon(&db, &patient).await.release().await;
    db.close().await;
}

/// `lock`, taken once the server that was just resumed gives the pool a
/// connection within its acquire timeout (a second; a busy machine may
/// take longer).
async fn hold_soon(db: &Db, lock: &Lock) -> db_core::lock::HeldLock {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match db.hold(lock).await {
            Ok(held) => return held,
            Err(e) if e.is_unavailable() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("{e}"),
        }
    }
}

/// The connection of a session whose statement timed out, and the one of a
/// task aborted while its statement waited, are closed: after the server
/// answers again, no session ever runs on their server processes, which
/// are gone.
#[test_support::needs(postgres)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_timed_out_or_were_abandoned_are_never_reused() {
    let server = start_server().await;
    let mut s = settings(&server);
    s.max_connections = 4;
    let db = Db::connect(&s).await.unwrap();

    let timed_out = db.begin().await.unwrap();
    let timed_out_pid: i32 = scalar(&timed_out, "SELECT pg_backend_pid()").await.unwrap();
    let abandoned = db.begin().await.unwrap();
    let abandoned_pid: i32 = scalar(&abandoned, "SELECT pg_backend_pid()").await.unwrap();

    server.pause().unwrap();
    let err = scalar::<i32>(&timed_out, "SELECT 1").await.unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    drop(timed_out);
    let task = tokio::spawn(async move { scalar::<i32>(&abandoned, "SELECT 1").await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    server.resume().unwrap();

    let mut seen = HashSet::new();
    for _ in 0..20 {
        seen.insert(backend_pid(&db).await.unwrap());
    }
    assert!(!seen.contains(&timed_out_pid), "{seen:?}");
    assert!(!seen.contains(&abandoned_pid), "{seen:?}");
    let sql = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE pid IN ({timed_out_pid}, {abandoned_pid})"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.psql("postgres", &sql).unwrap() != "0" {
        assert!(
            Instant::now() < deadline,
            "the abandoned sessions are still there"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    db.close().await;
}

/// A pool of two and six operations that time out during a pause: while
/// the server is still paused, no connection stays checked out (each was
/// closed and counted as discarded, where work that ended normally
/// discarded none); once it answers, two sessions that hold a connection at
/// the same time both get one at once.
#[test_support::needs(postgres)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_pool_permit_is_left_taken_by_a_paused_server() {
    metrics::rendered();
    let server = start_server().await;
    let mut s = settings(&server);
    s.max_connections = 2;
    let db = Db::connect_labelled(&s, "paused").await.unwrap();
    let discarded = || metrics::value(r#"db_pool_connections_discarded_total{pool="paused"}"#);
    // Work that ends normally, also with an error that rolls it back,
    // leaves its connection settled: none is discarded.
    let (a, b) = tokio::join!(backend_pid(&db), backend_pid(&db));
    a.unwrap();
    b.unwrap();
    let committed = db
        .transaction(SessionOptions::read_write(), |tx| async move {
            scalar::<i32>(&tx, "SELECT 1").await
        })
        .await;
    assert_eq!(committed.unwrap(), 1);
    let failed = db
        .transaction(SessionOptions::read_write(), |tx| async move {
            scalar::<i32>(&tx, "SELECT 1 / 0").await
        })
        .await;
    assert!(failed.is_err());
    assert_eq!(discarded(), Some(0.0), "discarded in normal work");
    // sqlx pings each connection as it comes back: a ping in flight when the
    // server stops waits for it (the window that bound.rs describes), so the
    // pause starts once every connection is back.
    let in_use = || metrics::value(r#"db_pool_in_use_connections{pool="paused"}"#);
    let deadline = Instant::now() + Duration::from_secs(5);
    while in_use() != Some(0.0) {
        assert!(
            Instant::now() < deadline,
            "connections still out: {:?}",
            in_use()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    server.pause().unwrap();
    let failures: Vec<_> = (0..6)
        .map(|_| {
            let db = db.clone();
            tokio::spawn(async move { backend_pid(&db).await })
        })
        .collect();
    for failure in failures {
        let err = failure.await.unwrap().unwrap_err();
        assert!(err.is_unavailable(), "{err:?}");
    }
    // sqlx closes a refused connection in a task of its own.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        in_use(),
        Some(0.0),
        "connections still checked out while paused"
    );
    let now_discarded = discarded();
    assert!(
        now_discarded.is_some_and(|n| n >= 2.0),
        "discarded: {now_discarded:?}"
    );

    server.resume().unwrap();
    let hold = async || {
        let session = db.begin().await?;
        scalar::<String>(&session, "SELECT pg_sleep(0.2)::text").await?;
        session.commit().await
    };
    let start = Instant::now();
    let (a, b) = tokio::join!(hold(), hold());
    a.unwrap();
    b.unwrap();
    assert!(start.elapsed() < ACQUIRE, "{:?}", start.elapsed());
    db.close().await;
}

/// A COMMIT sent to a paused server, and a single-statement write, end in
/// [`Error::OutcomeUnknown`] within the operation timeout; closing the
/// pools returns while the server is still paused. Once the server answers
/// again it commits both: the outcome really was unknown.
#[test_support::needs(postgres)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_in_flight_on_a_paused_server_has_an_unknown_outcome() {
    let server = start_server().await;
    server
        .psql("postgres", "CREATE TABLE written (n int)")
        .unwrap();
    let db = Db::connect(&settings(&server)).await.unwrap();

    let session = db.begin().await.unwrap();
    session
        .execute_unprepared("INSERT INTO written VALUES (1)")
        .await
        .unwrap();
    let single = db
        .session(SessionOptions::single_statement())
        .await
        .unwrap();
    backend_pid(&db).await.unwrap();

    server.pause().unwrap();
    let start = Instant::now();
    let err = session.commit().await.unwrap_err();
    assert!(err.is_outcome_unknown(), "{err:?}");
    assert!(start.elapsed() <= OPERATION + SLACK);
    assert!(
        db_core::error::Report(&err)
            .to_string()
            .starts_with("the write may or may not have been saved"),
        "{err}"
    );
    let err = Error::from(
        single
            .execute_unprepared("INSERT INTO written VALUES (2)")
            .await
            .unwrap_err(),
    );
    assert!(err.is_outcome_unknown(), "{err:?}");
    let closing = Instant::now();
    db.close().await;
    assert!(
        closing.elapsed() <= Duration::from_secs(1) + SLACK,
        "close took {:?} with the server paused",
        closing.elapsed()
    );

    server.resume().unwrap();
    let rows = server
        .psql(
            "postgres",
            "SELECT string_agg(n::text, ',' ORDER BY n) FROM written",
        )
        .unwrap();
    assert_eq!(rows, "1,2");
}

/// Reads go to the replica; while it is paused they are answered by the
/// primary (the first one after the operation timeout, the next ones at
/// once, the replica being skipped), and they return to the replica once
/// it answers again.
#[test_support::needs(postgres)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_fall_back_to_the_primary_while_a_replica_is_paused() {
    let (primary, replica) = tokio::task::spawn_blocking(|| {
        let primary = PrivatePostgres::start("paused-replica-pw").expect("primary");
        let replica = primary.start_replica().expect("replica");
        (primary, replica)
    })
    .await
    .unwrap();
    let mut s = settings(&primary);
    s.replicas = vec![DatabaseUrl::parse(&replica.url("postgres"), "DB_REPLICA_URLS").unwrap()];
    let db = Db::connect(&s).await.unwrap();
    let on_replica = async || {
        let session = db.read().await?;
        scalar::<bool>(&session, "SELECT pg_is_in_recovery()").await
    };
    assert!(on_replica().await.unwrap(), "a read ran on the primary");

    replica.pause().unwrap();
    let mut slowest = Duration::ZERO;
    for _ in 0..10 {
        let start = Instant::now();
        assert!(!on_replica().await.unwrap(), "a read ran on the replica");
        slowest = slowest.max(start.elapsed());
    }
    assert!(slowest <= OPERATION + SLACK, "a read took {slowest:?}");
    assert!(!db.replica_status().await[0].up);

    replica.resume().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !on_replica().await.unwrap() {
        assert!(
            Instant::now() < deadline,
            "reads did not return to the replica"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    db.close().await;
}

/// `failover::host_status` (what `db check` shows) asks each host its role:
/// a server that took the login (PgBouncer, which logs clients in itself)
/// and then never answers (the PostgreSQL behind it paused) is reported as
/// not answering within `DB_CONNECT_TIMEOUT`, not waited for.
#[test_support::needs(postgres, pgbouncer)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_status_does_not_wait_for_a_server_that_took_the_login_and_stopped() {
    use db_core::failover::{Role, host_status};
    let (server, bouncer) = test_support::PgBouncer::with_private_server("paused-pw", "app").await;
    let url = DatabaseUrl::parse(&bouncer.url("app"), "DATABASE_URL").unwrap();
    let mut s = Settings::new(url);
    s.connect_timeout = Duration::from_secs(1);
    s.transaction_pooler = true;
    // Answered once: PgBouncer keeps the server connection and, for the
    // next login, the server's parameters.
    let status = host_status(&s).await;
    assert!(matches!(status[0].role, Role::Primary), "{status:?}");
    server.pause().unwrap();
    let status = tokio::time::timeout(Duration::from_secs(20), host_status(&s)).await;
    server.resume().unwrap();
    let status = status.expect("host_status waited for the paused server");
    assert!(
        matches!(&status[0].role, Role::Unreachable(why) if why.starts_with("no answer within 1s")),
        "{status:?}"
    );
    drop(bouncer);
}
