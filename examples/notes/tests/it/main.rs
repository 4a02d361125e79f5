//! The notes service as docs/your-service.md adds it: its routes beside the
//! tracker's on every backend, and the `notes` binary with its setting in
//! `config/default.toml`, `.env` and the environment.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use db_core::Source;
use notes::{Notes, NotesSettings};
use serde_json::{Value, json};
use test_support::{TestDb, free_port};

/// The application of the `notes` binary on `t`, served on a random port
/// until the returned sender is dropped; its base URL.
async fn serve(t: &TestDb, settings: NotesSettings) -> (String, tokio::sync::oneshot::Sender<()>) {
    migration::up_with::<notes::migration::Migrator>(&t.settings, Duration::from_secs(60))
        .await
        .unwrap();
    let app = web::App::new("Task Tracker", "0.1.0", t.db.clone())
        .service(tracker::http::routes(tracker::Tracker::new(t.db.clone())))
        .service(notes::routes(Notes::new(t.db.clone(), settings)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(app.serve(listener, web::Exposure::Off, async {
        let _ = stopped.await;
    }));
    (base, stop)
}

async fn call(method: reqwest::Method, url: String, body: Option<Value>) -> (u16, Value) {
    let mut request = reqwest::Client::new().request(method, url);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let answer = request.send().await.unwrap();
    (answer.status().as_u16(), answer.json().await.unwrap())
}

test_support::backend_tests! {
    /// Notes are added and listed, the setting bounds a title, bad input is
    /// a 422 in the shared shape, and the document has both services.
    async fn notes_beside_the_tracker(t: TestDb) {
        let settings = Source::new().var("NOTES_MAX_TITLE_LENGTH", "5").section().unwrap();
        let (base, _stop) = serve(&t, settings).await;
        let post = |body: Value| call(reqwest::Method::POST, format!("{base}/notes/"), Some(body));
        let (status, first) = post(json!({"title": "Milk", "body": "two litres"})).await;
        assert_eq!(status, 200, "{first}");
        assert_eq!((&first["title"], &first["body"]), (&json!("Milk"), &json!("two litres")));
        let (status, second) = post(json!({"title": "Bread", "body": ""})).await;
        assert_eq!(status, 200, "{second}");

        let (status, long) = post(json!({"title": "Cheese", "body": ""})).await;
        assert_eq!(status, 422);
        assert_eq!(long["detail"][0]["loc"], json!(["body", "title"]));
        assert_eq!(long["detail"][0]["msg"], "String should have at most 5 characters");
        let (status, missing) = post(json!({"title": 3})).await;
        assert_eq!(status, 422);
        let kinds: Vec<_> = missing["detail"].as_array().unwrap().iter().map(|e| e["type"].clone()).collect();
        assert_eq!(kinds, [json!("string_type"), json!("missing")]);

        let get = |query: &str| call(reqwest::Method::GET, format!("{base}/notes?{query}"), None);
        let (status, all) = get("").await;
        assert_eq!(status, 200);
        assert_eq!(all, json!([first, second]));
        let after = format!("after_id={}", first["id"]);
        assert_eq!(get(&after).await, (200, json!([second])));
        assert_eq!(get("limit=1").await, (200, json!([first])));
        let (status, bad) = get("limit=1001").await;
        assert_eq!((status, &bad["detail"][0]["loc"]), (422, &json!(["query", "limit"])));
        let (status, bad) = get("limit=x").await;
        assert_eq!((status, &bad["detail"][0]["type"]), (422, &json!("query_invalid")));

        // The tracker still answers, and one document holds both services.
        assert_eq!(call(reqwest::Method::GET, format!("{base}/tasks/"), None).await, (200, json!([])));
        let (_, doc) = call(reqwest::Method::GET, format!("{base}/openapi.json"), None).await;
        assert_eq!(doc["info"]["title"], "Task Tracker");
        let title = &doc["components"]["schemas"]["NoteCreate"]["properties"]["title"];
        assert_eq!(title["maxLength"], 5, "the configured limit: {title}");
        for path in ["/notes/", "/tasks/", "/employees/", "/health"] {
            assert!(doc["paths"].get(path).is_some(), "{path} missing from the document");
        }
        let tags: Vec<_> = doc["tags"].as_array().unwrap().iter().map(|t| t["name"].clone()).collect();
        assert_eq!(tags, [json!("employees"), json!("tasks"), json!("notes"), json!("health")]);
    }
}

/// A directory for the binary: `config/default.toml` holding `config`,
/// `.env` holding `dotenv`, and its SQLite file.
fn project(config: &str, dotenv: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("config")).unwrap();
    std::fs::write(dir.path().join("config/default.toml"), config).unwrap();
    std::fs::write(dir.path().join(".env"), dotenv).unwrap();
    dir
}

fn notes_binary(dir: &Path, addr: &str, vars: &[(&str, &str)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_notes"));
    command
        .args(["--addr", addr])
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("DATABASE_URL", "sqlite://notes.db?mode=rwc")
        .envs(vars.iter().copied());
    command
}

/// Runs the binary where it must stop at once, on its configuration.
fn refused(config: &str, dotenv: &str, vars: &[(&str, &str)]) -> (Option<i32>, String) {
    let dir = project(config, dotenv);
    let Output { status, stderr, .. } = notes_binary(dir.path(), "127.0.0.1:1", vars)
        .output()
        .unwrap();
    (status.code(), String::from_utf8(stderr).unwrap())
}

/// A bad value of the service's setting, from any layer, stops the binary
/// with exit code 2 and one line that names it; so does an unknown key.
#[test]
fn a_bad_notes_setting_exits_2_with_one_line_naming_it() {
    let config =
        |value: &str| format!("max_connections = 4\n[notes]\nmax_title_length = {value}\n");
    let cases = [
        (
            config("0"),
            "",
            vec![],
            "max_title_length=\"0\": expected a whole number 1-1000",
        ),
        (
            config("50"),
            "NOTES_MAX_TITLE_LENGTH=lots\n",
            vec![],
            "NOTES_MAX_TITLE_LENGTH=\"lots\": expected a whole number 1-1000",
        ),
        (
            config("50"),
            "",
            vec![("NOTES_MAX_TITLE_LENGTH", "-3")],
            "NOTES_MAX_TITLE_LENGTH=\"-3\": expected a whole number 1-1000",
        ),
        (
            "[notes]\ncolour = \"red\"\n".to_owned(),
            "",
            vec![],
            "unknown key `colour` of [notes]",
        ),
        (
            "colour = \"red\"\n".to_owned(),
            "",
            vec![],
            "unknown key `colour`",
        ),
    ];
    for (config, dotenv, vars, expected) in cases {
        let (code, stderr) = refused(&config, dotenv, &vars);
        assert_eq!(code, Some(2), "{config} {dotenv} {vars:?}: {stderr}");
        let lines: Vec<_> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{stderr}");
        assert!(
            lines[0].starts_with("error: ") && lines[0].contains(expected),
            "{stderr}"
        );
    }
}

/// The binary with `[notes]` in `config/default.toml`: it serves the notes
/// routes with the configured limit, in `/openapi.json` and `/metrics`, and
/// stops with exit code 0 on SIGTERM.
#[tokio::test]
async fn the_binary_serves_notes_with_their_setting_and_metrics() {
    let dir = project("[notes]\nmax_title_length = 6\n", "");
    let addr = format!("127.0.0.1:{}", free_port().unwrap());
    let mut child = notes_binary(dir.path(), &addr, &[])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://{addr}");
    let client = reqwest::Client::new();
    let mut up = false;
    for _ in 0..600 {
        if client.get(format!("{base}/health")).send().await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(up, "notes did not start");
    let post = |title: &str| {
        call(
            reqwest::Method::POST,
            format!("{base}/notes/"),
            Some(json!({"title": title, "body": "b"})),
        )
    };
    assert_eq!(post("sixsix").await.0, 200);
    assert_eq!(post("seven77").await.0, 422);
    let (_, doc) = call(reqwest::Method::GET, format!("{base}/openapi.json"), None).await;
    assert!(doc["paths"].get("/notes/").is_some(), "{doc}");
    let metrics = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for series in [
        r#"http_requests_total{method="POST",route="/notes",status="200"} 1"#,
        r#"http_requests_total{method="POST",route="/notes",status="422"} 1"#,
    ] {
        assert!(
            metrics.lines().any(|l| l == series),
            "{series} not in {metrics}"
        );
    }
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

/// Every Rust block of docs/your-service.md is quoted from this example,
/// so the guide's code is the code that compiles and passes these tests.
#[test]
fn the_guide_quotes_the_example_verbatim() {
    let guide = include_str!("../../../../docs/your-service.md");
    let example = [
        include_str!("../../src/lib.rs"),
        include_str!("../../src/migration.rs"),
        include_str!("../../src/entity/notes.rs"),
        include_str!("../../src/main.rs"),
        include_str!("main.rs"),
    ]
    .concat();
    let blocks: Vec<&str> = guide
        .split("```rust\n")
        .skip(1)
        .map(|block| block.split("```").next().unwrap())
        .collect();
    assert!(blocks.len() >= 8, "{} blocks", blocks.len());
    for block in blocks {
        assert!(example.contains(block), "not in examples/notes:\n{block}");
    }
}
