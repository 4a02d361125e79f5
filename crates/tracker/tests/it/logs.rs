//! The log line of a 5xx answer: it names the request and carries the
//! cause, with the sources the cause keeps, and never the password.

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use db_core::{Db, SessionOptions};
use sea_orm::ConnectionTrait;
use test_support::{Backend, TestDb, capture_logs, logged, terminate_connections};
use tower::ServiceExt;
use tracing::Instrument;
use web::Exposure;

use crate::support::migrate;

const PASSWORD: &str = "Pw-s3cr%t/x";
/// `PASSWORD` as it appears inside a URL.
const ENCODED: &str = "Pw%2Ds3cr%25t%2Fx";

/// The lines logged so far inside this test's span that contain `needle`.
fn lines_with(needle: &str) -> Vec<String> {
    logged()
        .lines()
        .filter(|line| line.contains(SPAN) && line.contains(needle))
        .map(str::to_owned)
        .collect()
}

/// The span this test's requests run in, which marks their log lines.
const SPAN: &str = "five_hundreds_test";

/// Sends `GET path` to `app` inside the test's span.
async fn get(app: &Router, path: &str) -> StatusCode {
    let request = Request::get(path).body(Body::empty()).unwrap();
    app.clone()
        .oneshot(request)
        .instrument(tracing::info_span!(SPAN))
        .await
        .unwrap()
        .status()
}

/// A table that is gone answers 500 and logs the database's error; a
/// database that ends the connections answers 503 and logs why, with the
/// driver's error as the cause.
#[test_support::needs(postgres)]
#[tokio::test]
async fn a_5xx_logs_its_cause_and_never_the_password() {
    capture_logs();
    let t = TestDb::new(Backend::Postgres).await;
    migrate(&t).await;
    let db = Db::connect(&Backend::Postgres.settings_with_password(&t.name(), PASSWORD))
        .await
        .unwrap();
    let app = crate::support::app(&db).router(&Exposure::Off);
    assert_eq!(get(&app, "/tasks").await, StatusCode::OK);

    db.session(SessionOptions::single_statement())
        .await
        .unwrap()
        .execute_unprepared("DROP TABLE tasks")
        .await
        .unwrap();
    assert_eq!(get(&app, "/tasks").await, StatusCode::INTERNAL_SERVER_ERROR);
    let failed = lines_with("request failed");
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(failed[0].contains("ERROR"), "{}", failed[0]);
    assert!(
        failed[0].contains("method=GET uri=/tasks "),
        "{}",
        failed[0]
    );
    assert!(
        failed[0].contains(r#"relation "tasks" does not exist"#),
        "{}",
        failed[0]
    );

    terminate_connections(&t.name()).await;
    assert_eq!(
        get(&app, "/employees").await,
        StatusCode::SERVICE_UNAVAILABLE
    );
    let unavailable = lines_with("database unavailable");
    assert_eq!(unavailable.len(), 1, "{unavailable:?}");
    let line = &unavailable[0];
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains("method=GET uri=/employees "), "{line}");
    // The reason, then the driver's error it keeps as its source.
    assert!(
        line.contains("error=database unavailable: the server is going away: ")
            || line.contains("error=database unavailable: the connection broke: "),
        "{line}"
    );
    assert!(
        line.contains("Error: "),
        "the cause's source is missing: {line}"
    );

    let all = logged();
    for line in all.lines() {
        assert!(
            !line.contains(PASSWORD) && !line.contains(ENCODED) && !line.contains("s3cr"),
            "the password leaked: {line}"
        );
    }
    db.close().await;
}
