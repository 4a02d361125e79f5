//! Every HTTP error response, built in one place. Clients get a JSON
//! `{"detail": ...}`: a clear 4xx for their mistakes (FastAPI's shapes), a
//! generic 5xx for ours, with the cause in the log. A handler returns
//! [`ApiError`] (a db-core error converts into one with `?`); the types at
//! the end describe these answers in the OpenAPI document, for a handler's
//! `responses(...)`.

use std::sync::Arc;

use axum::Json;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use db_core::error::Retryable as _;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

/// One problem with the request, in FastAPI's shape.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = ValidationError)]
pub struct FieldError {
    /// Machine-readable kind, e.g. `missing`, `int_parsing`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Where: `["body", "parent_id"]`, `["query", "limit"]`, `["path", "task_id"]`.
    #[schema(value_type = Vec<String>)]
    pub loc: Vec<Value>,
    /// What is wrong, for people.
    pub msg: String,
    /// The value that was given, when there was one (`null` for a body
    /// that is missing, as FastAPI has it).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Value>, nullable = false)]
    pub input: Option<Value>,
}

impl FieldError {
    /// A problem of `kind` at `loc` (such as `&["body", "title"]`).
    pub fn new(
        kind: &'static str,
        loc: &[&str],
        msg: impl Into<String>,
        input: Option<&Value>,
    ) -> Self {
        FieldError {
            kind,
            loc: loc.iter().map(|part| Value::from(*part)).collect(),
            msg: msg.into(),
            input: input.cloned(),
        }
    }
}

/// An error answer.
#[derive(Debug)]
pub enum ApiError {
    /// 404 with a message such as `Task not found`.
    NotFound(String),
    /// 422 with the list of problems.
    Validation(Vec<FieldError>),
    /// 422: the database refused a value of the input (see
    /// [`db_core::Error::refused_value`]); the cause goes to the log.
    Refused(Vec<FieldError>, Cause),
    /// 413: the body is over the limit.
    TooLarge(usize),
    /// 400 with a message: the request could not be read (a body cut off
    /// before its announced length).
    BadRequest(String),
    /// 408: the client stopped sending the body (see `App::read_timeout`).
    TimedOut,
    /// 405 on a known path.
    MethodNotAllowed,
    /// 503: the database is unreachable or has no free connection.
    Unavailable(Cause),
    /// 503: a write reached the database, which never confirmed it: it may
    /// or may not have been saved.
    OutcomeUnknown(Cause),
    /// 500: a bug or an unexpected failure; the cause, when known, goes to
    /// the log.
    Internal(Option<Cause>),
}

/// Why a request failed on our side. It travels with the response (in its
/// extensions, never in its body) to the layer around each route, which logs it.
#[derive(Debug, Clone)]
pub struct Cause(Arc<dyn std::error::Error + Send + Sync>);

impl Cause {
    /// Keeps `error` for the log.
    pub fn new(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        Cause(Arc::new(error))
    }

    /// A cause known only by its description.
    pub fn text(description: String) -> Self {
        Cause::new(std::io::Error::other(description))
    }
}

/// Logs the cause of an answer to `method` `uri` that has one: a warning
/// for an unavailable database or a value it refused, an error otherwise.
/// Handlers only build answers; every answer passes here (see `layer.rs`).
pub(crate) fn log_failure(response: &Response, method: &Method, uri: &Uri) {
    if let Some(Cause(error)) = response.extensions().get::<Cause>() {
        // The whole chain: a database error's cause is its source.
        let error = db_core::error::Report(&**error);
        if response.status() == StatusCode::SERVICE_UNAVAILABLE {
            tracing::warn!(%method, %uri, %error, "database unavailable");
        } else if response.status().is_client_error() {
            tracing::warn!(%method, %uri, %error, "the database refused a value");
        } else {
            tracing::error!(%method, %uri, %error, "request failed");
        }
    }
}

