//! Bulk loads: PostgreSQL's `COPY ... FROM STDIN` in its text format, and
//! fresh planner statistics afterwards.

use sea_orm::prelude::Date;
use sea_orm::sqlx::{self, Connection};
use sea_orm::{ConnectionTrait, DbBackend};

use crate::admin::quote_ident;
use crate::db::Db;
use crate::error::{Error, Result};
use crate::metrics::acquire_sqlx;

/// How much COPY data goes into one message to the server.
const MESSAGE: usize = 1 << 20;

/// One value of a row for [`CopyIn::row`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CopyValue<'a> {
    /// SQL `NULL`.
    Null,
    /// Text; any character but NUL, which PostgreSQL text cannot hold.
    Text(&'a str),
    /// An integer.
    Int(i64),
    /// A date.
    Date(Date),
}

impl<'a> From<&'a str> for CopyValue<'a> {
    fn from(value: &'a str) -> Self {
        CopyValue::Text(value)
    }
}

impl<'a> From<&'a String> for CopyValue<'a> {
    fn from(value: &'a String) -> Self {
        CopyValue::Text(value)
    }
}

impl From<i32> for CopyValue<'_> {
    fn from(value: i32) -> Self {
        CopyValue::Int(value.into())
    }
}

impl From<i64> for CopyValue<'_> {
    fn from(value: i64) -> Self {
        CopyValue::Int(value)
    }
}

impl From<Date> for CopyValue<'_> {
    fn from(value: Date) -> Self {
        CopyValue::Date(value)
    }
}

impl<'a, T: Into<CopyValue<'a>>> From<Option<T>> for CopyValue<'a> {
    fn from(value: Option<T>) -> Self {
        value.map_or(CopyValue::Null, Into::into)
    }
}

/// Rows for one table, written in COPY's text format as they are added;
/// [`Db::copy_in`] loads them.
///
/// ```
/// use db_core::copy::CopyIn;
///
/// let mut rows = CopyIn::new("employees", &["id", "full_name", "position"]);
/// rows.row([1.into(), "Ann\tLee".into(), None::<&str>.into()])?;
/// assert_eq!(rows.len(), 1);
/// # Ok::<(), db_core::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct CopyIn {
    table: String,
    columns: Vec<String>,
    data: String,
    rows: usize,
}

impl CopyIn {
    /// Rows for `columns` of `table`.
    pub fn new(table: &str, columns: &[&str]) -> Self {
        CopyIn {
            table: table.to_owned(),
            columns: columns.iter().map(|&c| c.to_owned()).collect(),
            data: String::new(),
            rows: 0,
        }
    }

    /// Adds a row: one value per column, in the order of the columns.
    /// Text is escaped (backslashes, tabs, newlines, carriage returns); text
    /// with a NUL character is refused with [`Error::NulInText`], a row with
    /// more or fewer values than columns with [`Error::CopyRowWidth`], and
    /// the row is not added.
    pub fn row<'a>(&mut self, values: impl IntoIterator<Item = CopyValue<'a>>) -> Result<()> {
        let start = self.data.len();
        let mut count = 0;
        for value in values {
            if count > 0 {
                self.data.push('\t');
            }
            if let Err(e) = self.value(value, count) {
                self.data.truncate(start);
                return Err(e);
            }
            count += 1;
        }
        if count != self.columns.len() {
            self.data.truncate(start);
            return Err(Error::CopyRowWidth {
                table: self.table.clone(),
                row: self.rows + 1,
                values: count,
                columns: self.columns.len(),
            });
        }
        self.data.push('\n');
        self.rows += 1;
        Ok(())
    }

    fn value(&mut self, value: CopyValue<'_>, column: usize) -> Result<()> {
        match value {
            CopyValue::Null => self.data.push_str("\\N"),
            CopyValue::Int(n) => self.data.push_str(&n.to_string()),
            CopyValue::Date(d) => self.data.push_str(&d.format("%Y-%m-%d").to_string()),
            CopyValue::Text(text) => {
                if text.contains('\0') {
                    return Err(Error::NulInText {
                        table: self.table.clone(),
                        column: self.columns.get(column).cloned().unwrap_or_default(),
                        row: self.rows + 1,
                    });
                }
                for c in text.chars() {
                    match c {
                        '\\' => self.data.push_str("\\\\"),
                        '\t' => self.data.push_str("\\t"),
                        '\n' => self.data.push_str("\\n"),
                        '\r' => self.data.push_str("\\r"),
                        c => self.data.push(c),
                    }
                }
            }
        }
        Ok(())
    }

    /// How many rows were added.
    pub fn len(&self) -> usize {
        self.rows
    }

    /// Whether no row was added.
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    fn statement(&self) -> String {
        let columns: Vec<String> = self
            .columns
            .iter()
            .map(|c| quote_ident(DbBackend::Postgres, c))
            .collect();
        format!(
            "COPY {} ({}) FROM STDIN",
            quote_ident(DbBackend::Postgres, &self.table),
            columns.join(", ")
        )
    }
}

impl Db {
    /// Loads `tables` in order with PostgreSQL's `COPY ... FROM STDIN`, then
    /// runs `finish` (SQL, e.g. moving id sequences past the loaded ids; empty
    /// for nothing), all in one transaction of its own: everything is loaded,
    /// or nothing. PostgreSQL only; elsewhere [`Error::Unsupported`].
    pub async fn copy_in(&self, tables: &[CopyIn], finish: &str) -> Result<()> {
        if self.backend() != DbBackend::Postgres {
            return Err(Error::Unsupported {
                operation: "COPY",
                backend: crate::url::backend_name(self.backend()),
            });
        }
        let mut conn =
            acquire_sqlx(self.metrics(), self.conn().get_postgres_connection_pool()).await?;
        let mut tx = conn.begin().await.map_err(Error::from_sqlx)?;
        for table in tables {
            let mut copy = tx
                .copy_in_raw(&table.statement())
                .await
                .map_err(Error::from_sqlx)?;
            // Messages need not end at row boundaries.
            for message in table.data.as_bytes().chunks(MESSAGE) {
                copy.send(message).await.map_err(Error::from_sqlx)?;
            }
            copy.finish().await.map_err(Error::from_sqlx)?;
        }
        if !finish.is_empty() {
            sqlx::raw_sql(sqlx::AssertSqlSafe(finish))
                .execute(&mut *tx)
                .await
                .map_err(Error::from_sqlx)?;
        }
        tx.commit().await.map_err(Error::from_sqlx)
    }

    /// Refreshes the planner's statistics of `tables` after a bulk load, or
    /// the planner guesses (without them PostgreSQL answered a tree query
    /// with a sequential scan per level). On PostgreSQL a `VACUUM` as well,
    /// so autovacuum does not start on the new rows while the application
    /// works; on SQLite the whole database is analysed.
    pub async fn refresh_statistics(&self, tables: &[&str]) -> Result<()> {
        let backend = self.backend();
        let tables: Vec<String> = tables.iter().map(|t| quote_ident(backend, t)).collect();
        let sql = match backend {
            DbBackend::Postgres => format!("VACUUM (ANALYZE) {}", tables.join(", ")),
            DbBackend::MySql => format!("ANALYZE TABLE {}", tables.join(", ")),
            _ => "ANALYZE".to_owned(),
        };
        // VACUUM cannot run in a transaction: straight on the pool.
        self.conn().execute_unprepared(&sql).await?;
        Ok(())
    }
}
