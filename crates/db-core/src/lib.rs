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
//! - [`CachedStatement`] builds a hot query's SQL once per backend.
//! - [`create_database`], [`Db::health`].
//! - Errors are one [`Error`] type whose causes stay attached as sources;
//!   [`Report`] prints one with its causes on a single line. No message,
//!   source or `Debug` shows the password.
//! - [`DatabaseUrl::child_env`] hands the URL to a child process.
//! - [`metrics`]: pool, statement, retry and replica metrics through the
//!   `metrics` facade, once a binary calls [`metrics::enable`].
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

mod admin;
mod bound;
mod cached;
mod connect;
mod copy;
mod db;
mod error;
mod failover;
mod lock;
pub mod metrics;
mod replicas;
mod session;
mod settings;
mod source;
mod url;

pub use admin::{Created, create_database, drop_database};
pub use cached::CachedStatement;
pub use copy::{CopyIn, CopyValue};
pub use db::{Db, Health, ReplicaStatus, Scope, Stats};
pub use error::{Error, Report, Result, Retryable};
pub use failover::{HostStatus, Role, host_status};
pub use lock::{Blocker, HeldLock, Lock};
pub use session::{Access, Session, SessionOptions};
pub use settings::{Options, SettingInfo, Settings, documented};
pub use source::{Section, Source};
pub use url::{DatabaseUrl, LoadBalanceHosts, SslMode, TargetSessionAttrs, backend_name};

/// The SeaORM this crate is built on, for users who want the same version.
pub use sea_orm;
