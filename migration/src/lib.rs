//! The database schema as migrations, and the way to apply them safely.
//!
//! - [`Migrator`] lists the migrations (`sea-orm-migration`); add one with
//!   `just migration NAME`. Migrations define their own identifiers and never
//!   import `entity`, so an old migration keeps its meaning when models change.
//! - [`run`] applies a [`cli::MigrateArgs`] command under a migration lock,
//!   held around reading the pending list and applying it, so concurrent
//!   deploys apply each migration exactly once: on PostgreSQL a
//!   transaction-level advisory lock and on SQLite an exclusive transaction,
//!   each in the one transaction that runs every migration of the command
//!   (all apply or none); on MySQL, whose DDL cannot be rolled back, a
//!   `GET_LOCK`. The `migration` binary and `tracker migrate` both call it.
//!   Migrations connect to `DB_MIGRATION_URL` when it is set.
//!
//! ```no_run
//! # async fn example(settings: db_core::Settings) -> Result<(), migration::Error> {
//! // What `tracker serve --migrate` does at startup.
//! let applied = migration::up(&settings, std::time::Duration::from_secs(300)).await?;
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

pub use sea_orm_migration::prelude::*;

pub mod cli;
mod entities;
mod lock;
mod runner;

pub use entities::{SEA_ORM_CLI_VERSION, entities};
pub use runner::{Error, generate, pending, run, run_with, up};

mod m20261124_000001_create_employees_and_tasks;

/// The project's migrations, oldest first.
#[derive(Debug)]
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(
            m20261124_000001_create_employees_and_tasks::Migration,
        )]
    }
}
