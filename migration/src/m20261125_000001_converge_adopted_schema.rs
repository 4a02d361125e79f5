//! Brings adopted tables to the schema that a fresh `migrate up` makes, and
//! changes nothing on a freshly migrated database.
//!
//! Tables made by another tool (the FastAPI app's Alembic migrations) have
//! the same columns but other details:
//! - foreign keys without delete rules: they get ours (deleting a task
//!   deletes its subtasks, deleting an employee unassigns their tasks);
//! - no index on `tasks.parent_id` or `tasks.assignee_id`: added;
//! - indexes on exactly the primary key (`ix_employees_id`, `ix_tasks_id`),
//!   which the key's own index makes redundant: dropped.
//!
//! Column types are left as they are (an unbounded `varchar` stays
//! unbounded, so no existing value can be cut short), and so are tables this
//! project did not create.
//!
//! It runs while the original app may still be writing, so it is online
//! (see [`crate::online`]): outside a transaction, a foreign key is replaced
//! `NOT VALID` in a moment's lock and validated while writes go on, and
//! indexes are built and dropped concurrently. Each step is safe to run
//! again, so a run that was interrupted is completed by the next.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend};

use crate::inspect::{self, Table as Inspected};
use crate::m20261124_000001_create_employees_and_tasks::tasks_table;
use crate::online;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// The foreign keys of `tasks`: column, our constraint name, target table,
/// delete rule, and the rule as the catalog names it.
const FOREIGN_KEYS: [(&str, &str, &str, ForeignKeyAction, &str); 2] = [
    (
        "parent_id",
        "fk_tasks_parent_id",
        "tasks",
        ForeignKeyAction::Cascade,
        "CASCADE",
    ),
    (
        "assignee_id",
        "fk_tasks_assignee_id",
        "employees",
        ForeignKeyAction::SetNull,
        "SET NULL",
    ),
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let tables = inspect::tables(manager.get_connection()).await?;
        let (Some(employees), Some(tasks)) = (tables.get("employees"), tables.get("tasks")) else {
            return Err(DbErr::Migration(
                "the employees and tasks tables are missing".to_owned(),
            ));
        };
        let stale: Vec<_> = FOREIGN_KEYS
            .iter()
            .filter_map(|(column, ours, _, _, rule)| {
                let (name, fk) = tasks.foreign_key_on(column)?;
                (fk.on_delete != *rule).then_some((name.clone(), *column, *ours))
            })
            .collect();
        let mut tasks = tasks.clone();
        if !stale.is_empty() && manager.get_database_backend() == DbBackend::Sqlite {
            rebuild_sqlite_tasks(manager, &tasks).await?;
            tasks = inspect::tables(manager.get_connection())
                .await?
                .remove("tasks")
                .unwrap_or_default();
        } else {
            for (name, column, _) in &stale {
                online::replace_foreign_key(manager, name, foreign_key(column)).await?;
            }
            // Ours, validated: also when an earlier run was interrupted
            // between the replacement and its validation, or (MySQL, where
            // the replacement is two statements) between the drop and the
            // add, which left the column without a key.
            for (column, ours, ..) in FOREIGN_KEYS {
                let replaced = stale.iter().any(|(_, c, _)| *c == column);
                let existing = tasks.foreign_key_on(column);
                let named_ours = existing.is_some_and(|(n, _)| n == ours);
                if replaced || named_ours || existing.is_none() {
                    online::add_foreign_key(manager, foreign_key(column)).await?;
                }
            }
        }
        for (column, ..) in FOREIGN_KEYS {
            if !tasks.is_indexed(column) {
                let index = Index::create()
                    .name(format!("idx_tasks_{column}"))
                    .table("tasks")
                    .col(column)
                    .to_owned();
                online::create_index(manager, index).await?;
            }
        }
        for (table, inspected) in [("employees", employees), ("tasks", &tasks)] {
            for index in inspected.duplicates_of_primary_key() {
                online::drop_index(manager, &index, table).await?;
            }
        }
        Ok(())
    }

    /// Online steps, each committed by itself (see the module docs).
    fn use_transaction(&self) -> Option<bool> {
        Some(false)
    }

    /// Nothing to undo: the schema after `up` is the one the first migration
    /// creates, which its own `down` removes.
    async fn down(&self, _manager: &SchemaManager) -> Result<(), DbErr> {
        Ok(())
    }
}

/// Our foreign key on `tasks.column`.
fn foreign_key(column: &str) -> ForeignKeyCreateStatement {
    let (_, ours, target, action, _) = FOREIGN_KEYS
        .iter()
        .find(|(c, ..)| *c == column)
        .expect("a column of FOREIGN_KEYS");
    ForeignKey::create()
        .name(*ours)
        .from("tasks", Alias::new(column))
        .to(Alias::new(*target), "id")
        .on_delete(*action)
        .to_owned()
}

/// SQLite cannot change a foreign key in place: its documented procedure is
/// a new table, a copy of the rows, the old table dropped and the new one
/// renamed, then the indexes again. The migration runner has turned foreign
/// keys off and checks them before it commits.
async fn rebuild_sqlite_tasks(manager: &SchemaManager<'_>, old: &Inspected) -> Result<(), DbErr> {
    const NEW: &str = "tasks_converged";
    const COLUMNS: &str = "id, title, parent_id, assignee_id, deadline, status";
    let conn = manager.get_connection();
    manager.create_table(tasks_table(Alias::new(NEW))).await?;
    conn.execute_unprepared(&format!(
        "INSERT INTO {NEW} ({COLUMNS}) SELECT {COLUMNS} FROM tasks"
    ))
    .await?;
    conn.execute_unprepared("DROP TABLE tasks").await?;
    conn.execute_unprepared(&format!("ALTER TABLE {NEW} RENAME TO tasks"))
        .await?;
    let redundant = old.duplicates_of_primary_key();
    for (name, index) in &old.indexes {
        // SQLite names the indexes of UNIQUE constraints itself, and makes
        // them again with the table.
        if redundant.contains(name) || name.starts_with("sqlite_") {
            continue;
        }
        let mut create = Index::create();
        create.name(name).table("tasks");
        if index.unique {
            create.unique();
        }
        for column in &index.columns {
            create.col(Alias::new(column));
        }
        manager.create_index(create).await?;
    }
    Ok(())
}
