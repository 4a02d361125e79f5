//! The tracker over HTTP on a real socket, on every backend: the whole
//! route table, every kind of bad input, the service's queries, and the
//! OpenAPI document.

mod bad_input;
mod injection;
mod logs;
mod openapi;
mod queries;
mod routes;
mod support;
