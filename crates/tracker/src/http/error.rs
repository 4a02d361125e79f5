//! Every HTTP error response, built in one place. Clients get a JSON
//! `{"detail": ...}`: a clear 4xx for their mistakes (FastAPI's shapes, so the
//! original front end reads them), a generic 5xx for ours, with the cause in
//! the log.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;

use crate::error::{Error, Kind};

/// One validation problem, as FastAPI reports it.
#[derive(Debug, Clone, Serialize)]
pub struct FieldError {
    /// Machine-readable kind, e.g. `missing`, `int_parsing`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Where: `["body", "parent_id"]`, `["query", "limit"]`, `["path", "task_id"]`.
    pub loc: Vec<Value>,
    /// What is wrong, for people.
    pub msg: String,
    /// The value that was given, when there was one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input: Option<Value>,
}

impl FieldError {
    pub(crate) fn new(
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
    /// 413: the body is over the limit.
    TooLarge(usize),
    /// 405 on a known path.
    MethodNotAllowed,
    /// 503: the database is unreachable or has no free connection.
    Unavailable,
    /// 500: a bug or an unexpected database failure (details in the log).
    Internal,
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
            Error::Db(e) if e.is_unavailable() => {
                tracing::warn!(error = %e, "database unavailable");
                ApiError::Unavailable
            }
            Error::Db(e) => {
                tracing::error!(error = %e, "request failed");
                ApiError::Internal
            }
        }
    }
}

impl From<db_core::Error> for ApiError {
    fn from(e: db_core::Error) -> Self {
        Error::Db(e).into()
    }
}

#[derive(Serialize)]
struct Detail<T: Serialize> {
    detail: T,
}

fn answer<T: Serialize>(status: StatusCode, detail: T) -> Response {
    (status, Json(Detail { detail })).into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::NotFound(message) => answer(StatusCode::NOT_FOUND, message),
            ApiError::Validation(errors) => answer(StatusCode::UNPROCESSABLE_ENTITY, errors),
            ApiError::TooLarge(limit) => answer(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("Request body too large (limit {limit} bytes)"),
            ),
            ApiError::MethodNotAllowed => {
                answer(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed")
            }
            ApiError::Unavailable => answer(
                StatusCode::SERVICE_UNAVAILABLE,
                "Database unavailable, try again later",
            ),
            ApiError::Internal => {
                answer(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error")
            }
        }
    }
}