impl From<db_core::Error> for ApiError {
    /// 503 when the database is unreachable or never confirmed a write, or
    /// when the transaction kept conflicting with concurrent ones (a
    /// serialization failure or deadlock left after the retries: the
    /// request was valid, and may succeed again); 422 naming the body's
    /// field (its column) when the database refused a value; 500 otherwise.
    /// The error itself goes to the log.
    fn from(e: db_core::Error) -> Self {
        if let Some(refused) = e.refused_value() {
            let column = refused.column.as_deref();
            let loc: Vec<&str> = ["body"].into_iter().chain(column).collect();
            let msg = format!("Value error, the value {}", refused.reason);
            ApiError::Refused(
                vec![FieldError::new("value_error", &loc, msg, None)],
                Cause::new(e),
            )
        } else if e.is_outcome_unknown() {
            ApiError::OutcomeUnknown(Cause::new(e))
        } else if e.is_unavailable() || e.is_retryable() {
            ApiError::Unavailable(Cause::new(e))
        } else {
            ApiError::Internal(Some(Cause::new(e)))
        }
    }
}

/// An error other than a validation error.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = HTTPError)]
pub struct Message {
    /// What went wrong, for people.
    detail: String,
}

/// Every problem found in the request.
#[derive(Debug, Serialize, ToSchema)]
#[schema(
    as = HTTPValidationError,
    example = json!({"detail": [
        {"type": "missing", "loc": ["body", "full_name"], "msg": "Field required"},
        {"type": "missing", "loc": ["body", "position"], "msg": "Field required"},
    ]})
)]
pub struct ValidationErrors {
    /// The problems, in the order the fields were read.
    detail: Vec<FieldError>,
}

fn with_cause(mut response: Response, cause: Option<Cause>) -> Response {
    if let Some(cause) = cause {
        response.extensions_mut().insert(cause);
    }
    response
}

fn message(status: StatusCode, detail: impl Into<String>) -> Response {
    let body = Message {
        detail: detail.into(),
    };
    (status, Json(body)).into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::NotFound(detail) => message(StatusCode::NOT_FOUND, detail),
            ApiError::Validation(detail) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                Json(ValidationErrors { detail }),
            )
                .into_response(),
            ApiError::Refused(detail, cause) => {
                with_cause(ApiError::Validation(detail).into_response(), Some(cause))
            }
            ApiError::TooLarge(limit) => {
                message(StatusCode::PAYLOAD_TOO_LARGE, too_large_detail(limit))
            }
            ApiError::BadRequest(detail) => message(StatusCode::BAD_REQUEST, detail),
            ApiError::TimedOut => message(StatusCode::REQUEST_TIMEOUT, TIMED_OUT),
            ApiError::MethodNotAllowed => {
                message(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed")
            }
            ApiError::Unavailable(cause) => with_cause(
                message(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Database unavailable, try again later",
                ),
                Some(cause),
            ),
            ApiError::OutcomeUnknown(cause) => with_cause(
                message(StatusCode::SERVICE_UNAVAILABLE, OUTCOME_UNKNOWN),
                Some(cause),
            ),
            ApiError::Internal(cause) => with_cause(
                message(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error"),
                cause,
            ),
        }
    }
}

/// The detail of a 413 for a body over `limit` bytes.
pub(crate) fn too_large_detail(limit: usize) -> String {
    format!("Request body too large (limit {limit} bytes)")
}

/// The detail of a 408 for a body that stopped coming.
const TIMED_OUT: &str = "Request Timeout: the body stopped coming";

/// The detail of a 503 for a write whose outcome is unknown.
const OUTCOME_UNKNOWN: &str = "Database unavailable: the write may or may not have been saved; read it back before retrying it";

/// The 503 every route that reads or writes the database can answer.
#[derive(Debug, utoipa::IntoResponses)]
#[response(
    status = 503,
    description = "The database is unreachable, has no free connection, or the request kept \
        conflicting with concurrent ones; try again later. \
        For a write whose confirmation never came (the database stopped answering while it \
        committed), the detail says that the write may or may not have been saved: read it \
        back before retrying it",
    example = json!({"detail": "Database unavailable, try again later"})
)]
#[expect(dead_code, reason = "only the OpenAPI document reads it")]
pub struct Unavailable(Message);

/// The 422 of every route that takes input (a body, a query or an id).
#[derive(Debug, utoipa::IntoResponses)]
#[response(status = 422, description = "Validation Error")]
#[expect(dead_code, reason = "only the OpenAPI document reads it")]
pub struct Invalid(ValidationErrors);
