//! Connecting: waiting for a server, failing fast when waiting cannot help,
//! TLS and per-connection settings, passwords that need encoding.

use std::time::{Duration, Instant};

use db_core::{Db, Error, SessionOptions, Settings, Source, url::DatabaseUrl};
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use test_support::{Backend, PrivatePostgres, StopMode, TestDb, free_port};

fn settings(url: &str) -> Settings {
    Settings::new(DatabaseUrl::parse(url, "DATABASE_URL").unwrap())
}

async fn scalar(db: &Db, sql: &str) -> String {
    let row = db
        .session(SessionOptions::read_only().on_primary())
        .await
        .unwrap()
        .query_one_raw(Statement::from_string(db.backend(), sql))
        .await
        .unwrap()
        .unwrap();
    row.try_get_by_index::<String>(0)
        .or_else(|_| row.try_get_by_index::<bool>(0).map(|b| b.to_string()))
        .unwrap()
}

#[tokio::test]
async fn an_unreachable_server_fails_after_the_deadline_with_the_reason() {
    let port = free_port().unwrap();
    let mut s = settings(&format!("postgres://u:secret@127.0.0.1:{port}/d"));
    s.connect_deadline = Some(Duration::from_millis(1500));
    let start = Instant::now();
    let err = Db::connect(&s).await.unwrap_err();
    let waited = start.elapsed();
    let message = err.to_string();
    assert!(matches!(err, Error::Unreachable { .. }), "{err:?}");
    assert!(
        message.starts_with(&format!(
            "cannot connect to postgres 127.0.0.1:{port}/d: connection refused"
        )),
        "{message}"
    );
    assert!(!message.contains("secret"));
    assert!(
        waited >= Duration::from_millis(1500),
        "gave up early, after {waited:?}"
    );
}

#[tokio::test]
async fn ipv6_hosts_are_dialled_as_addresses_not_names() {
    let port = free_port().unwrap();
    let source = Source::new()
        .var("DB_HOST", "::1")
        .var("DB_PORT", port.to_string())
        .var("DB_NAME", "d")
        .var("DB_USER", "u")
        .var("DB_CONNECT_DEADLINE", "0s");
    let s = Settings::load(&source).unwrap();
    let message = Db::connect(&s).await.unwrap_err().to_string();
    // A name lookup of "[::1]" would fail with "failed to lookup address".
    assert!(message.contains("connection refused"), "{message}");
}

/// An in-memory database lives in its one connection: it outlasts the
/// idle timeout and the maximum lifetime, which would close that connection.
#[tokio::test]
async fn an_in_memory_sqlite_database_works_and_outlasts_the_pools_timeouts() {
    let mut s = settings("sqlite::memory:");
    s.idle_timeout = Some(Duration::from_millis(100));
    s.max_lifetime = Some(Duration::from_millis(200));
    let db = Db::connect(&s).await.unwrap();
    db.session(SessionOptions::single_statement())
        .await
        .unwrap()
        .execute_unprepared("CREATE TABLE t (x INTEGER)")
        .await
        .unwrap();
    let session = db.begin().await.unwrap();
    session
        .execute_unprepared("INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    session.commit().await.unwrap();
    // Several rounds of the pool's upkeep, which runs every 100 ms here.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let read = db.read().await.unwrap();
    let rows = read
        .query_all_raw(Statement::from_string(DbBackend::Sqlite, "SELECT x FROM t"))
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
}

#[tokio::test]
async fn sqlite_in_a_missing_folder_says_how_to_create_it() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/missing/x.db", dir.path().display());
    let message = Db::connect(&settings(&url)).await.unwrap_err().to_string();
    assert!(
        message.contains("(add ?mode=rwc to the URL to create it)"),
        "{message}"
    );
    // With mode=rwc, the folder and the file are created.
    let db = Db::connect(&settings(&format!("{url}?mode=rwc")))
        .await
        .unwrap();
    db.ping().await.unwrap();
    assert!(dir.path().join("missing/x.db").exists());
}

