//! Reading requests: extractors whose rejections are the `{"detail": …}`
//! 422, 413, 408 and 400 answers, and [`Fields`], which reads a JSON object's fields
//! the way pydantic v2 does in lax mode (FastAPI's validation): integers may
//! come as JSON numbers or as strings of digits (`<select>` values), dates as
//! `YYYY-MM-DD` strings (`<input type=date>`). Every problem of a body is
//! reported at once, each a 422 entry that names its field.
//!
//! Each parser's limits are the ones to declare in the OpenAPI document:
//! [`Fields::string`] refuses NUL characters, which `pattern = "^[^\\x00]*$"`
//! ([`NO_NUL`]) states.

use std::error::Error;

use axum::body::Bytes;
use axum::extract::path::ErrorKind;
use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use chrono::{Datelike as _, NaiveDate};
use http_body_util::LengthLimitError;
use serde_json::{Map, Value};
use tower_http::timeout::TimeoutError;

use crate::error::{ApiError, FieldError};

/// The pattern that states, in the OpenAPI document, that a string may not
/// contain NUL (which [`Fields::string`] refuses, as PostgreSQL cannot store
/// it): `#[schema(pattern = "^[^\\x00]*$")]`.
pub const NO_NUL: &str = "^[^\\x00]*$";

/// Largest request body accepted.
pub const BODY_LIMIT: usize = 64 * 1024;

/// A JSON object body, read with a size limit. As in FastAPI, an empty body
/// is a missing one, and the body is read as JSON when the request has no
/// `Content-Type` or a JSON one (`application/json`, `application/…+json`);
/// with another, it is not an object (422 at `body`). A handler that also
/// checks a path takes `Result<JsonObject, ApiError>` and answers with
/// [`path_and_body`], so that a bad path and a bad body are named together.
#[derive(Debug)]
pub struct JsonObject(pub Map<String, Value>);

/// Whether a `Content-Type` value is JSON: `application/json` or
/// `application/…+json`, in any case, with any parameters.
fn is_json(content_type: &[u8]) -> bool {
    let essence = content_type
        .split(|&b| b == b';')
        .next()
        .unwrap_or_default();
    match essence.trim_ascii().split_at_checked(b"application/".len()) {
        Some((kind, subtype)) if kind.eq_ignore_ascii_case(b"application/") => {
            let end = &subtype[subtype.len().saturating_sub(5)..];
            subtype.eq_ignore_ascii_case(b"json") || end.eq_ignore_ascii_case(b"+json")
        }
        _ => false,
    }
}

impl<S: Send + Sync> FromRequest<S> for JsonObject {
    type Rejection = ApiError;

    async fn from_request(req: Request, _: &S) -> Result<Self, ApiError> {
        let json = (req.headers().get(axum::http::header::CONTENT_TYPE))
            .is_none_or(|value| is_json(value.as_bytes()));
        let bytes: Bytes = axum::body::to_bytes(req.into_body(), BODY_LIMIT)
            .await
            .map_err(|e| {
                let e = e.into_inner();
                // The body's own errors come wrapped, each in the next's source.
                let mut chain =
                    std::iter::successors(Some(&*e as &(dyn Error + 'static)), |&e| e.source());
                if e.is::<LengthLimitError>() {
                    ApiError::TooLarge(BODY_LIMIT)
                } else if chain.any(|e| e.is::<TimeoutError>()) {
                    ApiError::TimedOut
                } else {
                    // The client broke off or garbled the body (FastAPI's 400).
                    ApiError::BadRequest("There was an error parsing the body".to_owned())
                }
            })?;
        // No body, or JSON `null`, is a body missing (FastAPI reads both as
        // None, and says so with `"input": null`).
        let missing = || {
            let input = Some(&Value::Null);
            ApiError::Validation(vec![FieldError::new(
                "missing",
                &["body"],
                "Field required",
                input,
            )])
        };
        if bytes.is_empty() {
            return Err(missing());
        }
        if !json {
            return Err(not_an_object(&Value::from(String::from_utf8_lossy(&bytes))));
        }
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
            Value::Null => Err(missing()),
            other => Err(not_an_object(&other)),
        }
    }
}

/// The 422 for a body that is not a JSON object.
fn not_an_object(input: &Value) -> ApiError {
    ApiError::Validation(vec![FieldError::new(
        "model_attributes_type",
        &["body"],
        "Input should be a valid dictionary or object to extract fields from",
        Some(input),
    )])
}

/// The fields of one JSON object body, read one by one; the problems are
/// collected, so that all of them are reported at once by [`Fields::finish`].
///
/// ```
/// # use serde_json::json;
/// let body = json!({"title": "", "parent_id": "12"});
/// let mut f = web::input::Fields::new(body.as_object().unwrap());
/// let (title, parent) = (f.string("title", 50), f.id("parent_id"));
/// assert_eq!(f.finish((title, parent)).unwrap(), (String::new(), Some(12)));
/// ```
#[derive(Debug)]
pub struct Fields<'a> {
    body: &'a Map<String, Value>,
    errors: Vec<FieldError>,
}

impl<'a> Fields<'a> {
    /// Reads `body`.
    pub fn new(body: &'a Map<String, Value>) -> Self {
        Fields {
            body,
            errors: Vec::new(),
        }
    }

