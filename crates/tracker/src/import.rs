//! Bulk import of employees and tasks with their ids.

use db_core::CopyIn;
use entity::{employees, tasks};
use sea_orm::{DbBackend, EntityTrait, IntoActiveModel};

use crate::error::Result;
use crate::service::{Employee, Task, Tracker};

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
            _ => {
                let session = db.begin().await?;
                for chunk in employees.chunks(ROWS) {
                    employees::Entity::insert_many(
                        chunk
                            .iter()
                            .cloned()
                            .map(IntoActiveModel::into_active_model),
                    )
                    .exec_without_returning(&session)
                    .await?;
                }
                for chunk in tasks.chunks(ROWS) {
                    tasks::Entity::insert_many(
                        chunk
                            .iter()
                            .cloned()
                            .map(IntoActiveModel::into_active_model),
                    )
                    .exec_without_returning(&session)
                    .await?;
                }
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
    let mut employee_rows = CopyIn::new("employees", &["id", "full_name", "position"]);
    for e in employees {
        employee_rows.row([e.id.into(), (&e.full_name).into(), (&e.position).into()])?;
    }
    let mut task_rows = CopyIn::new(
        "tasks",
        &[
            "id",
            "title",
            "parent_id",
            "assignee_id",
            "deadline",
            "status",
        ],
    );
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
