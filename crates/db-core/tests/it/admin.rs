//! Creating and dropping databases through the maintenance database.

use db_core::{
    Db,
    admin::{Created, create_database, drop_database},
};
use test_support::Backend;

async fn create_twice_then_drop(backend: Backend) {
    let server = backend.server_settings();
    let mut s = server.clone();
    let name = format!("test_db_admin_{}_{}", std::process::id(), rand_suffix());
    s.url = server.url.with_database(&name);
    assert_eq!(
        create_database(&s).await.unwrap(),
        Created::Created(name.clone())
    );
    assert_eq!(
        create_database(&s).await.unwrap(),
        Created::Existed(name.clone())
    );
    let db = Db::connect(&s).await.unwrap();
    db.ping().await.unwrap();
    // Dropping works while a pool is still connected.
    drop_database(&s).await.unwrap();
    let err = Db::connect(&s).await.unwrap_err();
    assert!(
        matches!(err, db_core::Error::UnknownDatabase { .. }),
        "{err:?}"
    );
}

fn rand_suffix() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
}

#[test_support::needs(postgres)]
#[tokio::test]
async fn create_is_idempotent_and_drop_works_on_postgres() {
    create_twice_then_drop(Backend::Postgres).await;
}

#[test_support::needs(mysql)]
#[tokio::test]
async fn create_is_idempotent_and_drop_works_on_mysql() {
    create_twice_then_drop(Backend::MySql).await;
}

#[tokio::test]
async fn create_is_a_no_op_on_sqlite() {
    let s = db_core::Settings::new(db_core::url::DatabaseUrl::sqlite_file("unused.db"));
    assert_eq!(create_database(&s).await.unwrap(), Created::NotNeeded);
    assert!(!std::path::Path::new("unused.db").exists());
}
