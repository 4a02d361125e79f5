//! Named locks: one holder at a time per database, a bounded wait that names
//! the lock, and the work's own transaction.

use std::time::{Duration, Instant};

use db_core::{Db, Error, Lock, Settings, url::DatabaseUrl};
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use test_support::{PgBouncer, TestDb};
use tokio::sync::oneshot;

/// A second handle on the test's database, as another process would have.
/// Its SQLite attempts at the lock give up quickly, so the lock's timeout
/// is what bounds the wait.
async fn other_process(t: &TestDb) -> Db {
    let mut settings = t.settings.clone();
    settings.sqlite_busy_timeout = Duration::from_millis(50);
    Db::connect(&settings).await.unwrap()
}

/// Holds `name` on `db` in a task until the returned sender is dropped or
/// fires; returns once the lock is held.
async fn hold(db: &Db, name: &str) -> (oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let (held_tx, held_rx) = oneshot::channel();
    let (release_tx, release_rx) = oneshot::channel::<()>();
    let db = db.clone();
    let lock = Lock::new(name, Duration::from_secs(10));
    let task = tokio::spawn(async move {
        db.with_lock(&lock, |_session| async move {
            held_tx.send(()).unwrap();
            let _ = release_rx.await;
            Ok::<_, Error>(())
        })
        .await
        .unwrap();
    });
    held_rx.await.unwrap();
    (release_tx, task)
}

async fn count(db: &Db, table: &str) -> i64 {
    let session = db.read().await.unwrap();
    let row = session
        .query_one_raw(Statement::from_string(
            db.backend(),
            format!("SELECT COUNT(*) FROM {table}"),
        ))
        .await
        .unwrap()
        .unwrap();
    row.try_get_by_index::<i64>(0).unwrap()
}

test_support::backend_tests! {
    async fn a_held_lock_is_waited_for_within_the_timeout_then_named(t: TestDb) {
        let (release, holder) = hold(&t.db, "test").await;
        let other = other_process(&t).await;
        let start = Instant::now();
        let err = other
            .with_lock(&Lock::new("test", Duration::from_millis(500)), |_session| async move {
                Ok::<_, Error>(())
            })
            .await
            .unwrap_err();
        assert!(start.elapsed() >= Duration::from_millis(500), "{:?}", start.elapsed());
        let message = err.to_string();
        assert!(matches!(err, Error::LockTimeout { .. }), "{err:?}");
        assert!(message.starts_with("timed out after "), "{message}");
        assert!(message.contains("waiting for the test lock ("), "{message}");
        assert!(message.contains(t.db.target()), "{message}");

        // Once released, the other process takes it and its work runs.
        release.send(()).unwrap();
        holder.await.unwrap();
        let value = other
            .with_lock(&Lock::new("test", Duration::from_secs(10)), |_session| async move {
                Ok::<_, Error>(42)
            })
            .await
            .unwrap();
        assert_eq!(value, 42);
        other.close().await;
    }

    async fn work_commits_on_ok_and_its_error_comes_back(t: TestDb) {
        let lock = Lock::new("test", Duration::from_secs(10));
        t.db.with_lock(&lock, |session| async move {
            session.execute_unprepared("CREATE TABLE items (id INTEGER PRIMARY KEY)").await?;
            session.execute_unprepared("INSERT INTO items (id) VALUES (1)").await?;
            Ok::<_, Error>(())
        })
        .await
        .unwrap();
        assert_eq!(count(&t.db, "items").await, 1);

        let err = t
            .db
            .with_lock(&lock, |session| async move {
                session.execute_unprepared("INSERT INTO items (id) VALUES (2)").await?;
                // A duplicate key: the work fails.
                session.execute_unprepared("INSERT INTO items (id) VALUES (1)").await?;
                Ok::<_, Error>(())
            })
            .await
            .unwrap_err();
        assert!(err.db_err().is_some(), "{err:?}");
        // In a transaction on PostgreSQL and SQLite: the failed work left nothing.
        // MySQL's work runs without one.
        let expected = if t.db.backend() == DbBackend::MySql { 2 } else { 1 };
        assert_eq!(count(&t.db, "items").await, expected);
    }

    async fn locks_of_other_names_do_not_wait(t: TestDb) {
        let (release, holder) = hold(&t.db, "one").await;
        let other = other_process(&t).await;
        let taken = other
            .with_lock(&Lock::new("two", Duration::from_millis(500)), |_session| async move {
                Ok::<_, Error>(())
            })
            .await;
        if t.db.backend() == DbBackend::Sqlite {
            // One exclusive transaction per database: every name is the same lock.
            assert!(matches!(taken, Err(Error::LockTimeout { .. })), "{taken:?}");
        } else {
            taken.unwrap();
        }
        release.send(()).unwrap();
        holder.await.unwrap();
        other.close().await;
    }
}

