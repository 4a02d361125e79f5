//! Every route's success path, with bodies compared field for field against
//! the original's shapes.

use migration::{Migrator, MigratorTrait};
use serde_json::json;
use test_support::{Backend, TestDb};

use crate::support::Server;

test_support::backend_tests! {
    async fn the_whole_route_table(t: TestDb) {
        Migrator::up(t.db.conn(), None).await.unwrap();
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
            (200, moved)
        );

        // Deleting an employee unassigns their tasks.
        assert_eq!(s.delete("/employees/2/").await, (200, bob.clone()));
        assert_eq!(s.get("/tasks/2/").await.1["assignee_id"], json!(null));
        assert_eq!(s.get("/employees/2/").await, (404, json!({"detail": "Employee not found"})));

        // Deleting a task deletes its subtree.
        assert_eq!(s.delete("/tasks/1/").await, (200, root.clone()));
        assert_eq!(s.get("/tasks/2/").await, (404, json!({"detail": "Task not found"})));
        assert_eq!(s.get("/tasks/").await, (200, json!([])));

        assert_eq!(s.get("/health").await, (200, json!({"status": "ok"})));
        let backend = db_core::backend_name(s.t.db.backend());
        assert_eq!(s.get("/ready").await, (200, json!({"status": "ready", "database": backend})));
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
