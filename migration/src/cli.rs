//! The migrate command line, shared by the `migration` binary and
//! `tracker migrate`.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// `entity/src/generated` of the workspace this binary was built from.
fn default_entities_dir() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .unwrap_or(manifest)
        .join("entity/src/generated")
}

/// `migrate` arguments.
#[derive(Debug, clap::Args)]
pub struct MigrateArgs {
    /// How long to wait for the migration lock when another process holds it;
    /// also how long the lock's connection may go without an answer (at
    /// least 1s) before the command stops.
    #[arg(long, global = true, default_value = "5m", value_parser = humantime::parse_duration)]
    pub lock_timeout: Duration,

    /// What to do.
    #[command(subcommand)]
    pub command: MigrateCommand,
}

/// Migrate commands. All but `status`, `sql`, `generate` and `entities` take
/// the migration lock of the database they change.
#[derive(Debug, clap::Subcommand)]
pub enum MigrateCommand {
    /// Apply pending migrations: all, or the next N. A pending migration whose
    /// tables already exist with its shape (made by another tool) is adopted:
    /// recorded as applied without running it.
    Up {
        /// How many to apply.
        #[arg(short = 'n', long = "num")]
        num: Option<u32>,
    },
    /// Revert applied migrations: the last one, or the last N.
    Down {
        /// How many to revert.
        #[arg(short = 'n', long = "num", default_value_t = 1)]
        num: u32,
        /// Also revert adopted migrations, dropping tables they did not create.
        #[arg(long)]
        force: bool,
    },
    /// List migrations and whether they are applied (read-only: creates nothing).
    Status,
    /// Drop every table, then apply all migrations.
    Fresh {
        /// Also when migrations were adopted (their tables were not made here).
        #[arg(long)]
        force: bool,
    },
    /// Revert all applied migrations, then apply all.
    Refresh {
        /// Also revert adopted migrations, dropping tables they did not create.
        #[arg(long)]
        force: bool,
    },
    /// Revert all applied migrations and drop the migration table.
    Reset {
        /// Also revert adopted migrations, dropping tables they did not create.
        #[arg(long)]
        force: bool,
    },
    /// Record migrations as applied without running them, for existing tables
    /// that adoption cannot verify. Refused when none of their tables exist.
    Baseline {
        /// The last migration to record (default: the newest one whose
        /// tables all exist).
        #[arg(long)]
        to: Option<String>,
    },
    /// Regenerate the entities with sea-orm-cli from a scratch PostgreSQL
    /// database (on the configured server) migrated with these migrations.
    Entities {
        /// Compare instead of writing; fail with a diff if they differ.
        #[arg(long)]
        check: bool,
        /// Generate from the configured database itself (its tables that the
        /// entities name), not from a scratch one: checks an adopted schema.
        #[arg(long, requires = "check")]
        live: bool,
        /// The folder of generated entities.
        #[arg(long, default_value_os_t = default_entities_dir())]
        dir: PathBuf,
        /// sea-orm-cli `generate entity` flags (the justfile records them).
        #[arg(last = true)]
        flags: Vec<String>,
    },
    /// Print the SQL that the pending migrations run on PostgreSQL, for review
    /// and linting: they are applied to a scratch database on the same
    /// server (after the ones this database has applied), and every
    /// statement they send is printed; reads and the migration table's
    /// bookkeeping are left out. Changes nothing on the database itself.
    Sql {
        /// Every migration, as on an empty database.
        #[arg(long)]
        all: bool,
    },
    /// Write a new migration file into migration/src and register it.
    Generate {
        /// A name like `add_task_priority` (lower-case letters, digits, `_`).
        #[arg(value_parser = migration_name)]
        name: String,
    },
}

/// A new migration's name: it becomes part of a module name.
fn migration_name(text: &str) -> Result<String, String> {
    let valid = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_';
    match !text.is_empty() && text.chars().all(valid) {
        true => Ok(text.to_owned()),
        false => {
            Err("expected lower-case letters, digits and _, like add_task_priority".to_owned())
        }
    }
}
