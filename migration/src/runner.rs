//! Applying migration commands under the migration lock.

use std::io::Write;
use std::time::Duration;

use db_core::{Db, Lock, SessionOptions, Settings};
use sea_orm::{ConnectionTrait, DbErr};
use sea_orm_migration::{MigrationStatus, MigratorTrait};

use crate::Migrator;
use crate::cli::{MigrateArgs, MigrateCommand};

/// What can go wrong while migrating.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Settings, connection or lock problems.
    #[error(transparent)]
    Db(#[from] db_core::Error),
    /// A migration failed; on PostgreSQL and SQLite the whole command was rolled back.
    #[error("migration failed: {0}")]
    Migration(#[source] DbErr),
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
            db_core::Error::Db(e) => Error::Migration(e),
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
    let lock = migration_lock(lock_timeout);
    let result = db
        .with_lock(&lock, async |session| {
            let before = pending_names::<Migrator, _>(session).await?;
            let adopted = crate::adopt::adopt::<Migrator, _>(session, target).await?;
            Migrator::up(session.executor(), None).await?;
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
    Ok(Db::connect_labelled(&settings, "migration").await?)
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
    let lock = migration_lock(args.lock_timeout);
    let (before, after, adopted) = db
        .with_lock(&lock, async |session| {
            let conn = session;
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
                        M::up(session.executor(), left).await?;
                    }
                }
                MigrateCommand::Baseline { to } => {
                    adopted = crate::adopt::baseline::<M, _>(conn, to.as_deref()).await?;
                }
                MigrateCommand::Down { num, .. } => M::down(session.executor(), Some(*num)).await?,
                MigrateCommand::Fresh { .. } => M::fresh(session.executor()).await?,
                MigrateCommand::Refresh { .. } => M::refresh(session.executor()).await?,
                MigrateCommand::Reset { .. } => M::reset(session.executor()).await?,
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
            Ok::<_, Error>((before, after, adopted))
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

/// The migration lock's name: one per database, on every backend.
const LOCK: &str = "migration";

/// The migration lock, waited for at most `timeout`. Work under it runs on
/// a session of [`Db::with_lock`]: on PostgreSQL and SQLite every migration
/// of the command runs in the lock's transaction (all apply or none); on
/// SQLite foreign keys are off meanwhile and checked before the commit.
fn migration_lock(timeout: Duration) -> Lock {
    Lock::new(LOCK, timeout).schema_change()
}