#[tokio::test]
async fn sqlite_runs_in_wal_mode_with_foreign_keys() {
    let t = TestDb::new(Backend::Sqlite).await;
    assert_eq!(scalar(&t.db, "PRAGMA journal_mode").await, "wal");
    let row =
        t.db.read()
            .await
            .unwrap()
            .query_one_raw(Statement::from_string(
                DbBackend::Sqlite,
                "PRAGMA foreign_keys",
            ))
            .await
            .unwrap()
            .unwrap();
    assert_eq!(row.try_get_by_index::<i32>(0).unwrap(), 1);
    // The read pool cannot write (a read session would not send this).
    let err = (t.db.reader())
        .execute_unprepared("CREATE TABLE nope (x INTEGER)")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("readonly"), "{err}");
}

#[test_support::needs(postgres)]
#[tokio::test]
async fn db_lock_timeout_stops_a_statement_waiting_for_a_lock() {
    let server = Backend::Postgres.server_settings();
    let source = Source::new()
        .var("DATABASE_URL", server.url.expose())
        .var("DB_LOCK_TIMEOUT", "300ms");
    let db = Db::connect(&Settings::load(&source).unwrap())
        .await
        .unwrap();
    assert_eq!(scalar(&db, "SHOW lock_timeout").await, "300ms");
    let holder = db.begin().await.unwrap();
    let lock = "SELECT pg_advisory_xact_lock(727274)";
    holder.execute_unprepared(lock).await.unwrap();
    let waiter = db.begin().await.unwrap();
    let start = Instant::now();
    let err = waiter.execute_unprepared(lock).await.unwrap_err();
    assert!(err.to_string().contains("lock timeout"), "{err}");
    assert!(start.elapsed() < Duration::from_secs(5));
}

/// What `show` answers on a connection made without `var`, then with `var`
/// set to `value`.
async fn shown_without_and_with(show: &str, var: &str, value: &str) -> (String, String) {
    let server = Backend::Postgres.server_settings();
    let source = Source::new().var("DATABASE_URL", server.url.expose());
    let mut shown = Vec::new();
    for source in [source.clone(), source.var(var, value)] {
        let db = Db::connect(&Settings::load(&source).unwrap())
            .await
            .unwrap();
        shown.push(scalar(&db, show).await);
    }
    let [without, with] = <[String; 2]>::try_from(shown).unwrap();
    (without, with)
}

#[test_support::needs(postgres)]
#[tokio::test]
async fn db_idle_in_transaction_timeout_is_set_on_the_server_and_off_by_default() {
    let show = "SHOW idle_in_transaction_session_timeout";
    let shown = shown_without_and_with(show, "DB_IDLE_IN_TRANSACTION_TIMEOUT", "90s").await;
    assert_eq!(shown, ("0".to_owned(), "90s".to_owned()));
}

/// The server takes whole milliseconds, where 0 is off: a timeout under a
/// millisecond is rounded up, never turned off.
#[test_support::needs(postgres)]
#[tokio::test]
async fn a_timeout_under_a_millisecond_is_one_not_off() {
    let shown = shown_without_and_with("SHOW lock_timeout", "DB_LOCK_TIMEOUT", "500us").await;
    assert_eq!(shown, ("0".to_owned(), "1ms".to_owned()));
}

#[test_support::needs(postgres)]
#[tokio::test]
async fn db_tcp_keepalive_is_the_servers_keepalive_idle_time() {
    let show = "SHOW tcp_keepalives_idle";
    let (default, set) = shown_without_and_with(show, "DB_TCP_KEEPALIVE", "45s").await;
    // The server shows this one in seconds, without a unit; unset, the
    // operating system's default.
    assert_eq!(set, "45");
    assert_ne!(default, "45");
}

#[test_support::needs(postgres)]
#[tokio::test]
async fn postgres_connections_carry_the_session_settings() {
    let mut s = Backend::Postgres.server_settings();
    s.statement_timeout = Some(Duration::from_millis(2500));
    // The server's timeout, not the client's, is to end the statement.
    s.operation_timeout = None;
    s.application_name = Some("db-core-test".to_owned());
    s.schema = Some("pg_catalog,public".to_owned());
    let db = Db::connect(&s).await.unwrap();
    assert_eq!(scalar(&db, "SHOW statement_timeout").await, "2500ms");
    assert_eq!(scalar(&db, "SHOW application_name").await, "db-core-test");
    assert_eq!(scalar(&db, "SHOW search_path").await, "pg_catalog,public");
    // The timeout is enforced.
    let err = db
        .session(SessionOptions::single_statement())
        .await
        .unwrap()
        .execute_unprepared("SELECT pg_sleep(10)")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("statement timeout"), "{err}");
}

