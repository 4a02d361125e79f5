//! `sqlx-server`: `GET /tasks/{id}/` the way a user writes it with axum and
//! plain sqlx: a default `PgPool` (`PgPool::connect`), the state handed to
//! the handler, `query_as` with the SQL written out. `just bench-http`
//! measures `tracker serve` against it. It answers with the tracker's exact
//! JSON bytes (`bench::reference`), logs nothing, and runs on mimalloc like
//! the tracker, so that the allocator is not what the two differ in.
//!
//! It reads the database URL like `tracker` does (`DATABASE_URL`, `.env`,
//! `config/*.toml`), prints `listening on ADDR` on standard output once it
//! accepts connections, and stops on SIGINT or SIGTERM.

use std::net::SocketAddr;

use anyhow::Context;
use axum::extract::{Path, State};
use axum::response::Response;
use bench::reference::{SELECT_TASK, TaskJson, not_found, router, serve, task_answer};
use chrono::NaiveDate;
use clap::Parser;
use sea_orm::sqlx::{self, PgPool};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "sqlx-server",
    about = "GET /tasks/{id}/ with the tracker's JSON on axum and plain sqlx (a benchmark reference)"
)]
struct Cli {
    /// Address to listen on (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:8003")]
    addr: SocketAddr,
}

/// A task's columns, in [`SELECT_TASK`]'s order.
type TaskRow = (
    i32,
    String,
    Option<i32>,
    Option<i32>,
    Option<NaiveDate>,
    String,
);

async fn task(State(pool): State<PgPool>, Path(id): Path<String>) -> Response {
    let Ok(id) = id.parse::<i32>() else {
        return not_found();
    };
    let found: Result<Option<TaskRow>, _> = sqlx::query_as(SELECT_TASK)
        .bind(id)
        .fetch_optional(&pool)
        .await;
    task_answer(found.as_ref().map(|row| {
        row.as_ref()
            .map(|(id, title, parent, assignee, deadline, status)| {
                TaskJson::new(*id, title, *parent, *assignee, *deadline, status)
            })
    }))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings = migration::binary::database_settings()?;
    let pool = PgPool::connect(settings.url.expose())
        .await
        .context("connecting to the database")?;
    serve(cli.addr, router(task, pool))
        .await
        .with_context(|| format!("serving on {}", cli.addr))
}
