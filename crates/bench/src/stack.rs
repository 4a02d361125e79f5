//! The stacks, each answering the workload's operations its own way.

use db_core::Db;
use entity::{employees, tasks};
use sea_orm::sqlx;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseConnection,
    DbBackend, EntityTrait, IntoActiveModel, QueryFilter, QueryOrder, QuerySelect, Statement,
    TransactionTrait,
};
use tracker::{Employee, Task, TaskInput, Tracker};

use crate::Error;
use crate::ops::{self, SETVAL};
use crate::workload::{PAGE, Workload};

/// A task with its assignee, as `get` and `list` return them.
pub type TaskAndAssignee = (Task, Option<Employee>);

/// One stack under test.
#[derive(Debug)]
pub enum Stack {
    /// This project: db-core settings and sessions, `entity`, the tracker service.
    Tracker(Tracker),
    /// Plain SeaORM with `Database::connect` defaults and the same entity queries.
    SeaOrm(DatabaseConnection),
    /// Hand-written SQL, prepared statements through sqlx, on the tracker's pool.
    Raw(Raw),
}

/// The tracker's sqlx pools, for hand-written SQL.
#[derive(Debug, Clone)]
pub enum Raw {
    /// PostgreSQL, and the handle whose COPY loads the data set.
    Postgres(sqlx::PgPool, Db),
    /// MySQL / MariaDB.
    MySql(sqlx::MySqlPool),
    /// SQLite: the writer and the readers.
    Sqlite(sqlx::SqlitePool, sqlx::SqlitePool),
}

impl Raw {
    /// The pools behind `db`.
    pub fn of(db: &Db) -> Raw {
        match db.backend() {
            DbBackend::Postgres => {
                Raw::Postgres(db.conn().get_postgres_connection_pool().clone(), db.clone())
            }
            DbBackend::MySql => Raw::MySql(db.conn().get_mysql_connection_pool().clone()),
            _ => Raw::Sqlite(
                db.conn().get_sqlite_connection_pool().clone(),
                db.reader().get_sqlite_connection_pool().clone(),
            ),
        }
    }
}