#[test_support::needs(postgres)]
#[tokio::test]
async fn ssl_modes_are_honoured_on_postgres() {
    let base = Backend::Postgres.server_settings();
    let ssl_in_use = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()";
    let mut s = base.clone();
    s.ssl_mode = Some(db_core::url::SslMode::Require);
    let db = Db::connect(&s).await.unwrap();
    assert_eq!(scalar(&db, ssl_in_use).await, "true");

    let mut s = base.clone();
    s.ssl_mode = Some(db_core::url::SslMode::Disable);
    let db = Db::connect(&s).await.unwrap();
    assert_eq!(scalar(&db, ssl_in_use).await, "false");

    // Unset, to a loopback server (which has TLS on): no TLS, unless the URL
    // asks for it.
    assert!(base.ssl_mode.is_none() && base.url.target().contains("127.0.0.1"));
    let db = Db::connect(&base).await.unwrap();
    assert_eq!(scalar(&db, ssl_in_use).await, "false");
    let mut s = base.clone();
    s.url = db_core::url::DatabaseUrl::parse(
        &format!("{}?sslmode=require", base.url.expose()),
        "DATABASE_URL",
    )
    .unwrap();
    let db = Db::connect(&s).await.unwrap();
    assert_eq!(scalar(&db, ssl_in_use).await, "true");

    // The test server's certificate is self-signed: verify-full refuses it at
    // once instead of retrying until the deadline.
    let mut s = base;
    s.ssl_mode = Some(db_core::url::SslMode::VerifyFull);
    s.connect_deadline = Some(Duration::from_secs(30));
    let start = Instant::now();
    let err = Db::connect(&s).await.unwrap_err();
    assert!(matches!(err, Error::Rejected { .. }), "{err:?}");
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "it retried a TLS failure"
    );
}

#[test_support::needs(postgres)]
#[tokio::test]
async fn an_unknown_database_fails_at_once_and_says_so() {
    let mut s = Backend::Postgres.server_settings();
    s.url = s.url.with_database("tracker_no_such_database");
    s.connect_deadline = Some(Duration::from_secs(30));
    let start = Instant::now();
    let err = Db::connect(&s).await.unwrap_err();
    assert!(matches!(err, Error::UnknownDatabase { .. }), "{err:?}");
    assert!(err.to_string().ends_with(
        "database \"tracker_no_such_database\" does not exist (create it, or check DB_NAME or DATABASE_URL; for migrations, DB_MIGRATION_URL when it is set)"
    ));
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "it retried an unknown database"
    );
}

/// The seed's parts with a password full of URL syntax reach a server that
/// checks passwords (scram-sha-256), for the superuser and for a new role.
#[test_support::needs(postgres)]
#[tokio::test]
async fn hostile_passwords_reach_a_password_checking_server() {
    let password = "p@ss:w/rd?#%&=";
    let server = tokio::task::spawn_blocking(move || PrivatePostgres::start(password))
        .await
        .unwrap()
        .expect("starting a private PostgreSQL");
    let role_password = "sp ace/ü@:?#";
    server
        .psql(
            "postgres",
            &format!("CREATE ROLE \"app user\" LOGIN PASSWORD '{role_password}'"),
        )
        .unwrap();
    for (user, pass) in [("postgres", password), ("app user", role_password)] {
        let source = Source::new()
            .var("DB_HOST", "127.0.0.1")
            .var("DB_PORT", server.port().to_string())
            .var("DB_NAME", "postgres")
            .var("DB_USER", user)
            .var("DB_PASS", pass);
        let db = Db::connect(&Settings::load(&source).unwrap())
            .await
            .unwrap();
        assert_eq!(scalar(&db, "SELECT current_user::text").await, user);
        db.close().await;
    }

    // A wrong password is an authentication error, reported at once.
    let source = Source::new()
        .var("DB_HOST", "127.0.0.1")
        .var("DB_PORT", server.port().to_string())
        .var("DB_NAME", "postgres")
        .var("DB_USER", "postgres")
        .var("DB_PASS", "wrong-password");
    let start = Instant::now();
    let err = Db::connect(&Settings::load(&source).unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Auth { .. }), "{err:?}");
    let message = err.to_string();
    assert!(!message.contains("wrong-password"));
    assert!(
        message.ends_with("(check DB_USER and DB_PASS, or DATABASE_URL; for migrations, DB_MIGRATION_URL when it is set)"),
        "{message}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "it retried bad credentials"
    );

    // A password changed under a running application: the pool's next
    // connection is refused, which the request did not cause (a 503, not
    // a 500) and which is no failover; the error does not show the password.
    let mut settings = Settings::load(
        &source
            .var("DB_USER", "app user")
            .var("DB_PASS", role_password),
    )
    .unwrap();
    settings.min_connections = 0;
    let db = Db::connect(&settings).await.unwrap();
    let rotate = "ALTER ROLE \"app user\" PASSWORD 'rotated-pw'; \
        SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'app user'";
    server.psql("postgres", rotate).unwrap();
    let refused = db
        .read()
        .await
        .unwrap()
        .query_one_raw(Statement::from_string(DbBackend::Postgres, "SELECT 1"))
        .await;
    let err = Error::from(refused.unwrap_err());
    assert!(err.is_unavailable(), "{err:?}");
    assert!(
        err.to_string()
            .contains("the server refused a new connection"),
        "{err}"
    );
    // No failover: trying again would meet the same refusal.
    assert_eq!(db_core::error::Retryable::retry_reason(&err), None);
    assert!(!format!("{err} {err:?}").contains(role_password));
    db.close().await;
}

