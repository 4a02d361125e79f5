//! Applying migration commands under the migration lock.

use std::io::Write;
use std::time::{Duration, Instant};

use db_core::{Db, SessionOptions, Settings};
use sea_orm::{
    ConnectionTrait, DatabaseTransaction, DbBackend, DbErr, SqliteTransactionMode,
    TransactionOptions, TransactionTrait,
};
use sea_orm_migration::{IntoSchemaManagerConnection, MigrationStatus, MigratorTrait};

use crate::Migrator;
use crate::cli::{MigrateArgs, MigrateCommand};
use crate::lock::{self, MySqlLock};

/// What can go wrong while migrating.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Settings, connection or lock problems.
    #[error(transparent)]
    Db(#[from] db_core::Error),
    /// A migration failed; on PostgreSQL and SQLite the whole command was rolled back.
    #[error("migration failed: {0}")]
    Migration(String),
    /// Writing a new migration file failed.
    #[error("generating a migration: {0}")]
    Generate(String),
    /// Generating or checking the entities failed.
    #[error("entities: {0}")]
    Entities(String),
    /// Writing the report failed.
    #[error("writing the report: {0}")]
    Output(#[from] std::io::Error),
    /// A pending migration's tables exist but differ from what it creates;
    /// nothing was changed.
    #[error(
        "{target}: the existing tables differ from what migration {migration} creates, so nothing was changed:\n{}\n\
         fix the tables, or record the migration as applied without checking: `tracker migrate baseline --to {migration}`",
        differences.join("\n")
    )]
    Adoption {
        /// The database, without its password.
        target: String,
        /// The migration whose tables differ.
        migration: String,
        /// One line for each difference, like `tasks.deadline: expected date, found text`.
        differences: Vec<String>,
    },
    /// The command would do something it should not without `--force`, or
    /// has nothing to work on.
    #[error("{0}")]
    Refused(String),
}

impl Error {
    /// True for configuration errors (exit code 2).
    pub fn is_config(&self) -> bool {
        matches!(self, Error::Db(e) if e.is_config())
    }
}

impl From<DbErr> for Error {
    fn from(e: DbErr) -> Self {
        match db_core::Error::from(e) {
            db_core::Error::Db(e) => Error::Migration(e.to_string()),
            other => Error::Db(other),
        }
    }
}

/// The folder holding this crate's sources, where `generate` writes.
const MIGRATION_DIR: &str = env!("CARGO_MANIFEST_DIR");

/// Runs a migrate command for the project's [`Migrator`], reporting to `out`.
pub async fn run(
    settings: &Settings,
    args: &MigrateArgs,
    out: &mut impl Write,
) -> Result<(), Error> {
    run_with::<Migrator>(settings, args, out).await
}

/// Applies every pending migration under the lock, adopting existing tables
/// as `run`'s `up` does, and returns the names of those it ran: what
/// `tracker serve` does at startup when it may migrate.
pub async fn up(settings: &Settings, lock_timeout: Duration) -> Result<Vec<String>, Error> {
    let db = connect(settings).await?;
    let target = db.target();
    let result = locked(&db, lock_timeout, async |conn| {
        let before = pending_names::<Migrator, _>(&conn.executor()).await?;
        let adopted = crate::adopt::adopt::<Migrator, _>(&conn.executor(), target).await?;
        Migrator::up(conn.executor(), None).await?;
        Ok(before
            .into_iter()
            .filter(|n| !adopted.contains(n))
            .collect())
    })
    .await;
    db.close().await;
    result
}

/// The settings migrations connect with: `DB_MIGRATION_URL` if set (a
/// direct connection, so not through the transaction pooler), no replicas.
pub(crate) fn for_migrations(settings: &Settings) -> Settings {
    let mut settings = settings.clone();
    if let Some(url) = settings.migration_url.take() {
        settings.url = url;
        settings.transaction_pooler = false;
    }
    settings.replicas = Vec::new();
    settings
}

/// Names of the migrations not applied yet, read without creating anything.
pub async fn pending(db: &Db) -> Result<Vec<String>, Error> {
    // On the primary: a replica may not have replayed the latest migration yet.
    let read = db.session(SessionOptions::read_only().on_primary()).await?;
    pending_names::<Migrator, _>(&read).await
}

/// Writes a new, empty migration into this crate's sources and registers it
/// in [`Migrator`](crate::Migrator). Needs no database.
pub fn generate(name: &str) -> Result<(), Error> {
    if !std::path::Path::new(MIGRATION_DIR)
        .join("src/lib.rs")
        .is_file()
    {
        return Err(Error::Generate(format!(
            "the migration sources are not at {MIGRATION_DIR}; run this from a checkout of the workspace"
        )));
    }
    sea_orm_cli::run_migrate_generate(MIGRATION_DIR, name, true)
        .map_err(|e| Error::Generate(e.to_string()))
}

