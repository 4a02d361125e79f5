//! The migration lock on database servers.
//!
//! - PostgreSQL: a transaction-level advisory lock taken inside the
//!   transaction that runs every migration. It ends with the transaction,
//!   or with the connection if the process dies, and works through a
//!   transaction-pooling PgBouncer, where a session-level lock would be held
//!   by whichever client shared the server connection last.
//! - MySQL: a named lock (`GET_LOCK`) held on a connection of its own for as
//!   long as the migrations run (MySQL cannot roll DDL back, so there is no
//!   transaction to hold it in); it too dies with the connection.

use std::sync::Arc;
use std::time::{Duration, Instant};

use db_core::Db;
use sea_orm::sqlx::pool::PoolConnection;
use sea_orm::sqlx::{self, Connection, MySql};
use sea_orm::{ConnectionTrait, DatabaseTransaction, DbBackend, DbErr, RuntimeErr, Statement};

use crate::runner::Error;

/// The advisory lock key ("trackr" + 1). PostgreSQL advisory locks are per
/// database, so one key serves every database on a server.
const POSTGRES_KEY: i64 = 0x7472_6163_6b72_0001;

/// MySQL named locks are per server: the name includes a digest of the
/// database name so migrators of different databases do not wait for each other.
const MYSQL_NAME: &str = "CONCAT('tracker_migrate:', SHA1(DATABASE()))";

const POLL: Duration = Duration::from_millis(200);

fn db_err(e: sqlx::Error) -> Error {
    Error::from(DbErr::Query(RuntimeErr::SqlxError(Arc::new(e))))
}

/// Bounded waiting for a lock, announced once.
struct Waiting {
    what: String,
    timeout: Duration,
    start: Instant,
    announced: bool,
}

impl Waiting {
    fn new(what: String, timeout: Duration) -> Self {
        Waiting {
            what,
            timeout,
            start: Instant::now(),
            announced: false,
        }
    }

    /// After a failed attempt: gives up past the timeout, else pauses.
    async fn pause(&mut self) -> Result<(), Error> {
        if self.start.elapsed() >= self.timeout {
            return Err(db_core::Error::LockTimeout {
                what: self.what.clone(),
                waited: self.start.elapsed(),
            }
            .into());
        }
        if !self.announced {
            tracing::info!("waiting for {}, held by another migrator", self.what);
            self.announced = true;
        }
        tokio::time::sleep(POLL).await;
        Ok(())
    }

    fn done(&self) {
        if self.announced {
            tracing::info!("took {}", self.what);
        }
    }
}

/// Takes the PostgreSQL migration lock for the rest of `tx`.
pub(crate) async fn postgres(
    tx: &DatabaseTransaction,
    db: &Db,
    timeout: Duration,
) -> Result<(), Error> {
    let what = format!(
        "the migration lock (advisory lock {POSTGRES_KEY} on {})",
        db.target()
    );
    let mut waiting = Waiting::new(what, timeout);
    loop {
        let row = tx
            .query_one_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT pg_try_advisory_xact_lock($1)",
                [POSTGRES_KEY.into()],
            ))
            .await?
            .ok_or_else(|| {
                Error::Migration("pg_try_advisory_xact_lock returned no row".to_owned())
            })?;
        if row.try_get_by_index::<bool>(0)? {
            waiting.done();
            return Ok(());
        }
        waiting.pause().await?;
    }
}

/// The MySQL migration lock, held by its connection until released.
pub(crate) struct MySqlLock(PoolConnection<MySql>);

impl MySqlLock {
    /// Takes the lock, waiting at most `timeout`.
    pub(crate) async fn acquire(db: &Db, timeout: Duration) -> Result<Self, Error> {
        let mut conn = db
            .conn()
            .get_mysql_connection_pool()
            .acquire()
            .await
            .map_err(db_err)?;
        let what = format!("the migration lock (GET_LOCK on {})", db.target());
        let mut waiting = Waiting::new(what, timeout);
        loop {
            let got: Option<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT GET_LOCK({MYSQL_NAME}, 0)"
            )))
            .fetch_one(&mut *conn)
            .await
            .map_err(db_err)?;
            if got == Some(1) {
                waiting.done();
                break;
            }
            waiting.pause().await?;
        }
        Ok(MySqlLock(conn))
    }

    /// Releases the lock. If that fails, the connection is closed, which
    /// releases it too.
    pub(crate) async fn release(self) {
        let mut conn = self.0;
        let released = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT RELEASE_LOCK({MYSQL_NAME})"
        )))
        .execute(&mut *conn)
        .await;
        if released.is_err() {
            let _ = conn.detach().close().await;
        }
    }
}
