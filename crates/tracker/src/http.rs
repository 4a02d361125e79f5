//! The Task Tracker's routes: the original's paths and JSON, and its error
//! shapes (`web::ApiError`).
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
//!
//! [`routes()`] gives them to a `web::App`, which serves them with the shared
//! layers and describes them in the application's OpenAPI document.
//!
//! Each handler's `#[utoipa::path]` attribute declares its method, path,
//! parameters and answers; [`routes()`] routes the handlers from those
//! declarations, and the document is built from the same ones.

use axum::Json;
use axum::extract::{RawQuery, State};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::routes;
use web::error::{Invalid, Message, Unavailable};
use web::input::{JsonObject, PathParam as Path};
use web::{ApiError, FieldError, Routes};

use crate::error::{Error, Kind};
use crate::input::{
    self, EmployeeCreate, EmployeeId, EmployeeUpdate, PageQuery, TaskCreate, TaskId, TaskUpdate,
};
use crate::service::{Employee, Task, Tracker};

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

/// The tracker's routes, for `web::App::service`.
pub fn routes(tracker: Tracker) -> Routes {
    Routes::new()
        .tag("employees", "People who can be assigned tasks")
        .tag(
            "tasks",
            "Tasks, each with an optional parent task and assignee",
        )
        .routes(routes!(list_employees, create_employee))
        .routes(routes!(get_employee, update_employee, delete_employee))
        .routes(routes!(employee_tasks))
        .routes(routes!(list_tasks, create_task))
        .routes(routes!(get_task, update_task, delete_task))
        .routes(routes!(subtree))
        .with_state(tracker)
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        match e {
            Error::NotFound(Kind::Employee) => ApiError::NotFound("Employee not found".to_owned()),
            Error::NotFound(Kind::Task) => ApiError::NotFound("Task not found".to_owned()),
            Error::Invalid { field, message } => ApiError::Validation(vec![FieldError::new(
                "value_error",
                &["body", field],
                message,
                None,
            )]),
            Error::Db(e) => e.into(),
        }
    }
}

/// The 404 of the routes that take an employee id.
#[derive(utoipa::IntoResponses)]
#[response(
    status = 404,
    description = "No employee has this id",
    example = json!({"detail": "Employee not found"})
)]
#[expect(dead_code, reason = "only the OpenAPI document reads it")]
struct EmployeeNotFound(Message);

/// The 404 of the routes that take a task id.
#[derive(utoipa::IntoResponses)]
#[response(
    status = 404,
    description = "No task has this id",
    example = json!({"detail": "Task not found"})
)]
#[expect(dead_code, reason = "only the OpenAPI document reads it")]
struct TaskNotFound(Message);

// --- employees ------------------------------------------------------------

fn employee_id(raw: &str) -> Result<i32, ApiError> {
    web::input::path_id(raw, "employee_id", "Employee not found")
}

fn task_id(raw: &str) -> Result<i32, ApiError> {
    web::input::path_id(raw, "task_id", "Task not found")
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
    body: Result<JsonObject, ApiError>,
) -> ApiResult<EmployeeOut> {
    // The id's and the body's problems together, as FastAPI lists them; an
    // id that no row can have is a 404 only for a valid body.
    let (id, input) = web::input::path_and_body(employee_id(&id), body, input::employee)?;
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
    body: Result<JsonObject, ApiError>,
) -> ApiResult<TaskOut> {
    let (id, input) = web::input::path_and_body(task_id(&id), body, input::task)?;
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
