//! `bench`: run the tracker workload against the configured database (the
//! same settings as `tracker`) and print one JSON line per operation on
//! standard output, then a comparison table on standard error.
//!
//! Exit codes: 0 success, 1 failure (including a wrong answer), 2 configuration
//! error or bad arguments.

use std::io::Write;
use std::process::ExitCode;

use bench::workload::OPS;
use bench::{Options, STACKS};
use clap::Parser;

// The same allocator as the `tracker` binary, for every stack alike.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "bench",
    about = "The tracker benchmark workload, the stacks interleaved side by side"
)]
struct Cli {
    /// Data set size and operation counts; 1 = 1,000 employees, 100,000 tasks.
    #[arg(long, default_value_t = 1.0)]
    scale: f64,
    /// Operations to run, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = OPS.map(String::from))]
    ops: Vec<String>,
    /// Stacks to run, comma-separated.
    #[arg(long = "stack", value_delimiter = ',', default_values_t = STACKS.map(String::from))]
    stacks: Vec<String>,
    /// Seed of the id generator.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Use the data already loaded at this scale: no fresh tables, no load.
    #[arg(long)]
    reuse: bool,
    /// Rounds: every op runs this many times on every stack, interleaved.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Record metrics as `tracker serve` does (the Prometheus recorder and
    /// db-core's pool and statement metrics), to measure what they cost.
    #[arg(long)]
    metrics: bool,
}

fn main() -> ExitCode {
    let cli: Cli = migration::binary::args();
    // Statement logs would dominate the timings: sqlx and SeaORM speak at warn
    // only, unless RUST_LOG says otherwise.
    let filter = format!(
        "{},sqlx=warn,sea_orm=warn",
        migration::binary::DEFAULT_LOG_FILTER
    );
    let logs = migration::binary::init_logging(false, &filter);
    let result = tokio::runtime::Runtime::new()
        .map_err(|e| anyhow::Error::new(e).context("starting the async runtime"))
        .and_then(|runtime| runtime.block_on(run(cli)));
    match result {
        // Dropping `logs` on return writes out what is still buffered.
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => logs.fail(e.as_ref(), |cause| {
            matches!(
                cause.downcast_ref::<bench::Error>(),
                Some(bench::Error::Usage(_))
            )
        }),
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    if cli.metrics {
        web::Metrics::install()?.spawn_upkeep();
    }
    let settings = migration::binary::database_settings()?;
    let options = Options {
        scale: cli.scale,
        ops: cli.ops,
        stacks: cli.stacks,
        seed: cli.seed,
        reuse: cli.reuse,
        rounds: cli.rounds,
    };
    tracing::info!(target = %settings.url.target(), scale = options.scale, metrics = cli.metrics, "benchmark");
    let records = bench::run(&settings, &options, &mut std::io::stdout().lock()).await?;
    let _ = write!(std::io::stderr(), "\n{}", bench::summary(&records));
    Ok(())
}
