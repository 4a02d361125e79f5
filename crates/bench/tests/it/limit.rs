//! The limit server of `just bench-http` answers `GET /tasks/{id}/` with the
//! same status, content type and body bytes as the tracker, on the same rows.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use chrono::NaiveDate;
use migration::{Migrator, MigratorTrait};
use test_support::{Backend, TestDb};
use tokio::sync::oneshot;
use tracker::{EmployeeInput, TaskInput, Tracker};

/// The `limit-server` binary on a free port; killed on drop.
struct Limit {
    child: Child,
    base: String,
    _dir: tempfile::TempDir,
}

impl Limit {
    fn start(database_url: &str) -> Limit {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_limit-server"))
            .args(["--addr", "127.0.0.1:0"])
            .current_dir(dir.path())
            .env_clear()
            .env("DATABASE_URL", database_url)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("limit-server said {line:?}"));
        Limit {
            base: format!("http://{addr}"),
            child,
            _dir: dir,
        }
    }
}

impl Drop for Limit {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn answer(client: &reqwest::Client, url: &str) -> (u16, Option<String>, Vec<u8>) {
    let response = client.get(url).send().await.unwrap();
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned());
    (
        status,
        content_type,
        response.bytes().await.unwrap().to_vec(),
    )
}

#[test_support::needs(postgres)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_limit_server_answers_with_the_trackers_exact_bytes() {
    let t = TestDb::new(Backend::Postgres).await;
    Migrator::up(t.db.conn(), None).await.unwrap();
    let tracker = Tracker::new(t.db.clone());
    let employee = tracker
        .create_employee(EmployeeInput {
            full_name: "Ann Lee".into(),
            position: "developer".into(),
        })
        .await
        .unwrap();
    let parent = tracker
        .create_task(TaskInput {
            title: "Plain".into(),
            status: "todo".into(),
            parent_id: None,
            assignee_id: None,
            deadline: None,
        })
        .await
        .unwrap();
    let child = tracker
        .create_task(TaskInput {
            title: "Quotes \" and \\ and \u{e9}\u{1F600}\n\ttabs \u{1}".into(),
            status: "in progress".into(),
            parent_id: Some(parent.id),
            assignee_id: Some(employee.id),
            deadline: NaiveDate::from_ymd_opt(2026, 12, 31),
        })
        .await
        .unwrap();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tracker_base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    let served = tokio::spawn(tracker::http::serve(
        listener,
        tracker,
        tracker::http::Exposure::Off,
        async {
            let _ = stopped.await;
        },
    ));
    let url = t.settings.url.expose().to_owned();
    let limit = tokio::task::spawn_blocking(move || Limit::start(&url))
        .await
        .unwrap();

    let client = reqwest::Client::new();
    let missing = child.id + 1000;
    for path in [
        format!("/tasks/{}/", parent.id),
        format!("/tasks/{}/", child.id),
        format!("/tasks/{}", child.id),
        format!("/tasks/{missing}/"),
    ] {
        let ours = answer(&client, &format!("{}{path}", limit.base)).await;
        let theirs = answer(&client, &format!("{tracker_base}{path}")).await;
        assert_eq!(
            (ours.0, &ours.1, String::from_utf8_lossy(&ours.2)),
            (theirs.0, &theirs.1, String::from_utf8_lossy(&theirs.2)),
            "GET {path}"
        );
        assert_eq!(ours.2, theirs.2, "GET {path}");
    }
    let (status, _, body) = answer(&client, &format!("{tracker_base}/tasks/{missing}/")).await;
    assert_eq!(
        (status, body.as_slice()),
        (404, &br#"{"detail":"Task not found"}"#[..])
    );
    let (status, _, body) = answer(&client, &format!("{}/tasks/{}/", limit.base, child.id)).await;
    assert_eq!(status, 200);
    let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(value["deadline"], "2026-12-31");
    assert_eq!(value["assignee_id"], employee.id);

    drop(limit);
    let _ = stop.send(());
    served.await.unwrap().unwrap();
}