    /// Records a problem with `field`.
    pub fn fail(
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
    pub fn string(&mut self, field: &str, max: usize) -> String {
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
    pub fn id(&mut self, field: &str) -> Option<i32> {
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
    pub fn date(&mut self, field: &str) -> Option<NaiveDate> {
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

    /// `value` if no field had a problem, else the 422 that lists them all.
    pub fn finish<T>(self, value: T) -> Result<T, ApiError> {
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
    // Year 0 is no date for Python, nor a leap year for MySQL (which
    // refuses its February 29th).
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .filter(|date| date.year() >= 1)
}

/// pydantic's lax integer: `Ok(None)` for null. A float without a fraction
/// is that integer (`1e16` too) if it is strictly between -2^63 and 2^63,
/// where pydantic takes it; a JSON integer or one as text is read whole.
fn lax_int(value: &Value) -> Result<Option<i128>, (&'static str, &'static str)> {
    const PARSING: (&str, &str) = (
        "int_parsing",
        "Input should be a valid integer, unable to parse string as an integer",
    );
    match value {
        Value::Null => Ok(None),
        Value::Number(n) if n.is_f64() => {
            let f = n.as_f64().unwrap_or_default();
            if f.fract() != 0.0 {
                Err((
                    "int_from_float",
                    "Input should be a valid integer, got a number with a fractional part",
                ))
            } else if f > i64::MIN as f64 && f < i64::MAX as f64 {
                // Without a fraction and in range: converted exactly.
                Ok(Some(i128::from(f as i64)))
            } else {
                Err((
                    "int_parsing_size",
                    "Unable to parse input string as an integer, exceeded maximum size",
                ))
            }
        }
        // Not a float: an i64, or a u64 beyond it.
        Value::Number(n) => Ok(n.as_i64().map(i128::from).or(n.as_u64().map(i128::from))),
        Value::String(s) => parse_int_text(s).map(Some).ok_or(PARSING),
        _ => Err(("int_type", "Input should be a valid integer")),
    }
}

/// An optionally signed run of ASCII digits, surrounding spaces allowed, as
/// a query or path parameter is read: any integer, however large, since
/// past a range it is out of range (beyond `i128` it saturates).
pub fn parse_int_text(s: &str) -> Option<i128> {
    let t = integer_text(s)?;
    let saturated = if t.starts_with('-') {
        i128::MIN
    } else {
        i128::MAX
    };
    Some(t.parse().unwrap_or(saturated))
}

/// `s` without its surrounding spaces if it is an integer as
/// [`parse_int_text`] reads one, of any size.
pub fn integer_text(s: &str) -> Option<&str> {
    let t = s.trim();
    let digits = t.strip_prefix(['-', '+']).unwrap_or(t);
    (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())).then_some(t)
}

/// A query string read into `T` with serde (axum's `Query`); a parameter
/// that does not fit `T` is a 422 that names it.
#[derive(Debug)]
pub struct Query<T>(pub T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Query(value)),
            Err(rejection) => Err(ApiError::Validation(vec![FieldError::new(
                "query_invalid",
                &["query"],
                rejection.body_text(),
                None,
            )])),
        }
    }
}

/// A path parameter as text; a segment that is not valid UTF-8 is a 422
/// that names the parameter.
#[derive(Debug)]
pub struct PathParam(pub String);

impl<S: Send + Sync> FromRequestParts<S> for PathParam {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let rejection = match Path::<String>::from_request_parts(parts, state).await {
            Ok(Path(value)) => return Ok(PathParam(value)),
            Err(rejection) => rejection,
        };
        let key = match &rejection {
            PathRejection::FailedToDeserializePathParams(e) => match e.kind() {
                ErrorKind::InvalidUtf8InPathParam { key } => Some(key.as_str()),
                _ => None,
            },
            _ => None,
        };
        let loc: Vec<&str> = ["path"].into_iter().chain(key).collect();
        Err(ApiError::Validation(vec![FieldError::new(
            "path_invalid",
            &loc,
            rejection.body_text(),
            None,
        )]))
    }
}

/// A path's check and a body's, answered as FastAPI answers them: a body
/// that could not be read or is not JSON (413, 408, 400, `json_invalid`)
/// alone; else, when either found 422 problems (a body missing, not an
/// object, or with bad fields), those of both, the path's first; else the
/// path's error (such as a 404 for an id that no row can have), then the
/// body's. `read` checks the fields of the body.
pub fn path_and_body<A, B>(
    path: Result<A, ApiError>,
    body: Result<JsonObject, ApiError>,
    read: impl FnOnce(&Map<String, Value>) -> Result<B, ApiError>,
) -> Result<(A, B), ApiError> {
    let body = match body {
        Ok(JsonObject(body)) => read(&body),
        Err(ApiError::Validation(errors)) if errors.iter().all(|e| e.kind != "json_invalid") => {
            Err(ApiError::Validation(errors))
        }
        Err(unread) => return Err(unread),
    };
    match (path, body) {
        (Ok(a), Ok(b)) => Ok((a, b)),
        (Err(ApiError::Validation(mut first)), Err(ApiError::Validation(second))) => {
            first.extend(second);
            Err(ApiError::Validation(first))
        }
        (Err(e @ ApiError::Validation(_)), _) | (_, Err(e @ ApiError::Validation(_))) => Err(e),
        (Err(e), _) | (_, Err(e)) => Err(e),
    }
}

/// An id from the path: 422 if it is not an integer, 404 if it is one that
/// no row can have (ids are 1 to 2^31-1), however large.
pub fn path_id(raw: &str, name: &str, not_found: &str) -> Result<i32, ApiError> {
    let n = integer_text(raw).ok_or_else(|| {
        ApiError::Validation(vec![FieldError::new(
            "int_parsing",
            &["path", name],
            "Input should be a valid integer, unable to parse string as an integer",
            Some(&Value::from(raw)),
        )])
    })?;
    (n.parse::<i32>().ok())
        .filter(|id| *id > 0)
        .ok_or_else(|| ApiError::NotFound(not_found.to_owned()))
}
