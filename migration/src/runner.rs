//! Applying migration commands under the migration lock.

use std::collections::BTreeSet;
use std::io::Write;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::{Duration, Instant};

use db_core::{
    Db, Lock, Session, SessionOptions, Settings,
    admin::{create_database, drop_database},
    lock::HeldLock,
};
use sea_orm::{ConnectionTrait, DbBackend, DbErr, DynIden};
use sea_orm_migration::MigratorTrait;
use sea_orm_migration::prelude::*;
use tokio::sync::Mutex;

use crate::Migrator;
use crate::cli::{MigrateArgs, MigrateCommand};
use crate::online::{self, Bound, LockNotAvailable, LockWait, Policy};

/// What can go wrong while migrating.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Settings, connection or lock problems.
    #[error(transparent)]
    Db(#[from] db_core::Error),
    /// A migration failed: rolled back on PostgreSQL when it ran in a
    /// transaction (those before it stay applied), and on SQLite with the
    /// whole command.
    #[error("migration {name} failed: {source}")]
    Migration {
        /// The migration's name.
        name: String,
        /// What it ended with: one of its statements, its lock wait, or
        /// the connection.
        #[source]
        source: Box<Error>,
    },
    /// The migration lock's connection failed while the command ran (it
    /// is gone, or its server gave no answer within the lock's timeout):
    /// the command stopped where it was.
    #[error(transparent)]
    LockLost(DbErr),
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
        match self {
            Error::Db(e) => e.is_config(),
            Error::Migration { source, .. } => source.is_config(),
            _ => false,
        }
    }

    /// This error as what migration `name` ended with.
    fn of_migration(self, name: &str) -> Error {
        Error::Migration {
            name: name.to_owned(),
            source: Box::new(self),
        }
    }
}

