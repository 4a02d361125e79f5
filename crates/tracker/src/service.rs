//! The tracker's operations. Each is one unit of work: reads run on a
//! read-only session, writes in a read-write session through
//! [`Db::transaction`], which commits once, rolls back on any error and
//! retries serialization conflicts.

use std::collections::{BTreeMap, HashSet};

use chrono::NaiveDate;
use db_core::{Db, Session, SessionOptions, cached::CachedStatement};
use entity::{employees, tasks};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ActiveValue::Unchanged, ColumnTrait, ConnectionTrait,
    DbBackend, DbErr, EntityTrait, FromQueryResult, IsolationLevel, ModelTrait, QueryFilter,
    QueryOrder, QuerySelect, QueryTrait, SqlErr, Statement, sea_query::Expr,
};

use crate::error::{Error, Kind, Result};

/// The paging query: `page` of the rows of `E` in `id` order. `skip` counts
/// rows as `OFFSET` does, so the server walks the rows it skips; `after_id`
/// starts after a known id (keyset paging), at the same cost at any depth.
async fn page_of<E: EntityTrait>(
    read: &Session,
    id: E::Column,
    page: Page,
) -> Result<Vec<E::Model>> {
    let mut rows = E::find()
        .order_by_asc(id)
        .offset(page.skip)
        .limit(page.limit);
    if let Some(after) = page.after_id {
        rows = rows.filter(id.gt(after));
    }
    Ok(rows.all(read).await?)
}

/// An employee as stored.
pub type Employee = employees::Model;
/// A task as stored.
pub type Task = tasks::Model;

/// The fields of an employee, for create and full replace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmployeeInput {
    /// Full name.
    pub full_name: String,
    /// Job title.
    pub position: String,
}

/// The fields of a task, for create and full replace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskInput {
    /// Title.
    pub title: String,
    /// Free-form status, e.g. `todo`.
    pub status: String,
    /// The parent task, if this is a subtask.
    pub parent_id: Option<i32>,
    /// The employee assigned, if any.
    pub assignee_id: Option<i32>,
    /// Due date.
    pub deadline: Option<NaiveDate>,
}

/// A page of a list ordered by id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    /// Rows to skip.
    pub skip: u64,
    /// Rows to return at most.
    pub limit: u64,
    /// Only rows with a larger id (keyset paging); `skip` counts from there.
    pub after_id: Option<i32>,
}

impl Default for Page {
    fn default() -> Self {
        Page {
            skip: 0,
            limit: 100,
            after_id: None,
        }
    }
}

/// The tracker service: cheap to clone, one per application.
#[derive(Debug, Clone)]
pub struct Tracker {
    db: Db,
}

fn not_found(kind: Kind) -> impl Fn(DbErr) -> Error {
    move |e| match e {
        DbErr::RecordNotUpdated | DbErr::RecordNotFound(_) => Error::NotFound(kind),
        other => other.into(),
    }
}

// The hot lookups, built once per backend (building a SeaORM query can cost
// more CPU than the database spends answering it). They run through
// `Model::find_by_statement`: `Entity::find().from_raw_sql(..)` would build a
// select of every column first, only to replace it.
static TASK: CachedStatement =
    CachedStatement::new(|backend| tasks::Entity::find_by_id(0).build(backend));
static EMPLOYEE: CachedStatement =
    CachedStatement::new(|backend| employees::Entity::find_by_id(0).build(backend));
// An employee's tasks, by id.
static EMPLOYEE_TASKS: CachedStatement = CachedStatement::new(|backend| {
    tasks::Entity::find()
        .filter(tasks::Column::AssigneeId.eq(0))
        .order_by_asc(tasks::Column::Id)
        .build(backend)
});
/// How many levels of the tree one recursive query walks: within MariaDB's
/// `max_recursive_iterations` (1,000 by default, where it stops without an
/// error) and MySQL's `cte_max_recursion_depth` (1,000, where it fails). A
/// deeper tree takes a query more per 500 levels; the limit also ends the
/// walk around a cycle written behind the service's back.
const LEVELS: i64 = 500;

/// `1` as a 64-bit integer: the type of the recursive queries' `level`.
fn one(backend: DbBackend) -> &'static str {
    match backend {
        DbBackend::MySql => "CAST(1 AS SIGNED)",
        _ => "CAST(1 AS BIGINT)",
    }
}

