//! Host lists on real servers: which host a connection goes to, the error
//! when none fits, and following a server that turns read-only. A private
//! server with `default_transaction_read_only = on` plays the old primary.

use std::time::Duration;

use db_core::{Db, Error, Session, SessionOptions, Settings, url::DatabaseUrl};
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use test_support::{Backend, PrivatePostgres, free_port};

/// `host:port` of the shared PostgreSQL server.
fn shared() -> String {
    let target = Backend::Postgres.server_settings().url.target();
    let place = target.trim_start_matches("postgres ");
    place.split('/').next().unwrap().to_owned()
}

fn settings(hosts: &str, attrs: &str) -> Settings {
    let url = format!("postgres://postgres:pw@{hosts}/postgres?target_session_attrs={attrs}");
    let mut s = Settings::new(DatabaseUrl::parse(&url, "DATABASE_URL").unwrap());
    s.connect_deadline = None;
    s
}

async fn private_server(read_only: bool) -> PrivatePostgres {
    let server = tokio::task::spawn_blocking(|| PrivatePostgres::start("pw"))
        .await
        .unwrap()
        .expect("starting a private PostgreSQL");
    if read_only {
        turn_read_only(&server);
    }
    server
}

fn turn_read_only(server: &PrivatePostgres) {
    let on = "ALTER SYSTEM SET default_transaction_read_only = on";
    server.psql("postgres", on).unwrap();
    server.psql("postgres", "SELECT pg_reload_conf()").unwrap();
}

/// The port of the server a session on the primary pool reaches.
async fn server_port(db: &Db) -> u16 {
    let session = db
        .session(SessionOptions::read_only().on_primary())
        .await
        .unwrap();
    let sql = "SELECT current_setting('port')";
    let row = session
        .query_one_raw(Statement::from_string(DbBackend::Postgres, sql))
        .await
        .unwrap()
        .unwrap();
    row.try_get_by_index::<String>(0).unwrap().parse().unwrap()
}

fn shared_port() -> u16 {
    shared().rsplit(':').next().unwrap().parse().unwrap()
}

#[test_support::needs(postgres)]
#[tokio::test]
async fn a_closed_port_first_in_the_list_is_passed_over() {
    let closed = free_port().unwrap();
    let s = settings(&format!("127.0.0.1:{closed},{}", shared()), "any");
    let db = Db::connect(&s).await.unwrap();
    assert_eq!(server_port(&db).await, shared_port());
    db.close().await;
}

