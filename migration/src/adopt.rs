//! Adopting tables that another tool made: when a pending migration's tables
//! already exist and have the shape it would give them, the migration is
//! recorded as applied without running it (like `alembic stamp`, Flyway's
//! baseline or Django's `--fake-initial`).
//!
//! What a migration creates is learnt by running the migrations on an empty
//! in-memory SQLite database and reading its catalog; the live tables are
//! read from the target's catalog; both go through the same normalisation
//! ([`inspect::kind`]), so a `varchar` and a `text` column compare equal.

use std::collections::{BTreeMap, BTreeSet};

use db_core::{Db, Session, Settings, url::DatabaseUrl};
use sea_orm::{ConnectionTrait, DbBackend, DbErr, Statement};
use sea_orm_migration::prelude::*;
use sea_orm_migration::{MigratorTrait, SchemaManager};

use crate::inspect::{self, Table as Inspected};
use crate::runner::{Error, Recorded};

/// Records which migrations were adopted or baselined rather than run, so
/// that reverting them can refuse to drop tables they did not create.
const ADOPTED_TABLE: &str = "seaql_migrations_adopted";

/// What the migrations of `M` create, migration by migration: the tables
/// each one adds, with their shape right after it ran.
pub(crate) async fn reference<M: MigratorTrait>() -> Result<Vec<BTreeMap<String, Inspected>>, Error>
{
    let url = DatabaseUrl::parse("sqlite::memory:", "the reference schema")?;
    let db = Db::connect(&Settings::new(url)).await?;
    let result = async {
        // Never committed: the in-memory database goes when the pool closes.
        let session = db.begin().await?;
        let manager = SchemaManager::new(session.executor());
        let mut before = inspect::tables(&session).await?;
        let mut created = Vec::new();
        for migration in M::migrations() {
            migration.up(&manager).await?;
            let after = inspect::tables(&session).await?;
            created.push(
                after
                    .iter()
                    .filter(|(name, _)| !before.contains_key(*name))
                    .map(|(name, table)| (name.clone(), table.clone()))
                    .collect(),
            );
            before = after;
        }
        Ok(created)
    }
    .await;
    db.close().await;
    result
}

/// One line for each way `live` differs from `expected`, for table `name`.
fn differences(name: &str, expected: &Inspected, live: &Inspected) -> Vec<String> {
    let mut lines = Vec::new();
    for (column, want) in &expected.columns {
        let Some(found) = live.columns.get(column) else {
            lines.push(format!("{name}.{column}: missing column ({})", want.kind));
            continue;
        };
        if found.kind != want.kind {
            lines.push(format!(
                "{name}.{column}: expected {}, found {}",
                want.kind, found.kind
            ));
        }
        if found.nullable != want.nullable {
            let null = |n: bool| if n { "NULL" } else { "NOT NULL" };
            lines.push(format!(
                "{name}.{column}: expected {}, found {}",
                null(want.nullable),
                null(found.nullable)
            ));
        }
        if want.generated && !found.generated {
            lines.push(format!(
                "{name}.{column}: expected generated ids (a sequence, identity or auto-increment), found none"
            ));
        }
    }
    for column in live.columns.keys() {
        if !expected.columns.contains_key(column) {
            lines.push(format!(
                "{name}.{column}: a column the migration does not create"
            ));
        }
    }
    if live.primary_key != expected.primary_key {
        lines.push(format!(
            "{name}: expected primary key ({}), found ({})",
            expected.primary_key.join(", "),
            live.primary_key.join(", ")
        ));
    }
    let targets = |table: &Inspected| -> BTreeMap<String, String> {
        table
            .foreign_keys
            .values()
            .map(|fk| (fk.columns.join(", "), fk.target()))
            .collect()
    };
    let (want, found) = (targets(expected), targets(live));
    for (columns, target) in &want {
        match found.get(columns) {
            Some(f) if f == target => {}
            Some(f) => lines.push(format!(
                "{name}.{columns}: expected a foreign key to {target}, found one to {f}"
            )),
            None => lines.push(format!(
                "{name}.{columns}: expected a foreign key to {target}, found none"
            )),
        }
    }
    for (columns, target) in &found {
        if !want.contains_key(columns) {
            lines.push(format!(
                "{name}.{columns}: a foreign key to {target} that the migration does not create"
            ));
        }
    }
    lines
}