impl Stack {
    /// The stack's name in the output.
    pub fn name(&self) -> &'static str {
        match self {
            Stack::Tracker(_) => "tracker",
            Stack::SeaOrm(_) => "seaorm-defaults",
            Stack::Raw(_) => "raw",
        }
    }

    /// Loads the whole data set into freshly migrated tables.
    pub async fn load(&self, w: &Workload) -> Result<(), Error> {
        let (employees, tasks) = (w.employee_rows(), w.task_rows());
        match self {
            Stack::Tracker(t) => ops::import(t.db(), &employees, &tasks).await,
            Stack::SeaOrm(db) => {
                // What a user writes with SeaORM alone: batched insert_many in a
                // transaction, then the sequence fix-up by hand.
                let tx = db.begin().await?;
                for chunk in employees.chunks(5000) {
                    employees::Entity::insert_many(
                        chunk
                            .iter()
                            .cloned()
                            .map(IntoActiveModel::into_active_model),
                    )
                    .exec_without_returning(&tx)
                    .await?;
                }
                for chunk in tasks.chunks(5000) {
                    tasks::Entity::insert_many(
                        chunk
                            .iter()
                            .cloned()
                            .map(IntoActiveModel::into_active_model),
                    )
                    .exec_without_returning(&tx)
                    .await?;
                }
                if tx.get_database_backend() == DbBackend::Postgres {
                    tx.execute_unprepared(SETVAL).await?;
                }
                tx.commit().await?;
                Ok(())
            }
            Stack::Raw(raw) => raw.load(&employees, &tasks).await,
        }
    }

    /// One task by id with its assignee.
    pub async fn get(&self, id: i32) -> Result<Option<TaskAndAssignee>, Error> {
        match self {
            Stack::Tracker(t) => ops::task_with_assignee(t.db(), id).await,
            Stack::SeaOrm(db) => Ok(tasks::Entity::find_by_id(id)
                .find_also_related(employees::Entity)
                .one(db)
                .await?),
            Stack::Raw(raw) => raw.get(id).await,
        }
    }

    /// Inserts a task assigned to `assignee`; returns it with its new id.
    pub async fn create(&self, n: usize, assignee: i32) -> Result<Task, Error> {
        let title = format!("New task {n}");
        match self {
            Stack::Tracker(t) => Ok(t
                .create_task(TaskInput {
                    title,
                    status: "todo".to_owned(),
                    parent_id: None,
                    assignee_id: Some(assignee),
                    deadline: None,
                })
                .await?),
            Stack::SeaOrm(db) => Ok(tasks::ActiveModel {
                title: Set(title),
                status: Set("todo".to_owned()),
                parent_id: Set(None),
                assignee_id: Set(Some(assignee)),
                deadline: Set(None),
                ..Default::default()
            }
            .insert(db)
            .await?),
            Stack::Raw(raw) => raw.create(&title, assignee).await,
        }
    }

    /// Loads a task, changes its status, commits, returns the updated row.
    pub async fn update(&self, id: i32, status: &str) -> Result<Task, Error> {
        match self {
            Stack::Tracker(t) => ops::set_task_status(t.db(), id, status).await,
            Stack::SeaOrm(db) => {
                let tx = db.begin().await?;
                let task = tasks::Entity::find_by_id(id)
                    .lock_exclusive()
                    .one(&tx)
                    .await?
                    .ok_or_else(|| Error::WrongAnswer(format!("task {id} is missing")))?;
                let mut row = task.into_active_model();
                row.status = Set(status.to_owned());
                let task = row.update(&tx).await?;
                tx.commit().await?;
                Ok(task)
            }
            Stack::Raw(raw) => raw.update(id, status).await,
        }
    }

    /// A page of tasks by id, with assignees: from `offset` rows deep
    /// (`OFFSET`), or, `keyset`, after the task with id `offset`.
    pub async fn list(&self, offset: u64, keyset: bool) -> Result<Vec<TaskAndAssignee>, Error> {
        let after = keyset.then_some(offset as i32);
        let skip = if keyset { 0 } else { offset };
        match self {
            Stack::Tracker(t) => ops::list_with_assignees(t.db(), offset, keyset).await,
            Stack::SeaOrm(db) => {
                let mut page = tasks::Entity::find()
                    .find_also_related(employees::Entity)
                    .order_by_asc(tasks::Column::Id)
                    .offset(skip)
                    .limit(PAGE);
                if let Some(after) = after {
                    page = page.filter(tasks::Column::Id.gt(after));
                }
                Ok(page.all(db).await?)
            }
            Stack::Raw(raw) => raw.list(offset, keyset).await,
        }
    }

    /// Every descendant of a task, by id.
    pub async fn subtree(&self, id: i32) -> Result<Vec<Task>, Error> {
        match self {
            Stack::Tracker(t) => Ok(t.subtree(id).await?),
            Stack::SeaOrm(db) => {
                let backend = db.get_database_backend();
                Ok(tasks::Entity::find()
                    .from_raw_sql(Statement::from_sql_and_values(
                        backend,
                        subtree_sql(backend),
                        [id.into()],
                    ))
                    .all(db)
                    .await?)
            }
            Stack::Raw(raw) => raw.subtree(id).await,
        }
    }

    /// Closes the stack's own pools (the raw stack shares the tracker's).
    pub async fn close(&self) {
        match self {
            Stack::Tracker(t) => t.db().close().await,
            Stack::SeaOrm(db) => {
                let _ = db.close_by_ref().await;
            }
            Stack::Raw(_) => {}
        }
    }
}