/// [`run`] for any migrator (tests use one with a migration that fails).
pub async fn run_with<M: MigratorTrait>(
    settings: &Settings,
    args: &MigrateArgs,
    out: &mut impl Write,
) -> Result<(), Error> {
    if let MigrateCommand::Generate { name } = &args.command {
        return generate(name);
    }
    if let MigrateCommand::Entities {
        check,
        live,
        dir,
        flags,
    } = &args.command
    {
        let source = if *live {
            crate::entities::Source::Live
        } else {
            crate::entities::Source::Scratch
        };
        return crate::entities::entities::<M>(settings, source, dir, flags, *check, out).await;
    }
    let db = connect(settings).await?;
    let result = execute::<M>(&db, args, out).await;
    db.close().await;
    result
}

/// A small pool of our own: migrations never run on an application's pool,
/// and run without the application's statement timeout.
async fn connect(settings: &Settings) -> Result<Db, Error> {
    let mut settings = for_migrations(settings);
    settings.statement_timeout = None;
    settings.max_connections = 3;
    settings.min_connections = 0;
    // SQLite waits this long inside each attempt at the lock; the lock
    // timeout bounds the attempts.
    settings.sqlite_busy_timeout = Duration::from_millis(200);
    Ok(Db::connect(&settings).await?)
}

async fn execute<M: MigratorTrait>(
    db: &Db,
    args: &MigrateArgs,
    out: &mut impl Write,
) -> Result<(), Error> {
    if let MigrateCommand::Status = args.command {
        // Read-only: never creates the migration table.
        let read = db.read().await?;
        let all = M::get_migration_with_status_read_only(&read).await?;
        let pending = all
            .iter()
            .filter(|m| m.status() == MigrationStatus::Pending)
            .count();
        for migration in &all {
            let status = match migration.status() {
                MigrationStatus::Applied => "applied",
                MigrationStatus::Pending => "pending",
            };
            writeln!(out, "{status:<8} {}", migration.name())?;
        }
        writeln!(out, "{} applied, {pending} pending", all.len() - pending)?;
        return Ok(());
    }
    let command = &args.command;
    let target = db.target();
    let (before, after, adopted) = locked(db, args.lock_timeout, async |held| {
        let conn = &held.executor();
        let before = applied_names::<M, _>(conn).await?;
        let reverting = match command {
            MigrateCommand::Down { num, force: false } => {
                before[before.len().saturating_sub(*num as usize)..].to_vec()
            }
            MigrateCommand::Fresh { force: false }
            | MigrateCommand::Refresh { force: false }
            | MigrateCommand::Reset { force: false } => before.clone(),
            _ => Vec::new(),
        };
        refuse_reverting_adopted(conn, &reverting).await?;
        let mut adopted = Vec::new();
        match command {
            MigrateCommand::Up { num } => {
                adopted = crate::adopt::adopt::<M, _>(conn, target).await?;
                let left = num.map(|n| n.saturating_sub(adopted.len() as u32));
                if left != Some(0) {
                    M::up(held.executor(), left).await?;
                }
            }
            MigrateCommand::Baseline { to } => {
                adopted = crate::adopt::baseline::<M, _>(conn, to.as_deref()).await?;
            }
            MigrateCommand::Down { num, .. } => M::down(held.executor(), Some(*num)).await?,
            MigrateCommand::Fresh { .. } => M::fresh(held.executor()).await?,
            MigrateCommand::Refresh { .. } => M::refresh(held.executor()).await?,
            MigrateCommand::Reset { .. } => M::reset(held.executor()).await?,
            MigrateCommand::Status
            | MigrateCommand::Generate { .. }
            | MigrateCommand::Entities { .. } => {
                unreachable!("handled before taking the lock")
            }
        }
        let after = applied_names::<M, _>(conn).await?;
        let reverted: Vec<String> = before
            .iter()
            .filter(|n| !after.contains(n) || matches!(command, MigrateCommand::Refresh { .. }))
            .cloned()
            .collect();
        crate::adopt::forget(conn, &reverted).await?;
        Ok((before, after, adopted))
    })
    .await?;
    for name in &adopted {
        writeln!(
            out,
            "adopted  {name} (recorded as applied without running it)"
        )?;
    }
    for name in before.iter().filter(|n| !after.contains(n)) {
        writeln!(out, "reverted {name}")?;
    }
    for name in after.iter().filter(|n| {
        !adopted.contains(n)
            && (!before.contains(n)
                || matches!(
                    command,
                    MigrateCommand::Fresh { .. } | MigrateCommand::Refresh { .. }
                ))
    }) {
        writeln!(out, "applied  {name}")?;
    }
    let read = db.read().await?;
    let pending = M::get_pending_migrations_read_only(&read).await?.len();
    writeln!(out, "{} applied, {pending} pending", after.len())?;
    Ok(())
}