// A task's descendants down to `LEVELS` levels, as full rows with their
// `level` (1 for a child).
static SUBTREE: CachedStatement = CachedStatement::new(|backend| {
    let (param, one) = (placeholder(backend, 1), one(backend));
    Statement::from_sql_and_values(
        backend,
        format!(
            "WITH RECURSIVE subtree AS ( \
                 SELECT t.*, {one} AS level FROM tasks t WHERE t.parent_id = {param} \
                 UNION ALL \
                 SELECT t.*, s.level + 1 FROM tasks t JOIN subtree s ON t.parent_id = s.id \
                 WHERE s.level < {LEVELS} \
             ) \
             SELECT * FROM subtree ORDER BY id"
        ),
        [0.into()],
    )
});
// Of `candidate` and its ancestors, up to `LEVELS` of them: `task`, if it is
// one, and the last one walked, whose parent is where the walk goes on.
static ANCESTOR: CachedStatement = CachedStatement::new(|backend| {
    let (a, b, one) = (
        placeholder(backend, 1),
        placeholder(backend, 2),
        one(backend),
    );
    Statement::from_sql_and_values(
        backend,
        format!(
            "WITH RECURSIVE ancestors (id, parent_id, level) AS ( \
                 SELECT id, parent_id, {one} FROM tasks WHERE id = {a} \
                 UNION ALL \
                 SELECT t.id, t.parent_id, a.level + 1 FROM tasks t \
                 JOIN ancestors a ON t.id = a.parent_id WHERE a.level < {LEVELS} \
             ) \
             SELECT id, parent_id FROM ancestors WHERE id = {b} OR level = {LEVELS}"
        ),
        [0.into(), 0.into()],
    )
});

/// Every descendant of task `id` (not the task itself), by id: one
/// recursive query over the indexed `parent_id` per `LEVELS` levels.
async fn descendants(conn: &impl ConnectionTrait, id: i32) -> Result<Vec<Task>> {
    let backend = conn.get_database_backend();
    let mut found = BTreeMap::new();
    let mut from = vec![id];
    while let Some(root) = from.pop() {
        let stmt = SUBTREE.statement(backend, [root.into()])?;
        for row in conn.query_all_raw(stmt).await? {
            let task = Task::from_query_result(&row, "")?;
            let level: i64 = row.try_get("", "level")?;
            if level == LEVELS && !found.contains_key(&task.id) {
                from.push(task.id);
            }
            found.insert(task.id, task);
        }
    }
    Ok(found.into_values().collect())
}

/// Deletes every descendant of task `id` without a cascade: MySQL's InnoDB
/// cascades a delete at most 15 levels deep and SQLite at most 1,000
/// (PostgreSQL has no such limit). Their links to each other go first, so
/// that deleting them cascades to nothing, a thousand rows a statement.
async fn delete_descendants(tx: &Session, id: i32) -> Result<()> {
    let ids: Vec<i32> = (descendants(tx, id).await?).iter().map(|t| t.id).collect();
    for chunk in ids.chunks(1000) {
        tasks::Entity::update_many()
            .col_expr(tasks::Column::ParentId, Expr::value(Option::<i32>::None))
            .filter(tasks::Column::Id.is_in(chunk.iter().copied()))
            .exec(tx)
            .await?;
    }
    for chunk in ids.chunks(1000) {
        tasks::Entity::delete_many()
            .filter(tasks::Column::Id.is_in(chunk.iter().copied()))
            .exec(tx)
            .await?;
    }
    Ok(())
}

fn placeholder(backend: DbBackend, n: usize) -> String {
    match backend {
        DbBackend::Postgres => format!("${n}"),
        _ => "?".to_owned(),
    }
}

fn is_foreign_key_violation(e: &Error) -> bool {
    matches!(e, Error::Db(db_core::Error::Db(db))
        if matches!(db.sql_err(), Some(SqlErr::ForeignKeyConstraintViolation(_))))
}

impl Tracker {
    /// A tracker on `db`, whose schema is migrated.
    pub fn new(db: Db) -> Self {
        Tracker { db }
    }

    /// The database handle.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// A write that is one `INSERT`/`UPDATE ... RETURNING` needs no
    /// `BEGIN`/`COMMIT`; without `RETURNING` (MySQL), SeaORM reads the row back
    /// with a second statement, which belongs in the same transaction.
    fn one_statement_write(&self) -> SessionOptions {
        if self.db.supports_returning() {
            SessionOptions::single_statement()
        } else {
            SessionOptions::read_write()
        }
    }

    // --- employees -------------------------------------------------------

