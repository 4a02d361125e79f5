//! Generating `entity/src/generated` with `sea-orm-cli generate entity` from a
//! scratch PostgreSQL database migrated with our migrations, and checking that
//! the committed files are what it writes.

use std::io::Write;
use std::path::Path;
use std::process::Command;

use db_core::Settings;
use sea_orm::DbBackend;
use sea_orm_migration::MigratorTrait;

use crate::runner::Error;

/// The `sea-orm-cli` version the committed entities come from.
pub const SEA_ORM_CLI_VERSION: &str = "2.0.4";

/// Which database the entities are generated from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A scratch database on the configured server, migrated with the
    /// migrations and dropped afterwards.
    Scratch,
    /// The configured database itself, limited to the tables that `dir` has
    /// entities for (for checking a schema that was adopted).
    Live,
}

/// Generates entities for migrator `M` with `sea-orm-cli` and `flags`. With
/// `check`, compares them with `dir` and fails with a unified diff if they
/// differ; otherwise replaces `dir` with them (removing stale files).
pub async fn entities<M: MigratorTrait>(
    settings: &Settings,
    source: Source,
    dir: &Path,
    flags: &[String],
    check: bool,
    out: &mut impl Write,
) -> Result<(), Error> {
    if settings.url.backend() != DbBackend::Postgres {
        return Err(Error::Entities(
            "entities are generated from PostgreSQL (from SQLite, ids come out i64): \
             point DATABASE_URL or DB_* at a PostgreSQL server"
                .to_owned(),
        ));
    }
    check_cli_version()?;
    let generated = tempfile::Builder::new().prefix("entities-").tempdir()?;
    if source == Source::Live {
        let mut flags = flags.to_vec();
        flags.push(format!("--tables={}", entity_tables(dir)?.join(",")));
        run_cli(
            &crate::runner::for_migrations(settings),
            generated.path(),
            &flags,
        )?;
        return compare_or_replace(dir, generated.path(), check, out);
    }
    let into = generated.path();
    let result = crate::runner::scratch(settings, "entities", |scratch| async move {
        crate::runner::up_with::<M>(&scratch, std::time::Duration::from_secs(60)).await?;
        run_cli(&scratch, into, flags)
    })
    .await;
    result?;
    compare_or_replace(dir, generated.path(), check, out)
}

/// The tables that `dir` holds entities for: one file each, named after it.
fn entity_tables(dir: &Path) -> Result<Vec<String>, Error> {
    let mut tables = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if let Some(stem) = path.file_stem().and_then(|s| s.to_str())
            && path.extension().is_some_and(|e| e == "rs")
            && !matches!(stem, "mod" | "prelude")
        {
            tables.push(stem.to_owned());
        }
    }
    tables.sort();
    if tables.is_empty() {
        return Err(Error::Entities(format!(
            "{} has no entities to check",
            dir.display()
        )));
    }
    Ok(tables)
}

/// With `check`, fails with a diff if `dir` differs from `generated`;
/// otherwise replaces `dir` with `generated`.
fn compare_or_replace(
    dir: &Path,
    generated: &Path,
    check: bool,
    out: &mut impl Write,
) -> Result<(), Error> {
    if check {
        let diff = Command::new("diff")
            .arg("-ru")
            .arg(dir)
            .arg(generated)
            .output()?;
        if diff.status.success() {
            writeln!(
                out,
                "{} matches what sea-orm-cli {SEA_ORM_CLI_VERSION} generates",
                dir.display()
            )?;
            return Ok(());
        }
        let text = String::from_utf8_lossy(&diff.stdout)
            .replace(&generated.display().to_string(), "(generated)");
        out.write_all(text.as_bytes())?;
        return Err(Error::Entities(format!(
            "{} differs from what the migrations generate (diff above); run `just entities` and commit the result",
            dir.display()
        )));
    }
    if dir.exists() {
        if !dir.join("mod.rs").is_file() {
            return Err(Error::Entities(format!(
                "{} has no mod.rs; refusing to replace a folder that is not generated entities",
                dir.display()
            )));
        }
        std::fs::remove_dir_all(dir)?;
    }
    std::fs::create_dir_all(dir)?;
    for entry in std::fs::read_dir(generated)? {
        let entry = entry?;
        std::fs::copy(entry.path(), dir.join(entry.file_name()))?;
    }
    writeln!(out, "regenerated {}", dir.display())?;
    Ok(())
}

fn check_cli_version() -> Result<(), Error> {
    let install =
        format!("install it with `cargo install sea-orm-cli@{SEA_ORM_CLI_VERSION} --locked`");
    let output = Command::new("sea-orm-cli")
        .arg("--version")
        .output()
        .map_err(|_| Error::Entities(format!("sea-orm-cli is not installed; {install}")))?;
    let version = String::from_utf8_lossy(&output.stdout);
    if version.split_whitespace().nth(1) != Some(SEA_ORM_CLI_VERSION) {
        return Err(Error::Entities(format!(
            "found {}, expected sea-orm-cli {SEA_ORM_CLI_VERSION}; {install}",
            version.trim()
        )));
    }
    Ok(())
}

/// Runs the generator. The URL goes in through the environment, not the
/// command line, where other users could read the password; what it prints
/// when it fails (the URL, for one it cannot use) is shown without it.
fn run_cli(settings: &Settings, out: &Path, flags: &[String]) -> Result<(), Error> {
    let (variable, url) = settings.url.child_env();
    let output = Command::new("sea-orm-cli")
        .args(["generate", "entity", "--output-dir"])
        .arg(out)
        .args(flags)
        .env(variable, url)
        // Its message, not a backtrace, if it panics.
        .env("RUST_BACKTRACE", "0")
        .output()?;
    if !output.status.success() {
        return Err(Error::Entities(format!(
            "sea-orm-cli failed: {}",
            settings
                .url
                .scrub(String::from_utf8_lossy(&output.stderr).trim())
        )));
    }
    Ok(())
}
