//! Read replicas on a real streaming replica: where each query runs,
//! read-your-writes, lag, and failover without failed requests.

use std::time::{Duration, Instant};

use db_core::{Db, Session, SessionOptions, Settings, url::DatabaseUrl};
use sea_orm::{ConnectionTrait, DbBackend, IsolationLevel, Statement, TryGetable};
use test_support::{PrivatePostgres, StopMode};

use crate::metrics;

/// The one value that `sql` selects on `conn`.
async fn value<T: TryGetable>(conn: &impl ConnectionTrait, sql: &str) -> T {
    let row = conn
        .query_one_raw(Statement::from_string(DbBackend::Postgres, sql))
        .await
        .unwrap()
        .expect("a row");
    row.try_get_by_index::<T>(0).unwrap()
}

async fn in_recovery(session: &Session) -> bool {
    value(session, "SELECT pg_is_in_recovery()").await
}

/// The rows of `t`.
async fn count(session: &Session) -> i64 {
    value(session, "SELECT COUNT(*) FROM t").await
}

/// Polls `check` until it holds, for at most 20 s.
async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test_support::needs(postgres)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_go_to_the_replica_writes_to_the_primary_and_reads_survive_its_loss() {
    let (primary, replica) = tokio::task::spawn_blocking(|| {
        let primary = PrivatePostgres::start("replica-test-pw").expect("primary");
        let replica = primary.start_replica().expect("replica");
        (primary, replica)
    })
    .await
    .unwrap();
    let mut settings =
        Settings::new(DatabaseUrl::parse(&primary.url("postgres"), "DATABASE_URL").unwrap());
    settings.replicas =
        vec![DatabaseUrl::parse(&replica.url("postgres"), "DB_REPLICA_URLS").unwrap()];
    let db = Db::connect(&settings).await.unwrap();

    let write = db.begin().await.unwrap();
    assert!(
        !in_recovery(&write).await,
        "a write session ran on the replica"
    );
    write
        .execute_unprepared("CREATE TABLE t (x INTEGER)")
        .await
        .unwrap();
    write
        .execute_unprepared("INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    write.commit().await.unwrap();

    // Once the replica has replayed the table: a write sent through a read
    // session below must reach it (to be refused), not fall back to the
    // primary as a statement on a table the replica lacks does.
    let on_replica = sea_orm::Database::connect(replica.url("postgres"))
        .await
        .unwrap();
    eventually("the replica replaying t", async || {
        value::<bool>(&on_replica, "SELECT to_regclass('t') IS NOT NULL").await
    })
    .await;
    assert_eq!(count(&db.read().await.unwrap()).await, 1);
    assert!(
        in_recovery(&db.read().await.unwrap()).await,
        "a read session ran on the primary"
    );

    // Read-your-writes: after this scope writes, its reads go to the primary.
    let scope = db.scope();
    assert!(in_recovery(&scope.read().await.unwrap()).await);
    let write = scope.begin().await.unwrap();
    write
        .execute_unprepared("INSERT INTO t VALUES (2)")
        .await
        .unwrap();
    write.commit().await.unwrap();
    let read = scope.read().await.unwrap();
    assert!(!in_recovery(&read).await);
    assert_eq!(count(&read).await, 2);

    let status = db.replica_status().await;
    assert_eq!(status.len(), 1);
    assert!(status[0].up);
    assert!(
        status[0]
            .lag
            .is_some_and(|lag| lag < Duration::from_secs(10)),
        "{status:?}"
    );

    // A migration that the replica has not replayed yet: a read that uses
    // what it added runs again on the primary instead of failing, counted.
    on_replica
        .execute_unprepared("SELECT pg_wal_replay_pause()")
        .await
        .unwrap();
    let write = db.begin().await.unwrap();
    write
        .execute_unprepared("CREATE TABLE added (x INTEGER); INSERT INTO added VALUES (7)")
        .await
        .unwrap();
    write.commit().await.unwrap();
    assert!(
        value::<bool>(&on_replica, "SELECT to_regclass('added') IS NULL").await,
        "the replica replayed the migration while paused"
    );
    let behind = metrics::retries("replica_behind");
    let read = db.read().await.unwrap();
    assert_eq!(value::<i32>(&read, "SELECT x FROM added").await, 7);
    assert_eq!(metrics::retries("replica_behind"), behind + 1);
    on_replica
        .execute_unprepared("SELECT pg_wal_replay_resume()")
        .await
        .unwrap();
    on_replica.close().await.unwrap();

    // A write sent through a read session is refused before it is sent;
    // one that does not start as a write is the replica's to refuse: it
    // fails, runs nowhere else, and the replica stays up.
    let read = db.read().await.unwrap();
    let refused = read.execute_unprepared("INSERT INTO t VALUES (3)").await;
    let refused = refused.unwrap_err().to_string();
    assert!(
        refused.contains("INSERT through a read-only session"),
        "{refused}"
    );
    let hidden = "WITH added AS (INSERT INTO t VALUES (3) RETURNING 1) SELECT * FROM added";
    let refused = read.execute_unprepared(hidden).await.unwrap_err();
    assert!(
        refused.to_string().contains("read-only transaction"),
        "{refused}"
    );
    assert!(db.replica_status().await[0].up);
    assert_eq!(count(&db.begin().await.unwrap()).await, 2);

    // A replica with no free connection is busy, not down: a read that
    // finds its pool taken for DB_ACQUIRE_TIMEOUT (at most 1 s on a
    // replica) runs on the primary, and the replica keeps its pool and
    // its place in the turn.
    let mut one = settings.clone();
    one.max_connections = 1;
    let busy = Db::connect(&one).await.unwrap();
    let held = busy
        .session(SessionOptions::read_only().isolation(IsolationLevel::RepeatableRead))
        .await
        .unwrap();
    assert!(
        in_recovery(&held).await,
        "the held session is not on the replica"
    );
    let read = busy.read().await.unwrap();
    assert!(
        !in_recovery(&read).await,
        "a read waited for the busy replica"
    );
    assert!(
        busy.replica_status().await[0].up,
        "a busy replica was marked down"
    );
    held.rollback().await.unwrap();
    assert!(in_recovery(&busy.read().await.unwrap()).await);
    busy.close().await;
    // One that gives no connection at all (nothing listens there) is down,
    // though its pool says no more than that none came in time.
    // So is one that refuses the login (here: a wrong password).
    let nowhere = format!(
        "postgres://postgres:pw@127.0.0.1:{}/postgres",
        test_support::free_port().unwrap()
    );
    let refusing = format!(
        "postgres://postgres:wrong-pw@127.0.0.1:{}/postgres",
        replica.port()
    );
    for (what, url) in [
        ("takes no connection", nowhere),
        ("refuses the login", refusing),
    ] {
        let mut gone = settings.clone();
        gone.replicas = vec![DatabaseUrl::parse(&url, "DB_REPLICA_URLS").unwrap()];
        let gone = Db::connect(&gone).await.unwrap();
        assert!(!in_recovery(&gone.read().await.unwrap()).await, "{what}");
        assert!(
            !gone.replica_status().await[0].up,
            "a replica that {what} is up"
        );
        gone.close().await;
    }

    // The replica goes away: every read still succeeds, on the primary. The
    // read that found it gone moved on, counted as a failover retry.
    let failovers = metrics::retries("failover");
    replica.stop(StopMode::Fast).unwrap();
    for _ in 0..20 {
        let read = db.read().await.unwrap();
        assert_eq!(count(&read).await, 2);
        assert!(!in_recovery(&read).await);
    }
    assert!(!db.replica_status().await[0].up);
    assert!(metrics::retries("failover") > failovers);

    // It comes back: reads return to it.
    replica.start_again().unwrap();
    eventually("reads returning to the replica", async || {
        in_recovery(&db.read().await.unwrap()).await
    })
    .await;

    // Closed while the replica is down: when it comes back, nothing of the
    // closed handle revives it or connects to it.
    replica.stop(StopMode::Fast).unwrap();
    for _ in 0..3 {
        assert_eq!(count(&db.read().await.unwrap()).await, 2);
    }
    assert!(!db.replica_status().await[0].up);
    db.close().await;
    replica.start_again().unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let on_replica = sea_orm::Database::connect(replica.url("postgres"))
        .await
        .unwrap();
    let others = "SELECT count(*) FROM pg_stat_activity \
        WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()";
    assert_eq!(
        value::<i64>(&on_replica, others).await,
        0,
        "a closed handle connected to the replica that came back"
    );
    drop(primary);
}
