//! `/metrics` of a running `tracker serve`: scraped by a real Prometheus and
//! queried with PromQL, checked by `promtool`, and scanned for secrets and
//! SQL.

use std::ffi::OsString;
use std::time::{Duration, Instant};

use db_core::sea_orm::ConnectionTrait;
use serde_json::Value;
use test_support::{Backend, Prometheus, TestDb, free_port};

use crate::serve::{Running, start};

/// `tracker serve --migrate` on `t`'s database with a pool of two that gives
/// up on a connection after 200 ms, and `/metrics` on `metrics_addr` if given.
async fn serve(t: &TestDb, dir: &std::path::Path, metrics_addr: Option<&str>) -> Running {
    let addr = format!("127.0.0.1:{}", free_port().unwrap());
    let mut args = vec!["serve", "--addr", &addr, "--migrate"];
    if let Some(m) = metrics_addr {
        args.extend(["--metrics-addr", m]);
    }
    let vars = [
        t.settings.url.child_env(),
        ("DB_MAX_CONNECTIONS", "2".into()),
        ("DB_ACQUIRE_TIMEOUT", "200ms".into()),
        // The requests that hold the connections wait 1.5 s for a lock: only
        // the acquire timeout is to fail requests here.
        ("DB_OPERATION_TIMEOUT", "10s".into()),
    ];
    start(dir, &args, &vars).await
}

async fn post(client: &reqwest::Client, url: String, body: &str) -> reqwest::StatusCode {
    client
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
        .status()
}

