//! `tracker`: the Task Tracker binary. It wires settings, the database and
//! the commands together; the work is done by the library crates.
//!
//! Exit codes: 0 success, 1 failure, 2 configuration error (or bad arguments).

// The futures of `run`'s commands nest deeper than the default limit of the
// compiler's layout queries allows in a release build.
#![recursion_limit = "256"]

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use db_core::sea_orm::DbBackend;
use db_core::{Db, Settings, admin::Created, failover::Role};
use migration::binary::DroppedLines;

// mimalloc: fewer cycles in malloc/free on the request path than the system
// allocator, and the allocator the benchmarks measure.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "tracker",
    version,
    about = "Task Tracker: API server and database tools"
)]
struct Cli {
    /// Write logs as JSON lines instead of human-readable text.
    #[arg(long, global = true)]
    log_json: bool,

    /// What to do; `serve` when omitted.
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the Task Tracker API (the default command).
    Serve(ServeArgs),
    /// Add a few employees and a task tree to an empty database.
    Seed,
    /// Apply or inspect migrations (the same commands as the `migration` binary).
    Migrate(migration::cli::MigrateArgs),
    /// Database tools.
    #[command(subcommand)]
    Db(DbCommand),
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8000")]
    addr: Option<SocketAddr>,
    /// Apply pending migrations before serving (under the migration lock).
    /// Always done on SQLite.
    #[arg(long)]
    migrate: bool,
    /// When migrating: how long to wait for the migration lock while another
    /// process holds it (another instance migrating), then exit 1; also how
    /// long the lock's connection may go without an answer (at least 1s)
    /// before migrating stops.
    #[arg(long, value_parser = duration, default_value_t = LOCK_TIMEOUT.into())]
    lock_timeout: humantime::Duration,
    /// Record Prometheus metrics (`on`, the default, or `off`).
    #[arg(long, env = "METRICS", value_enum, default_value_t = Switch::On)]
    metrics: Switch,
    /// Serve `/metrics` on this address instead of the API's, so that it
    /// need not be public.
    #[arg(long, env = "METRICS_ADDR")]
    metrics_addr: Option<SocketAddr>,
    /// On SIGTERM or SIGINT, how long requests in flight may run on before
    /// the pools close and the process exits (a duration with a unit).
    #[arg(long, env = "SHUTDOWN_GRACE", value_parser = duration,
          default_value_t = web::SHUTDOWN_GRACE.into())]
    shutdown_grace: humantime::Duration,
    /// How long a client may take to send a request's head (an idle
    /// connection: to start its next request), then its connection is
    /// closed; and each part of a body, then the answer is 408. Keep it
    /// above the idle timeout of a proxy in front.
    #[arg(long, env = "READ_TIMEOUT", value_parser = nonzero_duration,
          default_value_t = web::READ_TIMEOUT.into())]
    read_timeout: humantime::Duration,
}

/// The longest duration an argument takes, as for the `DB_*` settings: 24
/// days (a timer far beyond it would overflow the clock).
const LONGEST: Duration = Duration::from_millis(i32::MAX as u64);

/// A duration argument, with a message that says what is expected.
fn duration(text: &str) -> Result<humantime::Duration, String> {
    match humantime::parse_duration(text) {
        Ok(d) if d <= LONGEST => Ok(d.into()),
        _ => Err("expected a duration with a unit, like 8s or 500ms, up to 24 days".to_owned()),
    }
}

