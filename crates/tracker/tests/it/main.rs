//! The tracker over HTTP on a real socket, on every backend: the whole
//! route table, every kind of bad input, and the service's queries.

mod bad_input;
mod injection;
mod queries;
mod routes;
mod support;
