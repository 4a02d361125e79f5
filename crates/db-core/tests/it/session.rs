//! Sessions and the transaction helper, on every backend.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use db_core::{Db, Error, Session, SessionOptions};
use sea_orm::{ConnectionTrait, DbBackend, IsolationLevel, Statement};
use test_support::TestDb;

use crate::metrics;

/// A session that runs each statement on its own, on the primary.
async fn direct(db: &Db) -> Session {
    db.session(SessionOptions::single_statement())
        .await
        .unwrap()
}

async fn create_items(db: &Db) {
    direct(db)
        .await
        .execute_unprepared(
            "CREATE TABLE items (id INTEGER PRIMARY KEY, label VARCHAR(64) NOT NULL)",
        )
        .await
        .unwrap();
}

async fn insert(conn: &impl ConnectionTrait, id: i32, label: &str) -> Result<(), Error> {
    let backend = conn.get_database_backend();
    let sql = match backend {
        DbBackend::Postgres => "INSERT INTO items (id, label) VALUES ($1, $2)",
        _ => "INSERT INTO items (id, label) VALUES (?, ?)",
    };
    conn.execute_raw(Statement::from_sql_and_values(
        backend,
        sql,
        [id.into(), label.into()],
    ))
    .await?;
    Ok(())
}

async fn count(db: &Db) -> i64 {
    let backend = db.backend();
    let row = db
        .session(SessionOptions::read_only().on_primary())
        .await
        .unwrap()
        .query_one_raw(Statement::from_string(
            backend,
            "SELECT COUNT(*) FROM items",
        ))
        .await
        .unwrap()
        .unwrap();
    row.try_get_by_index::<i64>(0).unwrap()
}