impl From<DbErr> for Error {
    fn from(e: DbErr) -> Self {
        Error::Db(e.into())
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
    up_with::<Migrator>(settings, lock_timeout).await
}

/// [`up`] for any migrator, such as one that adds a service's migrations
/// to the project's.
pub async fn up_with<M: MigratorTrait>(
    settings: &Settings,
    lock_timeout: Duration,
) -> Result<Vec<String>, Error> {
    let db = connect(settings).await?;
    let report = execute::<M>(
        &db,
        settings,
        &MigrateCommand::Up { num: None },
        lock_timeout,
    )
    .await;
    db.close().await;
    Ok(report?.applied)
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
/// Applied migrations that this binary does not have (a newer release
/// applied them, and this one runs beside it or after a rollback) are no
/// error: they are logged at `warn`.
pub async fn pending(db: &Db) -> Result<Vec<String>, Error> {
    // On the primary: a replica may not have replayed the latest migration yet.
    let read = db.session(SessionOptions::read_only().on_primary()).await?;
    let recorded = Recorded::read::<Migrator>(&read).await?;
    let newer = recorded.unknown::<Migrator>();
    if !newer.is_empty() {
        tracing::warn!(
            "{} has applied migrations that this binary does not have, from a newer release: {}",
            db.target(),
            newer.join(", ")
        );
    }
    Ok(recorded
        .pending::<Migrator>()
        .iter()
        .map(|m| m.name().to_owned())
        .collect())
}

/// The migrations recorded as applied in a migrator's table, read without
/// creating anything. Unlike SeaORM's own status, a recorded migration that
/// the migrator does not have is no error: a newer release applied it, and
/// an older binary still runs (during a rolling deploy, after a rollback).
pub(crate) struct Recorded(BTreeSet<String>);

impl Recorded {
    /// The record of `M` (empty before its table exists).
    pub(crate) async fn read<M: MigratorTrait>(conn: &Session) -> Result<Self, Error> {
        let table = M::migration_table_name();
        if !SchemaManager::new(conn.executor())
            .has_table(table.to_string())
            .await?
        {
            return Ok(Recorded(BTreeSet::new()));
        }
        let select = Query::select().column("version").from(table).to_owned();
        let rows = conn.query_all(&select).await?;
        let names = rows.iter().map(|r| r.try_get_by_index::<String>(0));
        Ok(Recorded(names.collect::<Result<_, _>>()?))
    }

    /// Whether nothing is recorded.
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `name` is recorded as applied.
    pub(crate) fn contains(&self, name: &str) -> bool {
        self.0.contains(name)
    }

    /// `M`'s migrations that are not recorded, in `M`'s order.
    pub(crate) fn pending<M: MigratorTrait>(&self) -> Vec<Box<dyn MigrationTrait>> {
        let mut all = M::migrations();
        all.retain(|m| !self.contains(m.name()));
        all
    }

    /// The recorded migrations that `M` does not have.
    pub(crate) fn unknown<M: MigratorTrait>(&self) -> Vec<String> {
        let known: BTreeSet<String> = M::migrations()
            .iter()
            .map(|m| m.name().to_owned())
            .collect();
        self.0
            .iter()
            .filter(|n| !known.contains(*n))
            .cloned()
            .collect()
    }

    /// Everything recorded: `M`'s applied migrations in its order, then
    /// those it does not have.
    fn names<M: MigratorTrait>(&self) -> Vec<String> {
        let known = M::migrations().into_iter().map(|m| m.name().to_owned());
        let mut names: Vec<String> = known.filter(|n| self.contains(n)).collect();
        names.extend(self.unknown::<M>());
        names
    }

    /// `N applied, M pending`, saying how many of the applied this binary
    /// does not have.
    fn summary<M: MigratorTrait>(&self) -> String {
        let (pending, newer) = (self.pending::<M>().len(), self.unknown::<M>().len());
        match newer {
            0 => format!("{} applied, {pending} pending", self.0.len()),
            _ => format!(
                "{} applied ({newer} not in this binary), {pending} pending",
                self.0.len()
            ),
        }
    }
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
    if let MigrateCommand::Sql { all } = args.command {
        return print_sql::<M>(settings, all, args.lock_timeout, out).await;
    }
    let db = connect(settings).await?;
    let result = report::<M>(&db, settings, args, out).await;
    db.close().await;
    result
}

/// `migrate sql`: the statements of the pending migrations (or, `all`, of
/// every one) as they run on a scratch database (see [`crate::sql`]).
async fn print_sql<M: MigratorTrait>(
    settings: &Settings,
    all: bool,
    lock_timeout: Duration,
    out: &mut impl Write,
) -> Result<(), Error> {
    if settings.url.backend() != DbBackend::Postgres {
        return Err(Error::Refused(
            "migrate sql prints PostgreSQL's statements: point DATABASE_URL or DB_* at a PostgreSQL server"
                .to_owned(),
        ));
    }
    let applied = if all {
        0
    } else {
        let db = connect(settings).await?;
        let read = db.read().await;
        let recorded = match read {
            Ok(read) => Recorded::read::<M>(&read).await,
            Err(e) => Err(e.into()),
        };
        db.close().await;
        let recorded = recorded?;
        // The scratch database gets the oldest ones: they must be the applied.
        let names: Vec<String> = M::migrations()
            .iter()
            .map(|m| m.name().to_owned())
            .collect();
        let applied = names.iter().filter(|n| recorded.contains(n)).count();
        if let Some(pending) = names[..applied].iter().find(|n| !recorded.contains(n)) {
            return Err(Error::Refused(format!(
                "{pending} is pending, but a newer migration is applied: `migrate sql` prints the SQL of the migrations after the applied ones, so it cannot show this database's; `migrate sql --all` prints every migration's"
            )));
        }
        applied as u32
    };
    let recorded = scratch(settings, "sql", |mut scratch| async move {
        // The recorder takes the driver's reports of statements at any level, but not none.
        scratch.log_statements = tracing::log::LevelFilter::Debug;
        if applied > 0 {
            let db = connect(&scratch).await?;
            let done = execute::<M>(
                &db,
                &scratch,
                &MigrateCommand::Up { num: Some(applied) },
                lock_timeout,
            )
            .await;
            db.close().await;
            done?;
        }
        let (result, recorded) = crate::sql::record(up_with::<M>(&scratch, lock_timeout)).await;
        result?;
        Ok(recorded)
    })
    .await?;
    writeln!(out, "{}", crate::sql::session_settings(settings))?;
    write!(out, "{recorded}")?;
    Ok(())
}

/// Runs `work` with the settings of a new, empty database on the server of
/// `settings` (as migrations connect to it), named after `purpose`, and
/// drops that database afterwards.
pub(crate) async fn scratch<T, F, Fut>(
    settings: &Settings,
    purpose: &str,
    work: F,
) -> Result<T, Error>
where
    F: FnOnce(Settings) -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    let mut scratch = for_migrations(settings);
    let name = format!(
        "scratch_{purpose}_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default()
    );
    scratch.url = scratch.url.with_database(&name);
    create_database(&scratch).await?;
    let result = async {
        create_schemas(&scratch).await?;
        work(scratch.clone()).await
    }
    .await;
    drop_database(&scratch).await?;
    result
}

/// The schemas that `DB_SCHEMA` names, in a new PostgreSQL database, which
/// has only `public`: the migrations create their tables in the first.
async fn create_schemas(settings: &Settings) -> Result<(), Error> {
    let Some(list) =
        (settings.schema.as_deref()).filter(|_| settings.url.backend() == DbBackend::Postgres)
    else {
        return Ok(());
    };
    let db = Db::connect(settings).await?;
    let session = db.autocommit();
    let mut created = Ok(());
    for name in list.split(',').map(str::trim) {
        let name = match name.strip_prefix('"').and_then(|n| n.strip_suffix('"')) {
            Some(quoted) => quoted.replace("\"\"", "\""),
            None => name.to_lowercase(),
        };
        let sql = format!(
            "CREATE SCHEMA IF NOT EXISTS \"{}\"",
            name.replace('"', "\"\"")
        );
        created = session.execute_unprepared(&sql).await.map(drop);
        if created.is_err() {
            break;
        }
    }
    db.close().await;
    Ok(created?)
}

/// A pool of our own: migrations never run on an application's pool. It has
/// one connection, so what a migration sets on its session stays for its
/// next statement; the migration lock takes another, out of the pool. On
/// PostgreSQL its statements run without the application's statement
/// timeout and operation timeout (a migration may take minutes), and wait
/// at most `DB_MIGRATION_LOCK_TIMEOUT` for a lock.
async fn connect(settings: &Settings) -> Result<Db, Error> {
    let mut settings = for_migrations(settings);
    // Explicitly none: a server-wide statement_timeout would cut a long
    // index build or backfill short.
    settings.statement_timeout = Some(Duration::ZERO);
    settings.operation_timeout = None;
    settings.lock_timeout = Some(settings.migration_lock_timeout);
    settings.max_connections = 1;
    settings.min_connections = 0;
    // The one connection lives as long as the run: what the runner sets on
    // its session (see `lock`) would be missing on a replacement.
    settings.max_lifetime = None;
    settings.idle_timeout = None;
    // Through a transaction pooler the migration lock is a transaction left
    // open while the migrations run (`Db::hold` keeps the server's idle
    // timeout off it), and the migrations' own transactions may idle
    // between statements: the application's idle timeout is not set.
    settings.idle_in_transaction_timeout = None;
    // SQLite waits this long inside each attempt at the lock; the lock
    // timeout bounds the attempts.
    settings.sqlite_busy_timeout = Duration::from_millis(200);
    Ok(Db::connect_labelled(&settings, "migration").await?)
}

/// What a command changed.
#[derive(Debug, Default)]
struct Report {
    adopted: Vec<String>,
    reverted: Vec<String>,
    applied: Vec<String>,
}

async fn report<M: MigratorTrait>(
    db: &Db,
    settings: &Settings,
    args: &MigrateArgs,
    out: &mut impl Write,
) -> Result<(), Error> {
    if let MigrateCommand::Status = args.command {
        // Read-only: never creates the migration table.
        let read = db.read().await?;
        let recorded = Recorded::read::<M>(&read).await?;
        for migration in M::migrations() {
            let name = migration.name();
            let status = if recorded.contains(name) {
                "applied"
            } else {
                "pending"
            };
            writeln!(out, "{status:<8} {name}")?;
        }
        for name in recorded.unknown::<M>() {
            writeln!(
                out,
                "applied  {name} (not in this binary: a newer release's)"
            )?;
        }
        writeln!(out, "{}", recorded.summary::<M>())?;
        return Ok(());
    }
    let report = execute::<M>(db, settings, &args.command, args.lock_timeout).await?;
    for name in &report.adopted {
        writeln!(
            out,
            "adopted  {name} (recorded as applied without running it)"
        )?;
    }
    for name in &report.reverted {
        writeln!(out, "reverted {name}")?;
    }
    for name in &report.applied {
        writeln!(out, "applied  {name}")?;
    }
    let read = db.read().await?;
    writeln!(out, "{}", Recorded::read::<M>(&read).await?.summary::<M>())?;
    Ok(())
}

/// Runs `command` under the migration lock: on SQLite in the lock's
/// exclusive transaction (all or nothing); elsewhere with the lock held on
/// a connection of its own while each migration runs in a transaction of
/// its own, or in none when it opts out.
async fn execute<M: MigratorTrait>(
    db: &Db,
    settings: &Settings,
    command: &MigrateCommand,
    lock_timeout: Duration,
) -> Result<Report, Error> {
    let lock = Lock::new(LOCK, lock_timeout).schema_change();
    let policy = Policy::from_settings(settings);
    let mut context = online::Context {
        policy,
        lock: None,
        pooled: for_migrations(settings).transaction_pooler,
    };
    if db.backend() == DbBackend::Sqlite {
        return online::scope(
            context,
            db.with_lock(&lock, |session| async move {
                let runner = Runner {
                    db,
                    lock: None,
                    session: Some(&session),
                    lock_timeout: policy.lock_timeout,
                };
                runner.command::<M>(command).await
            }),
        )
        .await;
    }
    let held = Arc::new(Mutex::new(db.hold(&lock).await?));
    context.lock = Some(held.clone());
    if db.backend() == DbBackend::MySql {
        // A statement waits at most DB_MIGRATION_LOCK_TIMEOUT (in whole
        // seconds, at least one) for its table's metadata lock, as on
        // PostgreSQL: behind a long transaction, a schema change that waits
        // holds up every query on its table (MySQL's own bound is a year).
        // The session is the runner's one connection.
        let timeout = policy.lock_timeout;
        let seconds = timeout.as_secs() + u64::from(timeout.subsec_nanos() > 0);
        let set = format!("SET SESSION lock_wait_timeout = {}", Ord::max(seconds, 1));
        db.autocommit().execute_unprepared(&set).await?;
    }
    if db.backend() == DbBackend::Postgres && !context.pooled {
        // The server checks every second that this migrator is still there
        // while a statement runs, and cancels it when it is not: a migrator
        // killed during a long statement (an index build, a backfill batch)
        // leaves nothing running for the next one to wait for (PostgreSQL
        // 14 and later). And an index build, a validation or a backfill's
        // query runs in this session's process alone, without parallel
        // workers: a schema change under live traffic takes one core, not
        // every core the server has (PostgreSQL 11 and later). The session
        // is the runner's one connection; a server without one of these
        // settings refuses it harmlessly.
        let session = db.autocommit();
        for setting in [
            "SET client_connection_check_interval = '1s'",
            "SET max_parallel_maintenance_workers = 0",
            "SET max_parallel_workers_per_gather = 0",
        ] {
            if let Err(e) = session.execute_unprepared(setting).await {
                tracing::debug!("this server refused `{setting}`: {e}");
            }
        }
    }
    // Not through a transaction pooler, where the next transaction may run
    // on another server connection. Without it, nothing is cancelled.
    let own = match context.pooled {
        true => None,
        false => (OwnSession::of(&db.autocommit()).await)
            .inspect_err(|e| tracing::debug!("the migration's session is not known: {e}"))
            .ok(),
    };
    let runner = Runner {
        db,
        lock: Some(&held),
        session: None,
        lock_timeout: policy.lock_timeout,
    };
    let result = online::scope(context, while_held(&held, runner.command::<M>(command))).await;
    if let (Err(Error::LockLost(_)), Some(own)) = (&result, own) {
        own.cancel(settings).await;
    }
    if let Ok(held) = Arc::try_unwrap(held) {
        held.into_inner().release().await;
    }
    result
}

/// How long [`OwnSession::cancel`] tries.
const CANCEL_WITHIN: Duration = Duration::from_secs(2);

/// The runner's one connection as its server knows it, so that a later
/// session that got the same id is never taken for it.
enum OwnSession {
    /// A PostgreSQL process id, and when its session started.
    Postgres(i64, String),
    /// A MySQL connection id, and when the server started (ids start again
    /// at 1 after a restart), in seconds since the epoch.
    MySql(i64, i64),
}

impl OwnSession {
    /// The session of `conn`.
    async fn of(conn: &impl ConnectionTrait) -> Result<OwnSession, DbErr> {
        let backend = conn.get_database_backend();
        let sql = match backend {
            DbBackend::MySql => "SELECT CAST(CONNECTION_ID() AS SIGNED)",
            _ => {
                "SELECT pid::bigint, backend_start::text FROM pg_stat_activity WHERE pid = pg_backend_pid()"
            }
        };
        let row = conn
            .query_one_raw(sea_orm::Statement::from_string(backend, sql))
            .await?;
        let row = row.ok_or_else(|| DbErr::Migration(format!("no row from {sql}")))?;
        Ok(match backend {
            DbBackend::MySql => {
                OwnSession::MySql(row.try_get_by_index(0)?, mysql_started(conn).await?)
            }
            _ => OwnSession::Postgres(row.try_get_by_index(0)?, row.try_get_by_index(1)?),
        })
    }

