//! The migration lock on database servers: a PostgreSQL advisory lock or a
//! MySQL named lock, held on a connection of its own for as long as the
//! migrations run. If the process dies, the server drops the connection and
//! with it the lock, so a killed migrator never leaves a stale lock behind.

use std::sync::Arc;
use std::time::{Duration, Instant};

use db_core::Db;
use sea_orm::sqlx::pool::PoolConnection;
use sea_orm::sqlx::{self, Connection, MySql, Postgres};
use sea_orm::{DbBackend, DbErr, RuntimeErr};

use crate::runner::Error;

/// The advisory lock key ("trackr" + 1). PostgreSQL advisory locks are per
/// database, so one key serves every database on a server.
const POSTGRES_KEY: i64 = 0x7472_6163_6b72_0001;

/// MySQL named locks are per server: the name includes a digest of the
/// database name so migrators of different databases do not wait for each other.
const MYSQL_NAME: &str = "CONCAT('tracker_migrate:', SHA1(DATABASE()))";

const POLL: Duration = Duration::from_millis(200);

pub(crate) enum ServerLock {
    Postgres(PoolConnection<Postgres>),
    MySql(PoolConnection<MySql>),
}

fn db_err(e: sqlx::Error) -> Error {
    Error::from(DbErr::Query(RuntimeErr::SqlxError(Arc::new(e))))
}

impl ServerLock {
    /// Takes the lock, polling until `timeout`; says once what it waits for.
    pub(crate) async fn acquire(db: &Db, timeout: Duration) -> Result<Self, Error> {
        let start = Instant::now();
        let mut lock = match db.backend() {
            DbBackend::Postgres => {
                let pool = db.conn().get_postgres_connection_pool();
                ServerLock::Postgres(pool.acquire().await.map_err(db_err)?)
            }
            _ => {
                let pool = db.conn().get_mysql_connection_pool();
                ServerLock::MySql(pool.acquire().await.map_err(db_err)?)
            }
        };
        let mut announced = false;
        loop {
            if lock.try_take().await? {
                if announced {
                    tracing::info!("took the migration lock");
                }
                return Ok(lock);
            }
            let what = lock.describe(db);
            if start.elapsed() >= timeout {
                return Err(db_core::Error::LockTimeout {
                    what,
                    waited: start.elapsed(),
                }
                .into());
            }
            if !announced {
                tracing::info!("waiting for {what}, held by another migrator");
                announced = true;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    fn describe(&self, db: &Db) -> String {
        match self {
            ServerLock::Postgres(_) => format!(
                "the migration lock (advisory lock {POSTGRES_KEY} on {})",
                db.target()
            ),
            ServerLock::MySql(_) => format!("the migration lock (GET_LOCK on {})", db.target()),
        }
    }

    async fn try_take(&mut self) -> Result<bool, Error> {
        match self {
            ServerLock::Postgres(conn) => sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                .bind(POSTGRES_KEY)
                .fetch_one(&mut **conn)
                .await
                .map_err(db_err),
            ServerLock::MySql(conn) => {
                let got: Option<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                    "SELECT GET_LOCK({MYSQL_NAME}, 0)"
                )))
                .fetch_one(&mut **conn)
                .await
                .map_err(db_err)?;
                Ok(got == Some(1))
            }
        }
    }

    /// Releases the lock. If that fails, the connection is closed, which
    /// releases it too.
    pub(crate) async fn release(self) {
        match self {
            ServerLock::Postgres(mut conn) => {
                let released = sqlx::query("SELECT pg_advisory_unlock($1)")
                    .bind(POSTGRES_KEY)
                    .execute(&mut *conn)
                    .await;
                if released.is_err() {
                    let _ = conn.detach().close().await;
                }
            }
            ServerLock::MySql(mut conn) => {
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
    }
}
