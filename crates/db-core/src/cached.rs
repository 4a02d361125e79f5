//! SQL built once per backend and reused.

use std::fmt;
use std::sync::OnceLock;

use sea_orm::{DbBackend, DbErr, Statement, Value};

/// A query whose SQL is built once per backend, then run with fresh values.
///
/// Building a SeaORM query (expression trees, joins, column aliases) can cost
/// more CPU than the database spends answering it: a task by id with its
/// assignee spent most of its client time there. `build` makes the statement
/// with placeholder values; [`statement`](Self::statement) reuses its SQL with
/// values given in the same order.
///
/// ```
/// use db_core::cached::CachedStatement;
/// use sea_orm::{DbBackend, QueryTrait, Statement};
///
/// static BY_ID: CachedStatement = CachedStatement::new(|backend| {
///     Statement::from_sql_and_values(backend, "SELECT * FROM tasks WHERE id = $1", [0.into()])
/// });
/// let stmt = BY_ID.statement(DbBackend::Postgres, [7.into()]).unwrap();
/// assert_eq!(stmt.sql, "SELECT * FROM tasks WHERE id = $1");
/// ```
pub struct CachedStatement {
    build: fn(DbBackend) -> Statement,
    built: [OnceLock<(String, usize)>; 3],
}

impl fmt::Debug for CachedStatement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachedStatement").finish_non_exhaustive()
    }
}

impl CachedStatement {
    /// A statement built by `build` on first use for each backend.
    pub const fn new(build: fn(DbBackend) -> Statement) -> Self {
        CachedStatement {
            build,
            built: [OnceLock::new(), OnceLock::new(), OnceLock::new()],
        }
    }

    /// The statement for `backend` with `values` in place of the placeholder
    /// values `build` used. Fails if their number differs.
    pub fn statement(
        &self,
        backend: DbBackend,
        values: impl IntoIterator<Item = Value>,
    ) -> Result<Statement, DbErr> {
        let slot = match backend {
            DbBackend::Postgres => 0,
            DbBackend::MySql => 1,
            _ => 2,
        };
        let (sql, expected) = self.built[slot].get_or_init(|| {
            let stmt = (self.build)(backend);
            let n = stmt.values.as_ref().map_or(0, |v| v.0.len());
            (stmt.sql, n)
        });
        let values: Vec<Value> = values.into_iter().collect();
        if values.len() != *expected {
            return Err(DbErr::Custom(format!(
                "cached statement takes {expected} values, got {}",
                values.len()
            )));
        }
        Ok(Statement::from_sql_and_values(backend, sql.clone(), values))
    }
}
