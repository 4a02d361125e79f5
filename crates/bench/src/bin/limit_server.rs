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
//! accepts connections, and stops on SIGINT or SIGTERM. Its answers come
//! from `bench::reference`, which `seaorm-server` and `sqlx-server` share.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::Context;
use axum::extract::{Path, State};
use axum::response::Response;
use bench::reference::{SELECT_TASK, TaskJson, not_found, router, task_answer};
use clap::Parser;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_postgres::{Client, NoTls, Statement};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Connections the requests share; queries pipeline on each.
const CONNECTIONS: usize = 2;

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

async fn task(State(pg): State<Arc<Pg>>, Path(id): Path<String>) -> Response {
    let Ok(id) = id.parse::<i32>() else {
        return not_found();
    };
    let (client, statement) = pg.pick();
    let row = client.query_opt(statement, &[&id]).await;
    task_answer(row.as_ref().map(|row| {
        row.as_ref().map(|row| {
            TaskJson::new(
                row.get(0),
                row.get(1),
                row.get(2),
                row.get(3),
                row.get(4),
                row.get(5),
            )
        })
    }))
}

async fn serve(cli: Cli) -> anyhow::Result<()> {
    let settings = migration::binary::database_settings()?;
    let pg = Arc::new(Pg::connect(settings.url.expose()).await?);
    let app = router(task, pg);
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
