//! Reading the tracker's bodies and queries with `web::input`, as the
//! original's validation (pydantic v2, lax mode) does, and the types that
//! describe them in the OpenAPI document; the tests check the document
//! against the parsers.

use chrono::NaiveDate;
use serde_json::{Map, Value};
use utoipa::{IntoParams, ToSchema};
use web::input::{Fields, parse_int_text};
use web::{ApiError, FieldError};

use crate::service::{EmployeeInput, Page, TaskInput};

/// Largest page a list returns.
pub(crate) const MAX_LIMIT: u64 = 1000;

/// An employee body.
pub(crate) fn employee(body: &Map<String, Value>) -> Result<EmployeeInput, ApiError> {
    let mut f = Fields::new(body);
    let input = EmployeeInput {
        full_name: f.string("full_name", 255),
        position: f.string("position", 255),
    };
    f.finish(input)
}

/// A task body.
pub(crate) fn task(body: &Map<String, Value>) -> Result<TaskInput, ApiError> {
    let mut f = Fields::new(body);
    let input = TaskInput {
        title: f.string("title", 255),
        status: f.string("status", 64),
        parent_id: f.id("parent_id"),
        assignee_id: f.id("assignee_id"),
        deadline: f.date("deadline"),
    };
    f.finish(input)
}

/// `skip`, `limit` and `after_id` from the query string (defaults 0, 100 and
/// none). A parameter given more than once is read from its last value, as
/// FastAPI reads it.
pub(crate) fn page(query: Option<&str>) -> Result<Page, ApiError> {
    let mut page = Page::default();
    let mut errors = Vec::new();
    let pairs: Vec<_> = url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()).collect();
    for (key, max) in [
        ("skip", i64::MAX as u64),
        ("limit", MAX_LIMIT),
        ("after_id", i32::MAX as u64),
    ] {
        let Some((_, value)) = pairs.iter().rev().find(|(k, _)| k == key) else {
            continue;
        };
        let loc = ["query", key];
        match parse_int_text(value) {
            None => errors.push(FieldError::new(
                "int_parsing",
                &loc,
                "Input should be a valid integer, unable to parse string as an integer",
                Some(&Value::from(&**value)),
            )),
            Some(n) if n < 0 => errors.push(FieldError::new(
                "greater_than_equal",
                &loc,
                "Input should be greater than or equal to 0",
                Some(&Value::from(&**value)),
            )),
            Some(n) if n > i128::from(max) => errors.push(FieldError::new(
                "less_than_equal",
                &loc,
                format!("Input should be less than or equal to {max}"),
                Some(&Value::from(&**value)),
            )),
            // In range: `after_id` is at most `i32::MAX`.
            Some(n) => match key {
                "skip" => page.skip = n as u64,
                "limit" => page.limit = n as u64,
                _ => page.after_id = Some(n as i32),
            },
        }
    }
    if errors.is_empty() {
        Ok(page)
    } else {
        Err(ApiError::Validation(errors))
    }
}

/// Declares the schema of a body under the names the original gives it for
/// create and for replace (the two take the same fields).
macro_rules! body_schema {
    ($(#[$meta:meta])* $create:ident, $update:ident { $($fields:tt)* }) => {
        #[derive(ToSchema)]
        $(#[$meta])*
        #[expect(dead_code, reason = "only the OpenAPI document reads it")]
        pub(crate) struct $create { $($fields)* }

        #[derive(ToSchema)]
        $(#[$meta])*
        #[expect(dead_code, reason = "only the OpenAPI document reads it")]
        pub(crate) struct $update { $($fields)* }
    };
}

body_schema! {
    /// An employee's fields. A replace sets both.
    #[schema(example = json!({"full_name": "Ann Lee", "position": "developer"}))]
    EmployeeCreate, EmployeeUpdate {
        /// Full name.
        #[schema(max_length = 255, pattern = "^[^\\x00]*$")]
        full_name: String,
        /// Job title.
        #[schema(max_length = 255, pattern = "^[^\\x00]*$")]
        position: String,
    }
}

body_schema! {
    /// A task's fields. A replace sets every field: one left out becomes
    /// `null`. Ids may also be given as strings of digits.
    #[schema(example = json!({
        "title": "Write the report", "status": "todo",
        "parent_id": null, "assignee_id": null, "deadline": "2026-12-01"
    }))]
    TaskCreate, TaskUpdate {
        /// Title.
        #[schema(max_length = 255, pattern = "^[^\\x00]*$")]
        title: String,
        /// Free-form status, e.g. `todo`.
        #[schema(max_length = 64, pattern = "^[^\\x00]*$")]
        status: String,
        /// The parent task, if this is a subtask; it must exist and must not
        /// be the task itself or one of its subtasks.
        parent_id: Option<i32>,
        /// The employee assigned, if any; they must exist.
        assignee_id: Option<i32>,
        /// Due date.
        deadline: Option<NaiveDate>,
    }
}

/// The page of a list: `skip`, `limit` and `after_id`, read by [`page`].
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[expect(dead_code, reason = "only the OpenAPI document reads it")]
pub(crate) struct PageQuery {
    /// Rows to skip.
    #[param(default = 0, minimum = 0, maximum = 9223372036854775807_i64)]
    skip: Option<u64>,
    /// Rows to return at most.
    // The bounds are literals (as the attribute needs); a test tries them
    // against `page`, whose upper bound is `MAX_LIMIT`.
    #[param(default = 100, minimum = 0, maximum = 1000)]
    limit: Option<u64>,
    /// Only rows with a larger id: pass the last id of the previous page to
    /// get the next one (keyset paging, as fast at any depth); `skip` counts
    /// from there. Not in the original API.
    #[param(minimum = 0, maximum = 2147483647)]
    after_id: Option<i32>,
}

/// An employee id in the path, read by `web::input::path_id`.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[expect(dead_code, reason = "only the OpenAPI document reads it")]
pub(crate) struct EmployeeId {
    /// The employee's id.
    employee_id: i32,
}

/// A task id in the path, read by `web::input::path_id`.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[expect(dead_code, reason = "only the OpenAPI document reads it")]
pub(crate) struct TaskId {
    /// The task's id.
    task_id: i32,
}
