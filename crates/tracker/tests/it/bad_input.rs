//! Bad input, one row per mistake: each gets a 4xx with a JSON `detail`
//! naming what is wrong, never a 500, and the database is unchanged.

use serde_json::{Value, json};
use test_support::{Backend, TestDb};

use crate::support::{Server, migrate};

/// `(method, path, body, expected status, what the answer must name)`: a
/// `loc`, some fields of one error (`{"loc": …, "type": …}`), a list of
/// such fields that is every error, in order, or the `detail`.
type Case = (&'static str, &'static str, Option<Vec<u8>>, u16, Value);

fn body(value: Value) -> Option<Vec<u8>> {
    Some(value.to_string().into_bytes())
}

fn task_with(field: &str, value: Value) -> Option<Vec<u8>> {
    let mut task = json!({"title": "t", "status": "todo"});
    task[field] = value;
    body(task)
}

fn loc(parts: &[&str]) -> Value {
    json!(parts)
}

fn cases() -> Vec<Case> {
    let long = "x".repeat(256);
    vec![
        ("GET", "/tasks/abc/", None, 422, loc(&["path", "task_id"])),
        // A bad id and a bad body: both named, as FastAPI does.
        (
            "PUT",
            "/tasks/abc/",
            body(json!({"status": "todo"})),
            422,
            loc(&["path", "task_id"]),
        ),
        (
            "PUT",
            "/tasks/abc/",
            body(json!({"status": "todo"})),
            422,
            loc(&["body", "title"]),
        ),
        (
            "PUT",
            "/employees/x/",
            body(json!({"full_name": 5})),
            422,
            loc(&["body", "full_name"]),
        ),
        (
            "PUT",
            "/employees/x/",
            body(json!({"full_name": 5})),
            422,
            loc(&["path", "employee_id"]),
        ),
        // A body that is no object, or none at all: named with a bad id too.
        (
            "PUT",
            "/tasks/abc/",
            body(json!([1])),
            422,
            loc(&["path", "task_id"]),
        ),
        (
            "PUT",
            "/tasks/abc/",
            body(json!([1])),
            422,
            json!({"loc": ["body"], "type": "model_attributes_type"}),
        ),
        (
            "PUT",
            "/employees/x/",
            Some(Vec::new()),
            422,
            loc(&["path", "employee_id"]),
        ),
        (
            "PUT",
            "/employees/x/",
            Some(Vec::new()),
            422,
            json!({"loc": ["body"], "type": "missing", "msg": "Field required"}),
        ),
        (
            "POST",
            "/tasks/",
            Some(Vec::new()),
            422,
            json!({"loc": ["body"], "type": "missing", "msg": "Field required"}),
        ),
        // A body that cannot be read or is not JSON is answered alone, as
        // FastAPI reads it before the path.
        (
            "PUT",
            "/tasks/abc/",
            Some(b"{".to_vec()),
            422,
            json!([{"loc": ["body"], "type": "json_invalid"}]),
        ),
        (
            "PUT",
            "/tasks/0/",
            Some(vec![b' '; 100 * 1024]),
            413,
            json!("Request body too large (limit 65536 bytes)"),
        ),
        ("GET", "/tasks/%FF/", None, 422, loc(&["path", "task_id"])),
        (
            "PUT",
            "/employees/-1/",
            body(json!({"full_name": 5})),
            422,
            loc(&["body", "full_name"]),
        ),
        (
            "PUT",
            "/tasks/999/",
            task_with("parent_id", json!(999)),
            404,
            json!("Task not found"),
        ),
        (
            "GET",
            "/employees/1.5/",
            None,
            422,
            loc(&["path", "employee_id"]),
        ),
        (
            "GET",
            "/tasks/99999999999/",
            None,
            404,
            json!("Task not found"),
        ),
        ("GET", "/tasks/-1/", None, 404, json!("Task not found")),
        (
            "GET",
            "/tasks/99999999999999999999/",
            None,
            404,
            json!("Task not found"),
        ),
        (
            "GET",
            "/tasks/0/subtree/",
            None,
            404,
            json!("Task not found"),
        ),
        ("GET", "/tasks/?skip=-1", None, 422, loc(&["query", "skip"])),
        (
            "GET",
            "/tasks/?limit=-5",
            None,
            422,
            loc(&["query", "limit"]),
        ),
        (
            "GET",
            "/tasks/?limit=abc",
            None,
            422,
            loc(&["query", "limit"]),
        ),
        (
            "GET",
            "/tasks/?limit=100000",
            None,
            422,
            loc(&["query", "limit"]),
        ),
        (
            "GET",
            "/tasks/?after_id=2147483648",
            None,
            422,
            loc(&["query", "after_id"]),
        ),
        (
            "GET",
            "/tasks/?after_id=x",
            None,
            422,
            loc(&["query", "after_id"]),
        ),
        (
            "GET",
            "/employees/?skip=99999999999999999999",
            None,
            422,
            loc(&["query", "skip"]),
        ),
        (
            "POST",
            "/employees/",
            body(json!({})),
            422,
            loc(&["body", "full_name"]),
        ),
        (
            "POST",
            "/employees/",
            body(json!({"full_name": 5, "position": "x"})),
            422,
            loc(&["body", "full_name"]),
        ),
        (
            "POST",
            "/employees/",
            body(json!({"full_name": "x", "position": null})),
            422,
            loc(&["body", "position"]),
        ),
        (
            "POST",
            "/employees/",
            Some(b"hello".to_vec()),
            422,
            loc(&["body"]),
        ),
        (
            "POST",
            "/employees/",
            Some(b"{\"full_name\": \"\xff\xfe\", \"position\": \"x\"}".to_vec()),
            422,
            loc(&["body"]),
        ),
        (
            "POST",
            "/employees/",
            body(json!([1, 2])),
            422,
            loc(&["body"]),
        ),
        (
            "POST",
            "/employees/",
            None,
            422,
            json!({"loc": ["body"], "type": "missing"}),
        ),
        (
            "POST",
            "/employees/",
            Some(vec![b' '; 100 * 1024]),
            413,
            json!("Request body too large (limit 65536 bytes)"),
        ),
        (
            "PUT",
            "/employees/1/",
            body(json!({"full_name": "x"})),
            422,
            loc(&["body", "position"]),
        ),
        (
            "POST",
            "/tasks/",
            task_with("parent_id", json!("")),
            422,
            loc(&["body", "parent_id"]),
        ),
        (
            "POST",
            "/tasks/",
            task_with("parent_id", json!("null")),
            422,
            loc(&["body", "parent_id"]),
        ),
        (
            "POST",
            "/tasks/",
            task_with("assignee_id", json!("abc")),
            422,
            loc(&["body", "assignee_id"]),
        ),
        (
            "POST",
            "/tasks/",
            task_with("assignee_id", json!(1.5)),
            422,
            loc(&["body", "assignee_id"]),
        ),
        (
            "POST",
            "/tasks/",
            task_with("assignee_id", json!(true)),
            422,
            loc(&["body", "assignee_id"]),
        ),
        (
            "POST",
            "/tasks/",
            task_with("parent_id", json!(99_999_999_999_i64)),
            422,
            loc(&["body", "parent_id"]),
        ),
        (
            "POST",
            "/tasks/",
            task_with("parent_id", json!(999)),
            422,
            loc(&["body", "parent_id"]),
        ),
        (
            "POST",
            "/tasks/",
            task_with("assignee_id", json!(999)),
            422,
            loc(&["body", "assignee_id"]),
        ),
        (
            "POST",
            "/tasks/",
            task_with("deadline", json!("2026-13-01")),
            422,
            loc(&["body", "deadline"]),
        ),
        // Year 0: no date in Python; February 29th in it fails on MySQL.
        (
            "POST",
            "/tasks/",
            task_with("deadline", json!("0000-02-29")),
            422,
            json!({"loc": ["body", "deadline"], "type": "date_parsing"}),
        ),
        (
            "POST",
            "/tasks/",
            task_with("deadline", json!("01/02/2026")),
            422,
            loc(&["body", "deadline"]),
        ),
        (
            "POST",
            "/tasks/",
            task_with("deadline", json!("")),
            422,
            loc(&["body", "deadline"]),
        ),
        (
            "POST",
            "/tasks/",
            task_with("deadline", json!(20260101)),
            422,
            loc(&["body", "deadline"]),
        ),
        (
            "POST",
            "/tasks/",
            task_with("title", json!(long)),
            422,
            loc(&["body", "title"]),
        ),
        (
            "POST",
            "/tasks/",
            task_with("title", json!("nul\u{0}byte")),
            422,
            loc(&["body", "title"]),
        ),
        (
            "POST",
            "/tasks/",
            body(json!({"status": "todo"})),
            422,
            loc(&["body", "title"]),
        ),
        (
            "PUT",
            "/tasks/1/",
            task_with("parent_id", json!(1)),
            422,
            loc(&["body", "parent_id"]),
        ),
        (
            "PUT",
            "/tasks/1/",
            task_with("parent_id", json!(2)),
            422,
            loc(&["body", "parent_id"]),
        ),
        (
            "PUT",
            "/tasks/999/",
            task_with("status", json!("done")),
            404,
            json!("Task not found"),
        ),
        (
            "DELETE",
            "/employees/999/",
            None,
            404,
            json!("Employee not found"),
        ),
        ("DELETE", "/tasks/999/", None, 404, json!("Task not found")),
        (
            "PATCH",
            "/tasks/1/",
            body(json!({})),
            405,
            json!("Method Not Allowed"),
        ),
        (
            "POST",
            "/tasks/1/",
            body(json!({})),
            405,
            json!("Method Not Allowed"),
        ),
        ("GET", "/nope", None, 404, json!("Not Found")),
        (
            "GET",
            "/tasks/1/subtree/extra",
            None,
            404,
            json!("Not Found"),
        ),
    ]
}

