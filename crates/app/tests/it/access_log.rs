//! The access log of `tracker serve` at the default `info` level: written
//! off the request's thread, yet one line for every request, none lost at
//! SIGTERM, and a metric for lines dropped when the buffer is full; and the
//! request span that `debug` adds to every line logged inside a request.

use std::time::{Duration, Instant};

use test_support::free_port;

use crate::serve::{Running, start};

/// What every access line says.
const ACCESS_LINE: &str = "finished processing request";

/// `tracker serve` on a fresh SQLite database with one task.
async fn serve(dir: &std::path::Path) -> Running {
    let addr = format!("127.0.0.1:{}", free_port().unwrap());
    let server = start(dir, &["serve", "--addr", &addr], &[]).await;
    let created = reqwest::Client::new()
        .post(format!("{}/tasks/", server.base))
        .header("content-type", "application/json")
        .body(r#"{"title":"Write","status":"todo"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 200);
    server
}

/// `n` requests for the task, from `clients` concurrent clients; every one
/// answered 200.
async fn load(base: &str, n: usize, clients: usize) {
    let client = reqwest::Client::new();
    let workers: Vec<_> = (0..clients)
        .map(|i| {
            let (client, url) = (client.clone(), format!("{base}/tasks/1/"));
            tokio::spawn(async move {
                for _ in (i..n).step_by(clients) {
                    let status = client.get(&url).send().await.unwrap().status();
                    assert_eq!(status, 200);
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.unwrap();
    }
}

fn access_lines(logs: &[String]) -> usize {
    logs.iter().filter(|l| l.contains(ACCESS_LINE)).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_writes_one_access_line_per_request_and_drops_none() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = serve(dir.path()).await;
    let n = 3000;
    load(&server.base, n, 16).await;
    let metrics = reqwest::get(format!("{}/metrics", server.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.lines().any(|l| l == "log_lines_dropped_total 0"),
        "{metrics}"
    );
    // The create, the load and the scrape, while the server runs.
    let expected = 1 + n + 1;
    let deadline = Instant::now() + Duration::from_secs(10);
    while access_lines(&server.logs()) < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(access_lines(&server.logs()), expected);
    server.terminate();
    assert_eq!(server.wait(Duration::from_secs(10)).await.0, Some(0));
    let logs = server.all_logs().await;
    assert_eq!(access_lines(&logs), expected);
    // At `info` no request span is made.
    assert!(!logs.iter().any(|l| l.contains("request{")), "{logs:#?}");
}

/// Nobody reads standard error during the burst, so its pipe fills up and
/// the access lines queue in the log buffer: the requests are answered all
/// the same, and the lines still queued at SIGTERM are written out before
/// the process exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_right_after_a_burst_loses_no_access_line() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = serve(dir.path()).await;
    server.pause_stderr(true);
    // About 600 kB of access lines, ten times what the pipe holds.
    let n = 3000;
    tokio::time::timeout(Duration::from_secs(60), load(&server.base, n, 64))
        .await
        .expect("requests waited for standard error");
    server.terminate();
    // Well within the second that the exit waits for the buffer.
    tokio::time::sleep(Duration::from_millis(200)).await;
    server.pause_stderr(false);
    assert_eq!(server.wait(Duration::from_secs(10)).await.0, Some(0));
    let logs = server.all_logs().await;
    assert_eq!(access_lines(&logs), 1 + n);
    // The last line logged, just before the process ends, is there too.
    let last = logs.last().map(String::as_str).unwrap_or_default();
    assert!(last.contains("stopped"), "{last}");
}

/// The access line names the method, the URI (without the trailing slash
/// that the router trims), the status and the latency. At `debug` a line
/// logged inside a request (here sqlx's statement) carries its span.
#[tokio::test]
async fn at_debug_lines_inside_a_request_name_it() {
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", free_port().unwrap());
    let vars = [("RUST_LOG", "debug".into())];
    let mut server = start(dir.path(), &["serve", "--addr", &addr], &vars).await;
    let answer = reqwest::get(format!("{}/tasks/41/", server.base))
        .await
        .unwrap();
    assert_eq!(answer.status(), 404);
    server.terminate();
    assert_eq!(server.wait(Duration::from_secs(10)).await.0, Some(0));
    let logs = server.all_logs().await;
    let access = logs
        .iter()
        .find(|l| l.contains(ACCESS_LINE))
        .expect("an access line");
    assert!(
        access.contains(" INFO access: finished processing request method=GET uri=/tasks/41 status=404 latency_us="),
        "{access}"
    );
    assert!(
        logs.iter()
            .any(|l| l.contains("request{method=GET uri=/tasks/41}") && l.contains("sqlx::query")),
        "{logs:#?}"
    );
}