#[tokio::test]
async fn no_host_up_names_each_host_and_why_without_the_password() {
    let (a, b) = (free_port().unwrap(), free_port().unwrap());
    let s = settings(&format!("127.0.0.1:{a},[::1]:{b}"), "read-write");
    let err = Db::connect(&s).await.unwrap_err();
    assert!(matches!(err, Error::Unreachable { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.starts_with(&format!(
            "cannot connect to postgres 127.0.0.1:{a},[::1]:{b}/postgres: no host fits target_session_attrs=read-write: \
             127.0.0.1:{a} connection refused, [::1]:{b} "
        )),
        "{message}"
    );
    assert!(!message.contains("pw@"), "{message}");
}

#[test_support::needs(postgres)]
#[tokio::test]
async fn read_write_and_read_only_pick_the_host_that_fits() {
    let private = private_server(true).await;
    let hosts = format!("127.0.0.1:{},{}", private.port(), shared());
    let db = Db::connect(&settings(&hosts, "read-write")).await.unwrap();
    assert_eq!(server_port(&db).await, shared_port());
    db.close().await;
    let db = Db::connect(&settings(&hosts, "read-only")).await.unwrap();
    assert_eq!(server_port(&db).await, private.port());
    db.close().await;
    // The other way round, read-only still finds the private server.
    let hosts = format!("{},127.0.0.1:{}", shared(), private.port());
    let db = Db::connect(&settings(&hosts, "read-only")).await.unwrap();
    assert_eq!(server_port(&db).await, private.port());
    db.close().await;
}

/// Writes through `Db::transaction` keep succeeding when the host they go
/// to turns read-only: the old connections are dropped, and the work lands
/// on the host that accepts writes.
#[test_support::needs(postgres)]
#[tokio::test]
async fn writes_follow_a_host_that_turns_read_only() {
    let private = private_server(false).await;
    let table = format!("failover_writes_{}", std::process::id());
    let create = format!("CREATE TABLE IF NOT EXISTS {table} (n int)");
    private.psql("postgres", &create).unwrap();
    let shared_db = Db::connect(&Backend::Postgres.server_settings())
        .await
        .unwrap();
    shared_db.conn().execute_unprepared(&create).await.unwrap();

    let hosts = format!("127.0.0.1:{},{}", private.port(), shared());
    let mut s = settings(&hosts, "read-write");
    s.max_connections = 4;
    s.min_connections = 4;
    s.application_name = Some(table.clone());
    let db = Db::connect(&s).await.unwrap();
    let write = |n: i32| {
        let (db, table) = (db.clone(), table.clone());
        async move {
            db.transaction(SessionOptions::read_write(), |tx| {
                let sql =
                    format!("INSERT INTO {table} VALUES ({n}) RETURNING current_setting('port')");
                async move {
                    let row = tx
                        .query_one_raw(Statement::from_string(DbBackend::Postgres, sql))
                        .await?
                        .unwrap();
                    Ok::<_, Error>(row.try_get_by_index::<String>(0)?)
                }
            })
            .await
        }
    };
    // Several connections are pooled on the private server (min_connections).
    for n in 0..4 {
        assert_eq!(write(n).await.unwrap(), private.port().to_string());
    }
    // All of them: a connection that the pool opened after the switch would
    // find the server read-only and move the pool before the next write.
    let sessions =
        format!("SELECT count(*) FROM pg_stat_activity WHERE application_name = '{table}'");
    while private.psql("postgres", &sessions).unwrap() != "4" {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    turn_read_only(&private);
    // The server applies the reload a moment later.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let port = write(10).await.expect("the write follows the failover");
    assert_eq!(port, shared_port().to_string());
    // That write either found its connection's host read-only and ran
    // again, or (on a busy machine) a connection opened in the meantime had
    // already found it so and moved the pool: both follow the failover.
    let retries = db.stats().transaction_retries;
    // Every later write gets a connection to the writable host at once:
    // none of the connections pooled on the old host is handed out again.
    for n in 11..20 {
        let port = write(n).await.unwrap();
        assert_eq!(port, shared_port().to_string(), "write {n}");
    }
    assert_eq!(db.stats().transaction_retries, retries);
    assert_eq!(server_port(&db).await, shared_port());
    db.close().await;
    let drop = format!("DROP TABLE {table}");
    shared_db.conn().execute_unprepared(&drop).await.unwrap();
    shared_db.close().await;
}

/// `primary`, `standby` and `prefer-standby` on a primary and its streaming
/// standby; a replica URL listing both hosts with `standby` reads from the
/// standby.
#[test_support::needs(postgres)]
#[tokio::test]
async fn standby_and_primary_pick_by_recovery_and_replica_lists_find_the_standby() {
    let primary = private_server(false).await;
    let standby = tokio::task::spawn_blocking(move || {
        let standby = primary.start_replica();
        (primary, standby)
    });
    let (primary, standby) = standby.await.unwrap();
    let standby = standby.expect("starting a standby");
    let hosts = format!("127.0.0.1:{},127.0.0.1:{}", primary.port(), standby.port());
    for (attrs, port) in [
        ("standby", standby.port()),
        ("prefer-standby", standby.port()),
        ("primary", primary.port()),
        ("read-only", standby.port()),
    ] {
        let db = Db::connect(&settings(&hosts, attrs)).await.unwrap();
        assert_eq!(server_port(&db).await, port, "{attrs}");
        db.close().await;
    }

    let mut s = settings(&format!("127.0.0.1:{}", primary.port()), "any");
    let replica = format!("postgres://postgres:pw@{hosts}/postgres?target_session_attrs=standby");
    s.replicas = vec![DatabaseUrl::parse(&replica, "DB_REPLICA_URLS").unwrap()];
    let db = Db::connect(&s).await.unwrap();
    for _ in 0..5 {
        let session = db.read().await.unwrap();
        let sql = "SELECT pg_is_in_recovery()";
        let row = session
            .query_one_raw(Statement::from_string(DbBackend::Postgres, sql))
            .await
            .unwrap()
            .unwrap();
        assert!(
            row.try_get_by_index::<bool>(0).unwrap(),
            "the read went to the standby"
        );
    }
    db.close().await;
}

/// With no host taking writes, a write gives up after `DB_FAILOVER_TIMEOUT`
/// (plus at most one acquire timeout) with an error that means "unavailable"
/// (HTTP 503), not a database error.
#[test_support::needs(postgres)]
#[tokio::test]
async fn a_write_with_no_writable_host_is_unavailable_after_the_failover_timeout() {
    let private = private_server(false).await;
    let mut s = settings(&format!("127.0.0.1:{}", private.port()), "read-write");
    s.failover_timeout = Duration::from_secs(1);
    s.acquire_timeout = Duration::from_secs(1);
    let db = Db::connect(&s).await.unwrap();
    turn_read_only(&private);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let start = std::time::Instant::now();
    let result = db
        .transaction(SessionOptions::read_write(), |tx| async move {
            tx.execute_unprepared("CREATE TABLE never_created (n int)")
                .await?;
            Ok::<_, Error>(())
        })
        .await;
    let err = result.unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    let waited = start.elapsed();
    assert!(waited >= Duration::from_secs(1), "{waited:?}");
    assert!(waited < Duration::from_secs(5), "{waited:?}");
    db.close().await;
}

/// A connection lost during COMMIT leaves the outcome unknown: the work is
/// not run again (it could write twice), and the error means "unavailable".
/// A deferred constraint trigger ends the session at COMMIT.
#[test_support::needs(postgres)]
#[tokio::test]
async fn a_connection_lost_during_commit_is_not_retried() {
    let private = private_server(false).await;
    let setup = "CREATE TABLE commit_dies (n int); \
        CREATE FUNCTION die() RETURNS trigger LANGUAGE plpgsql AS \
        $$ BEGIN PERFORM pg_terminate_backend(pg_backend_pid()); RETURN NULL; END $$; \
        CREATE CONSTRAINT TRIGGER die_at_commit AFTER INSERT ON commit_dies \
        DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION die()";
    private.psql("postgres", setup).unwrap();
    let s = settings(&format!("127.0.0.1:{}", private.port()), "read-write");
    let db = Db::connect(&s).await.unwrap();
    let attempts = std::sync::atomic::AtomicU32::new(0);
    let result = db
        .transaction(SessionOptions::read_write(), |tx| {
            attempts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            async move {
                tx.execute_unprepared("INSERT INTO commit_dies VALUES (1)")
                    .await?;
                Ok::<_, Error>(())
            }
        })
        .await;
    let err = result.unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    assert_eq!(attempts.into_inner(), 1);
    db.close().await;
}

/// Work on a plain session (which is not run again) that finds the chosen
/// host gone starts the search too, so later work reaches the host that
/// fits: without it, new connections would go on being refused by the
/// stopped server.
#[test_support::needs(postgres)]
#[tokio::test]
async fn plain_sessions_move_on_once_the_chosen_host_is_gone() {
    let server = private_server(false).await;
    let hosts = format!("127.0.0.1:{},{}", server.port(), shared());
    let mut s = settings(&hosts, "read-write");
    s.acquire_timeout = Duration::from_secs(1);
    let db = Db::connect(&s).await.unwrap();
    assert_eq!(server_port(&db).await, server.port());
    server.stop(test_support::StopMode::Immediate).unwrap();
    let port = async || {
        let session = db
            .session(SessionOptions::read_only().on_primary())
            .await
            .ok()?;
        let sql = "SELECT current_setting('port')";
        let row = session
            .query_one_raw(Statement::from_string(DbBackend::Postgres, sql))
            .await
            .ok()??;
        row.try_get_by_index::<String>(0).ok()?.parse::<u16>().ok()
    };
    let started = std::time::Instant::now();
    let reached = loop {
        match port().await {
            Some(port) => break port,
            None if started.elapsed() < Duration::from_secs(30) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            None => panic!("plain sessions still failed 30 s after the server stopped"),
        }
    };
    assert_eq!(reached, shared_port());
    db.close().await;
}

/// A pool with every connection in use is busy, not failed over: the waits
/// that end without a connection (opening a session, and in the retrying
/// transaction helper) leave its connections alone, where closing and
/// reopening them all would add to the load.
#[test_support::needs(postgres)]
#[tokio::test]
async fn a_busy_pool_keeps_its_connections() {
    let mut s = settings(&shared(), "read-write");
    s.max_connections = 1;
    s.acquire_timeout = Duration::from_millis(300);
    s.failover_timeout = Duration::from_secs(1);
    let db = Db::connect(&s).await.unwrap();
    let pid = async |session: &Session| -> i32 {
        let sql = Statement::from_string(DbBackend::Postgres, "SELECT pg_backend_pid()");
        let row = session.query_one_raw(sql).await.unwrap().unwrap();
        row.try_get_by_index(0).unwrap()
    };
    let holder = db.begin().await.unwrap();
    let first = pid(&holder).await;
    let busy = db.begin().await.unwrap_err();
    assert!(matches!(busy, Error::PoolTimeout), "{busy:?}");
    let waited = db
        .transaction(SessionOptions::read_write(), |tx| async move {
            tx.execute_unprepared("SELECT 1").await?;
            Ok::<_, Error>(())
        })
        .await
        .unwrap_err();
    assert!(waited.is_unavailable(), "{waited:?}");
    holder.commit().await.unwrap();
    let again = db.begin().await.unwrap();
    assert_eq!(
        pid(&again).await,
        first,
        "the busy pool's connection was replaced"
    );
    again.commit().await.unwrap();
    db.close().await;
}
