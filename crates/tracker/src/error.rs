//! The service's error type.

/// What a tracker operation can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No employee or task with that id.
    #[error("{0} not found")]
    NotFound(Kind),
    /// The input names something that does not exist or would break the tree.
    #[error("{field}: {message}")]
    Invalid {
        /// The input field at fault.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// The database failed (unreachable, pool exhausted, or a bug of ours).
    #[error(transparent)]
    Db(#[from] db_core::Error),
}

/// The two kinds of things the tracker stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An employee.
    Employee,
    /// A task.
    Task,
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Kind::Employee => "Employee",
            Kind::Task => "Task",
        })
    }
}

impl From<sea_orm::DbErr> for Error {
    fn from(e: sea_orm::DbErr) -> Self {
        Error::Db(e.into())
    }
}

impl db_core::error::Retryable for Error {
    fn is_retryable(&self) -> bool {
        matches!(self, Error::Db(e) if e.is_retryable())
    }

    fn retry_reason(&self) -> Option<db_core::metrics::RetryReason> {
        match self {
            Error::Db(e) => e.retry_reason(),
            _ => None,
        }
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
