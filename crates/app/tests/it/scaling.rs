//! Beyond one server, on real processes: a streaming replica serving the
//! GET routes, and PgBouncer in transaction-pooling mode in front of the
//! primary (Debian's `pgbouncer`).

use std::ffi::OsString;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tempfile::TempDir;
use test_support::{PgBouncer, PrivatePostgres, StopMode, free_port, report};

use crate::cli::{os, text, tracker};
use crate::pause::blocking;
use crate::serve::{Running, start};

/// A primary and its streaming replica, servers of their own with the
/// password `password`, and `tracker serve --migrate` on both
/// (`DB_REPLICA_URLS`) with the `extra` variables.
struct Replicated {
    primary: Arc<PrivatePostgres>,
    replica: Arc<PrivatePostgres>,
    /// The app's variables.
    vars: Vec<(&'static str, OsString)>,
    /// The folder the app runs in.
    dir: TempDir,
    app: Running,
    /// The URL of a task created through the app and since answered by a
    /// GET, which the replica serves: it has replayed the task.
    task: String,
}

/// `POST /tasks/` of `task` to the app at `base`.
async fn post_task(client: &reqwest::Client, base: &str, task: Value) -> reqwest::Response {
    client
        .post(format!("{base}/tasks/"))
        .json(&task)
        .send()
        .await
        .unwrap()
}

async fn replicated(password: &'static str, extra: &[(&'static str, OsString)]) -> Replicated {
    let (primary, replica) = tokio::task::spawn_blocking(move || {
        let primary = PrivatePostgres::start(password).expect("primary");
        primary.psql("postgres", "CREATE DATABASE tracker").unwrap();
        let replica = primary.start_replica().expect("replica");
        (Arc::new(primary), Arc::new(replica))
    })
    .await
    .unwrap();
    let mut vars = vec![
        ("DATABASE_URL", os(primary.url("tracker"))),
        ("DB_REPLICA_URLS", os(replica.url("tracker"))),
    ];
    vars.extend_from_slice(extra);
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", free_port().unwrap());
    let app = start(dir.path(), &["serve", "--addr", &addr, "--migrate"], &vars).await;
    let client = reqwest::Client::new();
    let created: Value = client
        .post(format!("{}/tasks/", app.base))
        .json(&json!({"title": "replicated", "status": "todo"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let task = format!("{}/tasks/{}/", app.base, created["id"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while client.get(&task).send().await.unwrap().status() != 200 {
        assert!(
            Instant::now() < deadline,
            "the task never reached the replica"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Replicated {
        primary,
        replica,
        vars,
        dir,
        app,
        task,
    }
}

/// With a replica configured, `GET /tasks/{id}/` is answered by the replica:
/// it still answers with the primary stopped, while writes (which never go
/// to the replica) fail with 503. `db check` shows the replica and its lag.
#[test_support::needs(postgres)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_routes_are_served_by_the_replica_and_writes_never_are() {
    let Replicated {
        primary,
        replica,
        vars,
        dir,
        mut app,
        task: url,
    } = replicated("scaling-pw", &[("DB_ACQUIRE_TIMEOUT", os("1s"))]).await;

    let check = tracker(dir.path(), &["db", "check"], &vars);
    let (stdout, stderr) = text(&check);
    assert_eq!(check.status.code(), Some(0), "{stderr}");
    let line = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("replica ") && l.contains("lag"))
        .unwrap_or_default();
    assert!(
        line.contains(&format!("127.0.0.1:{}/tracker (up, lag ", replica.port())),
        "{stdout}"
    );
    assert!(!stdout.contains("scaling-pw"));

    // Only the replica is left: reads succeed, writes cannot.
    blocking(&primary, |s| s.stop(StopMode::Fast)).await;
    let client = reqwest::Client::new();
    for _ in 0..10 {
        let response = client.get(&url).send().await.unwrap();
        assert_eq!(response.status(), 200, "a read needed the primary");
        assert_eq!(
            response.json::<Value>().await.unwrap()["title"],
            "replicated"
        );
    }
    let write = client
        .post(format!("{}/tasks/", app.base))
        .json(&json!({"title": "nowhere to go", "status": "todo"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        write.status(),
        503,
        "a write went somewhere other than the primary"
    );
    report(
        "replica: with the primary stopped, 10/10 GET /tasks/{id}/ answered 200 from the replica; POST answered 503",
    );

    blocking(&primary, PrivatePostgres::start_again).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let write = client
            .post(format!("{}/tasks/", app.base))
            .json(&json!({"title": "primary is back", "status": "todo"}))
            .send()
            .await
            .unwrap();
        if write.status() == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "writes did not resume");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A write refused for a missing row is explained from the primary: the
    // replica, behind, lacks the parent just created, which exists.
    blocking(&replica, |r| {
        r.psql("tracker", "SELECT pg_wal_replay_pause()").map(drop)
    })
    .await;
    let parent = json!({"title": "parent", "status": "todo"});
    let parent: Value = post_task(&client, &app.base, parent)
        .await
        .json()
        .await
        .unwrap();
    let child = json!({"title": "child", "status": "todo", "parent_id": parent["id"], "assignee_id": 999_999});
    let refused = post_task(&client, &app.base, child).await;
    assert_eq!(refused.status(), 422);
    let detail = refused.json::<Value>().await.unwrap()["detail"].clone();
    assert_eq!(detail[0]["loc"], json!(["body", "assignee_id"]), "{detail}");
    blocking(&replica, |r| {
        r.psql("tracker", "SELECT pg_wal_replay_resume()").map(drop)
    })
    .await;
    app.terminate();
    assert_eq!(app.wait(Duration::from_secs(10)).await.0, Some(0));
    drop(replica);
}

/// A replica that stops at once, as a crash would: reads go on from the
/// primary, and SIGTERM still stops `serve` with code 0 within 10 s. The
/// replica's pool lost its only connection, and closing it must not wait for
/// a reconnection to the stopped server (with `DB_MIN_CONNECTIONS` at its
/// default of 1, sqlx's own upkeep of that floor kept the close waiting for
/// about 5 minutes).
#[test_support::needs(postgres)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_after_the_replica_stopped_exits_0_within_10_s() {
    // The primary and the folder live as long as the app.
    let Replicated {
        primary: _primary,
        replica,
        dir: _dir,
        mut app,
        task: url,
        ..
    } = replicated("stopped-replica-pw", &[]).await;

    blocking(&replica, |s| s.stop(StopMode::Immediate)).await;
    let client = reqwest::Client::new();
    for _ in 0..5 {
        let response = client.get(&url).send().await.unwrap();
        assert_eq!(
            response.status(),
            200,
            "a read failed with the replica gone"
        );
    }
    assert!(
        app.logged("replica unavailable", Duration::from_secs(5))
            .await,
        "no read found the replica gone: {:?}",
        app.logs()
    );

    app.terminate();
    let (code, took) = app.wait(Duration::from_secs(10)).await;
    assert_eq!(code, Some(0), "exit code; logs: {:?}", app.logs());
    report(&format!(
        "stopped replica: 5/5 GET answered 200 from the primary; SIGTERM to exit 0 in {:.1} s",
        took.as_secs_f64()
    ));
}

/// Through PgBouncer in transaction-pooling mode (`DB_TRANSACTION_POOLER`):
/// concurrent migrators apply each migration once (the lock is a
/// transaction-level one), and the app serves concurrent requests.
#[test_support::needs(postgres, pgbouncer)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_app_and_its_migrations_work_through_pgbouncer() {
    let (server, bouncer) = PgBouncer::with_private_server("bouncer-pw", "tracker").await;
    let vars = vec![
        ("DATABASE_URL", os(bouncer.url("tracker"))),
        ("DB_TRANSACTION_POOLER", os("true")),
        // Every route works with one connection: none holds two at once.
        ("DB_MAX_CONNECTIONS", os("1")),
    ];
    let dir = tempfile::tempdir().unwrap();
    let migrators: Vec<_> = (0..6)
        .map(|_| {
            let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_tracker"));
            command
                .args(["migrate", "up"])
                .current_dir(dir.path())
                .env_clear();
            for (name, value) in &vars {
                command.env(name, value);
            }
            command
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            command.spawn().unwrap()
        })
        .collect();
    let mut applied = 0;
    for migrator in migrators {
        let output = migrator.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        applied += String::from_utf8_lossy(&output.stdout)
            .matches("applied  ")
            .count();
    }
    // Each migration applied by exactly one of the migrators.
    let migrations = <migration::Migrator as migration::MigratorTrait>::migrations().len();
    assert_eq!(
        applied, migrations,
        "{applied} migrations applied, of {migrations}"
    );
    assert_eq!(
        server
            .psql("tracker", "SELECT COUNT(*) FROM seaql_migrations")
            .unwrap(),
        migrations.to_string()
    );

    let addr = format!("127.0.0.1:{}", free_port().unwrap());
    let mut app = start(dir.path(), &["serve", "--addr", &addr], &vars).await;
    let client = reqwest::Client::new();
    let requests: Vec<_> = (0..64)
        .map(|n| {
            let (client, base) = (client.clone(), app.base.clone());
            tokio::spawn(async move {
                let created: Value = client
                    .post(format!("{base}/employees/"))
                    .json(&json!({"full_name": format!("e{n}"), "position": "bouncer"}))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                let id = created["id"].as_i64().unwrap();
                client
                    .get(format!("{base}/employees/{id}/"))
                    .send()
                    .await
                    .unwrap()
                    .status()
            })
        })
        .collect();
    for request in requests {
        assert_eq!(request.await.unwrap(), 200);
    }
    let leaf = json!({"title": "leaf", "status": "todo"});
    let task: Value = post_task(&client, &app.base, leaf)
        .await
        .json()
        .await
        .unwrap();
    for (id, status) in [(task["id"].as_i64().unwrap(), 200), (999_999, 404)] {
        let subtree = (client.get(format!("{}/tasks/{id}/subtree/", app.base)))
            .send()
            .await
            .unwrap();
        assert_eq!(subtree.status(), status, "subtree of {id}");
    }
    // A move is a serializable transaction: its isolation level is set
    // through the pooler too.
    let root = post_task(
        &client,
        &app.base,
        json!({"title": "root", "status": "todo"}),
    )
    .await;
    let root: Value = root.json().await.unwrap();
    let moved = json!({"title": "leaf", "status": "todo", "parent_id": root["id"]});
    let id = task["id"].as_i64().unwrap();
    let answer = (client.put(format!("{}/tasks/{id}/", app.base)).json(&moved))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200, "{}", answer.text().await.unwrap());
    report(&format!(
        "pgbouncer (transaction pooling, port {}): 6 concurrent migrators applied each migration once; 64 concurrent create+get pairs all 200; a task moved (serializable) 200",
        bouncer.port()
    ));
    app.terminate();
    assert_eq!(app.wait(Duration::from_secs(10)).await.0, Some(0));
}
