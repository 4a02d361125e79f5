//! The Task Tracker HTTP API: the original's routes and JSON, with and
//! without the trailing slash, CORS open to any origin, one log line per
//! request, and JSON errors only.
//!
//! | route | answer |
//! | --- | --- |
//! | `POST /employees/` | the employee, with `"tasks": []` |
//! | `GET /employees/?skip&limit&after_id` | a page of employees |
//! | `GET`, `PUT`, `DELETE /employees/{id}/` | the employee |
//! | `GET /employees/{id}/tasks/` | the employee's tasks |
//! | `POST /tasks/` | the task |
//! | `GET /tasks/?skip&limit&after_id` | a page of tasks |
//! | `GET`, `PUT`, `DELETE /tasks/{id}/` | the task (DELETE removes its subtasks too) |
//! | `GET /tasks/{id}/subtree/` | every descendant of the task |
//! | `GET /health` | the process is up |
//! | `GET /ready` | the database answers a ping (503 if not) |
//! | `GET /openapi.json` | the OpenAPI 3.1 document of the routes above |
//! | `GET /docs`, `GET /redoc` | the document rendered by Swagger UI and by ReDoc |
//! | `GET /metrics` | Prometheus metrics, when [`serve`] is given [`Exposure::Api`] |
//!
//! Each handler's `#[utoipa::path]` attribute declares its method, path,
//! parameters and answers; [`router`] routes the handlers from those
//! declarations, and the document is built from the same ones.

mod docs;
mod error;
mod input;
mod layer;
mod metrics;

use std::future::Future;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{Method, Request};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router, ServiceExt};
use serde::Serialize;
use tokio::net::TcpListener;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{Any, CorsLayer};
use tower_http::normalize_path::NormalizePathLayer;
use tower_http::trace::{DefaultMakeSpan, DefaultOnResponse, TraceLayer};
use utoipa::ToSchema;
use utoipa_axum::routes;

pub use error::{ApiError, Cause, FieldError};
pub use input::{BODY_LIMIT, MAX_LIMIT};
pub use metrics::{InstallError, Metrics};

use crate::service::{Employee, Task, Tracker};
use docs::Api;
use error::{EmployeeNotFound, Invalid, TaskNotFound, Unavailable};
use input::{
    EmployeeCreate, EmployeeId, EmployeeUpdate, JsonObject, PageQuery, PathParam as Path,
    TaskCreate, TaskId, TaskUpdate,
};

/// An employee.
#[derive(Debug, Serialize, ToSchema)]
#[schema(
    as = EmployeeSchema,
    example = json!({"full_name": "Ann Lee", "position": "developer", "id": 1})
)]
struct EmployeeOut {
    /// Full name.
    full_name: String,
    /// Job title.
    position: String,
    /// The employee's id.
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

/// A task.
#[derive(Debug, Serialize, ToSchema)]
#[schema(
    as = TaskSchema,
    example = json!({
        "title": "Write the report", "parent_id": null, "assignee_id": null,
        "deadline": "2026-12-01", "status": "todo", "id": 1
    })
)]
struct TaskOut {
    /// Title.
    title: String,
    /// The parent task; `null` for a top-level task.
    #[schema(required)]
    parent_id: Option<i32>,
    /// The assigned employee; `null` when nobody is.
    #[schema(required)]
    assignee_id: Option<i32>,
    /// Due date; `null` when there is none.
    #[schema(required)]
    deadline: Option<chrono::NaiveDate>,
    /// Free-form status, e.g. `todo`.
    status: String,
    /// The task's id.
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

/// The routes and their documentation pages (and `/metrics` with
/// [`Exposure::Api`]), each behind the one layer that every answer passes:
/// it logs a 5xx answer's cause and, unless metrics are off, counts and
/// times the request under its route template. Without what [`serve`] adds
/// around the whole router: trailing-slash normalisation, CORS, the request
/// log and catching panics.
pub fn router(tracker: Tracker, exposure: &Exposure) -> Router {
    let db = tracker.db().clone();
    let mut app = Api::new()
        .routes(routes!(list_employees, create_employee))
        .routes(routes!(get_employee, update_employee, delete_employee))
        .routes(routes!(employee_tasks))
        .routes(routes!(list_tasks, create_task))
        .routes(routes!(get_task, update_task, delete_task))
        .routes(routes!(subtree))
        .routes(routes!(health))
        .routes(routes!(ready))
        .finish()
        .fallback(|| async { ApiError::NotFound("Not Found".to_owned()) })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .with_state(tracker);
    let metrics = match exposure {
        Exposure::Off => None,
        Exposure::Api(m) => {
            app = app.merge(metrics_route(*m, db));
            Some(m)
        }
        Exposure::Separate(m) => Some(m),
    };
    app.layer(layer::AnswerLayer::new(metrics.copied()))
}

/// Whether requests are measured, and where `/metrics` is served.
#[derive(Debug, Clone)]
pub enum Exposure {
    /// No metrics recorded.
    Off,
    /// Recorded, and served at `/metrics` on the API's listener.
    Api(Metrics),
    /// Recorded; served elsewhere (see [`serve_metrics`]).
    Separate(Metrics),
}

/// Serves the API on `listener` until `shutdown` completes, then stops
/// accepting, lets in-flight requests finish, and returns.
pub async fn serve(
    listener: TcpListener,
    tracker: Tracker,
    exposure: Exposure,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    if let Exposure::Api(m) | Exposure::Separate(m) = &exposure {
        m.spawn_upkeep();
    }
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
        .allow_headers(Any)
        .max_age(Duration::from_secs(600));
    // Around the whole router, once: `Router::layer` would wrap each route
    // in each of these, a boxed service more to clone on every request.
    let app = ServiceBuilder::new()
        // Normalising the path must happen before routing.
        .layer(NormalizePathLayer::trim_trailing_slash())
        .layer(cors)
        .map_response(|r: Response<_>| r.map(Body::new))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(DefaultMakeSpan::new().level(tracing::Level::INFO))
                .on_response(DefaultOnResponse::new().level(tracing::Level::INFO)),
        )
        .layer(CatchPanicLayer::custom(|_| {
            tracing::error!("a request handler panicked");
            ApiError::Internal(None).into_response()
        }))
        .service(router(tracker, &exposure));
    axum::serve(
        listener,
        ServiceExt::<Request<Body>>::into_make_service(app),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

fn metrics_route(m: Metrics, db: db_core::Db) -> Router {
    Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let db = db.clone();
            async move { metrics::answer(&m, &db).await }
        }),
    )
}

