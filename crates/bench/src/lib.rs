//! The tracker benchmark: the workload of `docs/bench-workload.md`, run by
//! several stacks against the configured database so their figures can be
//! set side by side.
//!
//! - `tracker`: this project's public API (db-core settings and sessions,
//!   `entity`, the `tracker` service), as a user's code calls it;
//! - `seaorm-defaults`: plain SeaORM, `Database::connect` with default options
//!   (pool of 16) and the same entity queries;
//! - `raw`: the same answers with hand-written SQL, sqlx prepared statements
//!   on the tracker's pool (`COPY` for `load` on PostgreSQL).
//!
//! Besides the workload's operations, `list_after` reads the same pages as
//! `list` by keyset (`after_id`), which costs the same at any depth.
//!
//! The stacks are interleaved: each round loads every stack's own freshly
//! migrated database (one per stack, `bench_<stack>` beside the configured
//! one, when more than one stack runs), then runs each operation on every
//! stack in turn, with the same ids; every other round reverses the order.
//! Every answer is checked, so a wrong or empty answer fails the run instead
//! of looking fast. [`run`] writes one JSON object per operation and round;
//! [`summary`] gives each ratio's median over the rounds, with its spread.

#![warn(missing_docs)]

pub mod ops;
pub mod reference;
mod stack;
pub mod workload;

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use db_core::{Db, Settings, admin::create_database, url::backend_name};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sea_orm::{ConnectOptions, Database};
use serde::Serialize;

use stack::Raw;
pub use stack::Stack;
use workload::{CONCURRENCY, OPS, PAGE, POOL, Workload, check};

/// The stacks, in the order they run in odd rounds.
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

impl db_core::error::Retryable for Error {
    fn is_retryable(&self) -> bool {
        matches!(self, Error::Db(e) if e.is_retryable())
    }

