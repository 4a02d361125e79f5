//! `migration`: apply the schema's migrations, under the migration lock, to the
//! database the settings name (the same variables and defaults as `tracker`).
//!
//! Exit codes: 0 success, 1 failure, 2 configuration error (or bad arguments).

use std::process::ExitCode;

use clap::Parser;
use migration::cli::{MigrateArgs, MigrateCommand};

#[derive(Debug, Parser)]
#[command(
    name = "migration",
    version,
    about = "Apply the Task Tracker schema's migrations"
)]
struct Cli {
    #[command(flatten)]
    args: MigrateArgs,
}

fn main() -> ExitCode {
    let cli: Cli = migration::binary::args();
    let logs = migration::binary::init_logging(false, migration::binary::DEFAULT_LOG_FILTER);
    let result = tokio::runtime::Runtime::new()
        .map_err(|e| anyhow::Error::new(e).context("starting the async runtime"))
        .and_then(|runtime| runtime.block_on(run(cli)));
    match result {
        // Dropping `logs` on return writes out what is still buffered.
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => logs.fail(e.as_ref(), |_| false),
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    if let MigrateCommand::Generate { name } = &cli.args.command {
        return Ok(migration::generate(name)?);
    }
    let settings = migration::binary::database_settings()?;
    migration::run(&settings, &cli.args, &mut std::io::stdout().lock()).await?;
    Ok(())
}