    /// Asks the server, on a connection of its own, to cancel what this
    /// session still runs after the lock was lost: a statement whose
    /// client went away runs on to its end on MySQL, and on PostgreSQL
    /// before 14 (which has no `client_connection_check_interval`). A
    /// server that does not answer within [`CANCEL_WITHIN`] is left alone.
    async fn cancel(self, settings: &Settings) {
        let mut settings = for_migrations(settings);
        settings.max_connections = 1;
        settings.min_connections = 0;
        settings.connect_deadline = None;
        let attempt = async {
            let db = Db::connect(&settings).await?;
            let conn = db.autocommit();
            let done = match &self {
                // Ids are not reused while the server runs; the two reads
                // of its start may differ by a tick.
                OwnSession::MySql(id, started) => match mysql_started(&conn).await {
                    Ok(now) if (now - started).abs() <= 2 => conn
                        .execute_unprepared(&format!("KILL QUERY {id}"))
                        .await
                        .map(drop),
                    Ok(_) => Err(DbErr::Migration("the server restarted".to_owned())),
                    Err(e) => Err(e),
                },
                OwnSession::Postgres(pid, since) => conn
                    .execute_raw(sea_orm::Statement::from_sql_and_values(
                        DbBackend::Postgres,
                        "SELECT pg_cancel_backend(pid) FROM pg_stat_activity \
                         WHERE pid = $1 AND backend_start = $2::timestamptz",
                        [(*pid).into(), since.clone().into()],
                    ))
                    .await
                    .map(drop),
            };
            db.close().await;
            done.map_err(Error::from)
        };
        let id = match self {
            OwnSession::MySql(id, _) | OwnSession::Postgres(id, _) => id,
        };
        match tokio::time::timeout(CANCEL_WITHIN, attempt).await {
            Ok(Ok(())) => tracing::info!("cancelled what the migration's session {id} ran"),
            Ok(Err(e)) => {
                tracing::warn!("could not cancel what the migration's session {id} ran: {e}");
            }
            Err(_) => {
                tracing::warn!("could not cancel what the migration's session {id} ran: no answer");
            }
        }
    }
}

/// When the MySQL server of `conn` started, in seconds since the epoch.
async fn mysql_started(conn: &impl ConnectionTrait) -> Result<i64, DbErr> {
    let read =
        |sql: &str| conn.query_one_raw(sea_orm::Statement::from_string(DbBackend::MySql, sql));
    let missing = || DbErr::Migration("no uptime".to_owned());
    let uptime: String = read("SHOW GLOBAL STATUS LIKE 'Uptime'")
        .await?
        .ok_or_else(missing)?
        .try_get_by_index(1)?;
    let uptime: i64 = uptime.parse().map_err(|_| missing())?;
    let now: i64 = read("SELECT CAST(UNIX_TIMESTAMP() AS SIGNED)")
        .await?
        .ok_or_else(missing)?
        .try_get_by_index(0)?;
    Ok(now - uptime)
}

/// How often [`while_held`] checks the lock.
const HEARTBEAT: Duration = Duration::from_secs(1);

/// Runs `work`, checking every [`HEARTBEAT`] that the lock is still held:
/// when its connection is gone, or its server gives no answer within the
/// lock's timeout (a paused server, a host that vanished), the work stops
/// where it is, also while it waits on a statement that the migrator's own
/// connection bounds by nothing (a long index build may take hours).
async fn while_held<T>(
    held: &Mutex<HeldLock>,
    work: impl Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    let heartbeat = async {
        loop {
            tokio::time::sleep(HEARTBEAT).await;
            if let Err(e) = held.lock().await.check().await {
                return Error::LockLost(online::lock_lost(e));
            }
        }
    };
    tokio::select! {
        result = work => result,
        lost = heartbeat => Err(lost),
    }
}

/// No migrations, with `M`'s migration table: `fresh` without the `up`
/// that SeaORM's own `fresh` runs, so that the runner applies them.
struct Empty<M>(PhantomData<fn() -> M>);

#[async_trait::async_trait]
impl<M: MigratorTrait> MigratorTrait for Empty<M> {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        Vec::new()
    }