/// A duration argument greater than zero.
fn nonzero_duration(text: &str) -> Result<humantime::Duration, String> {
    match duration(text) {
        Ok(d) if !d.is_zero() => Ok(d),
        _ => Err(
            "expected a duration greater than zero with a unit, like 30s, up to 24 days".to_owned(),
        ),
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Switch {
    #[default]
    On,
    Off,
}

#[derive(Debug, Subcommand)]
enum DbCommand {
    /// Print the resolved settings (password redacted), the server and a ping.
    Check,
    /// Create the configured database if it does not exist (PostgreSQL, MySQL).
    Create,
}

fn main() -> ExitCode {
    let cli: Cli = migration::binary::args();
    let logs = migration::binary::init_logging(cli.log_json, migration::binary::DEFAULT_LOG_FILTER);
    let dropped = logs.dropped_lines();
    // The closure owns the runtime: when it returns, the runtime and its
    // threads are gone, so nothing logs after the lines are written out.
    let result = tokio::runtime::Runtime::new()
        .context("starting the async runtime")
        .and_then(|runtime| runtime.block_on(run(cli, dropped)));
    match result {
        // Dropping `logs` on return writes out what is still buffered.
        Ok(()) => ExitCode::SUCCESS,
        // The buffered lines first, then the error; exit code 2 for
        // configuration errors.
        Err(e) => logs.fail(e.as_ref(), |_| false),
    }
}

async fn run(cli: Cli, dropped: DroppedLines) -> anyhow::Result<()> {
    if let Some(Command::Migrate(args)) = &cli.command
        && let migration::cli::MigrateCommand::Generate { name } = &args.command
    {
        // Writing a file needs no database, nor valid database settings.
        return Ok(migration::generate(name)?);
    }
    let settings = Settings::load(&migration::binary::source()?)?;
    let command = match cli.command {
        Some(command) => command,
        None => Command::Serve(serve_defaults()),
    };
    match command {
        Command::Serve(args) => serve(&settings, args, dropped).await,
        Command::Seed => seed(&settings).await,
        Command::Migrate(args) => {
            Ok(migration::run(&settings, &args, &mut std::io::stdout().lock()).await?)
        }
        Command::Db(DbCommand::Check) => db_check(&settings).await,
        Command::Db(DbCommand::Create) => db_create(&settings).await,
    }
}

/// `serve`'s arguments when no command is given: their defaults, and the
/// variables they read (`METRICS`, `SHUTDOWN_GRACE`, ...).
/// A bad value exits as `tracker serve` would: clap's message, exit code 2.
fn serve_defaults() -> ServeArgs {
    use clap::{Args, FromArgMatches};
    ServeArgs::augment_args(clap::Command::new("tracker"))
        .try_get_matches_from(["tracker"])
        .and_then(|matches| ServeArgs::from_arg_matches(&matches))
        .unwrap_or_else(|e| e.exit())
}

/// How long startup waits for another process's migration lock, unless
/// `serve --lock-timeout` says otherwise.
const LOCK_TIMEOUT: Duration = Duration::from_secs(300);

/// Connects, first applying pending migrations on SQLite or when asked,
/// waiting at most `lock_timeout` for the migration lock; on a server
/// database with pending migrations and no `--migrate`, refuses.
async fn prepare_database(
    settings: &Settings,
    migrate: bool,
    lock_timeout: Duration,
) -> anyhow::Result<Db> {
    if migrate || settings.url.backend() == DbBackend::Sqlite {
        for name in migration::up(settings, lock_timeout).await? {
            tracing::info!("applied migration {name}");
        }
    }
    let db = Db::connect(settings).await?;
    let pending = migration::pending(&db).await?;
    if !pending.is_empty() {
        anyhow::bail!(
            "{} has {} pending migration(s) ({}): run `tracker migrate up` first, or start with --migrate",
            db.target(),
            pending.len(),
            pending.join(", ")
        );
    }
    Ok(db)
}

async fn serve(settings: &Settings, args: ServeArgs, dropped: DroppedLines) -> anyhow::Result<()> {
    let addr = args
        .addr
        .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8000)));
    // Installed before connecting, so that the pools (the migrator's too) are measured.
    let metrics = match args.metrics {
        Switch::On => {
            let metrics = web::Metrics::install()?;
            metrics.count_dropped_log_lines(move || dropped.get());
            Some(metrics)
        }
        Switch::Off => None,
    };
    let db = prepare_database(settings, args.migrate, args.lock_timeout.into()).await?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening on {addr}"))?;
    let read_timeout = Duration::from(args.read_timeout);
    let exposure = match (metrics, args.metrics_addr) {
        (None, _) => web::Exposure::Off,
        (Some(m), None) => web::Exposure::Api(m),
        (Some(m), Some(metrics_addr)) => {
            let metrics_listener = tokio::net::TcpListener::bind(metrics_addr)
                .await
                .with_context(|| format!("listening on {metrics_addr} (METRICS_ADDR)"))?;
            tracing::info!(
                "serving metrics at http://{}/metrics",
                metrics_listener.local_addr()?
            );
            tokio::spawn(web::serve_metrics(
                metrics_listener,
                m,
                db.clone(),
                read_timeout,
                std::future::pending(),
            ));
            web::Exposure::Separate(m)
        }
    };
    // Listening before the line that says it serves: a SIGTERM that comes
    // before the server first polls its shutdown future is kept, not lost.
    // (Until here, while it connects and migrates, SIGTERM ends the process
    // at once.)
    let signal = shutdown_signal();
    tracing::info!(
        "serving http://{} from {}",
        listener.local_addr()?,
        db.target()
    );
    let shutdown = async move {
        signal.await;
        tracing::info!("shutting down: finishing requests in flight");
    };
    // Every wait of a request on the database is bounded (by the acquire
    // and operation timeouts), so requests in flight end within the grace
    // period whatever state the servers are in; one still running after it
    // (say, an answer that its client stopped reading) is abandoned, and
    // `Db::close` waits a bounded time too. So the process exits with code
    // 0 shortly after the grace period at most.
    (app(&db).read_timeout(read_timeout))
        .shutdown_grace(args.shutdown_grace.into())
        .serve(listener, exposure, shutdown)
        .await
        .context("serving")?;
    db.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// The application served: its title in the OpenAPI document, and the
