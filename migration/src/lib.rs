//! The database schema as migrations, and the way to apply them safely.
//!
//! - [`Migrator`] lists the migrations (`sea-orm-migration`); add one with
//!   `just migration NAME`. Migrations define their own identifiers and never
//!   import `entity`, so an old migration keeps its meaning when models change.
//! - [`run`] applies a [`cli::MigrateArgs`] command under a migration lock,
//!   held around reading the pending list and applying it, so concurrent
//!   deploys apply each migration exactly once: on PostgreSQL a
//!   session-level advisory lock and on MySQL a `GET_LOCK`, each held on a
//!   connection of its own (it ends with the migrator), while each
//!   migration runs in a transaction of its own on PostgreSQL, or in none
//!   when it opts out ([`online`] has the building blocks for that); on
//!   SQLite an exclusive transaction that runs every migration of the
//!   command (all apply or none). The `migration` binary and `tracker
//!   migrate` both call it. Migrations connect to `DB_MIGRATION_URL` when
//!   it is set.
//! - Adoption: `up` records a pending migration as applied without running
//!   it when its tables already exist with the shape it would create (tables
//!   made by the original app, or by any other tool), and refuses with a
//!   list of differences, changing nothing, when they exist with another
//!   shape; `baseline` records migrations without checking. A later
//!   migration converges an adopted schema to the one a fresh `up` makes.
//!   Reverting an adopted migration needs `--force`.
//!
//! ```no_run
//! # async fn example(settings: db_core::Settings) -> Result<(), migration::Error> {
//! // What `tracker serve --migrate` does at startup.
//! let applied = migration::up(&settings, std::time::Duration::from_secs(300)).await?;
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

pub use sea_orm_migration::prelude::*;

mod adopt;
pub mod binary;
pub mod cli;
mod entities;
pub mod inspect;
pub mod online;
mod runner;
pub mod sql;

pub use entities::{SEA_ORM_CLI_VERSION, Source, entities};
pub use runner::{Error, generate, pending, run, run_with, up, up_with};

mod m20261124_000001_create_employees_and_tasks;
mod m20261125_000001_converge_adopted_schema;
mod m20261203_000001_task_block_counts;
mod m20261204_000001_drop_task_block_counts;

/// The project's migrations, oldest first.
#[derive(Debug)]
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261124_000001_create_employees_and_tasks::Migration),
            Box::new(m20261125_000001_converge_adopted_schema::Migration),
            Box::new(m20261203_000001_task_block_counts::Migration),
            Box::new(m20261204_000001_drop_task_block_counts::Migration),
        ]
    }
}
