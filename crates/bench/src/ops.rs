//! What the `tracker` stack runs beyond the service's own operations, on
//! db-core sessions and the `entity` models as a user's code would write
//! them: the workload's bulk load, a task with its assignee, a locked status
//! change, and a page with its assignees. The hot statements are built once
//! per backend ([`CachedStatement`]), as the service builds its own.

use db_core::{Db, Session, SessionOptions, cached::CachedStatement, copy::CopyIn};
use entity::{employees, tasks};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, DbBackend, EntityTrait,
    FromQueryResult, IntoActiveModel, QueryFilter, QueryOrder, QuerySelect, QueryTrait,
    SelectTwoModel, SelectorTrait, Statement, Value,
};
use tracker::{Employee, Task};

use crate::stack::TaskAndAssignee;
use crate::{Error, PAGE};

/// The columns the load fills, in the order of each row's values.
const EMPLOYEE_COLUMNS: [&str; 3] = ["id", "full_name", "position"];
const TASK_COLUMNS: [&str; 6] = [
    "id",
    "title",
    "parent_id",
    "assignee_id",
    "deadline",
    "status",
];

/// Rows per `INSERT`, below every backend's limit on bound parameters.
const ROWS: usize = 5000;

/// Moves PostgreSQL's id counters past the largest ids.
pub(crate) const SETVAL: &str = "SELECT setval(pg_get_serial_sequence('employees', 'id'), COALESCE(MAX(id), 0) + 1, false) FROM employees;
SELECT setval(pg_get_serial_sequence('tasks', 'id'), COALESCE(MAX(id), 0) + 1, false) FROM tasks;";

static TASK_FOR_UPDATE: CachedStatement =
    CachedStatement::new(|backend| tasks::Entity::find_by_id(0).lock_exclusive().build(backend));
// `UPDATE tasks SET status = ? WHERE id = ? RETURNING *` (where RETURNING exists).
static SET_STATUS: CachedStatement = CachedStatement::new(|backend| {
    backend.build(
        &sea_orm::sea_query::Query::update()
            .table(tasks::Entity)
            .value(tasks::Column::Status, "")
            .and_where(tasks::Column::Id.eq(0))
            .returning_all()
            .to_owned(),
    )
});
/// Tasks after an id, with assignees: `id > ? ORDER BY id LIMIT ?`.
static PAGE_AFTER: CachedStatement = CachedStatement::new(|backend| {
    tasks::Entity::find()
        .find_also_related(employees::Entity)
        .filter(tasks::Column::Id.gt(0))
        .order_by_asc(tasks::Column::Id)
        .limit(1)
        .build(backend)
});

/// Tasks from a depth, with assignees: the page `ORDER BY id LIMIT ? OFFSET
/// ?` as a derived table named `tasks`, so that only its rows are joined.
static PAGE_AT: CachedStatement = CachedStatement::new(|backend| {
    let page = tasks::Entity::find()
        .order_by_asc(tasks::Column::Id)
        .limit(1)
        .offset(2)
        .into_query();
    let mut rows = tasks::Entity::find()
        .find_also_related(employees::Entity)
        .order_by_asc(tasks::Column::Id);
    QueryTrait::query(&mut rows)
        .from_clear()
        .from_subquery(page, tasks::Entity);
    rows.build(backend)
});

static TASK_WITH_ASSIGNEE: CachedStatement = CachedStatement::new(|backend| {
    tasks::Entity::find_by_id(0)
        .find_also_related(employees::Entity)
        .build(backend)
});

/// Inserts employees and tasks with their ids in one transaction, moves the
/// id counters past the largest id, and refreshes the planner's
/// statistics. A task's parent must come before it. On PostgreSQL the rows
/// go in with `COPY`; elsewhere in multi-row `INSERT`s.
pub async fn import(db: &Db, employees: &[Employee], tasks: &[Task]) -> Result<(), Error> {
    match db.backend() {
        DbBackend::Postgres => copy_into_postgres(db, employees, tasks).await?,
        backend => {
            let session = db.begin().await?;
            insert_rows(
                &session,
                backend,
                "employees",
                &EMPLOYEE_COLUMNS,
                employees,
                |e| {
                    [
                        e.id.into(),
                        e.full_name.clone().into(),
                        e.position.clone().into(),
                    ]
                },
            )
            .await?;
            insert_rows(&session, backend, "tasks", &TASK_COLUMNS, tasks, |t| {
                [
                    t.id.into(),
                    t.title.clone().into(),
                    t.parent_id.into(),
                    t.assignee_id.into(),
                    t.deadline.into(),
                    t.status.clone().into(),
                ]
            })
            .await?;
            // MySQL and SQLite move their counters past explicit ids themselves.
            session.commit().await?;
        }
    }
    db.refresh_statistics(&["employees", "tasks"]).await?;
    Ok(())
}

