//! The reference servers of `just bench-http` (`limit-server`,
//! `seaorm-server`, `sqlx-server`) answer `GET /tasks/{id}/` with the same
//! status, content type and body bytes as the tracker, on the same rows.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use chrono::NaiveDate;
use test_support::{Backend, TestDb};
use tokio::sync::oneshot;
use tracker::{EmployeeInput, TaskInput, Tracker};

/// The reference servers, by binary.
const SERVERS: [(&str, &str); 3] = [
    ("limit-server", env!("CARGO_BIN_EXE_limit-server")),
    ("seaorm-server", env!("CARGO_BIN_EXE_seaorm-server")),
    ("sqlx-server", env!("CARGO_BIN_EXE_sqlx-server")),
];

/// A reference server on a free port; killed on drop.
struct Reference {
    child: Child,
    base: String,
    _dir: tempfile::TempDir,
}

impl Reference {
    fn start(name: &str, binary: &str, database_url: &str) -> Reference {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(binary)
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
            .unwrap_or_else(|| panic!("{name} said {line:?}"));
        Reference {
            base: format!("http://{addr}"),
            child,
            _dir: dir,
        }
    }
}

impl Drop for Reference {
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
async fn the_reference_servers_answer_with_the_trackers_exact_bytes() {
    let t = TestDb::new(Backend::Postgres).await;
    migration::up(&t.settings, std::time::Duration::from_secs(60))
        .await
        .unwrap();
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
    let app = web::App::new("Task Tracker", "0.1.0", tracker.db().clone())
        .service(tracker::http::routes(tracker));
    let served = tokio::spawn(app.serve(listener, web::Exposure::Off, async {
        let _ = stopped.await;
    }));
    let client = reqwest::Client::new();
    let missing = child.id + 1000;
    let (status, _, body) = answer(&client, &format!("{tracker_base}/tasks/{missing}/")).await;
    assert_eq!(
        (status, body.as_slice()),
        (404, &br#"{"detail":"Task not found"}"#[..])
    );
    for (name, binary) in SERVERS {
        let url = t.settings.url.expose().to_owned();
        let server = tokio::task::spawn_blocking(move || Reference::start(name, binary, &url))
            .await
            .unwrap();
        for path in [
            format!("/tasks/{}/", parent.id),
            format!("/tasks/{}/", child.id),
            format!("/tasks/{}", child.id),
            format!("/tasks/{missing}/"),
            "/elsewhere".to_owned(),
        ] {
            let ours = answer(&client, &format!("{}{path}", server.base)).await;
            let theirs = answer(&client, &format!("{tracker_base}{path}")).await;
            assert_eq!(
                (ours.0, &ours.1, String::from_utf8_lossy(&ours.2)),
                (theirs.0, &theirs.1, String::from_utf8_lossy(&theirs.2)),
                "{name}: GET {path}"
            );
            assert_eq!(ours.2, theirs.2, "{name}: GET {path}");
        }
        let (status, _, body) =
            answer(&client, &format!("{}/tasks/{}/", server.base, child.id)).await;
        assert_eq!(status, 200, "{name}");
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(value["deadline"], "2026-12-31", "{name}");
        assert_eq!(value["assignee_id"], employee.id, "{name}");
    }

    let _ = stop.send(());
    served.await.unwrap().unwrap();
}