/// Serves only `/metrics` on `listener` (a listener apart from the API's,
/// which need not be public) until `shutdown` completes.
pub async fn serve_metrics(
    listener: TcpListener,
    metrics: Metrics,
    db: db_core::Db,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, metrics_route(metrics, db))
        .with_graceful_shutdown(shutdown)
        .await
}

/// The process is up.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"status": "ok"}))]
struct Health {
    /// Always `ok`.
    status: &'static str,
}

/// The database answers.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"status": "ready", "database": "sqlite"}))]
struct Ready {
    /// Always `ready`.
    status: &'static str,
    /// The backend: `postgres`, `mysql` or `sqlite`.
    database: &'static str,
}

/// Liveness: the process answers (the database is not asked)
#[utoipa::path(get, path = "/health", tag = "health", responses((status = 200, description = "The process is up", body = Health)))]
async fn health() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Readiness: the database answers a ping
#[utoipa::path(
    get,
    path = "/ready",
    tag = "health",
    responses((status = 200, description = "The database answers", body = Ready), Unavailable)
)]
async fn ready(State(tracker): State<Tracker>) -> ApiResult<Ready> {
    match tracker.db().ping().await {
        Ok(_) => Ok(Json(Ready {
            status: "ready",
            database: db_core::backend_name(tracker.db().backend()),
        })),
        Err(e) => Err(ApiError::Unavailable(Cause::new(e))),
    }
}

// --- employees ------------------------------------------------------------

fn employee_id(raw: &str) -> Result<i32, ApiError> {
    input::path_id(raw, "employee_id", "Employee not found")
}

fn task_id(raw: &str) -> Result<i32, ApiError> {
    input::path_id(raw, "task_id", "Task not found")
}

/// A new employee, with their (empty) task list.
#[derive(Debug, Serialize, ToSchema)]
#[schema(
    as = Employee,
    example = json!({"full_name": "Ann Lee", "position": "developer", "id": 1, "tasks": []})
)]
struct NewEmployeeOut {
    #[serde(flatten)]
    employee: EmployeeOut,
    /// The employee's tasks: none yet.
    #[schema(value_type = Vec<TaskOut>)]
    tasks: [TaskOut; 0],
}

/// Create an employee
#[utoipa::path(
    post,
    path = "/employees/",
    tag = "employees",
    request_body = EmployeeCreate,
    responses((status = 200, description = "The new employee", body = NewEmployeeOut), Invalid, Unavailable)
)]
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

/// List employees by id, a page at a time
#[utoipa::path(
    get,
    path = "/employees/",
    tag = "employees",
    params(PageQuery),
    responses((status = 200, description = "A page of employees", body = Vec<EmployeeOut>), Invalid, Unavailable)
)]
async fn list_employees(
    State(tracker): State<Tracker>,
    RawQuery(query): RawQuery,
) -> ApiResult<Vec<EmployeeOut>> {
    let page = input::page(query.as_deref())?;
    Ok(many(tracker.list_employees(page).await?))
}

/// Get an employee
#[utoipa::path(
    get,
    path = "/employees/{employee_id}/",
    tag = "employees",
    params(EmployeeId),
    responses((status = 200, description = "The employee", body = EmployeeOut), EmployeeNotFound, Invalid, Unavailable)
)]
async fn get_employee(State(tracker): State<Tracker>, Path(id): Path) -> ApiResult<EmployeeOut> {
    Ok(Json(tracker.employee(employee_id(&id)?).await?.into()))
}

