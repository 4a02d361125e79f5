//! What the reference servers of `just bench-http` share: the tracker's JSON
//! for a task and its error bodies, and how the axum-served ones run.
//!
//! Three servers answer `GET /tasks/{id}/` with the tracker's exact bytes,
//! each the way its stack is written without this project:
//! `seaorm-server` (axum and SeaORM with default `ConnectOptions`,
//! `Entity::find_by_id`), `sqlx-server` (axum and a default sqlx `PgPool`,
//! `query_as`) and `limit-server` (tokio-postgres, pipelined on two shared
//! connections: what the driver allows). An id that is not a 32-bit integer
//! gets a 404 from them where the tracker answers 422.

use std::net::SocketAddr;

use axum::Router;
use axum::body::Body;
use axum::handler::Handler;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use axum::routing::get;
use chrono::NaiveDate;
use serde::Serialize;
use tokio::net::TcpListener;

/// A task by id: the columns in the order [`TaskJson::new`] takes them.
pub const SELECT_TASK: &str =
    "SELECT id, title, parent_id, assignee_id, deadline, status FROM tasks WHERE id = $1";

/// The tracker's 404 body for a missing task.
const TASK_NOT_FOUND: &[u8] = br#"{"detail":"Task not found"}"#;
/// The tracker's 404 body for a path it does not route.
const NOT_FOUND: &[u8] = br#"{"detail":"Not Found"}"#;
const INTERNAL: &[u8] = br#"{"detail":"Internal Server Error"}"#;

/// A task as the tracker writes it: same fields, same order.
#[derive(Debug, Serialize)]
pub struct TaskJson<'a> {
    title: &'a str,
    parent_id: Option<i32>,
    assignee_id: Option<i32>,
    deadline: Option<NaiveDate>,
    status: &'a str,
    id: i32,
}

impl<'a> TaskJson<'a> {
    /// The task with these columns, in [`SELECT_TASK`]'s order.
    pub fn new(
        id: i32,
        title: &'a str,
        parent_id: Option<i32>,
        assignee_id: Option<i32>,
        deadline: Option<NaiveDate>,
        status: &'a str,
    ) -> TaskJson<'a> {
        TaskJson {
            title,
            parent_id,
            assignee_id,
            deadline,
            status,
            id,
        }
    }

    /// The task of an entity model.
    pub fn from_model(task: &'a entity::tasks::Model) -> TaskJson<'a> {
        TaskJson {
            title: &task.title,
            parent_id: task.parent_id,
            assignee_id: task.assignee_id,
            deadline: task.deadline,
            status: &task.status,
            id: task.id,
        }
    }
}

/// A JSON answer.
fn json(status: StatusCode, body: impl Into<Body>) -> Response {
    let mut response = Response::new(body.into());
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// The tracker's answer to a path it does not route (and, here, to an id
/// that is not a 32-bit integer).
pub fn not_found() -> Response {
    json(StatusCode::NOT_FOUND, NOT_FOUND)
}

/// The tracker's answer for the task `found` (its 404 when there is none),
/// or a 500 when the query failed.
pub fn task_answer<E>(found: Result<Option<TaskJson<'_>>, E>) -> Response {
    match found {
        Ok(Some(task)) => match serde_json::to_vec(&task) {
            Ok(body) => json(StatusCode::OK, body),
            Err(_) => json(StatusCode::INTERNAL_SERVER_ERROR, INTERNAL),
        },
        Ok(None) => json(StatusCode::NOT_FOUND, TASK_NOT_FOUND),
        Err(_) => json(StatusCode::INTERNAL_SERVER_ERROR, INTERNAL),
    }
}

/// The routes of every reference server: `task` answers `GET /tasks/{id}/`,
/// with or without the trailing slash; any other path gets the tracker's
/// 404.
pub fn router<H, T, S>(task: H, state: S) -> Router
where
    H: Handler<T, S>,
    T: 'static,
    S: Clone + Send + Sync + 'static,
{
    Router::new()
        .route("/tasks/{id}/", get(task.clone()))
        .route("/tasks/{id}", get(task))
        .fallback(|| async { not_found() })
        .with_state(state)
}

/// Serves `app` on `addr` with `axum::serve`, as an axum application does,
/// after printing `listening on ADDR` on standard output; stops on SIGINT
/// or SIGTERM.
pub async fn serve(addr: SocketAddr, app: Router) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    println!("listening on {}", listener.local_addr()?);
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate.recv() => {}
            }
        })
        .await
}
