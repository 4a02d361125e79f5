//! `tracker migrate ...` does what the `migration` binary does, without `just`.

use std::ffi::OsString;

use test_support::TestDb;

use crate::cli::{text, tracker};

const FIRST: &str = "m20261124_000001_create_employees_and_tasks";

fn run(t: &TestDb, dir: &std::path::Path, words: &[&str]) -> String {
    let mut args = vec!["migrate"];
    args.extend_from_slice(words);
    let output = tracker(
        dir,
        &args,
        &[("DATABASE_URL", OsString::from(t.settings.url.expose()))],
    );
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(0), "{words:?}: {stderr}");
    stdout
}

test_support::backend_tests! {
    async fn migrate_up_status_down_fresh(t: TestDb) {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        assert_eq!(run(&t, dir, &["status"]), format!("pending  {FIRST}\n0 applied, 1 pending\n"));
        assert_eq!(run(&t, dir, &["up"]), format!("applied  {FIRST}\n1 applied, 0 pending\n"));
        assert_eq!(run(&t, dir, &["status"]), format!("applied  {FIRST}\n1 applied, 0 pending\n"));
        assert_eq!(run(&t, dir, &["down"]), format!("reverted {FIRST}\n0 applied, 1 pending\n"));
        assert_eq!(run(&t, dir, &["fresh"]), format!("applied  {FIRST}\n1 applied, 0 pending\n"));
    }
}

#[test]
fn migrate_with_bad_configuration_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let output = tracker(
        dir.path(),
        &["migrate", "up"],
        &[
            ("DB_PORT", OsString::from("x")),
            ("DB_HOST", OsString::from("h")),
        ],
    );
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(
        text(&output).1,
        "error: DB_PORT=\"x\": expected a port number 1-65535\n"
    );
}