    /// Creates an employee.
    pub async fn create_employee(&self, input: EmployeeInput) -> Result<Employee> {
        self.db
            .transaction(self.one_statement_write(), |tx| {
                let input = input.clone();
                async move {
                    let row = employees::ActiveModel {
                        full_name: Set(input.full_name),
                        position: Set(input.position),
                        ..Default::default()
                    };
                    Ok(row.insert(&tx).await?)
                }
            })
            .await
    }

    /// A page of employees, by id.
    pub async fn list_employees(&self, page: Page) -> Result<Vec<Employee>> {
        let read = self.db.read().await?;
        page_of::<employees::Entity>(&read, employees::Column::Id, page).await
    }

    /// One employee.
    pub async fn employee(&self, id: i32) -> Result<Employee> {
        let read = self.db.read().await?;
        let stmt = EMPLOYEE.statement(read.get_database_backend(), [id.into()])?;
        Employee::find_by_statement(stmt)
            .one(&read)
            .await?
            .ok_or(Error::NotFound(Kind::Employee))
    }

    /// Replaces every field of an employee.
    pub async fn update_employee(&self, id: i32, input: EmployeeInput) -> Result<Employee> {
        self.db
            .transaction(self.one_statement_write(), |tx| {
                let input = input.clone();
                async move {
                    employees::ActiveModel {
                        id: Unchanged(id),
                        full_name: Set(input.full_name),
                        position: Set(input.position),
                    }
                    .update(&tx)
                    .await
                    .map_err(not_found(Kind::Employee))
                }
            })
            .await
    }

    /// Deletes an employee and returns it; their tasks become unassigned.
    pub async fn delete_employee(&self, id: i32) -> Result<Employee> {
        self.db
            .transaction(SessionOptions::read_write(), |tx| async move {
                let employee = employees::Entity::find_by_id(id)
                    .one(&tx)
                    .await?
                    .ok_or(Error::NotFound(Kind::Employee))?;
                employee.clone().delete(&tx).await?;
                Ok(employee)
            })
            .await
    }

    /// The tasks assigned to an employee, by id.
    pub async fn employee_tasks(&self, id: i32) -> Result<Vec<Task>> {
        let read = self.db.read().await?;
        let backend = read.get_database_backend();
        let employee = EMPLOYEE.statement(backend, [id.into()])?;
        if Employee::find_by_statement(employee)
            .one(&read)
            .await?
            .is_none()
        {
            return Err(Error::NotFound(Kind::Employee));
        }
        let tasks = EMPLOYEE_TASKS.statement(backend, [id.into()])?;
        Ok(Task::find_by_statement(tasks).all(&read).await?)
    }

    // --- tasks -----------------------------------------------------------

    /// Creates a task.
    pub async fn create_task(&self, input: TaskInput) -> Result<Task> {
        let result = self
            .db
            .transaction(self.one_statement_write(), |tx| {
                let input = input.clone();
                async move {
                    let row = tasks::ActiveModel {
                        title: Set(input.title),
                        status: Set(input.status),
                        parent_id: Set(input.parent_id),
                        assignee_id: Set(input.assignee_id),
                        deadline: Set(input.deadline),
                        ..Default::default()
                    };
                    Ok(row.insert(&tx).await?)
                }
            })
            .await;
        self.explain_references(result, &input).await
    }

    /// A page of tasks, by id.
    pub async fn list_tasks(&self, page: Page) -> Result<Vec<Task>> {
        let read = self.db.read().await?;
        page_of::<tasks::Entity>(&read, tasks::Column::Id, page).await
    }

    /// One task.
    pub async fn task(&self, id: i32) -> Result<Task> {
        let read = self.db.read().await?;
        let stmt = TASK.statement(read.get_database_backend(), [id.into()])?;
        Task::find_by_statement(stmt)
            .one(&read)
            .await?
            .ok_or(Error::NotFound(Kind::Task))
    }

    /// Replaces every field of a task. A new parent must not be the task
    /// itself or one of its subtasks; that check and the update run in one
    /// serializable transaction, so two concurrent moves cannot make a cycle.
    pub async fn update_task(&self, id: i32, input: TaskInput) -> Result<Task> {
        let options = match input.parent_id {
            Some(_) => SessionOptions::read_write().isolation(IsolationLevel::Serializable),
            None => self.one_statement_write(),
        };
        let result = self
            .db
            .transaction(options, |tx| {
                let input = input.clone();
                async move {
                    if let Some(parent) = input.parent_id
                        && is_ancestor_or_self(&tx, id, parent).await?
                    {
                        // Its own parent: only once it is known to exist.
                        if parent == id && tasks::Entity::find_by_id(id).one(&tx).await?.is_none() {
                            return Err(Error::NotFound(Kind::Task));
                        }
                        let message = if parent == id {
                            "a task cannot be its own parent".to_owned()
                        } else {
                            format!("task {parent} is a subtask of task {id}")
                        };
                        return Err(Error::Invalid {
                            field: "parent_id",
                            message,
                        });
                    }
                    tasks::ActiveModel {
                        id: Unchanged(id),
                        title: Set(input.title),
                        status: Set(input.status),
                        parent_id: Set(input.parent_id),
                        assignee_id: Set(input.assignee_id),
                        deadline: Set(input.deadline),
                    }
                    .update(&tx)
                    .await
                    .map_err(not_found(Kind::Task))
                }
            })
            .await;
        self.explain_references(result, &input).await
    }

