//! The Task Tracker schema: employees, and tasks that form a tree.
//!
//! - Deleting an employee sets `assignee_id` to NULL on their tasks.
//! - Deleting a task deletes its subtasks, recursively (`parent_id` cascades).
//! - `parent_id` and `assignee_id` are indexed, so walking a subtree or
//!   listing an employee's tasks uses an index at every level.

use sea_orm_migration::sea_orm::DbBackend;
use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let employees = Table::create()
            .table(Employees::Table)
            .col(pk_auto(Employees::Id))
            .col(string_len(Employees::FullName, 255))
            .col(string_len(Employees::Position, 255))
            .to_owned();
        original_shape(manager, &employees).await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_employees_full_name")
                    .table(Employees::Table)
                    .col(Employees::FullName)
                    .to_owned(),
            )
            .await?;

        let mut parent_index = Index::create()
            .name("idx_tasks_parent_id")
            .table(Tasks::Table)
            .col(Tasks::ParentId)
            .to_owned();
        let mut assignee_index = Index::create()
            .name("idx_tasks_assignee_id")
            .table(Tasks::Table)
            .col(Tasks::AssigneeId)
            .to_owned();
        let mut tasks = tasks_table(Tasks::Table);
        // MySQL creates an index for every foreign key that has none; declaring
        // ours inside CREATE TABLE lets it use them instead of adding twins.
        let mysql = manager.get_database_backend() == DbBackend::MySql;
        if mysql {
            tasks.index(&mut parent_index).index(&mut assignee_index);
        }
        original_shape(manager, &tasks).await?;
        if !mysql {
            manager.create_index(parent_index).await?;
            manager.create_index(assignee_index).await?;
        }
        manager
            .create_index(
                Index::create()
                    .name("idx_tasks_title")
                    .table(Tasks::Table)
                    .col(Tasks::Title)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Tasks::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(Employees::Table).to_owned())
            .await
    }
}

/// Creates a table with the original app's column types, which adoption
/// takes over as they are (32-bit ids, the entities' `i32`; bounded
/// `varchar`), telling the linter so.
async fn original_shape(
    manager: &SchemaManager<'_>,
    table: &TableCreateStatement,
) -> Result<(), DbErr> {
    crate::sql::excepted(
        manager,
        table,
        &["prefer-bigint-over-int", "prefer-text-field"],
        "the original app's column types, which adoption takes over as they are",
    )
    .await
}

/// The tasks table as this migration creates it, named `name`. An adopted
/// SQLite table whose foreign keys need other rules is rebuilt from it.
pub(crate) fn tasks_table(name: impl IntoIden) -> TableCreateStatement {
    let name = name.into_iden();
    Table::create()
        .table(name.clone())
        .col(pk_auto(Tasks::Id))
        .col(string_len(Tasks::Title, 255))
        .col(integer_null(Tasks::ParentId))
        .col(integer_null(Tasks::AssigneeId))
        .col(date_null(Tasks::Deadline))
        .col(string_len(Tasks::Status, 64))
        .foreign_key(
            ForeignKey::create()
                .name("fk_tasks_parent_id")
                .from(name.clone(), Tasks::ParentId)
                .to(Tasks::Table, Tasks::Id)
                .on_delete(ForeignKeyAction::Cascade),
        )
        .foreign_key(
            ForeignKey::create()
                .name("fk_tasks_assignee_id")
                .from(name, Tasks::AssigneeId)
                .to(Employees::Table, Employees::Id)
                .on_delete(ForeignKeyAction::SetNull),
        )
        .to_owned()
}

#[derive(DeriveIden)]
enum Employees {
    Table,
    Id,
    FullName,
    Position,
}

#[derive(DeriveIden)]
enum Tasks {
    Table,
    Id,
    Title,
    ParentId,
    AssigneeId,
    Deadline,
    Status,
}
