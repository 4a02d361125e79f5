//! The Task Tracker HTTP API: the original's routes and JSON, with and
//! without the trailing slash, CORS open to any origin, one log line per
//! request, and JSON errors only.
//!
//! | route | answer |
//! | --- | --- |
//! | `POST /employees/` | the employee, with `"tasks": []` |
//! | `GET /employees/?skip&limit` | a page of employees |
//! | `GET`, `PUT`, `DELETE /employees/{id}/` | the employee |
//! | `GET /employees/{id}/tasks/` | the employee's tasks |
//! | `POST /tasks/` | the task |
//! | `GET /tasks/?skip&limit` | a page of tasks |
//! | `GET`, `PUT`, `DELETE /tasks/{id}/` | the task (DELETE removes its subtasks too) |
//! | `GET /tasks/{id}/subtree/` | every descendant of the task |
//! | `GET /health` | the process is up |
//! | `GET /ready` | the database answers a ping (503 if not) |

mod error;
mod input;

use std::future::Future;
use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::http::{Method, Request, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router, ServiceExt};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tower::Layer;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{Any, CorsLayer};
use tower_http::normalize_path::NormalizePathLayer;
use tower_http::trace::{DefaultMakeSpan, DefaultOnResponse, TraceLayer};

pub use error::{ApiError, FieldError};
pub use input::{BODY_LIMIT, MAX_LIMIT};

use crate::service::{Employee, Task, Tracker};
use input::{JsonObject, PathParam as Path};

/// An employee as the API shows it.
#[derive(Debug, Serialize)]
struct EmployeeOut {
    full_name: String,
    position: String,
    id: i32,
}

impl From<Employee> for EmployeeOut {
    fn from(e: Employee) -> Self {
        EmployeeOut {
            full_name: e.full_name,
            position: e.position,
            id: e.id,
        }
    }
}

/// A task as the API shows it.
#[derive(Debug, Serialize)]
struct TaskOut {
    title: String,
    parent_id: Option<i32>,
    assignee_id: Option<i32>,
    deadline: Option<chrono::NaiveDate>,
    status: String,
    id: i32,
}

impl From<Task> for TaskOut {
    fn from(t: Task) -> Self {
        TaskOut {
            title: t.title,
            parent_id: t.parent_id,
            assignee_id: t.assignee_id,
            deadline: t.deadline,
            status: t.status,
            id: t.id,
        }
    }
}

type ApiResult<T> = Result<Json<T>, ApiError>;

fn many<T, O: From<T>>(rows: Vec<T>) -> Json<Vec<O>> {
    Json(rows.into_iter().map(O::from).collect())
}

/// The routes, without the trailing-slash normalisation and CORS that
/// [`serve`] adds.
pub fn router(tracker: Tracker) -> Router {
    Router::new()
        .route("/employees", get(list_employees).post(create_employee))
        .route(
            "/employees/{employee_id}",
            get(get_employee)
                .put(update_employee)
                .delete(delete_employee),
        )
        .route("/employees/{employee_id}/tasks", get(employee_tasks))
        .route("/tasks", get(list_tasks).post(create_task))
        .route(
            "/tasks/{task_id}",
            get(get_task).put(update_task).delete(delete_task),
        )
        .route("/tasks/{task_id}/subtree", get(subtree))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .fallback(|| async { ApiError::NotFound("Not Found".to_owned()) })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .with_state(tracker)
}

/// Serves the API on `listener` until `shutdown` completes, then stops
/// accepting, lets in-flight requests finish, and returns.
pub async fn serve(
    listener: TcpListener,
    tracker: Tracker,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
        .allow_headers(Any)
        .max_age(Duration::from_secs(600));
    let app = router(tracker)
        .layer(CatchPanicLayer::custom(|_| {
            tracing::error!("a request handler panicked");
            ApiError::Internal.into_response()
        }))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(DefaultMakeSpan::new().level(tracing::Level::INFO))
                .on_response(DefaultOnResponse::new().level(tracing::Level::INFO)),
        )
        .layer(cors);
    // Normalising the path must happen before routing, so it wraps the router.
    let app = NormalizePathLayer::trim_trailing_slash().layer(app);
    axum::serve(
        listener,
        ServiceExt::<Request<axum::body::Body>>::into_make_service(app),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

async fn health() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

async fn ready(State(tracker): State<Tracker>) -> (StatusCode, Json<Value>) {
    match tracker.db().ping().await {
        Ok(_) => (
            StatusCode::OK,
            Json(
                json!({ "status": "ready", "database": db_core::backend_name(tracker.db().backend()) }),
            ),
        ),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({ "detail": "Database unavailable, try again later" })),
            )
        }
    }
}

