//! Bulk import of employees and tasks with their ids.

use std::fmt::Write;

use entity::{employees, tasks};
use sea_orm::sqlx::{self, Connection};
use sea_orm::{ConnectionTrait, DbBackend, DbErr, EntityTrait, IntoActiveModel, RuntimeErr};

use crate::error::Result;
use crate::service::{Employee, Task, Tracker};

/// Rows per `INSERT`, below every backend's limit on bound parameters.
const ROWS: usize = 5000;

const SETVAL: &str = "SELECT setval(pg_get_serial_sequence('employees', 'id'), COALESCE(MAX(id), 0) + 1, false) FROM employees;
SELECT setval(pg_get_serial_sequence('tasks', 'id'), COALESCE(MAX(id), 0) + 1, false) FROM tasks;";

fn sqlx_err(e: sqlx::Error) -> DbErr {
    DbErr::Exec(RuntimeErr::SqlxError(e.into()))
}

/// One value in PostgreSQL's COPY text format.
fn copy_text(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
}

fn copy_opt(out: &mut String, value: Option<impl std::fmt::Display>) {
    match value {
        Some(v) => {
            let _ = write!(out, "{v}");
        }
        None => out.push_str("\\N"),
    }
}

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
        // Fresh statistics, or the planner guesses: without them PostgreSQL
        // answered a subtree with a sequential scan per level. On PostgreSQL a
        // VACUUM as well, so autovacuum does not start on the new rows while
        // the application works.
        let analyze = match db.backend() {
            DbBackend::Postgres => "VACUUM (ANALYZE) employees, tasks",
            DbBackend::MySql => "ANALYZE TABLE employees, tasks",
            _ => "ANALYZE",
        };
        db.conn().execute_unprepared(analyze).await?;
        Ok(())
    }
}

async fn copy_into_postgres(
    db: &db_core::Db,
    employees: &[Employee],
    tasks: &[Task],
) -> Result<(), DbErr> {
    let mut conn = db
        .conn()
        .get_postgres_connection_pool()
        .acquire()
        .await
        .map_err(sqlx_err)?;
    let mut tx = conn.begin().await.map_err(sqlx_err)?;
    let mut buffer = String::new();

    let mut copy = tx
        .copy_in_raw("COPY employees (id, full_name, position) FROM STDIN")
        .await
        .map_err(sqlx_err)?;
    for chunk in employees.chunks(ROWS) {
        buffer.clear();
        for e in chunk {
            let _ = write!(buffer, "{}\t", e.id);
            copy_text(&mut buffer, &e.full_name);
            buffer.push('\t');
            copy_text(&mut buffer, &e.position);
            buffer.push('\n');
        }
        copy.send(buffer.as_bytes()).await.map_err(sqlx_err)?;
    }
    copy.finish().await.map_err(sqlx_err)?;

    let mut copy = tx
        .copy_in_raw("COPY tasks (id, title, parent_id, assignee_id, deadline, status) FROM STDIN")
        .await
        .map_err(sqlx_err)?;
    for chunk in tasks.chunks(ROWS) {
        buffer.clear();
        for t in chunk {
            let _ = write!(buffer, "{}\t", t.id);
            copy_text(&mut buffer, &t.title);
            buffer.push('\t');
            copy_opt(&mut buffer, t.parent_id);
            buffer.push('\t');
            copy_opt(&mut buffer, t.assignee_id);
            buffer.push('\t');
            copy_opt(&mut buffer, t.deadline);
            buffer.push('\t');
            copy_text(&mut buffer, &t.status);
            buffer.push('\n');
        }
        copy.send(buffer.as_bytes()).await.map_err(sqlx_err)?;
    }
    copy.finish().await.map_err(sqlx_err)?;

    sqlx::raw_sql(SETVAL)
        .execute(&mut *tx)
        .await
        .map_err(sqlx_err)?;
    tx.commit().await.map_err(sqlx_err)
}
