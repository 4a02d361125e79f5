//! Reading requests the way the original's validation (pydantic v2, lax
//! mode) does where its front end depends on it: integers may come as JSON
//! numbers or as strings of digits (`<select>` values), dates as
//! `YYYY-MM-DD` strings (`<input type=date>`). Anything else is a 422 that
//! names the field.
//!
//! The types at the end describe what these parsers read, for the OpenAPI
//! document; the tests check the document against the parsers.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use chrono::NaiveDate;
use serde_json::{Map, Value};
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, FieldError};
use crate::service::{EmployeeInput, Page, TaskInput};

/// Largest request body accepted.
pub const BODY_LIMIT: usize = 64 * 1024;

/// Largest page a list returns.
pub const MAX_LIMIT: u64 = 1000;

/// A JSON object body, read with a size limit.
#[derive(Debug)]
pub struct JsonObject(pub Map<String, Value>);

impl<S: Send + Sync> FromRequest<S> for JsonObject {
    type Rejection = ApiError;

    async fn from_request(req: Request, _: &S) -> Result<Self, ApiError> {
        let bytes: Bytes = axum::body::to_bytes(req.into_body(), BODY_LIMIT)
            .await
            .map_err(|_| ApiError::TooLarge(BODY_LIMIT))?;
        let value: Value = serde_json::from_slice(&bytes).map_err(|e| {
            ApiError::Validation(vec![FieldError::new(
                "json_invalid",
                &["body"],
                format!("JSON decode error: {e}"),
                None,
            )])
        })?;
        match value {
            Value::Object(map) => Ok(JsonObject(map)),
            other => Err(ApiError::Validation(vec![FieldError::new(
                "model_attributes_type",
                &["body"],
                "Input should be a valid dictionary or object to extract fields from",
                Some(&other),
            )])),
        }
    }
}

/// Collects the problems of one body, so all of them are reported at once.
struct Fields<'a> {
    body: &'a Map<String, Value>,
    errors: Vec<FieldError>,
}

impl<'a> Fields<'a> {
    fn new(body: &'a Map<String, Value>) -> Self {
        Fields {
            body,
            errors: Vec::new(),
        }
    }

    fn fail(
        &mut self,
        kind: &'static str,
        field: &str,
        msg: impl Into<String>,
        input: Option<&Value>,
    ) {
        self.errors
            .push(FieldError::new(kind, &["body", field], msg, input));
    }

    /// A required string of at most `max` characters, without NUL (which
    /// PostgreSQL cannot store).
    fn string(&mut self, field: &str, max: usize) -> String {
        match self.body.get(field) {
            None => self.fail("missing", field, "Field required", None),
            Some(Value::String(s)) if s.chars().count() > max => self.fail(
                "string_too_long",
                field,
                format!("String should have at most {max} characters"),
                None,
            ),
            Some(Value::String(s)) if s.contains('\0') => self.fail(
                "string_nul",
                field,
                "String should not contain NUL characters",
                None,
            ),
            Some(Value::String(s)) => return s.clone(),
            Some(other) => self.fail(
                "string_type",
                field,
                "Input should be a valid string",
                Some(other),
            ),
        }
        String::new()
    }

    /// An optional id: a JSON integer, a float without a fraction, or a
    /// string of digits (surrounding spaces allowed); `null` or absent is none.
    fn id(&mut self, field: &str) -> Option<i32> {
        let value = self.body.get(field)?;
        match lax_int(value) {
            Ok(None) => None,
            Ok(Some(n)) => match i32::try_from(n) {
                Ok(id) => Some(id),
                Err(_) => {
                    self.fail(
                        "int_range",
                        field,
                        format!(
                            "Input should be an id between {} and {}",
                            i32::MIN,
                            i32::MAX
                        ),
                        Some(value),
                    );
                    None
                }
            },
            Err((kind, msg)) => {
                self.fail(kind, field, msg, Some(value));
                None
            }
        }
    }

    /// An optional `YYYY-MM-DD` date; `null` or absent is none.
    fn date(&mut self, field: &str) -> Option<NaiveDate> {
        let value = self.body.get(field)?;
        match value {
            Value::Null => None,
            Value::String(s) => match parse_date(s) {
                Some(date) => Some(date),
                None => {
                    self.fail(
                        "date_parsing",
                        field,
                        "Input should be a valid date in the format YYYY-MM-DD",
                        Some(value),
                    );
                    None
                }
            },
            other => {
                self.fail(
                    "date_type",
                    field,
                    "Input should be a valid date",
                    Some(other),
                );
                None
            }
        }
    }

    fn finish<T>(self, value: T) -> Result<T, ApiError> {
        if self.errors.is_empty() {
            Ok(value)
        } else {
            Err(ApiError::Validation(self.errors))
        }
    }
}

