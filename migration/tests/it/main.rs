//! The migration crate's tests: the schema on every backend, the commands,
//! the migration lock with real concurrent processes, failures, and the
//! entity drift check.

mod adopt;
mod commands;
mod concurrency;
mod entities;
mod schema;
mod support;