/// A server that comes up inside the connect deadline is waited for.
#[test_support::needs(postgres)]
#[tokio::test]
async fn a_server_coming_up_inside_the_deadline_is_waited_for() {
    let server = tokio::task::spawn_blocking(|| PrivatePostgres::init("pw"))
        .await
        .unwrap()
        .expect("initialising a private PostgreSQL");
    let server = std::sync::Arc::new(server);
    let mut s = settings(&server.url("postgres"));
    s.connect_deadline = Some(Duration::from_secs(60));
    let starter = {
        let server = server.clone();
        std::thread::spawn(move || {
            // The server starts a while after the application does.
            std::thread::sleep(Duration::from_millis(1500));
            server.start_again()
        })
    };
    let start = Instant::now();
    let db = Db::connect(&s)
        .await
        .expect("connects once the server is up");
    assert!(start.elapsed() >= Duration::from_millis(1500));
    db.ping().await.unwrap();
    starter.join().unwrap().unwrap();
    db.close().await;
}

/// The server connections of `application_name` "floor".
fn floor_connections(server: &PrivatePostgres) -> u32 {
    let sql = "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'floor'";
    server.psql("postgres", sql).unwrap().parse().unwrap()
}

/// Polls until the pool has `n` connections on `server`, for at most 20 s.
async fn wait_for_floor(server: &PrivatePostgres, n: u32, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while floor_connections(server) != n {
        assert!(
            Instant::now() < deadline,
            "{what}: not {n} connections in 20 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `DB_MIN_CONNECTIONS` connections are open without a request, and again
/// after the server comes back; and a pool that lost them to a stopped
/// server closes at once. (sqlx's own `min_connections` would keep the close
/// waiting for about 5 minutes, reconnecting to the stopped server.)
#[test_support::needs(postgres)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_floor_comes_back_and_never_holds_up_close() {
    let server = tokio::task::spawn_blocking(|| PrivatePostgres::start("pw"))
        .await
        .unwrap()
        .expect("starting a private PostgreSQL");
    let mut s = settings(&server.url("postgres"));
    s.application_name = Some("floor".to_owned());
    (s.min_connections, s.max_connections) = (2, 4);
    s.acquire_timeout = Duration::from_secs(1);
    let db = Db::connect(&s).await.unwrap();
    wait_for_floor(&server, 2, "after connecting").await;

    // Each ping takes one of the pooled connections and finds it broken.
    let lose_connections = async || {
        server.stop(StopMode::Immediate).unwrap();
        for _ in 0..3 {
            assert!(db.ping().await.is_err(), "a ping with the server stopped");
        }
    };
    lose_connections().await;
    server.start_again().unwrap();
    wait_for_floor(&server, 2, "after the restart").await;

    lose_connections().await;
    tokio::time::timeout(Duration::from_secs(10), db.close())
        .await
        .expect("the pool closes with its server stopped");
}
