//! The database foundation: settings → connection → sessions, on SeaORM 2.
//!
//! - [`Settings`] are loaded in layers from a [`Source`] (built-in defaults,
//!   `config/default.toml`, `config/{APP_ENV}.toml`, environment variables). The
//!   seed's `DB_HOST`, `DB_PORT`, `DB_NAME`, `DB_USER`, `DB_PASS` select
//!   PostgreSQL; `DATABASE_URL` overrides them; with nothing set, the binary's
//!   default database ([`Source::default_value`]) is used, or it is an error. The password is a secret that no `Debug`,
//!   `Display`, error or log line shows.
//! - [`Db::connect`] waits for the server within a deadline and returns a
//!   cheap-to-clone handle on tuned pools.
//! - [`Db::begin`] / [`Db::read`] hand out [`Session`]s, one unit of work each,
//!   rolled back unless committed; [`Db::transaction`] retries a unit of work
//!   that lost a serialization conflict or deadlock.
//! - Read replicas (`DB_REPLICA_URLS`): read-only sessions go to them and fail
//!   over to the primary; [`Db::scope`] reads its own writes. Through a
//!   transaction-pooling PgBouncer, `DB_TRANSACTION_POOLER` keeps sessions safe.
//! - [`Db::with_lock`] runs a unit of work under a named [`Lock`], so a job
//!   such as a migrator runs once at a time per database, across processes.
//! - Errors are one [`Error`] type whose causes stay attached as sources;
//!   [`error::Report`] prints one with its causes on a single line. No
//!   message, source or `Debug` shows the password.
//!
//! The root holds the core; the rest is in named modules:
//!
//! | module | what |
//! | --- | --- |
//! | [`settings`] | every database setting ([`settings::Options`]), a service's own [`settings::Section`], and the documentation rows of both |
//! | [`url`] | [`url::DatabaseUrl`]: building, parsing and redacting URLs, libpq host lists, handing one to a child process |
//! | [`session`] | [`session::Access`] of a session |
//! | [`db`] | what a [`Db`] reports: [`db::Health`], pool [`db::Stats`], [`db::ReplicaStatus`], and [`db::Scope`] (read your own writes) |
//! | [`failover`] | high availability: the role of each host of a list ([`failover::host_status`]) |
//! | [`lock`] | who holds or waits for a [`Lock`] ([`lock::Blocker`], [`lock::HeldLock`]) |
//! | [`admin`] | [`admin::create_database`] and [`admin::drop_database`] |
//! | [`copy`] | bulk loading with PostgreSQL's `COPY` ([`copy::CopyIn`]) |
//! | [`cached`] | [`cached::CachedStatement`]: a hot query's SQL built once per backend |
//! | [`error`] | [`error::Report`], [`error::Retryable`] |
//! | [`metrics`] | pool, statement, retry and replica metrics through the `metrics` facade, once a binary calls [`metrics::enable`] |
//!
//! The main path: settings, then a `Db`, then one session per unit of work,
//! used wherever SeaORM takes a connection.
//!
//! ```no_run
//! # mod employees {
//! #     use sea_orm::entity::prelude::*;
//! #     #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
//! #     #[sea_orm(table_name = "employees")]
//! #     pub struct Model {
//! #         #[sea_orm(primary_key)]
//! #         pub id: i32,
//! #         pub full_name: String,
//! #     }
//! #     #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
//! #     pub enum Relation {}
//! #     impl ActiveModelBehavior for ActiveModel {}
//! # }
//! # async fn example() -> Result<(), db_core::Error> {
//! use db_core::{Db, Settings, Source};
//! use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
//!
//! // Binaries build the source with `Source::from_process()`.
//! let settings = Settings::load(&Source::new().var("DATABASE_URL", "sqlite://data/app.db"))?;
//! let db = Db::connect(&settings).await?;
//!
//! let session = db.read().await?;
//! let anns = employees::Entity::find()
//!     .filter(employees::Column::FullName.eq("Ann"))
//!     .all(&session)
//!     .await?;
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

pub mod admin;
mod bound;
pub mod cached;
mod connect;
pub mod copy;
pub mod db;
pub mod error;
pub mod failover;
pub mod lock;
pub mod metrics;
mod replicas;
pub mod session;
pub mod settings;
mod source;
pub mod url;

pub use db::Db;
pub use error::{Error, Result};
pub use lock::Lock;
pub use session::{Session, SessionOptions};
pub use settings::Settings;
pub use source::Source;

/// The SeaORM this crate is built on, for users who want the same version.
pub use sea_orm;
