//! Creating and dropping the configured database, through the server's
//! maintenance database.

use sea_orm::{ConnectionTrait, DbBackend, Statement};

use crate::connect::maintenance;
use crate::error::{Error, Result};
use crate::settings::Settings;

/// What [`create_database`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    /// The database was created.
    Created(String),
    /// The database existed already.
    Existed(String),
    /// SQLite creates its file on first connect; nothing to do.
    NotNeeded,
}

/// Quotes an identifier for the backend: `"name"` on PostgreSQL, `` `name` ``
/// on MySQL, doubling any quote inside.
pub(crate) fn quote_ident(backend: DbBackend, name: &str) -> String {
    match backend {
        DbBackend::MySql => format!("`{}`", name.replace('`', "``")),
        _ => format!("\"{}\"", name.replace('"', "\"\"")),
    }
}

/// Creates the database named in `settings` if it does not exist
/// (PostgreSQL and MySQL; a no-op on SQLite).
pub async fn create_database(settings: &Settings) -> Result<Created> {
    let backend = settings.url.backend();
    if backend == DbBackend::Sqlite {
        return Ok(Created::NotNeeded);
    }
    let (conn, name) = maintenance(settings).await?;
    let result = async {
        if database_exists(&conn, &name).await? {
            return Ok(Created::Existed(name));
        }
        let sql = match backend {
            DbBackend::MySql => format!(
                "CREATE DATABASE IF NOT EXISTS {} CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci",
                quote_ident(backend, &name)
            ),
            _ => format!("CREATE DATABASE {}", quote_ident(backend, &name)),
        };
        match conn.execute_unprepared(&sql).await {
            Ok(_) => Ok(Created::Created(name)),
            // Another process created it between our check and our CREATE.
            Err(_) if database_exists(&conn, &name).await? => Ok(Created::Existed(name)),
            Err(e) => Err(Error::from(e)),
        }
    }
    .await;
    let _ = conn.close().await;
    result
}

/// Drops the database named in `settings` if it exists, disconnecting its
/// other sessions on PostgreSQL. A no-op on SQLite.
pub async fn drop_database(settings: &Settings) -> Result<()> {
    let backend = settings.url.backend();
    if backend == DbBackend::Sqlite {
        return Ok(());
    }
    let (conn, name) = maintenance(settings).await?;
    let sql = match backend {
        DbBackend::Postgres => format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            quote_ident(backend, &name)
        ),
        _ => format!("DROP DATABASE IF EXISTS {}", quote_ident(backend, &name)),
    };
    let result = conn
        .execute_unprepared(&sql)
        .await
        .map(drop)
        .map_err(Error::from);
    let _ = conn.close().await;
    result
}

async fn database_exists(conn: &sea_orm::DatabaseConnection, name: &str) -> Result<bool> {
    let backend = conn.get_database_backend();
    let stmt = match backend {
        DbBackend::MySql => Statement::from_sql_and_values(
            backend,
            "SELECT 1 FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?",
            [name.into()],
        ),
        _ => Statement::from_sql_and_values(
            backend,
            "SELECT 1 FROM pg_database WHERE datname = $1",
            [name.into()],
        ),
    };
    Ok(conn.query_one_raw(stmt).await?.is_some())
}
