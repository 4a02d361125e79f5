//! Bulk loads with COPY: values that need escaping arrive intact, NUL is
//! refused, and a load is all or nothing.

use db_core::{Error, copy::CopyIn};
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use test_support::{Backend, TestDb};

const HARD: &[&str] = &[
    "tab\there",
    "line\nbreak",
    "carriage\rreturn",
    "back\\slash",
    "\\N",
    "\\.",
    "trailing backslash \\",
    "ünïcødé ✓",
    "",
];

async fn texts(t: &TestDb) -> Vec<Option<String>> {
    let session = t.db.read().await.unwrap();
    session
        .query_all_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT body FROM notes ORDER BY id",
        ))
        .await
        .unwrap()
        .iter()
        .map(|row| row.try_get_by_index::<Option<String>>(0).unwrap())
        .collect()
}

async fn create_notes(t: &TestDb) {
    let session = t.db.begin().await.unwrap();
    session
        .execute_unprepared("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT, due DATE)")
        .await
        .unwrap();
    session.commit().await.unwrap();
}

#[test_support::needs(postgres)]
#[tokio::test]
async fn text_that_needs_escaping_arrives_intact() {
    let t = TestDb::new(Backend::Postgres).await;
    create_notes(&t).await;
    let mut rows = CopyIn::new("notes", &["id", "body", "due"]);
    for (id, text) in (1..).zip(HARD) {
        rows.row([id.into(), (*text).into(), None::<i32>.into()])
            .unwrap();
    }
    let null = HARD.len() as i32 + 1;
    let due = sea_orm::prelude::Date::from_ymd_opt(2026, 12, 31).unwrap();
    rows.row([null.into(), None::<&str>.into(), due.into()])
        .unwrap();
    t.db.copy_in(&[rows], "").await.unwrap();

    let mut expected: Vec<Option<String>> = HARD.iter().map(|s| Some(s.to_string())).collect();
    expected.push(None);
    assert_eq!(texts(&t).await, expected);
}

#[test]
fn a_nul_character_is_refused_and_names_the_value() {
    let mut rows = CopyIn::new("notes", &["id", "body"]);
    rows.row([1.into(), "fine".into()]).unwrap();
    let err = rows.row([2.into(), "nul\0byte".into()]).unwrap_err();
    assert!(matches!(err, Error::NulInText { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "notes.body, row 2: text with a NUL character cannot be stored in PostgreSQL"
    );
    assert_eq!(rows.len(), 1, "the refused row is not added");
}

#[test]
fn a_row_without_a_value_for_each_column_is_refused() {
    let mut rows = CopyIn::new("notes", &["id", "body"]);
    for values in [vec![1.into()], vec![1.into(), "a".into(), "b".into()]] {
        let err = rows.row(values).unwrap_err();
        assert!(matches!(err, Error::CopyRowWidth { .. }), "{err:?}");
    }
    let err = rows.row([]).unwrap_err();
    assert_eq!(err.to_string(), "notes, row 1: 0 values for 2 columns");
    rows.row([1.into(), "fine".into()]).unwrap();
    assert_eq!(rows.len(), 1, "the refused rows are not added");
}

/// A failure in any table (here a duplicate id in the second) loads nothing.
#[test_support::needs(postgres)]
#[tokio::test]
async fn a_load_is_all_or_nothing() {
    let t = TestDb::new(Backend::Postgres).await;
    create_notes(&t).await;
    let mut first = CopyIn::new("notes", &["id", "body"]);
    first.row([1.into(), "one".into()]).unwrap();
    let mut second = CopyIn::new("notes", &["id", "body"]);
    second.row([1.into(), "again".into()]).unwrap();
    let err = t.db.copy_in(&[first, second], "").await.unwrap_err();
    assert!(err.db_err().is_some(), "{err:?}");
    assert!(texts(&t).await.is_empty());
}

#[tokio::test]
async fn copy_is_postgres_only() {
    let t = TestDb::new(Backend::Sqlite).await;
    let err = t.db.copy_in(&[], "").await.unwrap_err();
    assert_eq!(err.to_string(), "COPY is not available on sqlite");
}

test_support::backend_tests! {
    async fn statistics_can_be_refreshed_after_a_load(t: TestDb) {
        create_notes(&t).await;
        t.db.refresh_statistics(&["notes"]).await.unwrap();
    }
}