    fn migration_table_name() -> DynIden {
        M::migration_table_name()
    }
}

/// Runs a command's steps and migrations under the migration lock.
struct Runner<'a> {
    db: &'a Db,
    /// The lock held on its own connection (PostgreSQL, MySQL).
    lock: Option<&'a Mutex<HeldLock>>,
    /// The lock's transaction, which everything runs in (SQLite).
    session: Option<&'a Session>,
    /// How long a statement waits for a lock (PostgreSQL).
    lock_timeout: Duration,
}

impl Runner<'_> {
    async fn command<M: MigratorTrait>(&self, command: &MigrateCommand) -> Result<Report, Error> {
        let target = self.db.target();
        let step = self.step().await?;
        let recorded = Recorded::read::<M>(&step).await?;
        let newer = recorded.unknown::<M>();
        let before = recorded.names::<M>();
        if !newer.is_empty()
            && !matches!(
                command,
                MigrateCommand::Up { .. } | MigrateCommand::Baseline { .. }
            )
        {
            return Err(Error::Refused(format!(
                "the database has migrations that this binary does not have ({}), applied after its own: revert them first with the release that has them",
                newer.join(", ")
            )));
        }
        refuse_reverting_adopted(&*step, &reverting(command, &before)).await?;
        step.finish().await?;
        let mut adopted = Vec::new();
        match command {
            MigrateCommand::Up { num } => {
                let step = self.step().await?;
                adopted = crate::adopt::adopt::<M>(&step, target).await?;
                step.finish().await?;
                let left = num.map(|n| n.saturating_sub(adopted.len() as u32));
                self.up::<M>(left).await?;
            }
            MigrateCommand::Baseline { to } => {
                let step = self.step().await?;
                adopted = crate::adopt::baseline::<M>(&step, to.as_deref()).await?;
                step.finish().await?;
            }
            MigrateCommand::Down { num, .. } => self.down::<M>(Some(*num)).await?,
            MigrateCommand::Fresh { .. } => {
                let session = self.db.autocommit();
                let session = self.session.unwrap_or(&session);
                Empty::<M>::fresh(session.executor()).await?;
                self.up::<M>(None).await?;
            }
            MigrateCommand::Refresh { .. } => {
                self.down::<M>(None).await?;
                self.up::<M>(None).await?;
            }
            MigrateCommand::Reset { .. } => {
                self.down::<M>(None).await?;
                let step = self.step().await?;
                M::uninstall(step.executor()).await?;
                step.finish().await?;
            }
            MigrateCommand::Status
            | MigrateCommand::Sql { .. }
            | MigrateCommand::Generate { .. }
            | MigrateCommand::Entities { .. } => {
                unreachable!("handled before taking the lock")
            }
        }
        let step = self.step().await?;
        let after = applied_names::<M>(&step).await?;
        let again = matches!(
            command,
            MigrateCommand::Fresh { .. } | MigrateCommand::Refresh { .. }
        );
        // A reverted migration was forgotten as adopted when it was
        // reverted (`run_migration`); `fresh` drops the record's table.
        step.finish().await?;
        Ok(Report {
            reverted: before
                .iter()
                .filter(|n| !after.contains(n))
                .cloned()
                .collect(),
            applied: after
                .iter()
                .filter(|n| !adopted.contains(n) && (!before.contains(n) || again))
                .cloned()
                .collect(),
            adopted,
        })
    }

    /// A transaction of its own for a step of the command, to
    /// [`finish`](Step::finish) when it succeeded (on SQLite, the lock's
    /// transaction, which everything runs in).
    async fn step(&self) -> Result<Step<'_>, Error> {
        Ok(match self.session {
            Some(session) => Step::Lock(session),
            None => Step::Own(self.db.begin().await?),
        })
    }

    /// Applies the next `num` pending migrations (all when `None`).
    async fn up<M: MigratorTrait>(&self, num: Option<u32>) -> Result<(), Error> {
        let step = self.step().await?;
        M::install(&*step).await?;
        let recorded = Recorded::read::<M>(&step).await?;
        step.finish().await?;
        let (pending, newer) = (recorded.pending::<M>(), recorded.unknown::<M>());
        if !pending.is_empty() && !newer.is_empty() {
            let pending: Vec<&str> = pending.iter().map(|m| m.name()).collect();
            return Err(Error::Refused(format!(
                "the database has migrations that this binary does not have ({}), and this binary's {} are not applied: apply them with a release that has them all",
                newer.join(", "),
                pending.join(", ")
            )));
        }
        let pending = pending
            .into_iter()
            .take(num.map_or(usize::MAX, |n| n as usize));
        for migration in pending {
            (self.apply::<M>(migration.as_ref(), true).await)
                .map_err(|e| e.of_migration(migration.name()))?;
        }
        Ok(())
    }

    /// Reverts the last `num` applied migrations (all when `None`).
    async fn down<M: MigratorTrait>(&self, num: Option<u32>) -> Result<(), Error> {
        let step = self.step().await?;
        M::install(&*step).await?;
        let recorded = Recorded::read::<M>(&step).await?;
        step.finish().await?;
        let mut applied = M::migrations();
        applied.retain(|m| recorded.contains(m.name()));
        let reverting = applied
            .into_iter()
            .rev()
            .take(num.map_or(usize::MAX, |n| n as usize));
        for migration in reverting {
            (self.apply::<M>(migration.as_ref(), false).await)
                .map_err(|e| e.of_migration(migration.name()))?;
        }
        Ok(())
    }

    /// Runs one migration up or down and records it. In a transaction when
    /// it wants one (SeaORM's rule: by default on PostgreSQL only), retried
    /// as a whole after a lock timeout; otherwise statement by statement,
    /// where the building blocks of [`online`] bound and retry each. Its
    /// log lines (each retry's too) are in a span that names it.
    #[tracing::instrument(name = "migration", skip_all, fields(migration = migration.name()))]
    async fn apply<M: MigratorTrait>(
        &self,
        migration: &dyn MigrationTrait,
        up: bool,
    ) -> Result<(), Error> {
        let name = migration.name();
        crate::sql::migration_starts(name);
        let Some(lock) = self.lock else {
            let session = self.session.expect("a runner has a lock or a session");
            return run_migration::<M>(session, migration, up).await;
        };
        lock.lock().await.check().await?;
        let backend = self.db.backend();
        let transaction = migration
            .use_transaction()
            .unwrap_or(backend == DbBackend::Postgres);
        if !transaction {
            return run_migration::<M>(&self.db.autocommit(), migration, up).await;
        }
        let db = self.db;
        let set_lock_timeout = &(backend == DbBackend::Postgres).then(|| {
            format!(
                "SET LOCAL lock_timeout = '{}ms'",
                crate::online::millis(self.lock_timeout)
            )
        });
        online::retrying("its transaction", Bound::Statement, |seen| async move {
            crate::sql::transaction_begins();
            let session = db.begin().await?;
            let work = async {
                // What the session has already, said in the transaction
                // too, so that the SQL printed for review shows it.
                if let Some(set) = &set_lock_timeout {
                    session.execute_unprepared(set).await?;
                }
                seen.watch(&session, run_migration::<M>(&session, migration, up))
                    .await
            };
            // Rolled back here, not when dropped: a dropped transaction's
            // connection is closed, and the runner's one connection
            // carries what the runner set on its session.
            match work.await {
                Ok(()) => session.commit().await?,
                Err(e) => {
                    // The error that ended the work is the one to report.
                    let _ = session.rollback().await;
                    return Err(e);
                }
            }
            Ok::<_, Error>(())
        })
        .await
    }
}