fn subtree_sql(backend: DbBackend) -> String {
    let param = if backend == DbBackend::Postgres {
        "$1"
    } else {
        "?"
    };
    format!(
        "WITH RECURSIVE subtree AS ( \
             SELECT * FROM tasks WHERE parent_id = {param} \
             UNION \
             SELECT t.* FROM tasks t JOIN subtree s ON t.parent_id = s.id \
         ) \
         SELECT id, title, parent_id, assignee_id, deadline, status FROM subtree ORDER BY id"
    )
}

/// A task's columns, as sqlx decodes them.
type TaskRow = (
    i32,
    String,
    Option<i32>,
    Option<i32>,
    Option<chrono::NaiveDate>,
    String,
);

/// A task's columns and its assignee's, from one row of a LEFT JOIN.
type JoinedRow = (
    i32,
    String,
    Option<i32>,
    Option<i32>,
    Option<chrono::NaiveDate>,
    String,
    Option<String>,
    Option<String>,
);

fn task((id, title, parent_id, assignee_id, deadline, status): TaskRow) -> Task {
    Task {
        id,
        title,
        parent_id,
        assignee_id,
        deadline,
        status,
    }
}

fn joined(
    (id, title, parent_id, assignee_id, deadline, status, full_name, position): JoinedRow,
) -> TaskAndAssignee {
    let assignee = match (assignee_id, full_name, position) {
        (Some(id), Some(full_name), Some(position)) => Some(Employee {
            id,
            full_name,
            position,
        }),
        _ => None,
    };
    (
        task((id, title, parent_id, assignee_id, deadline, status)),
        assignee,
    )
}

/// Tasks (from `$from`, the table or a page of it) and their assignees, by
/// a LEFT JOIN.
macro_rules! joined {
    ($from:literal, $rest:literal) => {
        concat!(
            "SELECT t.id, t.title, t.parent_id, t.assignee_id, t.deadline, t.status, ",
            "e.full_name AS employee_full_name, e.position AS employee_position ",
            "FROM ",
            $from,
            " t LEFT JOIN employees e ON e.id = t.assignee_id",
            $rest
        )
    };
}

/// A page of tasks with assignees: `$1` limit, `$2` offset.
const PAGE_PG: &str = joined!(
    "(SELECT * FROM tasks ORDER BY id LIMIT $1 OFFSET $2)",
    " ORDER BY t.id"
);
/// The page after task `$2`: `$1` limit.
const PAGE_AFTER_PG: &str = joined!(
    "(SELECT * FROM tasks WHERE id > $2 ORDER BY id LIMIT $1)",
    " ORDER BY t.id"
);
/// [`PAGE_PG`] for MySQL and SQLite.
const PAGE_ANY: &str = joined!(
    "(SELECT * FROM tasks ORDER BY id LIMIT ? OFFSET ?)",
    " ORDER BY t.id"
);
/// [`PAGE_AFTER_PG`] for MySQL and SQLite (the bound values in the same order).
const PAGE_AFTER_ANY: &str = joined!(
    "(SELECT * FROM tasks WHERE id > ? ORDER BY id LIMIT ?)",
    " ORDER BY t.id"
);

