//! The tracker's operations. Each is one unit of work: reads run on a
//! read-only session, writes in a read-write session through
//! [`Db::transaction`], which commits once, rolls back on any error and
//! retries serialization conflicts.

use chrono::NaiveDate;
use db_core::{Db, Session, SessionOptions, cached::CachedStatement};
use entity::{employees, tasks};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ActiveValue::Unchanged, ColumnTrait, ConnectionTrait,
    DbBackend, DbErr, EntityTrait, FromQueryResult, IsolationLevel, ModelTrait, QueryFilter,
    QueryOrder, QuerySelect, QueryTrait, SqlErr, Statement,
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
// Every descendant, as full rows. UNION (not UNION ALL) ends the recursion
// even if a cycle was written behind the service's back.
static SUBTREE: CachedStatement = CachedStatement::new(|backend| {
    let param = placeholder(backend, 1);
    Statement::from_sql_and_values(
        backend,
        format!(
            "WITH RECURSIVE subtree AS ( \
                 SELECT * FROM tasks WHERE parent_id = {param} \
                 UNION \
                 SELECT t.* FROM tasks t JOIN subtree s ON t.parent_id = s.id \
             ) \
             SELECT * FROM subtree ORDER BY id"
        ),
        [0.into()],
    )
});
// How many of `candidate`'s ancestors (itself included) are `task`.
static ANCESTOR: CachedStatement = CachedStatement::new(|backend| {
    let (a, b) = (placeholder(backend, 1), placeholder(backend, 2));
    Statement::from_sql_and_values(
        backend,
        format!(
            "WITH RECURSIVE ancestors (id, parent_id) AS ( \
                 SELECT id, parent_id FROM tasks WHERE id = {a} \
                 UNION \
                 SELECT t.id, t.parent_id FROM tasks t JOIN ancestors a ON t.id = a.parent_id \
             ) \
             SELECT COUNT(*) FROM ancestors WHERE id = {b}"
        ),
        [0.into(), 0.into()],
    )
});

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
    pub async fn delete_task(&self, id: i32) -> Result<Task> {
        self.db
            .transaction(SessionOptions::read_write(), |tx| async move {
                let task = tasks::Entity::find_by_id(id)
                    .one(&tx)
                    .await?
                    .ok_or(Error::NotFound(Kind::Task))?;
                task.clone().delete(&tx).await?;
                Ok(task)
            })
            .await
    }

    /// Every descendant of a task (not the task itself), by id, in one
    /// recursive query over the indexed `parent_id`.
    pub async fn subtree(&self, id: i32) -> Result<Vec<Task>> {
        let read = self.db.read().await?;
        let stmt = SUBTREE.statement(read.get_database_backend(), [id.into()])?;
        let found = Task::find_by_statement(stmt).all(&read).await?;
        if found.is_empty() {
            // No descendants, or no such task: tell them apart.
            self.task(id).await?;
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
        let read = self.db.read().await?;
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
/// `candidate`: a few index lookups, whatever the size of the subtree.
async fn is_ancestor_or_self(
    conn: &impl ConnectionTrait,
    task: i32,
    candidate: i32,
) -> Result<bool> {
    if task == candidate {
        return Ok(true);
    }
    let stmt = ANCESTOR.statement(conn.get_database_backend(), [candidate.into(), task.into()])?;
    let row = conn
        .query_one_raw(stmt)
        .await?
        .ok_or_else(|| DbErr::Custom("COUNT(*) returned no row".to_owned()))?;
    Ok(row.try_get_by_index::<i64>(0)? > 0)
}