// --- employees ------------------------------------------------------------

fn employee_id(raw: &str) -> Result<i32, ApiError> {
    input::path_id(raw, "employee_id", "Employee not found")
}

fn task_id(raw: &str) -> Result<i32, ApiError> {
    input::path_id(raw, "task_id", "Task not found")
}

/// A new employee as the original answers it: with its (empty) task list.
#[derive(Debug, Serialize)]
struct NewEmployeeOut {
    #[serde(flatten)]
    employee: EmployeeOut,
    tasks: [TaskOut; 0],
}

async fn create_employee(
    State(tracker): State<Tracker>,
    JsonObject(body): JsonObject,
) -> ApiResult<NewEmployeeOut> {
    let employee = tracker.create_employee(input::employee(&body)?).await?;
    Ok(Json(NewEmployeeOut {
        employee: employee.into(),
        tasks: [],
    }))
}

async fn list_employees(
    State(tracker): State<Tracker>,
    RawQuery(query): RawQuery,
) -> ApiResult<Vec<EmployeeOut>> {
    let page = input::page(query.as_deref())?;
    Ok(many(tracker.list_employees(page).await?))
}

async fn get_employee(State(tracker): State<Tracker>, Path(id): Path) -> ApiResult<EmployeeOut> {
    Ok(Json(tracker.employee(employee_id(&id)?).await?.into()))
}

async fn update_employee(
    State(tracker): State<Tracker>,
    Path(id): Path,
    JsonObject(body): JsonObject,
) -> ApiResult<EmployeeOut> {
    let id = employee_id(&id)?;
    let input = input::employee(&body)?;
    Ok(Json(tracker.update_employee(id, input).await?.into()))
}

async fn delete_employee(State(tracker): State<Tracker>, Path(id): Path) -> ApiResult<EmployeeOut> {
    Ok(Json(
        tracker.delete_employee(employee_id(&id)?).await?.into(),
    ))
}

async fn employee_tasks(State(tracker): State<Tracker>, Path(id): Path) -> ApiResult<Vec<TaskOut>> {
    Ok(many(tracker.employee_tasks(employee_id(&id)?).await?))
}

// --- tasks ----------------------------------------------------------------

async fn create_task(
    State(tracker): State<Tracker>,
    JsonObject(body): JsonObject,
) -> ApiResult<TaskOut> {
    Ok(Json(tracker.create_task(input::task(&body)?).await?.into()))
}

async fn list_tasks(
    State(tracker): State<Tracker>,
    RawQuery(query): RawQuery,
) -> ApiResult<Vec<TaskOut>> {
    let page = input::page(query.as_deref())?;
    Ok(many(tracker.list_tasks(page).await?))
}

async fn get_task(State(tracker): State<Tracker>, Path(id): Path) -> ApiResult<TaskOut> {
    Ok(Json(tracker.task(task_id(&id)?).await?.into()))
}

async fn update_task(
    State(tracker): State<Tracker>,
    Path(id): Path,
    JsonObject(body): JsonObject,
) -> ApiResult<TaskOut> {
    let id = task_id(&id)?;
    let input = input::task(&body)?;
    Ok(Json(tracker.update_task(id, input).await?.into()))
}

async fn delete_task(State(tracker): State<Tracker>, Path(id): Path) -> ApiResult<TaskOut> {
    Ok(Json(tracker.delete_task(task_id(&id)?).await?.into()))
}

async fn subtree(State(tracker): State<Tracker>, Path(id): Path) -> ApiResult<Vec<TaskOut>> {
    Ok(many(tracker.subtree(task_id(&id)?).await?))
}
