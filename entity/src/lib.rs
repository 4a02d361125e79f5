//! SeaORM models of the Task Tracker schema: the declarative models of the
//! stack this replaces.
//!
//! `src/generated/` is exactly what `sea-orm-cli generate entity` writes from a
//! freshly migrated PostgreSQL database (`just entities`; `just check-entities`
//! fails when it drifts). Never edit it by hand: change the schema with a
//! migration and regenerate: the new table's module is then `entity::<table>`
//! with no edit here. Hand-written additions live beside it: [`links`] adds
//! the self-referencing relations the generator cannot express.
//!
//! Relations:
//! - task → assignee: `tasks::Entity::find().find_also_related(employees::Entity)`
//! - employee → tasks: `employee.find_related(tasks::Entity)`
//! - task → parent: `task.find_linked(links::TaskToParent)`
//! - task → subtasks: `task.find_linked(links::TaskToSubtasks)`
//!
//! This crate does no I/O of its own.

#[allow(missing_docs)]
mod generated;

pub mod links;

// Every module the generator writes, under its table's name: a new table's
// entity is reachable as soon as it is generated.
pub use generated::*;