/// routes of each of its services.
fn app(db: &Db) -> web::App {
    web::App::new("Task Tracker", "0.1.0", db.clone())
        .description("Employees and a tree of tasks.")
        .service(tracker::http::routes(tracker::Tracker::new(db.clone())))
}

/// SIGTERM or SIGINT (Ctrl-C). The listeners are registered when this is
/// called, so a signal that arrives before the future is first polled still
/// ends it. A signal that cannot be listened for is logged and left to its
/// default action (the process ends at once); the other still stops it.
fn shutdown_signal() -> impl Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let listen = |kind: SignalKind, name: &'static str| {
        let listener = signal(kind);
        async move {
            match listener {
                Ok(mut listener) => drop(listener.recv().await),
                Err(e) => {
                    tracing::warn!("cannot listen for {name}: {e}");
                    std::future::pending::<()>().await;
                }
            }
        }
    };
    let terminate = listen(SignalKind::terminate(), "SIGTERM");
    let interrupt = listen(SignalKind::interrupt(), "SIGINT");
    async move {
        tokio::select! {
            () = terminate => {}
            () = interrupt => {}
        }
    }
}

async fn seed(settings: &Settings) -> anyhow::Result<()> {
    let db = prepare_database(settings, false, LOCK_TIMEOUT).await?;
    let (employees, tasks) = tracker::seed(&tracker::Tracker::new(db.clone())).await?;
    let mut out = std::io::stdout().lock();
    if employees == 0 {
        writeln!(out, "the database has employees already; nothing added")?;
    } else {
        writeln!(out, "added {employees} employees and {tasks} tasks")?;
    }
    db.close().await;
    Ok(())
}

async fn db_check(settings: &Settings) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "settings:")?;
    for (name, value) in settings.describe() {
        writeln!(out, "  {name:<26} {value}")?;
    }
    out.flush()?;
    let db = Db::connect(settings).await?;
    let health = db
        .health()
        .await
        .context("asking the server for its version")?;
    writeln!(out, "connected:")?;
    writeln!(out, "  {:<26} {}", "backend", health.backend)?;
    writeln!(out, "  {:<26} {}", "server_version", health.server_version)?;
    writeln!(
        out,
        "  {:<26} {:.3} ms",
        "ping",
        health.round_trip.as_secs_f64() * 1000.0
    )?;
    for replica in db.replica_status().await {
        let state = if replica.up { "up" } else { "down" };
        let lag = replica.lag.map_or_else(
            || "unknown".to_owned(),
            |lag| format!("{:.3} s", lag.as_secs_f64()),
        );
        writeln!(
            out,
            "  {:<26} {} ({state}, lag {lag})",
            "replica", replica.target
        )?;
    }
    db.close().await;
    let hosts = db_core::failover::host_status(settings).await;
    if !hosts.is_empty() {
        writeln!(out, "hosts:")?;
    }
    for host in hosts {
        let role = match host.role {
            Role::Primary => "primary".to_owned(),
            Role::Standby { lag: Some(lag) } => {
                format!("standby, lag {:.3} s", lag.as_secs_f64())
            }
            Role::Standby { lag: None } => "standby, lag unknown".to_owned(),
            Role::Unreachable(why) => format!("unreachable: {why}"),
        };
        writeln!(
            out,
            "  {:<26} {role}",
            format!("{} {}", host.url, host.host)
        )?;
    }
    Ok(())
}

async fn db_create(settings: &Settings) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match db_core::admin::create_database(settings).await? {
        Created::Created(name) => writeln!(out, "created database \"{name}\"")?,
        Created::Existed(name) => writeln!(out, "database \"{name}\" exists already")?,
        Created::NotNeeded => writeln!(
            out,
            "SQLite: nothing to create ({} is created on first connect)",
            settings.url.target()
        )?,
    }
    Ok(())
}
