//! The database of the FastAPI Task Tracker that this project replaces: its
//! schema as its Alembic revisions (`5970a5313df6`, then `b92a82a09f79`) make
//! it on PostgreSQL, the same shape as other tools make it on MySQL and
//! SQLite, and rows like its users' (non-ASCII text, trailing spaces, gaps in
//! the ids, a task whose parent has a higher id).

use sea_orm::{ConnectionTrait, DbBackend, Statement};

use db_core::Db;

/// The Alembic revision the original's `alembic_version` table holds.
pub const ALEMBIC_REVISION: &str = "b92a82a09f79";

/// The original's tables: on PostgreSQL `serial` ids and unbounded
/// `varchar`s; foreign keys with no delete rule and no index; indexes that
/// duplicate the primary keys. On MySQL and SQLite, the same shape as
/// SQLAlchemy makes it there (MySQL needs lengths, and indexes every foreign
/// key by itself). `{id}`, `{text}` and `{options}` are filled per backend.
const SCHEMA: &[&str] = &[
    "CREATE TABLE employees (id {id}, full_name {text} NOT NULL, position {text} NOT NULL, PRIMARY KEY (id)){options}",
    "CREATE INDEX ix_employees_full_name ON employees (full_name)",
    "CREATE INDEX ix_employees_id ON employees (id)",
    "CREATE TABLE tasks (id {id}, title {text} NOT NULL, parent_id INTEGER, assignee_id INTEGER, \
     deadline DATE, status {text} NOT NULL, PRIMARY KEY (id), \
     FOREIGN KEY(assignee_id) REFERENCES employees (id), FOREIGN KEY(parent_id) REFERENCES tasks (id)){options}",
    "CREATE INDEX ix_tasks_id ON tasks (id)",
    "CREATE INDEX ix_tasks_title ON tasks (title)",
    "CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL, CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num))",
];

/// Rows as the original's users leave them. Task 2's parent is task 7.
const ROWS: &[&str] = &[
    "INSERT INTO alembic_version (version_num) VALUES ('b92a82a09f79')",
    "INSERT INTO employees (id, full_name, position) VALUES \
     (1, 'Zoë Ångström', 'développeuse '), (2, '山田 太郎', 'QA'), (5, 'O''Brien  ', 'lead')",
    "INSERT INTO tasks (id, title, parent_id, assignee_id, deadline, status) VALUES \
     (7, 'Root task', NULL, 5, '2025-12-31', 'done')",
    "INSERT INTO tasks (id, title, parent_id, assignee_id, deadline, status) VALUES \
     (2, 'Dépôt 🚀', 7, 1, '2024-02-29', 'in progress'), (9, 'Lonely', NULL, 2, NULL, 'todo ')",
    "INSERT INTO tasks (id, title, parent_id, assignee_id, deadline, status) VALUES \
     (3, 'child of child ', 2, NULL, NULL, 'todo')",
];

/// Creates the original's tables (`alembic_version` included) and fills them.
pub async fn create(db: &Db) {
    let (id, text, options) = match db.backend() {
        DbBackend::Postgres => ("SERIAL NOT NULL", "VARCHAR", ""),
        DbBackend::MySql => (
            "INTEGER NOT NULL AUTO_INCREMENT",
            "VARCHAR(255)",
            " DEFAULT CHARSET=utf8mb4",
        ),
        _ => ("INTEGER NOT NULL", "VARCHAR", ""),
    };
    let schema: Vec<String> = SCHEMA
        .iter()
        .map(|sql| {
            sql.replace("{id}", id)
                .replace("{text}", text)
                .replace("{options}", options)
        })
        .collect();
    execute(db, &schema.iter().map(String::as_str).collect::<Vec<_>>()).await;
    execute(db, ROWS).await;
}

/// Runs each statement in its own transaction.
pub async fn execute(db: &Db, statements: &[&str]) {
    for sql in statements {
        let session = db.begin().await.expect("starting a transaction");
        session
            .execute_unprepared(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        session.commit().await.expect("committing");
    }
}

/// Every row of the original's tables, one line each, as the database
/// returns its text: equal lists mean every value was kept byte for byte.
pub async fn rows(db: &Db) -> Vec<String> {
    let text = |column: &str| match db.backend() {
        DbBackend::MySql => format!("COALESCE(CAST({column} AS CHAR), 'NULL')"),
        _ => format!("COALESCE(CAST({column} AS TEXT), 'NULL')"),
    };
    let separator = match db.backend() {
        DbBackend::MySql => "CONCAT_WS('|', ",
        _ => "concat_ws('|', ",
    };
    let queries = [
        ("alembic_version", vec!["version_num"], "version_num"),
        ("employees", vec!["id", "full_name", "position"], "id"),
        (
            "tasks",
            vec![
                "id",
                "title",
                "parent_id",
                "assignee_id",
                "deadline",
                "status",
            ],
            "id",
        ),
    ];
    let session = db.read().await.expect("starting a read-only session");
    let mut lines = Vec::new();
    for (table, columns, order) in queries {
        let columns: Vec<String> = columns.iter().map(|c| text(c)).collect();
        let sql = if db.backend() == DbBackend::Sqlite {
            format!(
                "SELECT '{table}|' || {} FROM {table} ORDER BY {order}",
                columns.join(" || '|' || ")
            )
        } else {
            format!(
                "SELECT {separator}'{table}', {}) FROM {table} ORDER BY {order}",
                columns.join(", ")
            )
        };
        let result = session
            .query_all_raw(Statement::from_string(db.backend(), sql.clone()))
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        for row in result {
            lines.push(row.try_get_by_index::<String>(0).expect("a text row"));
        }
    }
    lines
}
