//! `limit-server`: the reference that `just bench-http` measures `tracker
//! serve` against. It answers one route, `GET /tasks/{id}/` (and without the
//! trailing slash), with the tracker's exact JSON bytes for the same row, and
//! does nothing else, the way the fastest Rust "single query" servers do:
//! axum on hyper's HTTP/1 connection driver, tokio-postgres with one prepared
//! statement on each of two shared connections (concurrent requests pipeline
//! their queries on them), mimalloc, no logging, no middleware, no TLS.
//!
//! It reads the database URL like `tracker` does (`DATABASE_URL`, `.env`,
//! `config/*.toml`), prints `listening on ADDR` on standard output once it
//! accepts connections, and stops on SIGINT or SIGTERM. It is not part of
//! the product: an id that is not a 32-bit integer gets a 404 here where the
//! tracker answers 422.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::Context;
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use axum::routing::get;
use chrono::NaiveDate;
use clap::Parser;
use db_core::{Settings, Source};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_postgres::{Client, NoTls, Statement};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Connections the requests share; queries pipeline on each.
const CONNECTIONS: usize = 2;

const SELECT_TASK: &str =
    "SELECT id, title, parent_id, assignee_id, deadline, status FROM tasks WHERE id = $1";

/// The tracker's 404 body for a missing task.
const TASK_NOT_FOUND: &[u8] = br#"{"detail":"Task not found"}"#;
const NOT_FOUND: &[u8] = br#"{"detail":"Not Found"}"#;
const INTERNAL: &[u8] = br#"{"detail":"Internal Server Error"}"#;

#[derive(Debug, Parser)]
#[command(
    name = "limit-server",
    about = "GET /tasks/{id}/ with the tracker's JSON, as fast as it goes (a benchmark reference)"
)]
struct Cli {
    /// Address to listen on (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:8001")]
    addr: SocketAddr,
}

/// The task as the tracker writes it: same fields, same order.
#[derive(Serialize)]
struct TaskJson<'a> {
    title: &'a str,
    parent_id: Option<i32>,
    assignee_id: Option<i32>,
    deadline: Option<NaiveDate>,
    status: &'a str,
    id: i32,
}

/// The shared connections, each with the statement prepared on it.
struct Pg {
    connections: Vec<(Client, Statement)>,
    next: AtomicUsize,
}

impl Pg {
    async fn connect(url: &str) -> anyhow::Result<Pg> {
        let config: tokio_postgres::Config = url.parse().context("database URL")?;
        let mut connections = Vec::with_capacity(CONNECTIONS);
        for _ in 0..CONNECTIONS {
            let (client, connection) = config
                .connect(NoTls)
                .await
                .context("connecting to the database")?;
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    eprintln!("limit-server: database connection failed: {e}");
                    std::process::exit(1);
                }
            });
            let statement = client
                .prepare(SELECT_TASK)
                .await
                .context("preparing the query")?;
            connections.push((client, statement));
        }
        Ok(Pg {
            connections,
            next: AtomicUsize::new(0),
        })
    }

    /// The next connection, round robin.
    fn pick(&self) -> &(Client, Statement) {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.connections.len();
        &self.connections[i]
    }
}

fn json(status: StatusCode, body: impl Into<Body>) -> Response {
    let mut response = Response::new(body.into());
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

async fn task(State(pg): State<Arc<Pg>>, Path(id): Path<String>) -> Response {
    let Ok(id) = id.parse::<i32>() else {
        return json(StatusCode::NOT_FOUND, NOT_FOUND);
    };
    let (client, statement) = pg.pick();
    match client.query_opt(statement, &[&id]).await {
        Ok(Some(row)) => {
            let task = TaskJson {
                id: row.get(0),
                title: row.get(1),
                parent_id: row.get(2),
                assignee_id: row.get(3),
                deadline: row.get(4),
                status: row.get(5),
            };
            match serde_json::to_vec(&task) {
                Ok(body) => json(StatusCode::OK, body),
                Err(_) => json(StatusCode::INTERNAL_SERVER_ERROR, INTERNAL),
            }
        }
        Ok(None) => json(StatusCode::NOT_FOUND, TASK_NOT_FOUND),
        Err(_) => json(StatusCode::INTERNAL_SERVER_ERROR, INTERNAL),
    }
}

async fn serve(cli: Cli) -> anyhow::Result<()> {
    let settings = Settings::load(&Source::from_process()?)?;
    let pg = Arc::new(Pg::connect(settings.url.expose()).await?);
    let app = Router::new()
        .route("/tasks/{id}/", get(task))
        .route("/tasks/{id}", get(task))
        .fallback(|| async { json(StatusCode::NOT_FOUND, NOT_FOUND) })
        .with_state(pg);
    let listener = TcpListener::bind(cli.addr)
        .await
        .with_context(|| format!("listening on {}", cli.addr))?;
    println!("listening on {}", listener.local_addr()?);
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => continue,
            },
            _ = tokio::signal::ctrl_c() => return Ok(()),
            _ = terminate.recv() => return Ok(()),
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tokio::runtime::Runtime::new()
        .context("starting the async runtime")?
        .block_on(serve(cli))
}