/// Requests while another session holds an exclusive lock on `tasks`: the
/// two pooled connections wait on the lock, the other requests on the pool,
/// which gives up after 200 ms (503). Returns the statuses.
async fn exhaust_pool(t: &TestDb, base: &str) -> Vec<u16> {
    let lock = t.db.begin().await.unwrap();
    lock.execute_unprepared("LOCK TABLE tasks IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let client = reqwest::Client::new();
    let requests: Vec<_> = (0..10)
        .map(|_| {
            let (client, url) = (client.clone(), format!("{base}/tasks/1/"));
            tokio::spawn(async move { client.get(url).send().await.unwrap().status().as_u16() })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    lock.rollback().await.unwrap();
    let mut statuses = Vec::new();
    for r in requests {
        statuses.push(r.await.unwrap());
    }
    statuses
}

/// The value of an instant PromQL query's first sample, once it has one.
async fn query(prometheus: &Prometheus, promql: &str, ok: impl Fn(f64) -> bool) -> f64 {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = Value::Null;
    while Instant::now() < deadline {
        let answer: Value = client
            .get(format!("{}/api/v1/query", prometheus.url()))
            .query(&[("query", promql)])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(answer["status"], "success", "{promql}: {answer}");
        let value = answer["data"]["result"][0]["value"][1]
            .as_str()
            .and_then(|v| v.parse::<f64>().ok());
        if let Some(v) = value.filter(|v| ok(*v)) {
            return v;
        }
        last = answer;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("{promql}: no acceptable sample within 30 s; last answer {last}")
}

#[test_support::needs(postgres, prometheus)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_requests_acquire_waits_and_timeouts() {
    let t = TestDb::new(Backend::Postgres).await;
    let dir = tempfile::tempdir().unwrap();
    let metrics_addr = format!("127.0.0.1:{}", free_port().unwrap());
    let mut server = serve(&t, dir.path(), Some(&metrics_addr)).await;
    let prometheus = Prometheus::start(&metrics_addr).unwrap();
    let client = reqwest::Client::new();
    // /metrics is on its own listener, not on the API's.
    let on_api = client
        .get(format!("{}/metrics", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(on_api.status(), 404);

    let employee = r#"{"full_name":"Ann","position":"dev"}"#;
    assert_eq!(
        post(&client, format!("{}/employees/", server.base), employee).await,
        200
    );
    let task = r#"{"title":"Write","status":"todo"}"#;
    assert_eq!(
        post(&client, format!("{}/tasks/", server.base), task).await,
        200
    );
    for _ in 0..20 {
        let r = client
            .get(format!("{}/tasks/1/", server.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let timeouts = r#"sum(db_pool_acquire_timeouts_total{pool="primary"})"#;
    let before = query(&prometheus, timeouts, |_| true).await;
    assert_eq!(before, 0.0);

    let statuses = exhaust_pool(&t, &server.base).await;
    assert!(statuses.contains(&503), "{statuses:?}");
    assert!(statuses.contains(&200), "{statuses:?}");

    let rate = r#"sum(rate(http_requests_total{route="/tasks/{task_id}",method="GET"}[1m]))"#;
    assert!(query(&prometheus, rate, |v| v > 0.0).await > 0.0);
    let p99 = r#"histogram_quantile(0.99, sum by (le) (rate(db_pool_acquire_wait_seconds_bucket{pool="primary"}[1m])))"#;
    let wait = query(&prometheus, p99, f64::is_finite).await;
    assert!(wait > 0.0, "p99 acquire wait {wait}");
    let after = query(&prometheus, timeouts, |v| v > 0.0).await;
    promtool_check(
        &client
            .get(format!("http://{metrics_addr}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    );
    let expected = statuses.iter().filter(|s| **s == 503).count() as f64;
    assert_eq!(after, expected, "{statuses:?}");
    let waiters = r#"max(db_pool_waiters{pool="primary"})"#;
    assert_eq!(query(&prometheus, waiters, |v| v == 0.0).await, 0.0);

    server.terminate();
    assert_eq!(server.wait(Duration::from_secs(10)).await.0, Some(0));
}

/// Every series the issue asks for is there; no password, no SQL.
#[test_support::needs(postgres)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_name_every_series_without_secrets_or_sql() {
    let t = TestDb::new(Backend::Postgres).await;
    // A user with a password, so that the URL carries a secret to look for.
    let password = "metrics-Secret-9d2f";
    let user = format!("tracker_metrics_{}", std::process::id());
    sql(
        &t,
        &format!("CREATE ROLE \"{user}\" LOGIN SUPERUSER PASSWORD '{password}'"),
    )
    .await;
    let mut url = url::Url::parse(t.settings.url.expose()).unwrap();
    url.set_username(&user).unwrap();
    url.set_password(Some(password)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", free_port().unwrap());
    let vars = [("DATABASE_URL", OsString::from(url.as_str()))];
    let mut server = start(dir.path(), &["serve", "--addr", &addr, "--migrate"], &vars).await;
    let client = reqwest::Client::new();
    let employee = r#"{"full_name":"SELECT secret","position":"dev"}"#;
    assert_eq!(
        post(&client, format!("{}/employees/", server.base), employee).await,
        200
    );
    let r = client
        .get(format!("{}/employees/1/", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = client
        .get(format!("{}/no/such/path", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let text = client
        .get(format!("{}/metrics", server.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    server.terminate();
    assert_eq!(server.wait(Duration::from_secs(10)).await.0, Some(0));
    sql(
        &t,
        &format!("REASSIGN OWNED BY \"{user}\" TO CURRENT_USER; DROP ROLE \"{user}\""),
    )
    .await;

    for series in [
        r#"db_pool_connections{pool="primary"}"#,
        r#"db_pool_idle_connections{pool="primary"}"#,
        r#"db_pool_in_use_connections{pool="primary"}"#,
        r#"db_pool_waiters{pool="primary"}"#,
        r#"db_pool_acquire_wait_seconds_bucket{pool="primary",le="0.001"}"#,
        r#"db_pool_acquire_timeouts_total{pool="primary"}"#,
        r#"db_pool_connections_opened_total{pool="primary"}"#,
        r#"db_pool_connections_opened_total{pool="migration"}"#,
        r#"db_pool_connections_closed_total{pool="migration"}"#,
        r#"db_pool_connections_discarded_total{pool="primary"}"#,
        r#"db_pool_connection_failures_total{pool="primary"}"#,
        r#"db_statement_duration_seconds_count{operation="POST /employees"}"#,
        r#"db_statement_duration_seconds_count{operation="GET /employees/{employee_id}"}"#,
        r#"db_transaction_retries_total{reason="serialization"}"#,
        r#"db_transaction_retries_total{reason="deadlock"}"#,
        r#"db_transaction_retries_total{reason="failover"}"#,
        r#"db_transaction_retries_total{reason="replica_behind"}"#,
        r#"http_requests_total{method="POST",route="/employees",status="200"}"#,
        r#"http_requests_total{method="GET",route="unmatched",status="404"}"#,
        r#"http_request_duration_seconds_bucket{method="GET",route="/employees/{employee_id}",le="+Inf"}"#,
        "log_lines_dropped_total 0",
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "process_open_fds",
    ] {
        assert!(text.contains(series), "{series} missing from:\n{text}");
    }
    // The pools are the application's and the migrator's: no background
    // upkeep holds one.
    let pools: std::collections::BTreeSet<&str> = text
        .split("pool=\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .collect();
    assert_eq!(
        pools.into_iter().collect::<Vec<_>>(),
        ["migration", "primary"],
        "{text}"
    );
    for secret in [password, "Secret", &user] {
        assert!(!text.contains(secret), "{secret:?} in the metrics");
    }
    for sql in [
        "SELECT",
        "INSERT",
        "UPDATE",
        "DELETE FROM",
        "\"employees\"",
        "/no/such/path",
    ] {
        assert!(!text.contains(sql), "{sql:?} in the metrics:\n{text}");
    }
}

async fn sql(t: &TestDb, sql: &str) {
    let session = t.db.begin().await.unwrap();
    session.execute_unprepared(sql).await.unwrap();
    session.commit().await.unwrap();
}

/// `promtool check metrics` (Debian's prometheus package ships it) accepts `text`.
fn promtool_check(text: &str) {
    use std::io::Write;
    let mut promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("running promtool");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
