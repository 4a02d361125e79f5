//! The migration crate's tests: the schema on every backend, the commands,
//! the migration lock with real concurrent processes, failures, online
//! schema changes, and the entity drift check.

mod adopt;
mod commands;
mod concurrency;
mod entities;
mod online;
mod schema;
mod sql;
mod support;
