//! The tracker benchmark: the workload of `shared/bench/WORKLOAD.md`, run by
//! three stacks against the configured database so their figures can be set
//! side by side.
//!
//! - `tracker`: this project's public API (db-core settings and sessions,
//!   `entity`, the `tracker` service), as a user's code calls it;
//! - `seaorm-defaults`: plain SeaORM, `Database::connect` with default options
//!   (pool of 16) and the same entity queries;
//! - `raw`: the same answers with hand-written SQL, sqlx prepared statements
//!   on the tracker's pool (`COPY` for `load` on PostgreSQL).
//!
//! Each stack starts from freshly migrated tables. Every answer is checked, so
//! a wrong or empty answer fails the run instead of looking fast. [`run`]
//! writes one JSON object per operation; [`summary`] compares the stacks.

#![warn(missing_docs)]

mod stack;
pub mod workload;

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use db_core::{Db, Settings, backend_name};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sea_orm::{ConnectOptions, Database};
use serde::Serialize;

use stack::Raw;
pub use stack::Stack;
use workload::{CONCURRENCY, OPS, PAGE, POOL, Workload, check};

/// The stacks, in the order they run.
pub const STACKS: [&str; 3] = ["tracker", "seaorm-defaults", "raw"];

/// What stops a benchmark run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// db-core failed (settings, connection, sessions).
    #[error(transparent)]
    Db(#[from] db_core::Error),
    /// The tracker service failed.
    #[error(transparent)]
    Tracker(#[from] tracker::Error),
    /// Migrating the tables failed.
    #[error(transparent)]
    Migration(#[from] migration::Error),
    /// Raw SQL failed.
    #[error("raw sql: {0}")]
    Raw(#[from] sea_orm::sqlx::Error),
    /// A concurrent worker panicked or was cancelled.
    #[error("a concurrent worker: {0}")]
    Worker(#[from] tokio::task::JoinError),
    /// An operation returned a wrong answer.
    #[error("wrong answer: {0}")]
    WrongAnswer(String),
    /// Writing the results failed.
    #[error("writing results: {0}")]
    Output(#[from] std::io::Error),
    /// An unknown operation or stack name.
    #[error("{0}")]
    Usage(String),
}

impl From<sea_orm::DbErr> for Error {
    fn from(e: sea_orm::DbErr) -> Self {
        Error::Db(e.into())
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Data set and operation counts (1 = the workload's full size).
    pub scale: f64,
    /// Operations to report, a subset of [`workload::OPS`].
    pub ops: Vec<String>,
    /// Stacks to run, a subset of [`STACKS`].
    pub stacks: Vec<String>,
    /// Seed of the id generator.
    pub seed: u64,
    /// Run against the data already loaded at this scale (no fresh tables,
    /// no `load`), e.g. to compare connection setups on the same data.
    pub reuse: bool,
}

impl Options {
    /// Checks the names of operations and stacks.
    pub fn validate(&self) -> Result<(), Error> {
        for op in &self.ops {
            if !OPS.contains(&op.as_str()) {
                return Err(Error::Usage(format!(
                    "unknown op {op:?}; expected one of {}",
                    OPS.join(",")
                )));
            }
        }
        for stack in &self.stacks {
            if !STACKS.contains(&stack.as_str()) {
                return Err(Error::Usage(format!(
                    "unknown stack {stack:?}; expected one of {}",
                    STACKS.join(",")
                )));
            }
        }
        if self.reuse && self.ops.iter().any(|op| op == "load") {
            return Err(Error::Usage(
                "--reuse skips the load: leave `load` out of --ops".to_owned(),
            ));
        }
        if !(self.scale > 0.0 && self.scale.is_finite()) {
            return Err(Error::Usage(format!(
                "--scale {}: expected a number above 0",
                self.scale
            )));
        }
        Ok(())
    }
}

/// One operation's result: a line of output.
#[derive(Debug, Clone, Serialize)]
pub struct Record {
    /// The stack.
    pub stack: String,
    /// The operation.
    pub op: String,
    /// How many times it ran (rows for `load`).
    pub n: usize,
    /// Wall time.
    pub secs: f64,
    /// `n / secs`.
    pub ops_per_s: f64,
    /// `postgres`, `mysql` or `sqlite`.
    pub backend: &'static str,
    /// Concurrent tasks (`get_concurrent`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<usize>,
    /// Pool size.
    pub pool: u32,
}

/// Runs the benchmark against the database of `settings`, writing one JSON
/// line per operation to `out` and progress to the log.
pub async fn run(
    settings: &Settings,
    options: &Options,
    out: &mut impl Write,
) -> Result<Vec<Record>, Error> {
    options.validate()?;
    let w = Workload::new(options.scale);
    let mut records = Vec::new();
    for name in STACKS
        .iter()
        .filter(|s| options.stacks.iter().any(|o| o == *s))
    {
        // Fresh tables for every stack; `load` fills them, reported or not.
        if !options.reuse {
            migration::run(
                settings,
                &migration::cli::MigrateArgs {
                    lock_timeout: Duration::from_secs(60),
                    command: migration::cli::MigrateCommand::Fresh { force: false },
                },
                &mut std::io::sink(),
            )
            .await?;
        }
        let (stack, tracker_db) = open(name, settings).await?;
        let result = run_stack(&stack, &w, options, out, &mut records).await;
        stack.close().await;
        if let Some(db) = tracker_db {
            db.close().await;
        }
        result?;
    }
    Ok(records)
}

/// Connects a stack; the raw stack borrows the tracker's pools, whose `Db`
/// is returned to be closed afterwards.
async fn open(name: &str, settings: &Settings) -> Result<(Stack, Option<Db>), Error> {
    let mut tuned = settings.clone();
    tuned.max_connections = POOL;
    match name {
        "tracker" => Ok((
            Stack::Tracker(tracker::Tracker::new(Db::connect(&tuned).await?)),
            None,
        )),
        "raw" => {
            let db = Db::connect(&tuned).await?;
            Ok((Stack::Raw(Raw::of(&db)), Some(db)))
        }
        _ => {
            let mut options = ConnectOptions::new(settings.url.expose());
            options.max_connections(POOL);
            Ok((Stack::SeaOrm(Database::connect(options).await?), None))
        }
    }
}

async fn run_stack(
    stack: &Stack,
    w: &Workload,
    options: &Options,
    out: &mut impl Write,
    records: &mut Vec<Record>,
) -> Result<(), Error> {
    let backend = backend_name(settings_backend(stack));
    let mut rng = StdRng::seed_from_u64(options.seed);
    for op in OPS {
        let reported = options.ops.iter().any(|o| o == op);
        if !reported && (op != "load" || options.reuse) {
            continue;
        }
        let n = w.n(op);
        tracing::info!(stack = stack.name(), op, n, "running");
        let start = Instant::now();
        match op {
            "load" => stack.load(w).await?,
            "get" => {
                for _ in 0..n {
                    get_one(stack, w, rng.random_range(1..=w.tasks)).await?;
                }
            }
            "get_concurrent" => get_concurrent(stack, w, n, rng.random()).await?,
            "create" => {
                for i in 0..n {
                    let assignee = rng.random_range(1..=w.employees);
                    let task = stack.create(i, assignee).await?;
                    check(
                        task.id > w.tasks && task.assignee_id == Some(assignee),
                        || format!("create returned {task:?}"),
                    )?;
                }
            }
            "update" => {
                for i in 0..n {
                    let id = rng.random_range(1..=w.tasks);
                    let status = ["todo", "in_progress", "review", "done"][i % 4];
                    let task = stack.update(id, status).await?;
                    check(task.id == id && task.status == status, || {
                        format!("update({id}) returned {task:?}")
                    })?;
                }
            }
            "list" => {
                let last = (w.tasks as u64).saturating_sub(PAGE);
                for _ in 0..n {
                    let offset = rng.random_range(0..=last);
                    let page = stack.list(offset).await?;
                    let expected = (w.tasks as u64 - offset).min(PAGE) as usize;
                    check(
                        page.len() == expected
                            && page.first().is_some_and(|(t, _)| t.id as u64 == offset + 1)
                            && page.windows(2).all(|p| p[0].0.id < p[1].0.id)
                            && page
                                .iter()
                                .all(|(t, e)| t.assignee_id == e.as_ref().map(|e| e.id)),
                        || format!("list({offset}) returned {} rows", page.len()),
                    )?;
                }
            }
            "subtree" => {
                for _ in 0..n {
                    let root = rng.random_range(w.subtree_roots());
                    let tasks = stack.subtree(root).await?;
                    check(tasks.len() == w.descendants(root), || {
                        format!(
                            "subtree({root}) returned {} rows, expected {}",
                            tasks.len(),
                            w.descendants(root)
                        )
                    })?;
                }
            }
            _ => unreachable!("validated"),
        }
        let secs = start.elapsed().as_secs_f64();
        if !reported {
            continue;
        }
        let record = Record {
            stack: stack.name().to_owned(),
            op: op.to_owned(),
            n,
            secs: (secs * 1000.0).round() / 1000.0,
            ops_per_s: (n as f64 / secs * 10.0).round() / 10.0,
            backend,
            concurrency: (op == "get_concurrent").then_some(CONCURRENCY),
            pool: POOL,
        };
        writeln!(
            out,
            "{}",
            serde_json::to_string(&record).map_err(std::io::Error::other)?
        )?;
        out.flush()?;
        records.push(record);
    }
    Ok(())
}

fn settings_backend(stack: &Stack) -> sea_orm::DbBackend {
    match stack {
        Stack::Tracker(t) => t.db().backend(),
        Stack::SeaOrm(db) => db.get_database_backend(),
        Stack::Raw(Raw::Postgres(..)) => sea_orm::DbBackend::Postgres,
        Stack::Raw(Raw::MySql(_)) => sea_orm::DbBackend::MySql,
        Stack::Raw(Raw::Sqlite(..)) => sea_orm::DbBackend::Sqlite,
    }
}

async fn get_one(stack: &Stack, w: &Workload, id: i32) -> Result<(), Error> {
    let found = stack.get(id).await?;
    check(
        found.as_ref().is_some_and(|(t, e)| {
            t.id == id
                && t.assignee_id == w.assignee(id)
                && e.as_ref().map(|e| e.id) == t.assignee_id
        }),
        || format!("get({id}) returned {found:?}"),
    )
}

/// `n` gets from [`CONCURRENCY`] tasks sharing the stack's pool.
async fn get_concurrent(stack: &Stack, w: &Workload, n: usize, seed: u64) -> Result<(), Error> {
    let stack = Arc::new(stack_handle(stack));
    let mut tasks = Vec::new();
    for worker in 0..CONCURRENCY {
        let count = n / CONCURRENCY + usize::from(worker < n % CONCURRENCY);
        let (stack, w) = (stack.clone(), *w);
        tasks.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(seed.wrapping_add(worker as u64));
            for _ in 0..count {
                get_one(&stack, &w, rng.random_range(1..=w.tasks)).await?;
            }
            Ok::<_, Error>(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(())
}

/// A clone of the stack that can move into spawned tasks (all handles are
/// cheap clones of the same pools).
fn stack_handle(stack: &Stack) -> Stack {
    match stack {
        Stack::Tracker(t) => Stack::Tracker(t.clone()),
        Stack::SeaOrm(db) => Stack::SeaOrm(db.clone()),
        Stack::Raw(raw) => Stack::Raw(raw.clone()),
    }
}

/// A table on standard error: each op's ops/s per stack, and the ratios
/// tracker/raw and tracker/seaorm-defaults.
pub fn summary(records: &[Record]) -> String {
    let find = |stack: &str, op: &str| {
        records
            .iter()
            .find(|r| r.stack == stack && r.op == op)
            .map(|r| r.ops_per_s)
    };
    let cell = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"));
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
        _ => "-".to_owned(),
    };
    let mut text = format!(
        "{:<15} {:>12} {:>16} {:>12} {:>14} {:>26}\n",
        "op", "tracker", "seaorm-defaults", "raw", "tracker/raw", "tracker/seaorm-defaults"
    );
    for op in OPS {
        if !records.iter().any(|r| r.op == op) {
            continue;
        }
        let (t, s, r) = (
            find("tracker", op),
            find("seaorm-defaults", op),
            find("raw", op),
        );
        text.push_str(&format!(
            "{:<15} {:>12} {:>16} {:>12} {:>14} {:>26}\n",
            op,
            cell(t),
            cell(s),
            cell(r),
            ratio(t, r),
            ratio(t, s)
        ));
    }
    text
}
