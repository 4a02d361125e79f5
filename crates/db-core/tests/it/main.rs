//! db-core's integration tests, one binary. Server suites run when
//! `TEST_POSTGRES_URL` / `TEST_MYSQL_URL` are set (see `test_support`).

mod admin;
mod connect;
mod copy;
mod errors;
mod failover;
mod lock;
mod metrics;
mod paused;
mod replicas;
mod session;
mod settings;
