//! Hostile text in every field and query parameter is data: it round-trips
//! unchanged, or is refused with a 422, and the tables stay intact.

use serde_json::json;
use test_support::TestDb;

use crate::support::{Server, migrate};

fn hostile() -> Vec<String> {
    [
        "'; DROP TABLE tasks; --",
        "\" OR \"1\"=\"1",
        "Robert'); DELETE FROM employees;--",
        "/* comment */ -- trailing",
        "back\\slash \\' \\\"",
        "%_ LIKE wildcards",
        "$1 ? :name @p1",
        "ünïcödé 漢字 🚀 \u{202e}rtl",
        "tab\tnew\nline\r",
        "<script>alert(1)</script>",
        "",
    ]
    .into_iter()
    .map(str::to_owned)
    .chain(["x".repeat(255), "é".repeat(255)])
    .collect()
}

test_support::backend_tests! {
    async fn hostile_text_round_trips_as_data(t: TestDb) {
        migrate(&t).await;
        let s = Server::on(t).await;
        let texts = hostile();
        for (i, text) in texts.iter().enumerate() {
            let status: String = text.chars().take(64).collect();
            let (code, employee) = s.post("/employees/", json!({"full_name": text, "position": text})).await;
            assert_eq!(code, 200, "{text:?}: {employee}");
            assert_eq!((&employee["full_name"], &employee["position"]), (&json!(text), &json!(text)));
            let id = employee["id"].as_i64().unwrap();
            assert_eq!(s.get(&format!("/employees/{id}/")).await.1["full_name"], json!(text));

            let (code, task) = s
                .post("/tasks/", json!({"title": text, "status": status, "assignee_id": id}))
                .await;
            assert_eq!(code, 200, "{text:?}: {task}");
            let task_id = task["id"].as_i64().unwrap();
            let (_, read) = s.get(&format!("/tasks/{task_id}/")).await;
            assert_eq!((&read["title"], &read["status"]), (&json!(text), &json!(status)));

            let reversed: String = text.chars().rev().collect();
            let (code, updated) = s
                .put(&format!("/tasks/{task_id}/"), json!({"title": reversed, "status": "done"}))
                .await;
            assert_eq!((code, &updated["title"]), (200, &json!(reversed)), "{i}");
        }
        for query in [
            "skip=0;DROP TABLE tasks",
            "limit=1%20OR%201%3D1",
            "skip=%27",
            "limit=%00",
            "skip=1e3",
        ] {
            let (code, answer) = s.get(&format!("/tasks/?{query}")).await;
            assert_eq!(code, 422, "{query}: {answer}");
        }
        let (code, _) = s.get("/tasks/?unknown=%27%3B%20DROP%20TABLE%20tasks%3B--").await;
        assert_eq!(code, 200);
        let (code, _) = s.get("/tasks/'%3B%20DROP%20TABLE%20tasks%3B--/").await;
        assert_eq!(code, 422);
        // Everything is still there.
        let n = texts.len();
        assert_eq!(s.get("/employees/?limit=1000").await.1.as_array().unwrap().len(), n);
        assert_eq!(s.get("/tasks/?limit=1000").await.1.as_array().unwrap().len(), n);
        s.stop().await;
    }
}