/// The same name on another database of the same server is another lock.
#[test_support::needs(postgres, mysql)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_is_per_database() {
    for backend in [
        test_support::Backend::Postgres,
        test_support::Backend::MySql,
    ] {
        let first = TestDb::new(backend).await;
        let second = TestDb::new(backend).await;
        let (release, holder) = hold(&first.db, "test").await;
        second
            .db
            .with_lock(
                &Lock::new("test", Duration::from_millis(500)),
                |_session| async { Ok::<_, Error>(()) },
            )
            .await
            .unwrap_or_else(|e| panic!("{backend:?}: {e}"));
        release.send(()).unwrap();
        holder.await.unwrap();
    }
}

/// SQLite schema changes: foreign keys are off while the work runs, so a
/// referenced table can be rebuilt, and checked before the commit.
#[tokio::test]
async fn sqlite_schema_changes_rebuild_referenced_tables_and_check_foreign_keys() {
    let t = TestDb::new(test_support::Backend::Sqlite).await;
    let setup = t.db.begin().await.unwrap();
    setup
        .execute_unprepared(
            "CREATE TABLE parents (id INTEGER PRIMARY KEY);
             CREATE TABLE children (id INTEGER PRIMARY KEY, parent_id INTEGER NOT NULL REFERENCES parents (id));
             INSERT INTO parents (id) VALUES (1);
             INSERT INTO children (id, parent_id) VALUES (1, 1);",
        )
        .await
        .unwrap();
    setup.commit().await.unwrap();
    let lock = Lock::new("schema", Duration::from_secs(10)).schema_change();

    // A rebuild of the referenced table: drop, create, copy back.
    t.db.with_lock(&lock, |session| async move {
        session
            .execute_unprepared(
                "CREATE TABLE parents_new (id INTEGER PRIMARY KEY, name TEXT NOT NULL DEFAULT '');
                 INSERT INTO parents_new (id) SELECT id FROM parents;
                 DROP TABLE parents;
                 ALTER TABLE parents_new RENAME TO parents;",
            )
            .await?;
        Ok::<_, Error>(())
    })
    .await
    .unwrap();
    assert_eq!(count(&t.db, "children").await, 1);

    // A change that leaves a dangling reference is refused and rolled back.
    let err =
        t.db.with_lock(&lock, |session| async move {
            session.execute_unprepared("DELETE FROM parents").await?;
            Ok::<_, Error>(())
        })
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::ForeignKeyViolation { table } if table == "children"),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "the changes leave rows in children that violate a foreign key; nothing was applied"
    );
    assert_eq!(count(&t.db, "parents").await, 1);

    // Foreign keys are on again afterwards.
    assert_refused_dangling(&t.db, "after the schema change").await;

    // A schema change given up while it waits for another writer (its
    // future dropped) leaves them on for the handle's other work too.
    let other = other_process(&t).await;
    let writing = other.begin().await.unwrap();
    writing
        .execute_unprepared("INSERT INTO parents (id) VALUES (2)")
        .await
        .unwrap();
    let given_up = tokio::time::timeout(
        Duration::from_millis(500),
        t.db.with_lock(&lock, |_session| async { Ok::<_, Error>(()) }),
    )
    .await;
    assert!(given_up.is_err(), "the schema change did not wait");
    writing.rollback().await.unwrap();
    assert_refused_dangling(&t.db, "after a schema change was given up").await;
}

/// A row of `children` whose parent does not exist is refused by its
/// foreign key, `when`.
async fn assert_refused_dangling(db: &Db, when: &str) {
    let session = db.begin().await.unwrap();
    let dangling = session
        .execute_unprepared("INSERT INTO children (id, parent_id) VALUES (2, 99)")
        .await
        .map(|_| ())
        .map_err(|e| e.to_string());
    let refused = dangling.as_ref().is_err_and(|e| e.contains("FOREIGN KEY"));
    assert!(refused, "a dangling row {when}: {dangling:?}");
    session.rollback().await.unwrap();
}