    /// Deletes a task and returns it; its subtasks are deleted with it.
    /// Outside PostgreSQL the subtasks are deleted first, as read; on
    /// MySQL, serializable reads lock them, so that a subtree moved under
    /// the task meanwhile is either seen or waits, and never left to the
    /// cascade (whose depth InnoDB bounds).
    pub async fn delete_task(&self, id: i32) -> Result<Task> {
        let options = match self.db.backend() {
            DbBackend::MySql => {
                SessionOptions::read_write().isolation(IsolationLevel::Serializable)
            }
            _ => SessionOptions::read_write(),
        };
        self.db
            .transaction(options, |tx| async move {
                let task = tasks::Entity::find_by_id(id)
                    .one(&tx)
                    .await?
                    .ok_or(Error::NotFound(Kind::Task))?;
                if tx.get_database_backend() != DbBackend::Postgres {
                    delete_descendants(&tx, id).await?;
                }
                task.clone().delete(&tx).await?;
                Ok(task)
            })
            .await
    }

    /// Every descendant of a task (not the task itself), by id, in one
    /// recursive query over the indexed `parent_id` (one more per 500
    /// levels of depth).
    pub async fn subtree(&self, id: i32) -> Result<Vec<Task>> {
        let read = self.db.read().await?;
        let found = descendants(&read, id).await?;
        // No descendants, or no such task: told apart on the same session,
        // which may hold a connection (a transaction through a pooler).
        if found.is_empty() && tasks::Entity::find_by_id(id).one(&read).await?.is_none() {
            return Err(Error::NotFound(Kind::Task));
        }
        Ok(found)
    }

    /// Turns a foreign-key violation into an error that names the field and
    /// the missing row (looked up after the failed transaction is gone).
    async fn explain_references<T>(&self, result: Result<T>, input: &TaskInput) -> Result<T> {
        let err = match result {
            Err(e) if is_foreign_key_violation(&e) => e,
            other => return other,
        };
        // On the primary, which refused the write: a replica may not have
        // caught up with a row just added or deleted.
        let read = (self.db)
            .session(SessionOptions::read_only().on_primary())
            .await?;
        if let Some(parent) = input.parent_id
            && tasks::Entity::find_by_id(parent)
                .one(&read)
                .await?
                .is_none()
        {
            return Err(Error::Invalid {
                field: "parent_id",
                message: format!("task {parent} does not exist"),
            });
        }
        if let Some(assignee) = input.assignee_id
            && employees::Entity::find_by_id(assignee)
                .one(&read)
                .await?
                .is_none()
        {
            return Err(Error::Invalid {
                field: "assignee_id",
                message: format!("employee {assignee} does not exist"),
            });
        }
        Err(err)
    }
}

/// Whether `task` is `candidate` or one of its ancestors, i.e. whether making
/// `candidate` the parent of `task` would close a cycle. Walks up from
/// `candidate`: a few index lookups, whatever the size of the subtree, in
/// one query per `LEVELS` ancestors.
async fn is_ancestor_or_self(
    conn: &impl ConnectionTrait,
    task: i32,
    candidate: i32,
) -> Result<bool> {
    let backend = conn.get_database_backend();
    let (mut from, mut walked) = (candidate, HashSet::new());
    while task != from {
        let stmt = ANCESTOR.statement(backend, [from.into(), task.into()])?;
        let mut next = None;
        for row in conn.query_all_raw(stmt).await? {
            match row.try_get_by_index::<i32>(0)? == task {
                true => return Ok(true),
                false => next = row.try_get_by_index::<Option<i32>>(1)?,
            }
        }
        // On from the last one walked; around a cycle, once only.
        match next {
            Some(parent) if walked.insert(parent) => from = parent,
            _ => return Ok(false),
        }
    }
    Ok(true)
}