/// A load with multi-row `INSERT`s in one transaction, then fresh statistics:
/// the same code for the MySQL and SQLite pools.
macro_rules! insert_load {
    ($pool:expr, $employees:expr, $tasks:expr, $analyze:literal) => {{
        let mut tx = $pool.begin().await?;
        for chunk in $employees.chunks(5000) {
            let mut q = sqlx::QueryBuilder::new("INSERT INTO employees (id, full_name, position) ");
            q.push_values(chunk, |mut b, e| {
                b.push_bind(e.id)
                    .push_bind(&e.full_name)
                    .push_bind(&e.position);
            });
            q.build().execute(&mut *tx).await?;
        }
        for chunk in $tasks.chunks(5000) {
            let mut q = sqlx::QueryBuilder::new(
                "INSERT INTO tasks (id, title, parent_id, assignee_id, deadline, status) ",
            );
            q.push_values(chunk, |mut b, t| {
                b.push_bind(t.id)
                    .push_bind(&t.title)
                    .push_bind(t.parent_id)
                    .push_bind(t.assignee_id)
                    .push_bind(t.deadline)
                    .push_bind(&t.status);
            });
            q.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        sqlx::raw_sql($analyze).execute($pool).await?;
        Ok(())
    }};
}

impl Raw {
    async fn get(&self, id: i32) -> Result<Option<TaskAndAssignee>, Error> {
        let row: Option<JoinedRow> = match self {
            Raw::Postgres(pool, _) => {
                sqlx::query_as(joined!("tasks", " WHERE t.id = $1"))
                    .bind(id)
                    .fetch_optional(pool)
                    .await
            }
            Raw::MySql(pool) => {
                sqlx::query_as(joined!("tasks", " WHERE t.id = ?"))
                    .bind(id)
                    .fetch_optional(pool)
                    .await
            }
            Raw::Sqlite(_, readers) => {
                sqlx::query_as(joined!("tasks", " WHERE t.id = ?"))
                    .bind(id)
                    .fetch_optional(readers)
                    .await
            }
        }?;
        Ok(row.map(joined))
    }

    /// A page from `offset` rows deep, or, `keyset`, after task `offset`.
    async fn list(&self, offset: u64, keyset: bool) -> Result<Vec<TaskAndAssignee>, Error> {
        let (mut first, mut second) = (PAGE as i64, offset as i64);
        let sql = match (self, keyset) {
            (Raw::Postgres(..), false) => PAGE_PG,
            (Raw::Postgres(..), true) => PAGE_AFTER_PG,
            (_, false) => PAGE_ANY,
            (_, true) => {
                (first, second) = (second, first);
                PAGE_AFTER_ANY
            }
        };
        let (limit, offset) = (first, second);
        let rows: Vec<JoinedRow> = match self {
            Raw::Postgres(pool, _) => {
                sqlx::query_as(sql)
                    .bind(limit)
                    .bind(offset)
                    .fetch_all(pool)
                    .await
            }
            Raw::MySql(pool) => {
                sqlx::query_as(sql)
                    .bind(limit)
                    .bind(offset)
                    .fetch_all(pool)
                    .await
            }
            Raw::Sqlite(_, readers) => {
                sqlx::query_as(sql)
                    .bind(limit)
                    .bind(offset)
                    .fetch_all(readers)
                    .await
            }
        }?;
        Ok(rows.into_iter().map(joined).collect())
    }

    async fn subtree(&self, id: i32) -> Result<Vec<Task>, Error> {
        let rows: Vec<TaskRow> = match self {
            Raw::Postgres(pool, _) => {
                sqlx::query_as(sqlx::AssertSqlSafe(subtree_sql(DbBackend::Postgres)))
                    .bind(id)
                    .fetch_all(pool)
                    .await
            }
            Raw::MySql(pool) => {
                sqlx::query_as(sqlx::AssertSqlSafe(subtree_sql(DbBackend::MySql)))
                    .bind(id)
                    .fetch_all(pool)
                    .await
            }
            Raw::Sqlite(_, readers) => {
                sqlx::query_as(sqlx::AssertSqlSafe(subtree_sql(DbBackend::Sqlite)))
                    .bind(id)
                    .fetch_all(readers)
                    .await
            }
        }?;
        Ok(rows.into_iter().map(task).collect())
    }

    async fn create(&self, title: &str, assignee: i32) -> Result<Task, Error> {
        let row: TaskRow = match self {
            Raw::Postgres(pool, _) => {
                sqlx::query_as(
                    "INSERT INTO tasks (title, parent_id, assignee_id, deadline, status) \
                 VALUES ($1, NULL, $2, NULL, 'todo') \
                 RETURNING id, title, parent_id, assignee_id, deadline, status",
                )
                .bind(title)
                .bind(assignee)
                .fetch_one(pool)
                .await?
            }
            Raw::MySql(pool) => {
                let mut conn = pool.acquire().await?;
                let done = sqlx::query(
                    "INSERT INTO tasks (title, parent_id, assignee_id, deadline, status) VALUES (?, NULL, ?, NULL, 'todo')",
                )
                .bind(title)
                .bind(assignee)
                .execute(&mut *conn)
                .await
                ?;
                sqlx::query_as("SELECT id, title, parent_id, assignee_id, deadline, status FROM tasks WHERE id = ?")
                    .bind(done.last_insert_id() as i64)
                    .fetch_one(&mut *conn)
                    .await
                    ?
            }
            Raw::Sqlite(writer, _) => {
                sqlx::query_as(
                    "INSERT INTO tasks (title, parent_id, assignee_id, deadline, status) \
                 VALUES (?, NULL, ?, NULL, 'todo') \
                 RETURNING id, title, parent_id, assignee_id, deadline, status",
                )
                .bind(title)
                .bind(assignee)
                .fetch_one(writer)
                .await?
            }
        };
        Ok(task(row))
    }

    async fn update(&self, id: i32, status: &str) -> Result<Task, Error> {
        const SELECT_PG: &str = "SELECT id, title, parent_id, assignee_id, deadline, status FROM tasks WHERE id = $1 FOR UPDATE";
        const SELECT_MY: &str = "SELECT id, title, parent_id, assignee_id, deadline, status FROM tasks WHERE id = ? FOR UPDATE";
        let row: TaskRow = match self {
            Raw::Postgres(pool, _) => {
                let mut tx = pool.begin().await?;
                let _: TaskRow = sqlx::query_as(SELECT_PG)
                    .bind(id)
                    .fetch_one(&mut *tx)
                    .await?;
                let row = sqlx::query_as(
                    "UPDATE tasks SET status = $1 WHERE id = $2 \
                     RETURNING id, title, parent_id, assignee_id, deadline, status",
                )
                .bind(status)
                .bind(id)
                .fetch_one(&mut *tx)
                .await?;
                tx.commit().await?;
                row
            }
            Raw::MySql(pool) => {
                let mut tx = pool.begin().await?;
                let mut row: TaskRow = sqlx::query_as(SELECT_MY)
                    .bind(id)
                    .fetch_one(&mut *tx)
                    .await?;
                sqlx::query("UPDATE tasks SET status = ? WHERE id = ?")
                    .bind(status)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                row.5 = status.to_owned();
                row
            }
            Raw::Sqlite(writer, _) => {
                let mut tx = writer.begin_with("BEGIN IMMEDIATE").await?;
                let _: TaskRow = sqlx::query_as(
                    "SELECT id, title, parent_id, assignee_id, deadline, status FROM tasks WHERE id = ?",
                )
                .bind(id)
                .fetch_one(&mut *tx)
                .await
                ?;
                let row = sqlx::query_as(
                    "UPDATE tasks SET status = ? WHERE id = ? \
                     RETURNING id, title, parent_id, assignee_id, deadline, status",
                )
                .bind(status)
                .bind(id)
                .fetch_one(&mut *tx)
                .await?;
                tx.commit().await?;
                row
            }
        };
        Ok(task(row))
    }

    async fn load(&self, employees: &[Employee], tasks: &[Task]) -> Result<(), Error> {
        match self {
            // COPY, the fastest way into PostgreSQL, is the tracker's: one
            // writer of COPY's text format, with its escaping.
            Raw::Postgres(_, db) => ops::import(db, employees, tasks).await,
            Raw::MySql(pool) => {
                insert_load!(pool, employees, tasks, "ANALYZE TABLE employees, tasks")
            }
            Raw::Sqlite(writer, _) => insert_load!(writer, employees, tasks, "ANALYZE"),
        }
    }
}