fn parse_date(s: &str) -> Option<NaiveDate> {
    // Exactly YYYY-MM-DD: chrono alone would also take "2026-1-5".
    let bytes = s.as_bytes();
    let shaped = bytes.len() == 10
        && bytes[4] == b'-'
        && bytes[7] == b'-'
        && bytes
            .iter()
            .enumerate()
            .all(|(i, b)| i == 4 || i == 7 || b.is_ascii_digit());
    if !shaped {
        return None;
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()
}

/// pydantic's lax integer: `Ok(None)` for null.
fn lax_int(value: &Value) -> Result<Option<i64>, (&'static str, &'static str)> {
    const PARSING: (&str, &str) = (
        "int_parsing",
        "Input should be a valid integer, unable to parse string as an integer",
    );
    match value {
        Value::Null => Ok(None),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Ok(Some(i))
            } else if let Some(f) = n.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15) {
                Ok(Some(f as i64))
            } else if n.is_f64() {
                Err((
                    "int_from_float",
                    "Input should be a valid integer, got a number with a fractional part",
                ))
            } else {
                Err((
                    "int_range",
                    "Input should be an integer that fits in 64 bits",
                ))
            }
        }
        Value::String(s) => parse_int_text(s).map(Some).ok_or(PARSING),
        _ => Err(("int_type", "Input should be a valid integer")),
    }
}

/// An optionally signed run of ASCII digits, surrounding spaces allowed.
fn parse_int_text(s: &str) -> Option<i64> {
    let t = s.trim();
    let digits = t.strip_prefix(['-', '+']).unwrap_or(t);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    t.parse().ok()
}

/// A path parameter as text; a segment that is not valid UTF-8 is a 422.
#[derive(Debug)]
pub struct PathParam(pub String);

impl<S: Send + Sync> FromRequestParts<S> for PathParam {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Path::<String>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(PathParam(value)),
            Err(rejection) => Err(ApiError::Validation(vec![FieldError::new(
                "path_invalid",
                &["path"],
                rejection.body_text(),
                None,
            )])),
        }
    }
}

/// An employee body.
pub fn employee(body: &Map<String, Value>) -> Result<EmployeeInput, ApiError> {
    let mut f = Fields::new(body);
    let input = EmployeeInput {
        full_name: f.string("full_name", 255),
        position: f.string("position", 255),
    };
    f.finish(input)
}

/// A task body.
pub fn task(body: &Map<String, Value>) -> Result<TaskInput, ApiError> {
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

/// An id from the path: 422 if it is not an integer, 404 if it is one that
/// no row can have (ids are 1 to 2^31-1).
pub fn path_id(raw: &str, name: &str, not_found: &str) -> Result<i32, ApiError> {
    let n = parse_int_text(raw).ok_or_else(|| {
        ApiError::Validation(vec![FieldError::new(
            "int_parsing",
            &["path", name],
            "Input should be a valid integer, unable to parse string as an integer",
            Some(&Value::from(raw)),
        )])
    })?;
    i32::try_from(n)
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| ApiError::NotFound(not_found.to_owned()))
}

/// `skip`, `limit` and `after_id` from the query string (defaults 0, 100 and none).
pub fn page(query: Option<&str>) -> Result<Page, ApiError> {
    let mut page = Page::default();
    let mut errors = Vec::new();
    for (key, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        let max = match &*key {
            "skip" => i64::MAX as u64,
            "limit" => MAX_LIMIT,
            "after_id" => i32::MAX as u64,
            _ => continue,
        };
        let loc = ["query", &*key];
        match parse_int_text(&value) {
            None => errors.push(FieldError::new(
                "int_parsing",
                &loc,
                "Input should be a valid integer, unable to parse string as an integer",
                Some(&Value::from(&*value)),
            )),
            Some(n) if n < 0 => errors.push(FieldError::new(
                "greater_than_equal",
                &loc,
                "Input should be greater than or equal to 0",
                Some(&Value::from(&*value)),
            )),
            Some(n) if n as u64 > max => errors.push(FieldError::new(
                "less_than_equal",
                &loc,
                format!("Input should be less than or equal to {max}"),
                Some(&Value::from(&*value)),
            )),
            // In range: `after_id` is at most `i32::MAX`.
            Some(n) => match &*key {
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
        pub(super) struct $create { $($fields)* }

        #[derive(ToSchema)]
        $(#[$meta])*
        #[expect(dead_code, reason = "only the OpenAPI document reads it")]
        pub(super) struct $update { $($fields)* }
    };
}

body_schema! {
    /// An employee's fields. A replace sets both.
    #[schema(example = json!({"full_name": "Ann Lee", "position": "developer"}))]
    EmployeeCreate, EmployeeUpdate {
        /// Full name.
        #[schema(max_length = 255)]
        full_name: String,
        /// Job title.
        #[schema(max_length = 255)]
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
        #[schema(max_length = 255)]
        title: String,
        /// Free-form status, e.g. `todo`.
        #[schema(max_length = 64)]
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
pub(super) struct PageQuery {
    /// Rows to skip.
    #[param(default = 0, minimum = 0)]
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

/// An employee id in the path, read by [`path_id`].
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[expect(dead_code, reason = "only the OpenAPI document reads it")]
pub(super) struct EmployeeId {
    /// The employee's id.
    employee_id: i32,
}

/// A task id in the path, read by [`path_id`].
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[expect(dead_code, reason = "only the OpenAPI document reads it")]
pub(super) struct TaskId {
    /// The task's id.
    task_id: i32,
}