/// Every row of both tables, as text: equal before and after means unchanged.
async fn snapshot(s: &Server) -> (Value, Value) {
    let employees = s.get("/employees/?limit=1000").await.1;
    let tasks = s.get("/tasks/?limit=1000").await.1;
    (employees, tasks)
}

test_support::backend_tests! {
    async fn every_bad_request_is_a_4xx_that_names_the_problem(t: TestDb) {
        migrate(&t).await;
        let s = Server::on(t).await;
        s.post("/employees/", json!({"full_name": "Ann", "position": "dev"})).await;
        s.post("/tasks/", json!({"title": "root", "status": "todo", "assignee_id": 1})).await;
        s.post("/tasks/", json!({"title": "child", "status": "todo", "parent_id": 1})).await;
        let before = snapshot(&s).await;

        let cases = cases();
        assert!(cases.len() >= 20);
        let mut failures = Vec::new();
        for (method, path, body, expected, names) in cases {
            let (status, answer) = s.call(method, path, body.as_deref()).await;
            let detail = &answer["detail"];
            let is = |error: &Value, wanted: &Value| match wanted {
                Value::Object(fields) => fields.iter().all(|(key, value)| error[key] == *value),
                loc => error["loc"] == *loc,
            };
            let named = match (detail, &names) {
                (Value::Array(errors), Value::Array(all)) if all.iter().all(Value::is_object) => {
                    errors.len() == all.len() && errors.iter().zip(all).all(|(e, w)| is(e, w))
                }
                (Value::Array(errors), wanted) => errors.iter().any(|e| is(e, wanted)),
                (other, wanted) => other == wanted,
            };
            if status != expected || !named {
                failures.push(format!("{method} {path}: expected {expected} naming {names}, got {status} {answer}"));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
        assert_eq!(snapshot(&s).await, before, "a bad request changed the database");
        s.stop().await;
    }
}

/// Runs `ddl` on `s`'s database: a schema as an adopted database may have it.
async fn alter(s: &Server, ddl: &str) {
    use sea_orm::ConnectionTrait as _;
    let session = s.t.db.session(db_core::SessionOptions::single_statement());
    session
        .await
        .unwrap()
        .execute_unprepared(ddl)
        .await
        .unwrap();
}

/// A value that the database refuses (a column in an older character set,
/// or narrower than the service's own limit, as an adopted database may
/// have them) is a 422 naming the field where the server names the column,
/// never a 500; nothing is written.
#[test_support::needs(mysql)]
#[tokio::test]
async fn on_mysql_a_value_the_table_cannot_store_is_a_422_naming_its_field() {
    let s = Server::start(Backend::MySql).await;
    alter(&s, "ALTER TABLE tasks CONVERT TO CHARACTER SET utf8mb3").await;
    alter(
        &s,
        "ALTER TABLE employees MODIFY position VARCHAR(5) NOT NULL",
    )
    .await;
    // A TIMESTAMP ends in 2038.
    alter(&s, "ALTER TABLE tasks MODIFY deadline TIMESTAMP NULL").await;
    let before = snapshot(&s).await;
    let task = |title: &str, deadline: Value| json!({"title": title, "status": "todo", "deadline": deadline});
    for (path, body, field) in [
        ("/tasks/", task("party \u{1f389}", Value::Null), "title"),
        (
            "/employees/",
            json!({"full_name": "Ann", "position": "engineer"}),
            "position",
        ),
        ("/tasks/", task("t", json!("2040-01-01")), "deadline"),
    ] {
        let (status, answer) = s.post(path, body).await;
        assert_eq!(status, 422, "{answer}");
        let error = &answer["detail"][0];
        assert_eq!(error["loc"], json!(["body", field]), "{answer}");
        assert_eq!(error["type"], "value_error", "{answer}");
    }
    assert_eq!(snapshot(&s).await, before, "a refused value was written");
    s.stop().await;
}

/// PostgreSQL does not name the column of a value too long for it: the 422
/// names the body. The server's error goes to the log, as a warning.
#[test_support::needs(postgres)]
#[tokio::test]
async fn on_postgres_a_value_the_table_cannot_store_is_a_422() {
    test_support::capture_logs();
    let s = Server::start(Backend::Postgres).await;
    alter(&s, "ALTER TABLE tasks ALTER COLUMN title TYPE varchar(5)").await;
    let (status, answer) = s
        .post("/tasks/", json!({"title": "longer", "status": "todo"}))
        .await;
    assert_eq!(status, 422, "{answer}");
    let error = &answer["detail"][0];
    assert_eq!(error["loc"], json!(["body"]), "{answer}");
    assert_eq!(
        error["msg"],
        "Value error, the value is too long for its database column"
    );
    assert_eq!(
        snapshot(&s).await.1,
        json!([]),
        "a refused value was written"
    );
    let logged = test_support::logged();
    let line = (logged.lines())
        .find(|line| line.contains("value too long for type character varying(5)"))
        .unwrap_or_else(|| panic!("not logged: {logged}"));
    assert!(
        line.contains("WARN") && line.contains("the database refused a value"),
        "{line}"
    );
    s.stop().await;
}
