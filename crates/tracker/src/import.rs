//! Bulk import of employees and tasks with their ids.

use db_core::{CopyIn, Session};
use sea_orm::{ConnectionTrait, DbBackend, Statement, Value};

use crate::error::Result;
use crate::service::{Employee, Task, Tracker};

/// The columns an import fills, in the order of each row's values.
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

const SETVAL: &str = "SELECT setval(pg_get_serial_sequence('employees', 'id'), COALESCE(MAX(id), 0) + 1, false) FROM employees;
SELECT setval(pg_get_serial_sequence('tasks', 'id'), COALESCE(MAX(id), 0) + 1, false) FROM tasks;";

impl Tracker {
    /// Inserts employees and tasks with their ids in one transaction, moves
    /// the id counters past the largest id, and refreshes the planner's
    /// statistics. A task's parent must come before it. On PostgreSQL the
    /// rows go in with `COPY`; elsewhere in multi-row `INSERT`s.
    pub async fn import(&self, employees: &[Employee], tasks: &[Task]) -> Result<()> {
        let db = self.db();
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
}

/// The rows in COPY's text format, then `COPY` in one transaction that
/// also moves the id counters.
async fn copy_into_postgres(
    db: &db_core::Db,
    employees: &[Employee],
    tasks: &[Task],
) -> Result<()> {
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
/// [`ROWS`] rows, on MySQL or SQLite. The statement's text is written once per
/// size and the values are bound as they are: building each statement through
/// the query builder took most of a load's time on SQLite.
async fn insert_rows<T, const N: usize>(
    session: &Session,
    backend: DbBackend,
    table: &str,
    columns: &[&str; N],
    rows: &[T],
    values: impl Fn(&T) -> [Value; N],
) -> Result<()> {
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