/// Before pending migrations run on a database that no migration of ours
/// has been applied to: records as applied, without running them, the
/// leading migrations whose tables already exist with the shape they would
/// create. Returns their names; fails, changing nothing, when the existing
/// tables differ. Once one is applied, a pending migration's tables are not
/// another tool's: its own run stopped midway (a migration outside a
/// transaction, or MySQL's DDL), and running it again is what finishes it,
/// or says what is in the way (`migrate baseline` records one by hand).
pub(crate) async fn adopt<M: MigratorTrait>(
    conn: &Session,
    target: &str,
) -> Result<Vec<String>, Error> {
    if !Recorded::read::<M>(conn).await?.is_empty() {
        return Ok(Vec::new());
    }
    let migrations = M::migrations();
    let live = inspect::tables(conn).await?;
    let created = reference::<M>().await?;
    let mut adopted: Vec<(String, Vec<String>)> = Vec::new();
    for (migration, creates) in migrations.iter().zip(&created) {
        if creates.is_empty() || !creates.keys().any(|t| live.contains_key(t)) {
            break;
        }
        let mut lines = Vec::new();
        for (name, expected) in creates {
            match live.get(name) {
                Some(table) => lines.extend(differences(name, expected, table)),
                None => lines.push(format!("{name}: missing table")),
            }
        }
        if !lines.is_empty() {
            return Err(Error::Adoption {
                target: target.to_owned(),
                migration: migration.name().to_owned(),
                differences: lines,
            });
        }
        adopted.push((
            migration.name().to_owned(),
            creates.keys().cloned().collect(),
        ));
    }
    let mut names = Vec::new();
    for (name, tables) in adopted {
        record::<M, _>(conn, &name).await?;
        continue_ids(conn, &tables, &live).await?;
        tracing::info!(
            "{target}: the tables of migration {name} already exist with its shape; recorded it as applied without running it"
        );
        names.push(name);
    }
    Ok(names)
}

/// Records migrations of `M` up to and including `to` (default: the newest
/// one whose tables all exist) as applied without running them. Refuses
/// when none of their tables exist: then there is nothing to adopt and
/// `migrate up` is the command.
pub(crate) async fn baseline<M: MigratorTrait>(
    conn: &Session,
    to: Option<&str>,
) -> Result<Vec<String>, Error> {
    let recorded = Recorded::read::<M>(conn).await?;
    let migrations = M::migrations();
    let created = reference::<M>().await?;
    let live = inspect::tables(conn).await?;
    let last = match to {
        Some(name) => migrations
            .iter()
            .position(|m| m.name() == name)
            .ok_or_else(|| {
                Error::Refused(format!(
                    "there is no migration {name}; `migrate status` lists them"
                ))
            })?,
        None => created
            .iter()
            .rposition(|t| !t.is_empty() && t.keys().all(|name| live.contains_key(name)))
            .ok_or_else(|| {
                Error::Refused(
                    "the database has none of the tables the migrations create: nothing to baseline; run `migrate up`"
                        .to_owned(),
                )
            })?,
    };
    let tables: BTreeSet<&String> = created[..=last].iter().flat_map(|t| t.keys()).collect();
    if !tables.iter().any(|t| live.contains_key(*t)) {
        return Err(Error::Refused(format!(
            "the database has none of the tables of the migrations up to {} ({}): nothing to baseline; run `migrate up`",
            migrations[last].name(),
            tables.into_iter().cloned().collect::<Vec<_>>().join(", ")
        )));
    }
    let mut names = Vec::new();
    for migration in &migrations[..=last] {
        if !recorded.contains(migration.name()) {
            record::<M, _>(conn, migration.name()).await?;
            names.push(migration.name().to_owned());
        }
    }
    let existing: Vec<String> = tables.into_iter().cloned().collect();
    continue_ids(conn, &existing, &live).await?;
    Ok(names)
}

