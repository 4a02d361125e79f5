//! Errors keep their causes as sources, and no part of a connection failure
//! (its message, its chain of sources, its `Debug`) shows the password.

use std::error::Error as _;

use db_core::{Db, Error, SessionOptions, Settings, Source, error::Report};
use sea_orm::{ConnectionTrait, DbErr, Statement};
use test_support::{Backend, TestDb, free_port, terminate_connections};

const PASSWORD: &str = "Pw-s3cr%t/x";
/// `PASSWORD` as it appears inside a URL.
const ENCODED: &str = "Pw%2Ds3cr%25t%2Fx";

/// Fails if the password shows up in any way `err` can be printed.
fn assert_hidden(err: &Error) {
    let mut shown = vec![
        Report(err).to_string(),
        format!("{err:?}"),
        format!("{err:#?}"),
    ];
    let mut cause = err.source();
    while let Some(current) = cause {
        shown.push(current.to_string());
        shown.push(format!("{current:?}"));
        cause = current.source();
    }
    for text in shown {
        assert!(
            !text.contains(PASSWORD) && !text.contains(ENCODED) && !text.contains("s3cr"),
            "the password leaked: {text}"
        );
    }
}

#[tokio::test]
async fn an_unreachable_server_hides_the_password_everywhere() {
    let port = free_port().unwrap();
    let source = Source::new()
        .var(
            "DATABASE_URL",
            format!("postgres://u:{ENCODED}@127.0.0.1:{port}/d"),
        )
        .var("DB_CONNECT_DEADLINE", "0s");
    let err = Db::connect(&Settings::load(&source).unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unreachable { .. }), "{err:?}");
    assert_hidden(&err);
}

#[test_support::needs(postgres)]
#[tokio::test]
async fn an_unknown_database_hides_the_password_everywhere() {
    let err = Db::connect(
        &Backend::Postgres.settings_with_password("db_core_no_such_database", PASSWORD),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::UnknownDatabase { .. }), "{err:?}");
    assert_hidden(&err);
}

/// A connection that the server ends while the pool holds it: the next
/// statement fails as unavailable, with the driver's error as its source.
#[test_support::needs(postgres)]
#[tokio::test]
async fn a_connection_that_goes_away_keeps_its_cause_without_the_password() {
    let t = TestDb::new(Backend::Postgres).await;
    let db = Db::connect(&Backend::Postgres.settings_with_password(&t.name(), PASSWORD))
        .await
        .unwrap();
    let select = Statement::from_string(db.backend(), "SELECT 1");
    let direct = db
        .session(SessionOptions::single_statement())
        .await
        .unwrap();
    direct.query_one_raw(select.clone()).await.unwrap();
    terminate_connections(&t.name()).await;

    let err = Error::from(direct.query_one_raw(select).await.unwrap_err());
    assert!(err.is_unavailable(), "{err:?}");
    let source = err.source().expect("the driver's error is kept");
    assert!(source.downcast_ref::<DbErr>().is_some(), "{source:?}");
    assert!(
        Report(&err)
            .to_string()
            .starts_with("database unavailable: the "),
        "{}",
        Report(&err)
    );
    assert_hidden(&err);
    db.close().await;
}
