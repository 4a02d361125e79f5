//! The task tree as [`Linked`] relations.
//!
//! The generator turns `tasks.parent_id` into a `SelfRef` relation without a
//! `Related` impl, and a hand-written `Related<tasks::Entity>` would build an
//! unaliased self-join that fails at run time. A `Linked` impl joins through
//! an alias and works in both directions.

use sea_orm::{Linked, RelationDef, RelationTrait};

use crate::tasks;

/// From a task to its parent task.
#[derive(Debug, Clone, Copy)]
pub struct TaskToParent;

impl Linked for TaskToParent {
    type FromEntity = tasks::Entity;
    type ToEntity = tasks::Entity;

    fn link(&self) -> Vec<RelationDef> {
        vec![tasks::Relation::SelfRef.def()]
    }
}

/// From a task to its direct subtasks.
#[derive(Debug, Clone, Copy)]
pub struct TaskToSubtasks;

impl Linked for TaskToSubtasks {
    type FromEntity = tasks::Entity;
    type ToEntity = tasks::Entity;

    fn link(&self) -> Vec<RelationDef> {
        vec![tasks::Relation::SelfRef.def().rev()]
    }
}
