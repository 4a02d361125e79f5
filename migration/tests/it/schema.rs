//! The schema the migrations create, the same on every backend.

use sea_orm::DbBackend;
use test_support::{Backend, TestDb};

use crate::support::{assert_tables_include, exec, int, migrate, strings};

async fn indexes(t: &TestDb) -> Vec<String> {
    let sql = match t.db.backend() {
        DbBackend::Postgres => {
            "SELECT tablename || '.' || indexname FROM pg_indexes \
             WHERE schemaname = current_schema() AND tablename IN ('employees', 'tasks') ORDER BY 1"
        }
        DbBackend::MySql => {
            "SELECT DISTINCT CAST(CONCAT(TABLE_NAME, '.', INDEX_NAME) AS CHAR) FROM information_schema.STATISTICS \
             WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME IN ('employees', 'tasks') ORDER BY 1"
        }
        _ => {
            "SELECT tbl_name || '.' || name FROM sqlite_master \
             WHERE type = 'index' AND tbl_name IN ('employees', 'tasks') ORDER BY 1"
        }
    };
    let mut names = strings(&t.db, sql).await;
    names.sort();
    names
}

test_support::backend_tests! {
    async fn up_creates_both_tables_with_one_index_per_lookup(t: TestDb) {
        migrate(&t.settings, &["up"]).await;
        assert_tables_include(&t.db, &["employees", "seaql_migrations", "tasks"]).await;
        let mut expected = vec![
            "employees.idx_employees_full_name",
            "tasks.idx_tasks_assignee_id",
            "tasks.idx_tasks_parent_id",
            "tasks.idx_tasks_title",
        ];
        // The primary keys' own indexes; never a second one on them.
        match t.backend() {
            Backend::Postgres => expected.extend(["employees.employees_pkey", "tasks.tasks_pkey"]),
            Backend::MySql => expected.extend(["employees.PRIMARY", "tasks.PRIMARY"]),
            Backend::Sqlite => {} // INTEGER PRIMARY KEY is the rowid: no index.
        }
        expected.sort();
        assert_eq!(indexes(&t).await, expected);
    }

    async fn deletes_cascade_and_set_null_as_documented(t: TestDb) {
        migrate(&t.settings, &["up"]).await;
        exec(&t.db, "INSERT INTO employees (id, full_name, position) VALUES (1, 'Ann', 'dev')").await;
        for sql in [
            "INSERT INTO tasks (id, title, parent_id, assignee_id, status) VALUES (1, 'root', NULL, 1, 'todo')",
            "INSERT INTO tasks (id, title, parent_id, assignee_id, status) VALUES (2, 'child', 1, NULL, 'todo')",
            "INSERT INTO tasks (id, title, parent_id, assignee_id, status) VALUES (3, 'grandchild', 2, 1, 'todo')",
            "INSERT INTO tasks (id, title, parent_id, assignee_id, status) VALUES (4, 'other', NULL, 1, 'todo')",
        ] {
            exec(&t.db, sql).await;
        }
        // Deleting an employee unassigns their tasks.
        exec(&t.db, "DELETE FROM employees WHERE id = 1").await;
        assert_eq!(int(&t.db, "SELECT COUNT(*) FROM tasks WHERE assignee_id IS NOT NULL").await, 0);
        assert_eq!(int(&t.db, "SELECT COUNT(*) FROM tasks").await, 4);
        // Deleting a task deletes its subtree.
        exec(&t.db, "DELETE FROM tasks WHERE id = 1").await;
        assert_eq!(strings(&t.db, "SELECT title FROM tasks ORDER BY id").await, ["other"]);
        // Unknown references are refused.
        let session = t.db.session(db_core::SessionOptions::single_statement()).await.unwrap();
        let err = sea_orm::ConnectionTrait::execute_unprepared(
            &session,
            "INSERT INTO tasks (title, parent_id, status) VALUES ('orphan', 999, 'todo')",
        )
        .await
        .unwrap_err();
        assert!(matches!(err.sql_err(), Some(sea_orm::SqlErr::ForeignKeyConstraintViolation(_))), "{err}");
    }
}