/// Marks `name` as applied, and as adopted rather than run.
async fn record<M: MigratorTrait, C: ConnectionTrait>(conn: &C, name: &str) -> Result<(), Error> {
    M::install(conn).await?;
    conn.execute(
        &Table::create()
            .table(ADOPTED_TABLE)
            .if_not_exists()
            .col(
                ColumnDef::new("version")
                    .string_len(255)
                    .not_null()
                    .primary_key(),
            )
            .col(ColumnDef::new("adopted_at").big_integer().not_null())
            .to_owned(),
    )
    .await?;
    let now = sea_orm::prelude::ChronoUtc::now().timestamp();
    conn.execute(
        &Query::insert()
            .into_table(M::migration_table_name())
            .columns(["version", "applied_at"])
            .values_panic([name.into(), now.into()])
            .to_owned(),
    )
    .await?;
    conn.execute(
        &Query::insert()
            .into_table(ADOPTED_TABLE)
            .columns(["version", "adopted_at"])
            .values_panic([name.into(), now.into()])
            .to_owned(),
    )
    .await?;
    Ok(())
}

/// The applied migrations that were adopted or baselined rather than run.
pub(crate) async fn adopted_names(conn: &impl ConnectionTrait) -> Result<Vec<String>, Error> {
    if !inspect::tables(conn).await?.contains_key(ADOPTED_TABLE) {
        return Ok(Vec::new());
    }
    let rows = conn
        .query_all(
            &Query::select()
                .column("version")
                .from(ADOPTED_TABLE)
                .to_owned(),
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| r.try_get_by_index::<String>(0))
        .collect::<Result<_, _>>()?)
}

/// Forgets that migration `name` was adopted (as it is reverted).
pub(crate) async fn forget(manager: &SchemaManager<'_>, name: &str) -> Result<(), Error> {
    if !manager.has_table(ADOPTED_TABLE).await? {
        return Ok(());
    }
    let forget = Query::delete()
        .from_table(ADOPTED_TABLE)
        .and_where(Expr::col("version").eq(name))
        .to_owned();
    manager.get_connection().execute(&forget).await?;
    Ok(())
}

/// On PostgreSQL, moves the sequence behind each adopted table's generated
/// key past the highest id, so the next row gets the next id even when rows
/// were loaded with explicit ids. Only ever moves a sequence forward, so an
/// application still writing to the table meanwhile is not disturbed.
/// (MySQL's AUTO_INCREMENT and SQLite's rowid follow the highest id by
/// themselves.)
async fn continue_ids(
    conn: &impl ConnectionTrait,
    tables: &[String],
    live: &BTreeMap<String, Inspected>,
) -> Result<(), DbErr> {
    if conn.get_database_backend() != DbBackend::Postgres {
        return Ok(());
    }
    for name in tables {
        let Some(table) = live.get(name) else {
            continue;
        };
        let [key] = table.primary_key.as_slice() else {
            continue;
        };
        if !table.columns.get(key).is_some_and(|c| c.generated) {
            continue;
        }
        let quoted = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
        let sql = format!(
            "SELECT setval(s, m) FROM (SELECT pg_get_serial_sequence($1, $2) AS s, max({key}) AS m FROM {table}) x \
             WHERE s IS NOT NULL AND m IS NOT NULL AND m > COALESCE(pg_sequence_last_value(s::regclass), 0)",
            key = quoted(key),
            table = quoted(name),
        );
        conn.query_all_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            sql,
            [quoted(name).into(), key.clone().into()],
        ))
        .await?;
    }
    Ok(())
}
