//! `migration`: apply the schema's migrations, under the migration lock, to the
//! database the settings name (the same variables and defaults as `tracker`).
//!
//! Exit codes: 0 success, 1 failure, 2 configuration error (or bad arguments).

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use clap::Parser;
use db_core::{Settings, Source};
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
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(db_core::DEFAULT_LOG_FILTER));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
    let result = tokio::runtime::Runtime::new()
        .map_err(|e| anyhow::Error::new(e).context("starting the async runtime"))
        .and_then(|runtime| runtime.block_on(run(cli)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(
                std::io::stderr(),
                "error: {}",
                format!("{e:#}").replace('\n', "; ")
            );
            let config = e.chain().any(|cause| {
                cause
                    .downcast_ref::<db_core::Error>()
                    .is_some_and(db_core::Error::is_config)
                    || cause
                        .downcast_ref::<migration::Error>()
                        .is_some_and(migration::Error::is_config)
            });
            ExitCode::from(if config { 2 } else { 1 })
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    if let MigrateCommand::Generate { name } = &cli.args.command {
        return Ok(migration::generate(name)?);
    }
    let settings = Settings::load(&Source::from_process()?)?;
    migration::run(&settings, &cli.args, &mut std::io::stdout().lock()).await?;
    Ok(())
}
