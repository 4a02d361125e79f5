//! A bound on every wait for a server, also one that stopped answering with
//! its connections open (a paused machine, a server stuck on I/O, a network
//! path that drops traffic silently). Nothing in the driver notices that:
//! sqlx has no client-side statement timeout, PostgreSQL's
//! `statement_timeout` cannot fire on a server that does not run, and TCP
//! keeps a connection whose peer's kernel still acknowledges it.
//!
//! - **Getting a connection** is bounded by `DB_ACQUIRE_TIMEOUT` (sqlx's
//!   acquire timeout, which also covers opening a connection and the ping
//!   after `DB_PING_AFTER_IDLE`).
//! - **Each operation** once a connection is held (a statement, `BEGIN`,
//!   `COMMIT`, `ROLLBACK`) is bounded by `DB_OPERATION_TIMEOUT`. For work
//!   that takes its connection from a pool ([`checkout`]: a statement of a
//!   session without a transaction, `BEGIN`), the clock starts when the
//!   pool hands the connection over: the pool's `after_connect` and
//!   `before_acquire` callbacks run inside the waiting task and call
//!   [`handed_over`], which marks the moment in a task-local. So one such
//!   statement waits at most `DB_ACQUIRE_TIMEOUT + DB_OPERATION_TIMEOUT`.
//!   Work on a connection already held (a transaction's statements,
//!   [`answered`]) is bounded from its start. Running out is an error of
//!   its own ([`NoAnswer`], classified as the server being unavailable).
//! - **A connection left owing an answer** (its operation timed out, or the
//!   request using it was cancelled mid-statement) is closed, never handed to
//!   the next request, and its pool permit is free at once. sqlx gives a
//!   returned connection to `after_release`, then pings it before it goes
//!   back to the pool; that ping first waits for every answer still owed,
//!   with no timeout (sqlx issue 4349), so the permit stayed taken for as
//!   long as the server was silent. The pool's `after_release` here
//!   ([`settled`]) polls sqlx's `Connection::flush` once: a connection that
//!   owes nothing finishes at once and goes on to sqlx's ping; one that owes
//!   an answer, or a rollback that SeaORM queued when its transaction was
//!   dropped, is refused, and sqlx closes it (it sends `Terminate` and shuts
//!   the socket, without waiting for the server). `flush` is hidden from
//!   sqlx's documentation but public; sqlx is pinned through SeaORM's exact
//!   version. The pool's metrics count each one
//!   (`db_pool_connections_discarded_total`).
//! - **What is left**: a connection that finished its work and lost its
//!   server in the moment of sqlx's own release ping waits in that ping
//!   until the server answers again, holding its permit; it goes back (or
//!   is dropped) as soon as the server answers. [`Db::close`] waits for such
//!   connections a bounded time only.
//!
//! [`Db::close`]: crate::Db::close

use std::cell::Cell;
use std::future::{Future, poll_fn};
use std::io;
use std::pin::{Pin, pin};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use sea_orm::DbErr;
use sea_orm::sqlx::{self, Connection};

use crate::error::sqlx_db_err;

/// No answer came within the bound that `setting` sets.
#[derive(Debug, thiserror::Error)]
#[error("no answer within {} ({setting})", humantime::format_duration(*.limit))]
pub(crate) struct NoAnswer {
    limit: Duration,
    setting: &'static str,
}

/// [`NoAnswer`] as the database error that work fails with.
pub(crate) fn no_answer(limit: Duration, setting: &'static str) -> DbErr {
    sqlx_db_err(sqlx::Error::Io(io::Error::new(
        io::ErrorKind::TimedOut,
        NoAnswer { limit, setting },
    )))
}

const OPERATION_TIMEOUT: &str = "DB_OPERATION_TIMEOUT";

tokio::task_local! {
    /// When the pool handed the current [`checkout`] its connection.
    static HANDED_OVER: Cell<Option<Instant>>;
}

/// A pool hands a connection to the task that runs this (called from the
/// pool's `after_connect` and `before_acquire` callbacks).
pub(crate) fn handed_over() {
    let _ = HANDED_OVER.try_with(|at| {
        if at.get().is_none() {
            at.set(Some(Instant::now()));
        }
    });
}

/// Runs `work`, which takes a connection from a pool and uses it, and fails
/// with [`NoAnswer`] once `limit` has passed since the pool handed the
/// connection over (the wait for it has a bound of its own). Also says
/// whether a connection was handed over, that is whether the work may have
/// reached the server.
pub(crate) async fn checkout<T>(
    limit: Option<Duration>,
    work: impl Future<Output = Result<T, DbErr>>,
) -> (Result<T, DbErr>, bool) {
    HANDED_OVER
        .scope(Cell::new(None), async move {
            let mut work = pin!(work);
            let mut expiry: Option<Pin<Box<tokio::time::Sleep>>> = None;
            let result = poll_fn(|cx| {
                if let Poll::Ready(result) = work.as_mut().poll(cx) {
                    return Poll::Ready(result);
                }
                let Some(limit) = limit else {
                    return Poll::Pending;
                };
                if expiry.is_none()
                    && let Some(at) = HANDED_OVER.with(Cell::get)
                {
                    expiry = Some(Box::pin(tokio::time::sleep_until((at + limit).into())));
                }
                match expiry.as_mut().map(|e| e.as_mut().poll(cx)) {
                    Some(Poll::Ready(())) => Poll::Ready(Err(no_answer(limit, OPERATION_TIMEOUT))),
                    _ => Poll::Pending,
                }
            })
            .await;
            (result, HANDED_OVER.with(Cell::get).is_some())
        })
        .await
}

/// Runs `work` on a connection already held (a transaction's), failing with
/// [`NoAnswer`] after `limit`.
pub(crate) async fn answered<T>(
    limit: Option<Duration>,
    work: impl Future<Output = Result<T, DbErr>>,
) -> Result<T, DbErr> {
    match limit {
        Some(limit) => tokio::time::timeout(limit, work)
            .await
            .unwrap_or_else(|_| Err(no_answer(limit, OPERATION_TIMEOUT))),
        None => work.await,
    }
}

/// Whether a connection coming back to its pool owes the server nothing
/// (no answer outstanding, nothing queued to send), found without waiting:
/// sqlx's `flush` is polled once and finishes at once only then. A
/// connection that is not settled is closed instead of pooled.
pub(crate) fn settled<C: Connection>(conn: &mut C) -> bool {
    let mut flush = pin!(conn.flush());
    let mut cx = Context::from_waker(Waker::noop());
    matches!(flush.as_mut().poll(&mut cx), Poll::Ready(Ok(())))
}