test_support::backend_tests! {
    /// A read-only session refuses a write before sending it, wherever it
    /// runs (each statement on its own, on the primary, in a read-only
    /// transaction), with one line that says so; its reads go on.
    async fn read_only_sessions_refuse_writes_before_sending_them(t: TestDb) {
        create_items(&t.db).await;
        let read_only = SessionOptions::read_only();
        for options in [read_only, read_only.on_primary(), read_only.isolation(IsolationLevel::RepeatableRead)] {
            let session = t.db.session(options).await.unwrap();
            let refused = insert(&session, 1, "a").await.unwrap_err().to_string();
            assert!(refused.contains("INSERT through a read-only session: writes need a read-write one"), "{options:?}: {refused}");
            for write in ["  -- a note\n/* another */ update items SET label = 'b'", "DELETE FROM items", "DROP TABLE items"] {
                let refused = session.execute_unprepared(write).await.unwrap_err().to_string();
                assert!(refused.contains("through a read-only session"), "{options:?} {write}: {refused}");
            }
            let read = Statement::from_string(t.db.backend(), "SELECT label AS updated FROM items");
            assert!(session.query_all_raw(read).await.unwrap().is_empty());
            session.commit().await.unwrap();
        }
        // Nothing was written, and the table is still there.
        assert_eq!(count(&t.db).await, 0);
    }

    async fn committed_work_is_kept(t: TestDb) {
        create_items(&t.db).await;
        let session = t.db.begin().await.unwrap();
        insert(&session, 1, "kept").await.unwrap();
        session.commit().await.unwrap();
        assert_eq!(count(&t.db).await, 1);
    }

    async fn a_dropped_session_leaves_no_row(t: TestDb) {
        create_items(&t.db).await;
        {
            let session = t.db.begin().await.unwrap();
            insert(&session, 1, "dropped").await.unwrap();
        }
        assert_eq!(count(&t.db).await, 0);
    }

    async fn a_failing_unit_of_work_leaves_no_row(t: TestDb) {
        create_items(&t.db).await;
        let result: Result<(), Error> = t
            .db
            .transaction(SessionOptions::read_write(), |tx| async move {
                insert(&tx, 1, "first").await?;
                insert(&tx, 1, "duplicate key fails").await
            })
            .await;
        assert!(result.is_err());
        assert_eq!(count(&t.db).await, 0);
        assert_eq!(t.db.stats().transaction_retries, 0, "a constraint error is not retried");
    }

    async fn a_panicking_unit_of_work_leaves_no_row(t: TestDb) {
        create_items(&t.db).await;
        let db = t.db.clone();
        let task = tokio::spawn(async move {
            let session = db.begin().await.unwrap();
            insert(&session, 1, "before the panic").await.unwrap();
            panic!("the handler panics mid-transaction");
        });
        assert!(task.await.unwrap_err().is_panic());
        assert_eq!(count(&t.db).await, 0);
        // The pool is still healthy afterwards.
        let session = t.db.begin().await.unwrap();
        insert(&session, 2, "after").await.unwrap();
        session.commit().await.unwrap();
        assert_eq!(count(&t.db).await, 1);
    }

    async fn commit_refuses_while_a_clone_is_alive(t: TestDb) {
        create_items(&t.db).await;
        let session = t.db.begin().await.unwrap();
        let clone: Session = session.clone();
        assert!(matches!(session.commit().await, Err(Error::SessionInUse)));
        drop(clone);
        assert_eq!(count(&t.db).await, 0);
    }

    async fn read_sessions_see_committed_rows(t: TestDb) {
        create_items(&t.db).await;
        t.db.transaction(SessionOptions::read_write(), |tx| async move {
            insert(&tx, 1, "a").await?;
            insert(&tx, 2, "b").await
        })
        .await
        .unwrap();
        let read = t.db.read().await.unwrap();
        let row = read
            .query_one_raw(Statement::from_string(t.db.backend(), "SELECT COUNT(*) FROM items"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(row.try_get_by_index::<i64>(0).unwrap(), 2);
        read.commit().await.unwrap();

        let snapshot = t
            .db
            .session(SessionOptions::read_only().isolation(IsolationLevel::RepeatableRead))
            .await
            .unwrap();
        let rows = snapshot
            .query_all_raw(Statement::from_string(t.db.backend(), "SELECT label FROM items ORDER BY id"))
            .await
            .unwrap();
        assert_eq!(rows.len(), 2);
        snapshot.commit().await.unwrap();
    }

    async fn concurrent_writers_all_succeed(t: TestDb) {
        create_items(&t.db).await;
        let mut tasks = Vec::new();
        for writer in 0..16 {
            let db = t.db.clone();
            tasks.push(tokio::spawn(async move {
                for n in 0..10 {
                    let id = writer * 100 + n;
                    db.transaction(SessionOptions::read_write(), |tx| async move {
                        // Read, then write: on SQLite this is the pattern that fails
                        // with "database is locked" when two deferred transactions
                        // upgrade to writers at once.
                        tx.query_one_raw(Statement::from_string(tx.get_database_backend(), "SELECT COUNT(*) FROM items"))
                            .await?;
                        insert(&tx, id, "concurrent").await
                    })
                    .await
                    .unwrap_or_else(|e| panic!("writer {writer}: {e}"));
                }
            }));
        }
        // Readers run alongside the writers.
        for _ in 0..4 {
            let db = t.db.clone();
            tasks.push(tokio::spawn(async move {
                for _ in 0..20 {
                    let read = db.read().await.unwrap();
                    read.query_one_raw(Statement::from_string(db.backend(), "SELECT COUNT(*) FROM items"))
                        .await
                        .unwrap();
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(count(&t.db).await, 160);
    }

    async fn health_reports_backend_version_and_round_trip(t: TestDb) {
        let health = t.db.health().await.unwrap();
        assert_eq!(health.backend, db_core::url::backend_name(t.db.backend()));
        assert!(health.server_version.chars().next().is_some_and(|c| c.is_ascii_digit()), "{health:?}");
        assert!(!health.round_trip.is_zero());
        t.db.close().await;
        assert!(t.db.ping().await.unwrap_err().is_unavailable());
    }
}

/// Two SERIALIZABLE transactions in a write-skew: each reads the rows the
/// other updates. PostgreSQL aborts one with 40001; the helper runs it again
/// and counts the retry under `reason="serialization"`.
#[test_support::needs(postgres)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serialization_failures_are_retried_on_postgres() {
    let counted_before = metrics::retries("serialization");
    let t = TestDb::new(test_support::Backend::Postgres).await;
    direct(&t.db)
        .await
        .execute_unprepared(
            "CREATE TABLE doctors (id INTEGER PRIMARY KEY, on_call BOOLEAN NOT NULL);
             INSERT INTO doctors VALUES (1, true), (2, true);",
        )
        .await
        .unwrap();
    let barrier = Arc::new(tokio::sync::Barrier::new(2));
    let attempts = Arc::new(AtomicU32::new(0));
    let mut tasks = Vec::new();
    for me in [1, 2] {
        let (db, barrier, attempts) = (t.db.clone(), barrier.clone(), attempts.clone());
        tasks.push(tokio::spawn(async move {
            let first = Arc::new(AtomicU32::new(0));
            db.transaction(
                SessionOptions::read_write().isolation(IsolationLevel::Serializable),
                |tx| {
                    let (barrier, attempts, first) =
                        (barrier.clone(), attempts.clone(), first.clone());
                    async move {
                        attempts.fetch_add(1, Ordering::SeqCst);
                        tx.query_one_raw(Statement::from_string(
                            DbBackend::Postgres,
                            "SELECT COUNT(*) FROM doctors WHERE on_call",
                        ))
                        .await?;
                        // Both read before either writes, on the first attempt only.
                        if first.fetch_add(1, Ordering::SeqCst) == 0 {
                            barrier.wait().await;
                        }
                        tx.execute_raw(Statement::from_sql_and_values(
                            DbBackend::Postgres,
                            "UPDATE doctors SET on_call = false WHERE id = $1",
                            [me.into()],
                        ))
                        .await?;
                        Ok::<_, Error>(())
                    }
                },
            )
            .await
        }));
    }
    for task in tasks {
        task.await.unwrap().expect("both transactions complete");
    }
    // One abort at least; on a loaded machine the loser's retry can collide
    // with the winner's still-open transaction and be aborted again. Every
    // retry is one more run of the closure.
    let retries = t.db.stats().transaction_retries;
    assert!(retries >= 1, "no serialization failure was retried");
    assert_eq!(u64::from(attempts.load(Ordering::SeqCst)), 2 + retries);
    // Other tests may count retries too, never fewer than these.
    assert!(metrics::retries("serialization") - counted_before >= retries);
}

/// Two transactions that lock the same two rows in opposite orders: the
/// server detects the deadlock (PostgreSQL 40P01, MySQL 1213) and aborts one;
/// the helper runs it again and counts the retry under `reason="deadlock"`.
async fn deadlocks_are_retried(t: TestDb) {
    let counted_before = metrics::retries("deadlock");
    create_items(&t.db).await;
    insert(&direct(&t.db).await, 1, "a").await.unwrap();
    insert(&direct(&t.db).await, 2, "b").await.unwrap();
    let backend = t.db.backend();
    let update = match backend {
        DbBackend::Postgres => "UPDATE items SET label = 'x' WHERE id = $1",
        _ => "UPDATE items SET label = 'x' WHERE id = ?",
    };
    let barrier = Arc::new(tokio::sync::Barrier::new(2));
    let mut tasks = Vec::new();
    for (first_id, second_id) in [(1, 2), (2, 1)] {
        let (db, barrier) = (t.db.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            let attempt = Arc::new(AtomicU32::new(0));
            db.transaction(SessionOptions::read_write(), |tx| {
                let (barrier, attempt) = (barrier.clone(), attempt.clone());
                async move {
                    let lock =
                        |id: i32| Statement::from_sql_and_values(backend, update, [id.into()]);
                    tx.execute_raw(lock(first_id)).await?;
                    if attempt.fetch_add(1, Ordering::SeqCst) == 0 {
                        barrier.wait().await;
                    }
                    tx.execute_raw(lock(second_id)).await?;
                    Ok::<_, Error>(())
                }
            })
            .await
        }));
    }
    for task in tasks {
        task.await.unwrap().expect("both transactions complete");
    }
    let retries = t.db.stats().transaction_retries;
    assert!(retries >= 1);
    assert!(metrics::retries("deadlock") - counted_before >= retries);
}

#[test_support::needs(postgres)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadlocks_are_retried_on_postgres() {
    deadlocks_are_retried(TestDb::new(test_support::Backend::Postgres).await).await;
}

#[test_support::needs(mysql)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadlocks_are_retried_on_mysql() {
    deadlocks_are_retried(TestDb::new(test_support::Backend::MySql).await).await;
}

/// The transaction state a session of `options` is in, read through it:
/// isolation level, read-only, and the schemas it resolves names in.
async fn state(db: &Db, options: SessionOptions) -> (String, String, String) {
    let session = db.session(options).await.unwrap();
    let sql = "SELECT current_setting('transaction_isolation'), \
        current_setting('transaction_read_only'), current_schemas(false)::text";
    let row = (session.query_one_raw(Statement::from_string(DbBackend::Postgres, sql)))
        .await
        .unwrap()
        .unwrap();
    let text = |i| row.try_get_by_index::<String>(i).unwrap();
    let state = (text(0), text(1), text(2));
    session.rollback().await.unwrap();
    state
}

/// Through a transaction pooler, every session is a transaction set up by
/// plain statements: it still gets the isolation level and access mode it
/// asks for, and `DB_SCHEMA` means what it means on a direct connection.
#[test_support::needs(postgres, pgbouncer)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_through_a_pooler_get_their_isolation_access_and_schema() {
    let (server, bouncer) = test_support::PgBouncer::with_private_server("bouncer-pw", "app").await;
    server.psql("app", "CREATE SCHEMA ledger").unwrap();
    let at = |url: &str, pooled: bool| {
        let mut s = db_core::Settings::new(db_core::url::DatabaseUrl::parse(url, "url").unwrap());
        s.transaction_pooler = pooled;
        // Unquoted, as a startup option reads it: the schema `ledger`.
        s.schema = Some("Ledger, public".to_owned());
        s
    };
    let serializable = SessionOptions::read_write().isolation(IsolationLevel::Serializable);
    let repeatable = SessionOptions::read_only().isolation(IsolationLevel::RepeatableRead);
    let cases = [
        (serializable, ["serializable", "off"]),
        (repeatable, ["repeatable read", "on"]),
        (SessionOptions::read_write(), ["read committed", "off"]),
    ];
    // Without a pooler a plain read-only session is no transaction; with
    // one it is, and a read-only one.
    let pooled_only = [(SessionOptions::read_only(), ["read committed", "on"])];
    for (url, pooled) in [(server.url("app"), false), (bouncer.url("app"), true)] {
        let db = Db::connect(&at(&url, pooled)).await.unwrap();
        let extra = if pooled { &pooled_only[..] } else { &[] };
        for (options, [isolation, read_only]) in cases.iter().chain(extra) {
            let (got_isolation, got_read_only, schemas) = state(&db, *options).await;
            assert_eq!(
                [
                    got_isolation.as_str(),
                    got_read_only.as_str(),
                    schemas.as_str()
                ],
                [*isolation, *read_only, "{ledger,public}"],
                "{options:?}, pooled: {pooled}"
            );
        }
        db.close().await;
    }
    drop((bouncer, server));
}
