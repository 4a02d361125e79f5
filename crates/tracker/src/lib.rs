//! The Task Tracker service: employees and a tree of tasks, on db-core
//! sessions and the generated `entity` models, served over HTTP with the
//! original FastAPI app's routes and JSON.
//!
//! - [`Tracker`] holds the operations; each is one unit of work (reads on
//!   read-only sessions, writes in a transaction that commits once and rolls
//!   back on failure). Lists are pages ordered by id, and a task's whole
//!   subtree is one query.
//! - [`http`] maps the operations to routes and describes them for the
//!   application's OpenAPI document; [`http::routes`] gives them to a
//!   `web::App`, which serves them.
//! - [`seed`] fills an empty database with a few employees and a task tree.
//!
//! ```no_run
//! # async fn example(db: db_core::Db) -> Result<(), tracker::Error> {
//! use tracker::{Tracker, EmployeeInput};
//! let tracker = Tracker::new(db);
//! let ann = tracker
//!     .create_employee(EmployeeInput { full_name: "Ann".into(), position: "dev".into() })
//!     .await?;
//! assert_eq!(tracker.employee(ann.id).await?.full_name, "Ann");
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

mod error;
pub mod http;
mod input;
mod seed;
mod service;

pub use error::{Error, Kind, Result};
pub use seed::seed;
pub use service::{Employee, EmployeeInput, Page, Task, TaskInput, Tracker};
