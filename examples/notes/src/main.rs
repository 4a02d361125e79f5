//! `notes`: the Task Tracker application with the notes service added, as
//! `docs/your-service.md` builds it. It reads the settings (the database's
//! and `[notes]`), applies the migrations (the project's and the notes
//! table's), and serves the tracker's routes and the notes routes in one
//! application, with metrics at `/metrics`, until SIGINT or SIGTERM.
//!
//! Exit codes: 0 success, 1 failure, 2 configuration error.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use db_core::{Db, Settings};
use notes::{Notes, NotesSettings};

#[derive(Debug, Parser)]
#[command(name = "notes", about = "The Task Tracker with notes")]
struct Cli {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8000")]
    addr: SocketAddr,
}

fn main() -> ExitCode {
    let cli: Cli = migration::binary::args();
    let logs = migration::binary::init_logging(false, migration::binary::DEFAULT_LOG_FILTER);
    let result = tokio::runtime::Runtime::new()
        .context("starting the async runtime")
        .and_then(|runtime| runtime.block_on(run(cli)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => logs.fail(e.as_ref(), |_| false),
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    // Every section is declared, so that its table in the configuration
    // files is not an unknown key, and read before anything else is done.
    let source = migration::binary::source()?.declare::<NotesSettings>();
    let settings = Settings::load(&source)?;
    let notes_settings = source.section::<NotesSettings>()?;

    let metrics = web::Metrics::install()?;
    migration::up_with::<notes::migration::Migrator>(&settings, Duration::from_secs(300)).await?;
    let db = Db::connect(&settings).await?;
    let listener = tokio::net::TcpListener::bind(cli.addr)
        .await
        .with_context(|| format!("listening on {}", cli.addr))?;
    tracing::info!("serving http://{}", listener.local_addr()?);
    web::App::new("Task Tracker", "0.1.0", db.clone())
        .description("Employees, a tree of tasks, and notes.")
        .service(tracker::http::routes(tracker::Tracker::new(db.clone())))
        .service(notes::routes(Notes::new(db.clone(), notes_settings)))
        .serve(listener, web::Exposure::Api(metrics), shutdown())
        .await
        .context("serving")?;
    db.close().await;
    Ok(())
}

/// SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown() {
    let Ok(mut terminate) =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}
