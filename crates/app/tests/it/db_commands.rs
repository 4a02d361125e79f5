//! `tracker db check` and `tracker db create` against real databases.

use std::ffi::OsString;

use test_support::{Backend, PrivatePostgres, free_port};

use crate::cli::{PASSWORD, assert_no_secret, os, text, tracker};

#[test]
fn db_check_on_a_fresh_checkout_uses_the_embedded_sqlite_file() {
    let dir = tempfile::tempdir().unwrap();
    let output = tracker(dir.path(), &["db", "check"], &[]);
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(
        stdout.contains("backend                    sqlite"),
        "{stdout}"
    );
    assert!(
        stdout.contains("url                        sqlite://data/tracker.db?mode=rwc"),
        "{stdout}"
    );
    assert!(stdout.contains("server_version"), "{stdout}");
    assert!(stdout.contains(" ms\n"), "{stdout}");
    assert!(dir.path().join("data/tracker.db").is_file());
}

#[test_support::needs(postgres)]
#[test]
fn db_check_on_postgres_shows_the_server_and_redacts_the_password() {
    let server = Backend::Postgres.server_settings();
    // The shared server trusts local connections, so any password gets in;
    // this checks what is printed.
    let mut url = url_with_password(server.url.child_env().1);
    url.push_str("?sslmode=disable");
    let dir = tempfile::tempdir().unwrap();
    let output = tracker(dir.path(), &["db", "check"], &[("DATABASE_URL", os(url))]);
    assert_no_secret(&output);
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(
        stdout.contains("backend                    postgres"),
        "{stdout}"
    );
    assert!(stdout.contains(":***@127.0.0.1:5432/"), "{stdout}");
    assert!(
        stdout.contains("statement_timeout          30s"),
        "{stdout}"
    );
}

fn url_with_password(url: OsString) -> String {
    let mut parsed = url::Url::parse(url.to_str().unwrap()).unwrap();
    parsed.set_password(Some("Tr4ck%2DS3cr3t%2Fpw")).unwrap();
    parsed.to_string()
}

#[test_support::needs(postgres)]
#[test]
fn db_check_reaches_a_password_checking_server_with_the_seed_variables() {
    let hostile = "p@ss:w/rd?#%&=";
    let server = PrivatePostgres::start(hostile).expect("starting a private PostgreSQL");
    let dir = tempfile::tempdir().unwrap();
    let vars = [
        ("DB_HOST", os("127.0.0.1")),
        ("DB_PORT", os(server.port().to_string())),
        ("DB_NAME", os("postgres")),
        ("DB_USER", os("postgres")),
        ("DB_PASS", os(hostile)),
    ];
    let output = tracker(dir.path(), &["db", "check"], &vars);
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(stdout.contains("server_version"), "{stdout}");
    for stream in [&stdout, &stderr] {
        assert!(
            !stream.contains(hostile) && !stream.contains("p%40ss"),
            "{stream}"
        );
    }
}

#[test]
fn db_check_on_an_unreachable_server_fails_after_the_deadline() {
    let port = free_port().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let vars = [
        ("DB_HOST", os("127.0.0.1")),
        ("DB_PORT", os(port.to_string())),
        ("DB_NAME", os("tracker")),
        ("DB_USER", os("app")),
        ("DB_PASS", os(PASSWORD)),
        ("DB_CONNECT_DEADLINE", os("1s")),
    ];
    let output = tracker(dir.path(), &["db", "check"], &vars);
    assert_no_secret(&output);
    let (_, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    let expected = format!(
        "error: cannot connect to postgres 127.0.0.1:{port}/tracker: connection refused (gave up after 1s"
    );
    assert!(last.starts_with(&expected), "{stderr}");
    // Each retry was announced with its reason.
    assert!(
        stderr.contains("database not ready (connection refused); retrying in"),
        "{stderr}"
    );
}

fn db_create_twice(backend: Backend) {
    let server = backend.server_settings();
    let name = format!("test_db_cli_{}", std::process::id());
    let mut settings = server.clone();
    settings.url = server.url.with_database(&name);
    let dir = tempfile::tempdir().unwrap();
    let vars = [settings.url.child_env()];
    let first = tracker(dir.path(), &["db", "create"], &vars);
    let second = tracker(dir.path(), &["db", "create"], &vars);
    let check = tracker(dir.path(), &["db", "check"], &vars);
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(db_core::admin::drop_database(&settings))
        .unwrap();
    assert_eq!(
        text(&first).0,
        format!("created database \"{name}\"\n"),
        "{:?}",
        text(&first)
    );
    assert_eq!(
        text(&second).0,
        format!("database \"{name}\" exists already\n")
    );
    assert_eq!(check.status.code(), Some(0), "{:?}", text(&check));
}

#[test_support::needs(postgres)]
#[test]
fn db_create_creates_once_on_postgres() {
    db_create_twice(Backend::Postgres);
}

#[test_support::needs(mysql)]
#[test]
fn db_create_creates_once_on_mysql() {
    db_create_twice(Backend::MySql);
}

#[test]
fn db_create_is_a_no_op_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let output = tracker(dir.path(), &["db", "create"], &[]);
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(
        text(&output).0,
        "SQLite: nothing to create (sqlite data/tracker.db is created on first connect)\n"
    );
}

#[test]
fn seed_fills_an_empty_database_once() {
    let dir = tempfile::tempdir().unwrap();
    let first = tracker(dir.path(), &["seed"], &[]);
    assert_eq!(first.status.code(), Some(0), "{:?}", text(&first));
    assert_eq!(text(&first).0, "added 3 employees and 7 tasks\n");
    let second = tracker(dir.path(), &["seed"], &[]);
    assert_eq!(
        text(&second).0,
        "the database has employees already; nothing added\n"
    );
}

/// `db check` on a host list shows each host with its role: a closed port,
/// a streaming standby and its primary.
#[test_support::needs(postgres)]
#[test]
fn db_check_on_a_host_list_shows_each_host_and_its_role() {
    let primary = PrivatePostgres::start("ha-pw").expect("starting a private PostgreSQL");
    let standby = primary.start_replica().expect("starting a standby");
    let closed = free_port().unwrap();
    let url = format!(
        "postgres://postgres:ha-pw@127.0.0.1:{closed},127.0.0.1:{},127.0.0.1:{}/postgres?target_session_attrs=read-write",
        standby.port(),
        primary.port()
    );
    let dir = tempfile::tempdir().unwrap();
    let output = tracker(dir.path(), &["db", "check"], &[("DATABASE_URL", os(url))]);
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(
        !stdout.contains("ha-pw") && !stderr.contains("ha-pw"),
        "{stdout}"
    );
    let line = |port: u16| {
        let host = format!("primary 127.0.0.1:{port} ");
        let found = stdout.lines().find(|l| l.trim_start().starts_with(&host));
        found
            .unwrap_or_else(|| panic!("no line for {host}: {stdout}"))
            .to_owned()
    };
    assert!(
        line(closed).ends_with("unreachable: connection refused"),
        "{stdout}"
    );
    assert!(line(standby.port()).contains(" standby, lag "), "{stdout}");
    assert!(line(primary.port()).ends_with(" primary"), "{stdout}");
}