/// Through a transaction pooler a held lock is a transaction left open and
/// idle on the lock's connection: an idle-in-transaction timeout set on the
/// server (here on the database) does not end it while the work runs.
#[test_support::needs(postgres, pgbouncer)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_held_through_a_pooler_outlasts_the_servers_idle_timeout() {
    let (server, bouncer) = PgBouncer::with_private_server("bouncer-pw", "app").await;
    let idle = "ALTER DATABASE app SET idle_in_transaction_session_timeout = '300ms'";
    server.psql("postgres", idle).unwrap();
    let mut settings =
        Settings::new(DatabaseUrl::parse(&bouncer.url("app"), "DATABASE_URL").unwrap());
    settings.transaction_pooler = true;
    let db = Db::connect(&settings).await.unwrap();
    let lock = Lock::new("pooled", Duration::from_secs(1));
    let mut held = db.hold(&lock).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    held.check().await.unwrap();
    let err = db
        .hold(&Lock::new("pooled", Duration::from_millis(300)))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::LockTimeout { .. }), "{err:?}");
    held.release().await;
    db.hold(&lock).await.unwrap().release().await;
    db.close().await;
    drop((bouncer, server));
}

/// A session-level lock is a session left idle while the work runs: a
/// server-side idle-session timeout (here the database's, PostgreSQL 14 and
/// later) does not end it, and the lock with it.
#[test_support::needs(postgres)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_lock_outlasts_the_servers_idle_session_timeout() {
    let t = TestDb::new(test_support::Backend::Postgres).await;
    let idle = format!(
        "ALTER DATABASE \"{}\" SET idle_session_timeout = '300ms'",
        t.name()
    );
    (t.db.autocommit().execute_unprepared(&idle).await).unwrap();
    // A handle whose connections start with the database's setting.
    let db = Db::connect(&t.settings).await.unwrap();
    let mut held = db
        .hold(&Lock::new("idle", Duration::from_secs(1)))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    held.check().await.unwrap();
    held.release().await;
    db.close().await;
}

/// The pid of the server process behind `session`.
async fn backend_pid(session: &db_core::Session) -> i32 {
    let sql = Statement::from_string(DbBackend::Postgres, "SELECT pg_backend_pid()");
    let row = session.query_one_raw(sql).await.unwrap().unwrap();
    row.try_get_by_index(0).unwrap()
}

/// Through a transaction pooler the lock is an open transaction, which
/// would keep what it first read of the server's activity: the sessions in
/// a migration's way are read afresh each time, so one that connected
/// after the first look is named too.
#[test_support::needs(postgres, pgbouncer)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_held_through_a_pooler_sees_the_sessions_in_the_way_now() {
    let (server, bouncer) = PgBouncer::with_private_server("bouncer-pw", "app").await;
    let mut pooled = Settings::new(DatabaseUrl::parse(&bouncer.url("app"), "url").unwrap());
    pooled.transaction_pooler = true;
    let db = Db::connect(&pooled).await.unwrap();
    let mut held = db
        .hold(&Lock::new("pooled", Duration::from_secs(1)))
        .await
        .unwrap();
    let mut direct = Settings::new(DatabaseUrl::parse(&server.url("app"), "url").unwrap());
    // The waiter waits for as long as the test makes it.
    direct.operation_timeout = None;
    let direct = Db::connect(&direct).await.unwrap();
    let tables = "CREATE TABLE a (x INTEGER); CREATE TABLE b (x INTEGER)";
    direct
        .autocommit()
        .execute_unprepared(tables)
        .await
        .unwrap();
    let first = direct.begin().await.unwrap();
    first.execute_unprepared("LOCK TABLE a").await.unwrap();
    let waiter = direct.begin().await.unwrap();
    let pid = backend_pid(&waiter).await;
    let waits = tokio::spawn(async move {
        waiter.execute_unprepared("LOCK TABLE a").await.unwrap();
        waiter.execute_unprepared("LOCK TABLE b").await.unwrap();
        waiter.rollback().await.unwrap();
    });
    let in_the_way = async |held: &mut db_core::lock::HeldLock, want: i32| {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let blockers = held.blockers(pid).await.unwrap();
            if blockers.iter().any(|b| b.pid == want) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "pid {want} never seen in the way: {blockers:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    in_the_way(&mut held, backend_pid(&first).await).await;
    // A session that connects now, after that first look, and takes `b`;
    // the waiter gets `a` and waits for `b`.
    let second = direct.begin().await.unwrap();
    second.execute_unprepared("LOCK TABLE b").await.unwrap();
    first.rollback().await.unwrap();
    in_the_way(&mut held, backend_pid(&second).await).await;
    second.rollback().await.unwrap();
    waits.await.unwrap();
    held.release().await;
    direct.close().await;
    db.close().await;
    drop((bouncer, server));
}
