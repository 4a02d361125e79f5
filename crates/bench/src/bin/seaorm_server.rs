//! `seaorm-server`: `GET /tasks/{id}/` the way a user writes it with axum
//! and SeaORM alone, as SeaORM's axum example does: `Database::connect` with
//! default `ConnectOptions` (statement logging off), the state handed to the
//! handler, `Entity::find_by_id(id).one(&db)`. `just bench-http` measures
//! `tracker serve` against it. It answers with the tracker's exact JSON
//! bytes (`bench::reference`), logs nothing, and runs on mimalloc like the
//! tracker, so that the allocator is not what the two differ in.
//!
//! It reads the database URL like `tracker` does (`DATABASE_URL`, `.env`,
//! `config/*.toml`), prints `listening on ADDR` on standard output once it
//! accepts connections, and stops on SIGINT or SIGTERM.

use std::net::SocketAddr;

use anyhow::Context;
use axum::extract::{Path, State};
use axum::response::Response;
use bench::reference::{TaskJson, not_found, router, serve, task_answer};
use clap::Parser;
use entity::tasks;
use sea_orm::{ConnectOptions, Database, DatabaseConnection, EntityTrait};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "seaorm-server",
    about = "GET /tasks/{id}/ with the tracker's JSON on axum and plain SeaORM (a benchmark reference)"
)]
struct Cli {
    /// Address to listen on (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:8002")]
    addr: SocketAddr,
}

async fn task(State(db): State<DatabaseConnection>, Path(id): Path<String>) -> Response {
    let Ok(id) = id.parse::<i32>() else {
        return not_found();
    };
    let found = tasks::Entity::find_by_id(id).one(&db).await;
    task_answer(found.as_ref().map(|t| t.as_ref().map(TaskJson::from_model)))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings = migration::binary::database_settings()?;
    let mut options = ConnectOptions::new(settings.url.expose());
    options.sqlx_logging(false);
    let db = Database::connect(options)
        .await
        .context("connecting to the database")?;
    serve(cli.addr, router(task, db))
        .await
        .with_context(|| format!("serving on {}", cli.addr))
}