    fn retry_reason(&self) -> Option<db_core::metrics::RetryReason> {
        match self {
            Error::Db(e) => e.retry_reason(),
            _ => None,
        }
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
    /// How many times every operation runs on every stack.
    pub rounds: usize,
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
        if self.rounds == 0 {
            return Err(Error::Usage("--rounds 0: expected at least 1".to_owned()));
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
    /// The round, from 1.
    pub round: usize,
    /// The data set's scale.
    pub scale: f64,
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

/// Runs the benchmark against the database of `settings` (one database per
/// stack when several run), writing one JSON line per operation and round to
/// `out` and progress to the log.
pub async fn run(
    settings: &Settings,
    options: &Options,
    out: &mut impl Write,
) -> Result<Vec<Record>, Error> {
    options.validate()?;
    let w = Workload::new(options.scale);
    let names: Vec<&str> = STACKS
        .into_iter()
        .filter(|s| options.stacks.iter().any(|o| o == s))
        .collect();
    let targets: Vec<Settings> = match names[..] {
        [_] => vec![settings.clone()],
        _ => names
            .iter()
            .map(|name| on_own_database(settings, name))
            .collect(),
    };
    if !options.reuse && targets.len() > 1 {
        for target in &targets {
            create_database(target).await?;
        }
    }
    let mut records = Vec::new();
    for round in 1..=options.rounds {
        let mut order: Vec<usize> = (0..names.len()).collect();
        if round.is_multiple_of(2) {
            order.reverse();
        }
        let mut stacks = Vec::new();
        let mut result = Ok(());
        for &i in &order {
            match open(names[i], &targets[i]).await {
                Ok(opened) => stacks.push(opened),
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        if result.is_ok() {
            let mut round = Round {
                w: &w,
                options,
                number: round,
                out: &mut *out,
                records: &mut records,
            };
            result = round.run(&stacks, &targets, &order).await;
        }
        for (stack, db) in stacks {
            stack.close().await;
            if let Some(db) = db {
                db.close().await;
            }
        }
        result?;
    }
    Ok(records)
}

/// `settings` on the stack's own database, `bench_<stack>` on the same server.
pub fn on_own_database(settings: &Settings, stack: &str) -> Settings {
    let name = format!("bench_{}", stack.replace('-', "_"));
    let mut own = settings.clone();
    own.url = settings.url.with_database(&name);
    own.migration_url = settings
        .migration_url
        .as_ref()
        .map(|u| u.with_database(&name));
    own.replicas = settings
        .replicas
        .iter()
        .map(|u| u.with_database(&name))
        .collect();
    own
}

/// Connects a stack; the raw stacks borrow the tracker's pools, whose `Db`
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

/// One round: every stack's load, then each operation on every stack.
struct Round<'a, W> {
    w: &'a Workload,
    options: &'a Options,
    number: usize,
    out: &'a mut W,
    records: &'a mut Vec<Record>,
}

impl<W: Write> Round<'_, W> {
    async fn run(
        &mut self,
        stacks: &[(Stack, Option<Db>)],
        targets: &[Settings],
        order: &[usize],
    ) -> Result<(), Error> {
        for ((stack, _), &i) in stacks.iter().zip(order) {
            if self.options.reuse {
                continue;
            }
            migration::run(
                &targets[i],
                &migration::cli::MigrateArgs {
                    lock_timeout: Duration::from_secs(60),
                    command: migration::cli::MigrateCommand::Fresh { force: false },
                },
                &mut std::io::sink(),
            )
            .await?;
            // `load` fills the tables, reported or not.
            self.time(stack, "load").await?;
        }
        self.run_ops(stacks).await
    }

    /// Each reported operation on every stack that runs it, in turn.
    async fn run_ops(&mut self, stacks: &[(Stack, Option<Db>)]) -> Result<(), Error> {
        for op in OPS.into_iter().filter(|op| *op != "load") {
            if !self.options.ops.iter().any(|o| o == op) {
                continue;
            }
            for (stack, _) in stacks {
                self.time(stack, op).await?;
            }
        }
        Ok(())
    }

    /// Runs `op` on `stack` and records its time, if `op` is reported.
    async fn time(&mut self, stack: &Stack, op: &'static str) -> Result<(), Error> {
        let (w, n) = (self.w, self.w.n(op));
        // The same ids for every stack in a round; other ids in other rounds.
        let op_index = OPS.iter().position(|o| *o == op).unwrap_or_default() as u64;
        let seed = self.options.seed ^ ((self.number as u64) << 32) ^ op_index;
        let mut rng = StdRng::seed_from_u64(seed);
        tracing::info!(stack = stack.name(), op, n, round = self.number, "running");
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
            "list" | "list_after" => {
                let last = (w.tasks as u64).saturating_sub(PAGE);
                for _ in 0..n {
                    let offset = rng.random_range(0..=last);
                    let page = stack.list(offset, op == "list_after").await?;
                    let expected = (w.tasks as u64 - offset).min(PAGE) as usize;
                    check(
                        page.len() == expected
                            && page.first().is_some_and(|(t, _)| t.id as u64 == offset + 1)
                            && page.windows(2).all(|p| p[0].0.id < p[1].0.id)
                            && page
                                .iter()
                                .all(|(t, e)| t.assignee_id == e.as_ref().map(|e| e.id)),
                        || format!("{op}({offset}) returned {} rows", page.len()),
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
        if !self.options.ops.iter().any(|o| o == op) {
            return Ok(());
        }
        let record = Record {
            stack: stack.name().to_owned(),
            op: op.to_owned(),
            round: self.number,
            scale: self.options.scale,
            n,
            secs: (secs * 1000.0).round() / 1000.0,
            ops_per_s: (n as f64 / secs * 10.0).round() / 10.0,
            backend: backend_name(settings_backend(stack)),
            concurrency: (op == "get_concurrent").then_some(CONCURRENCY),
            pool: POOL,
        };
        writeln!(
            self.out,
            "{}",
            serde_json::to_string(&record).map_err(std::io::Error::other)?
        )?;
        self.out.flush()?;
        self.records.push(record);
        Ok(())
    }
}

fn settings_backend(stack: &Stack) -> sea_orm::DbBackend {
    match stack {
        Stack::Tracker(t) => t.db().backend(),
        Stack::SeaOrm(db) => db.get_database_backend(),
        Stack::Raw(raw) => match raw {
            Raw::Postgres(..) => sea_orm::DbBackend::Postgres,
            Raw::MySql(_) => sea_orm::DbBackend::MySql,
            Raw::Sqlite(..) => sea_orm::DbBackend::Sqlite,
        },
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

/// A table on standard error: each op's median ops/s per stack over the
/// rounds, and the ratios of the tracker to the others, each the median of
/// the rounds' ratios with its smallest and largest.
pub fn summary(records: &[Record]) -> String {
    let rounds = records.iter().map(|r| r.round).max().unwrap_or(0);
    let of = |stack: &str, op: &str| -> Vec<(usize, f64)> {
        records
            .iter()
            .filter(|r| r.stack == stack && r.op == op)
            .map(|r| (r.round, r.ops_per_s))
            .collect()
    };
    let cell = |stack: &str, op: &str| {
        let values: Vec<f64> = of(stack, op).into_iter().map(|(_, v)| v).collect();
        median(values).map_or_else(|| "-".to_owned(), |(m, _, _)| format!("{m:.1}"))
    };
    let ratio = |op: &str, other: &str| {
        let other = of(other, op);
        let ratios = of("tracker", op).into_iter().filter_map(|(round, t)| {
            let (_, o) = other.iter().find(|(r, _)| *r == round)?;
            (*o > 0.0).then(|| t / o)
        });
        median(ratios.collect()).map_or_else(
            || "-".to_owned(),
            |(m, lo, hi)| format!("{m:.2} ({lo:.2}-{hi:.2})"),
        )
    };
    let mut text = format!(
        "ops/s: median of {rounds} round(s); ratios: median (min-max) of the rounds' ratios\n\
         {:<15} {:>10} {:>16} {:>10} {:>19} {:>26}\n",
        "op", "tracker", "seaorm-defaults", "raw", "tracker/raw", "tracker/seaorm-defaults",
    );
    for op in OPS {
        if !records.iter().any(|r| r.op == op) {
            continue;
        }
        text.push_str(&format!(
            "{:<15} {:>10} {:>16} {:>10} {:>19} {:>26}\n",
            op,
            cell("tracker", op),
            cell("seaorm-defaults", op),
            cell("raw", op),
            ratio(op, "raw"),
            ratio(op, "seaorm-defaults"),
        ));
    }
    text
}

/// The median, smallest and largest of `values` (`None` if empty).
fn median(mut values: Vec<f64>) -> Option<(f64, f64, f64)> {
    values.sort_by(f64::total_cmp);
    let (lo, hi) = (*values.first()?, *values.last()?);
    let mid = values.len() / 2;
    let median = if values.len().is_multiple_of(2) {
        (values[mid - 1] + values[mid]) / 2.0
    } else {
        values[mid]
    };
    Some((median, lo, hi))
}