/// Replace an employee's fields
#[utoipa::path(
    put,
    path = "/employees/{employee_id}/",
    tag = "employees",
    params(EmployeeId),
    request_body = EmployeeUpdate,
    responses((status = 200, description = "The employee, replaced", body = EmployeeOut), EmployeeNotFound, Invalid, Unavailable)
)]
async fn update_employee(
    State(tracker): State<Tracker>,
    Path(id): Path,
    JsonObject(body): JsonObject,
) -> ApiResult<EmployeeOut> {
    let id = employee_id(&id)?;
    let input = input::employee(&body)?;
    Ok(Json(tracker.update_employee(id, input).await?.into()))
}

/// Delete an employee; their tasks become unassigned
#[utoipa::path(
    delete,
    path = "/employees/{employee_id}/",
    tag = "employees",
    params(EmployeeId),
    responses((status = 200, description = "The deleted employee", body = EmployeeOut), EmployeeNotFound, Invalid, Unavailable)
)]
async fn delete_employee(State(tracker): State<Tracker>, Path(id): Path) -> ApiResult<EmployeeOut> {
    Ok(Json(
        tracker.delete_employee(employee_id(&id)?).await?.into(),
    ))
}

/// List the tasks assigned to an employee
#[utoipa::path(
    get,
    path = "/employees/{employee_id}/tasks/",
    tag = "employees",
    params(EmployeeId),
    responses((status = 200, description = "The employee's tasks, by id", body = Vec<TaskOut>), EmployeeNotFound, Invalid, Unavailable)
)]
async fn employee_tasks(State(tracker): State<Tracker>, Path(id): Path) -> ApiResult<Vec<TaskOut>> {
    Ok(many(tracker.employee_tasks(employee_id(&id)?).await?))
}

// --- tasks ----------------------------------------------------------------

/// Create a task
#[utoipa::path(
    post,
    path = "/tasks/",
    tag = "tasks",
    request_body = TaskCreate,
    responses((status = 200, description = "The new task", body = TaskOut), Invalid, Unavailable)
)]
async fn create_task(
    State(tracker): State<Tracker>,
    JsonObject(body): JsonObject,
) -> ApiResult<TaskOut> {
    Ok(Json(tracker.create_task(input::task(&body)?).await?.into()))
}

/// List tasks by id, a page at a time
#[utoipa::path(
    get,
    path = "/tasks/",
    tag = "tasks",
    params(PageQuery),
    responses((status = 200, description = "A page of tasks", body = Vec<TaskOut>), Invalid, Unavailable)
)]
async fn list_tasks(
    State(tracker): State<Tracker>,
    RawQuery(query): RawQuery,
) -> ApiResult<Vec<TaskOut>> {
    let page = input::page(query.as_deref())?;
    Ok(many(tracker.list_tasks(page).await?))
}

/// Get a task
#[utoipa::path(
    get,
    path = "/tasks/{task_id}/",
    tag = "tasks",
    params(TaskId),
    responses((status = 200, description = "The task", body = TaskOut), TaskNotFound, Invalid, Unavailable)
)]
async fn get_task(State(tracker): State<Tracker>, Path(id): Path) -> ApiResult<TaskOut> {
    Ok(Json(tracker.task(task_id(&id)?).await?.into()))
}

/// Replace a task's fields
#[utoipa::path(
    put,
    path = "/tasks/{task_id}/",
    tag = "tasks",
    params(TaskId),
    request_body = TaskUpdate,
    responses((status = 200, description = "The task, replaced", body = TaskOut), TaskNotFound, Invalid, Unavailable)
)]
async fn update_task(
    State(tracker): State<Tracker>,
    Path(id): Path,
    JsonObject(body): JsonObject,
) -> ApiResult<TaskOut> {
    let id = task_id(&id)?;
    let input = input::task(&body)?;
    Ok(Json(tracker.update_task(id, input).await?.into()))
}

/// Delete a task and its subtasks
#[utoipa::path(
    delete,
    path = "/tasks/{task_id}/",
    tag = "tasks",
    params(TaskId),
    responses((status = 200, description = "The deleted task", body = TaskOut), TaskNotFound, Invalid, Unavailable)
)]
async fn delete_task(State(tracker): State<Tracker>, Path(id): Path) -> ApiResult<TaskOut> {
    Ok(Json(tracker.delete_task(task_id(&id)?).await?.into()))
}

/// List every descendant of a task, by id
#[utoipa::path(
    get,
    path = "/tasks/{task_id}/subtree/",
    tag = "tasks",
    params(TaskId),
    responses((status = 200, description = "The descendants, by id", body = Vec<TaskOut>), TaskNotFound, Invalid, Unavailable)
)]
async fn subtree(State(tracker): State<Tracker>, Path(id): Path) -> ApiResult<Vec<TaskOut>> {
    Ok(many(tracker.subtree(task_id(&id)?).await?))
}