/// A step's transaction: its own, or the lock's.
enum Step<'a> {
    Own(Session),
    Lock(&'a Session),
}

impl std::ops::Deref for Step<'_> {
    type Target = Session;

    fn deref(&self) -> &Session {
        match self {
            Step::Own(session) => session,
            Step::Lock(session) => session,
        }
    }
}

impl Step<'_> {
    /// Commits a transaction of its own; the lock's commits with the command.
    async fn finish(self) -> Result<(), Error> {
        if let Step::Own(session) = self {
            session.commit().await?;
        }
        Ok(())
    }
}

/// The migrations that `command` reverts, of those `applied`, unless
/// forced: the ones it must not revert when they were adopted.
fn reverting(command: &MigrateCommand, applied: &[String]) -> Vec<String> {
    match command {
        MigrateCommand::Down { num, force: false } => {
            applied[applied.len().saturating_sub(*num as usize)..].to_vec()
        }
        MigrateCommand::Fresh { force: false }
        | MigrateCommand::Refresh { force: false }
        | MigrateCommand::Reset { force: false } => applied.to_vec(),
        _ => Vec::new(),
    }
}

/// Runs `migration` up or down on `conn` and records it.
async fn run_migration<M: MigratorTrait>(
    conn: &Session,
    migration: &dyn MigrationTrait,
    up: bool,
) -> Result<(), Error> {
    let name = migration.name();
    tracing::info!(
        "{} migration {name}",
        if up { "applying" } else { "reverting" }
    );
    let manager = SchemaManager::new(conn.executor());
    let started = Instant::now();
    if up {
        migration.up(&manager).await?;
    } else {
        migration.down(&manager).await?;
    }
    record::<M>(conn, name, up).await?;
    if !up {
        // Reverted: if it was adopted, what it makes next is this project's.
        crate::adopt::forget(&manager, name).await?;
    }
    tracing::info!(
        "{} migration {name} in {}",
        if up { "applied" } else { "reverted" },
        humantime::format_duration(Duration::from_millis(started.elapsed().as_millis() as u64))
    );
    Ok(())
}

/// Records in `M`'s migration table that `name` was applied (`up`) or reverted.
async fn record<M: MigratorTrait>(conn: &Session, name: &str, up: bool) -> Result<(), Error> {
    let table = M::migration_table_name();
    if up {
        let now = sea_orm::prelude::ChronoUtc::now().timestamp();
        conn.execute(
            &Query::insert()
                .into_table(table)
                .columns(["version", "applied_at"])
                .values_panic([name.into(), now.into()])
                .to_owned(),
        )
        .await?;
    } else {
        conn.execute(
            &Query::delete()
                .from_table(table)
                .and_where(Expr::col("version").eq(name))
                .to_owned(),
        )
        .await?;
    }
    Ok(())
}

impl LockNotAvailable for Error {
    fn lock_wait(&self) -> Option<LockWait> {
        match self {
            Error::Migration { source, .. } => source.lock_wait(),
            Error::Db(db_core::Error::Db(e)) => e.lock_wait(),
            _ => None,
        }
    }
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

async fn applied_names<M: MigratorTrait>(conn: &Session) -> Result<Vec<String>, Error> {
    Ok(Recorded::read::<M>(conn).await?.names::<M>())
}

/// The migration lock's name: one per database, on every backend.
const LOCK: &str = "migration";
