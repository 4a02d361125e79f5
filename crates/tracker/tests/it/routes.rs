//! Every route's success path, with bodies compared field for field against
//! the original's shapes.

use serde_json::json;
use test_support::{Backend, TestDb, original_app};

use crate::support::{Server, migrate};

test_support::backend_tests! {
    async fn the_whole_route_table(t: TestDb) {
        migrate(&t).await;
        let s = Server::on(t).await;

        // Employees: create answers with an empty task list, in the original's key order.
        let (status, text) = s
            .call_text("POST", "/employees/", Some(br#"{"full_name":"Ann","position":"dev"}"#))
            .await;
        assert_eq!((status, text.as_str()), (200, r#"{"full_name":"Ann","position":"dev","id":1,"tasks":[]}"#));
        let (status, bob) = s.post("/employees/", json!({"full_name": "Bob", "position": "qa"})).await;
        assert_eq!((status, bob), (200, json!({"full_name": "Bob", "position": "qa", "id": 2, "tasks": []})));

        let ann = json!({"full_name": "Ann", "position": "dev", "id": 1});
        let bob = json!({"full_name": "Bob", "position": "qa", "id": 2});
        assert_eq!(s.get("/employees/").await, (200, json!([&ann, &bob])));
        assert_eq!(s.get("/employees").await, (200, json!([&ann, &bob])));
        assert_eq!(s.get("/employees/?skip=1&limit=1").await, (200, json!([&bob])));
        assert_eq!(s.get("/employees/?limit=0").await, (200, json!([])));
        // A parameter given twice is read from its last value, as FastAPI reads it.
        assert_eq!(s.get("/employees/?limit=x&skip=-1&limit=1&skip=1").await, (200, json!([&bob])));
        assert_eq!(s.get("/employees/1/").await, (200, ann.clone()));
        assert_eq!(s.get("/employees/1").await, (200, ann.clone()));
        let ann = json!({"full_name": "Ann Lee", "position": "lead", "id": 1});
        assert_eq!(s.put("/employees/1/", json!({"full_name": "Ann Lee", "position": "lead"})).await, (200, ann.clone()));
        assert_eq!(s.get("/employees/1/").await, (200, ann.clone()));

        // Tasks: ids and dates may come as strings, as the original front end sends them.
        let (status, text) = s
            .call_text("POST", "/tasks/", Some(br#"{"title":"root","status":"todo"}"#))
            .await;
        assert_eq!(
            (status, text.as_str()),
            (200, r#"{"title":"root","parent_id":null,"assignee_id":null,"deadline":null,"status":"todo","id":1}"#)
        );
        let child = json!({"title": "child", "parent_id": 1, "assignee_id": 2, "deadline": "2026-03-01", "status": "todo", "id": 2});
        assert_eq!(
            s.post("/tasks/", json!({"title": "child", "status": "todo", "parent_id": "1", "assignee_id": " 2 ", "deadline": "2026-03-01"})).await,
            (200, child.clone())
        );
        let grandchild = json!({"title": "grandchild", "parent_id": 2, "assignee_id": 1, "deadline": null, "status": "review", "id": 3});
        assert_eq!(
            s.post("/tasks/", json!({"title": "grandchild", "status": "review", "parent_id": 2, "assignee_id": 1, "deadline": null})).await,
            (200, grandchild.clone())
        );
        let root = json!({"title": "root", "parent_id": null, "assignee_id": null, "deadline": null, "status": "todo", "id": 1});
        assert_eq!(s.get("/tasks/").await, (200, json!([&root, &child, &grandchild])));
        assert_eq!(s.get("/tasks/?skip=2").await, (200, json!([&grandchild])));
        // Keyset paging, an addition: the rows after an id, `skip` counted from there.
        assert_eq!(s.get("/tasks/?after_id=1&limit=1").await, (200, json!([&child])));
        assert_eq!(s.get("/tasks/?after_id=1&skip=1").await, (200, json!([&grandchild])));
        assert_eq!(s.get("/employees/?after_id=2").await, (200, json!([])));
        assert_eq!(s.get("/tasks/2/").await, (200, child.clone()));
        assert_eq!(s.get("/tasks/1/subtree/").await, (200, json!([&child, &grandchild])));
        assert_eq!(s.get("/employees/2/tasks/").await, (200, json!([&child])));

        // PUT replaces every field: what is left out becomes null.
        let replaced = json!({"title": "grandchild v2", "parent_id": null, "assignee_id": null, "deadline": null, "status": "done", "id": 3});
        assert_eq!(s.put("/tasks/3/", json!({"title": "grandchild v2", "status": "done"})).await, (200, replaced.clone()));
        assert_eq!(s.get("/tasks/1/subtree/").await, (200, json!([&child])));
        // A legal move: under the child again.
        let moved = json!({"title": "moved", "parent_id": 2, "assignee_id": 1, "deadline": "2027-01-02", "status": "done", "id": 3});
        assert_eq!(
            s.put("/tasks/3/", json!({"title": "moved", "status": "done", "parent_id": 2, "assignee_id": "1", "deadline": "2027-01-02"})).await,
            (200, moved.clone())
        );
        assert_eq!(s.get("/employees/1/tasks/").await, (200, json!([&moved])));

        // Deleting an employee unassigns their tasks.
        assert_eq!(s.delete("/employees/2/").await, (200, bob.clone()));
        assert_eq!(s.get("/tasks/2/").await.1["assignee_id"], json!(null));
        assert_eq!(s.get("/employees/2/").await, (404, json!({"detail": "Employee not found"})));
        assert_eq!(s.get("/employees/2/tasks/").await, (404, json!({"detail": "Employee not found"})));

        // Deleting a task deletes its subtree.
        assert_eq!(s.delete("/tasks/1/").await, (200, root.clone()));
        assert_eq!(s.get("/tasks/2/").await, (404, json!({"detail": "Task not found"})));
        assert_eq!(s.get("/tasks/").await, (200, json!([])));

        assert_eq!(s.get("/health").await, (200, json!({"status": "ok"})));
        let backend = db_core::url::backend_name(s.t.db.backend());
        assert_eq!(s.get("/ready").await, (200, json!({"status": "ready", "database": backend})));
        s.stop().await;
    }
}

test_support::backend_tests! {
    /// The original app's database, adopted the way `serve --migrate` (and
    /// SQLite's start) does it, answers as the original does on its data.
    async fn the_adopted_original_database(t: TestDb) {
        original_app::create(&t.db).await;
        let ran = migration::up(&t.settings, std::time::Duration::from_secs(60)).await.unwrap();
        // Adopted, not run: the first migration, which made the original's tables.
        let all: Vec<String> = <migration::Migrator as migration::MigratorTrait>::migrations()
            .iter()
            .map(|m| m.name().to_owned())
            .collect();
        assert_eq!(ran, all[1..]);
        let s = Server::on(t).await;

        let zoe = json!({"full_name": "Zoë Ångström", "position": "développeuse ", "id": 1});
        let taro = json!({"full_name": "山田 太郎", "position": "QA", "id": 2});
        let obrien = json!({"full_name": "O'Brien  ", "position": "lead", "id": 5});
        assert_eq!(s.get("/employees/").await, (200, json!([&zoe, &taro, &obrien])));
        assert_eq!(s.get("/employees/?skip=2").await, (200, json!([&obrien])));
        assert_eq!(s.get("/employees/5/").await, (200, obrien.clone()));
        assert_eq!(s.get("/employees/3/").await, (404, json!({"detail": "Employee not found"})));

        let t2 = json!({"title": "Dépôt 🚀", "parent_id": 7, "assignee_id": 1, "deadline": "2024-02-29", "status": "in progress", "id": 2});
        let t3 = json!({"title": "child of child ", "parent_id": 2, "assignee_id": null, "deadline": null, "status": "todo", "id": 3});
        let t7 = json!({"title": "Root task", "parent_id": null, "assignee_id": 5, "deadline": "2025-12-31", "status": "done", "id": 7});
        let t9 = json!({"title": "Lonely", "parent_id": null, "assignee_id": 2, "deadline": null, "status": "todo ", "id": 9});
        assert_eq!(s.get("/tasks/").await, (200, json!([&t2, &t3, &t7, &t9])));
        assert_eq!(s.get("/tasks/?skip=1&limit=2").await, (200, json!([&t3, &t7])));
        assert_eq!(s.get("/tasks/7/").await, (200, t7.clone()));
        assert_eq!(s.get("/tasks/7/subtree/").await, (200, json!([&t2, &t3])));
        assert_eq!(s.get("/employees/1/tasks/").await, (200, json!([&t2])));

        // New rows get the next ids.
        assert_eq!(
            s.post("/employees/", json!({"full_name": "New", "position": "dev"})).await,
            (200, json!({"full_name": "New", "position": "dev", "id": 6, "tasks": []}))
        );
        let t10 = json!({"title": "New", "parent_id": 3, "assignee_id": 6, "deadline": null, "status": "todo", "id": 10});
        assert_eq!(s.post("/tasks/", json!({"title": "New", "status": "todo", "parent_id": 3, "assignee_id": 6})).await, (200, t10));

        // The converged delete rules: a task's subtree goes with it, an
        // employee's tasks are unassigned.
        assert_eq!(s.delete("/tasks/7/").await, (200, t7));
        for id in [2, 3, 10] {
            assert_eq!(s.get(&format!("/tasks/{id}/")).await.0, 404, "task {id}");
        }
        assert_eq!(s.delete("/employees/2/").await, (200, taro));
        assert_eq!(s.get("/tasks/9/").await.1["assignee_id"], json!(null));
        s.stop().await;
    }
}

#[tokio::test]
async fn cors_is_open_to_any_origin() {
    let s = Server::start(Backend::Sqlite).await;
    let preflight = s
        .client
        .request(reqwest::Method::OPTIONS, format!("{}/tasks/", s.base))
        .header("origin", "http://localhost:5500")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success());
    assert_eq!(preflight.headers()["access-control-allow-origin"], "*");
    let get = s
        .client
        .get(format!("{}/tasks/", s.base))
        .header("origin", "http://localhost:5500")
        .send()
        .await
        .unwrap();
    assert_eq!(get.headers()["access-control-allow-origin"], "*");
    s.stop().await;
}

#[tokio::test]
async fn ready_is_503_when_the_database_is_gone() {
    let s = Server::start(Backend::Sqlite).await;
    s.t.db.close().await;
    assert_eq!(
        s.get("/ready").await,
        (
            503,
            json!({"detail": "Database unavailable, try again later"})
        )
    );
    assert_eq!(
        s.get("/tasks/").await,
        (
            503,
            json!({"detail": "Database unavailable, try again later"})
        )
    );
    s.stop().await;
}
