//! The notes table, as a migration of the project's `migration` crate
//! (`migration/src/m20261205_000001_create_notes.rs`, listed last in its
//! `Migrator`), and [`Migrator`]: the project's migrations and this one.

use migration::{MigrationTrait, MigratorTrait};
use sea_orm_migration::{prelude::*, schema::*};

/// Creates `notes`.
#[derive(Debug, DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Notes::Table)
                    .col(pk_auto(Notes::Id))
                    .col(string_len(Notes::Title, 1000))
                    .col(text(Notes::Body))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Notes::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum Notes {
    Table,
    Id,
    Title,
    Body,
}

/// The project's migrations, then the notes table's.
#[derive(Debug)]
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        let mut all = migration::Migrator::migrations();
        all.push(Box::new(Migration));
        all
    }
}