/// The rows in COPY's text format, then `COPY` in one transaction that also
/// moves the id counters.
async fn copy_into_postgres(db: &Db, employees: &[Employee], tasks: &[Task]) -> Result<(), Error> {
    let mut employee_rows = CopyIn::new("employees", &EMPLOYEE_COLUMNS);
    for e in employees {
        employee_rows.row([e.id.into(), (&e.full_name).into(), (&e.position).into()])?;
    }
    let mut task_rows = CopyIn::new("tasks", &TASK_COLUMNS);
    for t in tasks {
        task_rows.row([
            t.id.into(),
            (&t.title).into(),
            t.parent_id.into(),
            t.assignee_id.into(),
            t.deadline.into(),
            (&t.status).into(),
        ])?;
    }
    db.copy_in(&[employee_rows, task_rows], SETVAL).await?;
    Ok(())
}

/// Inserts `rows` into `columns` of `table` with multi-row `INSERT`s of
/// [`ROWS`] rows, on MySQL or SQLite. The statement's text is written once
/// per size and the values are bound as they are: building each statement
/// through the query builder took most of a load's time on SQLite.
async fn insert_rows<T, const N: usize>(
    session: &Session,
    backend: DbBackend,
    table: &str,
    columns: &[&str; N],
    rows: &[T],
    values: impl Fn(&T) -> [Value; N],
) -> Result<(), Error> {
    let row = format!("({})", vec!["?"; N].join(", "));
    let head = format!("INSERT INTO {table} ({}) VALUES ", columns.join(", "));
    let mut sql = String::new();
    for chunk in rows.chunks(ROWS) {
        if sql.is_empty() || chunk.len() != ROWS {
            sql = head.clone() + &vec![row.as_str(); chunk.len()].join(", ");
        }
        let values = chunk.iter().flat_map(&values).collect::<Vec<_>>();
        session
            .execute_raw(Statement::from_sql_and_values(backend, &sql, values))
            .await?;
    }
    Ok(())
}

/// One task with its assignee, in one query; `None` when there is no such task.
pub async fn task_with_assignee(db: &Db, id: i32) -> Result<Option<TaskAndAssignee>, Error> {
    let read = db.read().await?;
    let stmt = TASK_WITH_ASSIGNEE.statement(read.get_database_backend(), [id.into()])?;
    let Some(row) = read.query_one_raw(stmt).await? else {
        return Ok(None);
    };
    Ok(Some(
        SelectTwoModel::<Task, Employee>::from_raw_query_result(row)?,
    ))
}

/// Loads a task, changes its status and returns the updated row, in one
/// transaction with the row locked, so concurrent status changes do not
/// overwrite each other's other fields.
pub async fn set_task_status(db: &Db, id: i32, status: &str) -> Result<Task, Error> {
    db.transaction(SessionOptions::read_write(), |tx| async move {
        let backend = tx.get_database_backend();
        let stmt = TASK_FOR_UPDATE.statement(backend, [id.into()])?;
        let task = Task::find_by_statement(stmt)
            .one(&tx)
            .await?
            .ok_or_else(|| Error::WrongAnswer(format!("task {id} is missing")))?;
        if !tx.support_returning() {
            let mut row = task.into_active_model();
            row.status = Set(status.to_owned());
            return Ok(row.update(&tx).await?);
        }
        let stmt = SET_STATUS.statement(backend, [status.into(), id.into()])?;
        Task::find_by_statement(stmt)
            .one(&tx)
            .await?
            .ok_or_else(|| Error::WrongAnswer(format!("task {id} is missing")))
    })
    .await
}

/// A page of tasks with their assignees, in one statement that joins the
/// page's rows alone: after a task (`keyset`), or `from` rows deep, where
/// the page is a derived table (joining first would join every skipped row
/// too).
pub async fn list_with_assignees(
    db: &Db,
    from: u64,
    keyset: bool,
) -> Result<Vec<TaskAndAssignee>, Error> {
    let read = db.read().await?;
    let backend = read.get_database_backend();
    let stmt = match keyset {
        true => PAGE_AFTER.statement(backend, [(from as i32).into(), PAGE.into()])?,
        false => PAGE_AT.statement(backend, [PAGE.into(), from.into()])?,
    };
    let rows = read.query_all_raw(stmt).await?;
    let page = rows
        .into_iter()
        .map(SelectTwoModel::<Task, Employee>::from_raw_query_result);
    Ok(page.collect::<Result<_, _>>()?)
}