/// Fails when `reverting` includes adopted migrations: reverting one drops
/// tables that it did not create, with data that another application may
/// still use.
async fn refuse_reverting_adopted(
    conn: &impl ConnectionTrait,
    reverting: &[String],
) -> Result<(), Error> {
    let adopted: Vec<String> = crate::adopt::adopted_names(conn)
        .await?
        .into_iter()
        .filter(|name| reverting.contains(name))
        .collect();
    if adopted.is_empty() {
        return Ok(());
    }
    Err(Error::Refused(format!(
        "refusing to revert {}: adopted from tables this project did not create, which reverting would drop with their data; add --force to do it anyway",
        adopted.join(", ")
    )))
}

async fn applied_names<M: MigratorTrait, C: ConnectionTrait>(
    conn: &C,
) -> Result<Vec<String>, Error> {
    Ok(M::get_applied_migrations_read_only(conn)
        .await?
        .iter()
        .map(|m| m.name().to_owned())
        .collect())
}

async fn pending_names<M: MigratorTrait, C: ConnectionTrait>(
    conn: &C,
) -> Result<Vec<String>, Error> {
    Ok(M::get_pending_migrations_read_only(conn)
        .await?
        .iter()
        .map(|m| m.name().to_owned())
        .collect())
}

/// Where migrations run while the lock is held: the pool (PostgreSQL,
/// MySQL, with a server lock on another connection) or the exclusive
/// transaction that is the lock (SQLite).
enum Locked<'a> {
    Pool(&'a sea_orm::DatabaseConnection),
    Transaction(&'a DatabaseTransaction),
}

impl<'a> Locked<'a> {
    /// A SeaORM executor on it, for one migrator call.
    fn executor(&self) -> sea_orm::DatabaseExecutor<'a> {
        match self {
            Locked::Pool(c) => (*c).into_database_executor(),
            Locked::Transaction(t) => (*t).into_database_executor(),
        }
    }
}

/// Runs `work` while holding the migration lock, waiting for it at most
/// `timeout`.
async fn locked<T>(
    db: &Db,
    timeout: Duration,
    work: impl AsyncFnOnce(Locked<'_>) -> Result<T, Error>,
) -> Result<T, Error> {
    if db.backend() == DbBackend::Sqlite {
        // SQLite's own procedure for schema changes: foreign keys off (only
        // possible outside a transaction), change, check, commit, back on.
        // Without it, dropping a referenced table fails and table rebuilds
        // cascade. The writer pool has one connection, so the pragma applies
        // to the connection the transaction runs on.
        let conn = db.conn();
        conn.execute_unprepared("PRAGMA foreign_keys = OFF").await?;
        let result = async {
            let tx = begin_exclusive(db, timeout).await?;
            let value = work(Locked::Transaction(&tx)).await?;
            let violations = tx.query_all_raw(sea_orm::Statement::from_string(DbBackend::Sqlite, "PRAGMA foreign_key_check")).await?;
            if let Some(row) = violations.first() {
                let table: String = row.try_get_by_index(0).unwrap_or_default();
                return Err(Error::Migration(format!(
                    "the migrations leave rows in {table} that violate a foreign key; nothing was applied"
                )));
            }
            tx.commit().await?;
            Ok(value)
        }
        .await;
        conn.execute_unprepared("PRAGMA foreign_keys = ON").await?;
        return result;
    }
    if db.backend() == DbBackend::Postgres {
        // One transaction takes the lock and runs every migration: all of them
        // apply or none, and the lock ends with it.
        let session = db.begin().await?;
        let tx = session.as_transaction().ok_or_else(|| {
            Error::Migration("a read-write session without a transaction".to_owned())
        })?;
        lock::postgres(tx, db, timeout).await?;
        let value = work(Locked::Transaction(tx)).await?;
        session.commit().await?;
        return Ok(value);
    }
    let lock = MySqlLock::acquire(db, timeout).await?;
    let result = work(Locked::Pool(db.conn())).await;
    lock.release().await;
    result
}

/// On SQLite the lock is an exclusive transaction on the writer connection,
/// and the migrations run inside it: all of them apply, or none.
async fn begin_exclusive(db: &Db, timeout: Duration) -> Result<DatabaseTransaction, Error> {
    let start = Instant::now();
    let mut announced = false;
    loop {
        let attempt = db
            .conn()
            .begin_with_options(TransactionOptions {
                sqlite_transaction_mode: Some(SqliteTransactionMode::Exclusive),
                ..Default::default()
            })
            .await;
        match attempt {
            Ok(tx) => return Ok(tx),
            Err(e) if e.to_string().contains("locked") || e.to_string().contains("busy") => {
                if start.elapsed() >= timeout {
                    return Err(db_core::Error::LockTimeout {
                        what: format!(
                            "the migration lock (an exclusive transaction on {})",
                            db.target()
                        ),
                        waited: start.elapsed(),
                    }
                    .into());
                }
                if !announced {
                    tracing::info!(
                        target = db.target(),
                        "waiting for the migration lock: another connection is writing to the database"
                    );
                    announced = true;
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
}
