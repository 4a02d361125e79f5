//! `tracker migrate ...` does what the `migration` binary does, without `just`.

use std::ffi::OsString;

use test_support::{TestDb, original_app};

use crate::cli::{text, tracker};

const FIRST: &str = "m20261124_000001_create_employees_and_tasks";
const SECOND: &str = "m20261125_000001_converge_adopted_schema";
const THIRD: &str = "m20261203_000001_task_block_counts";

fn run(t: &TestDb, dir: &std::path::Path, words: &[&str]) -> String {
    let mut args = vec!["migrate"];
    args.extend_from_slice(words);
    let output = tracker(dir, &args, &[t.settings.url.child_env()]);
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(0), "{words:?}: {stderr}");
    stdout
}

test_support::backend_tests! {
    async fn migrate_up_status_down_fresh(t: TestDb) {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        assert_eq!(run(&t, dir, &["status"]), format!("pending  {FIRST}\npending  {SECOND}\npending  {THIRD}\n0 applied, 3 pending\n"));
        assert_eq!(run(&t, dir, &["up"]), format!("applied  {FIRST}\napplied  {SECOND}\napplied  {THIRD}\n3 applied, 0 pending\n"));
        assert_eq!(run(&t, dir, &["status"]), format!("applied  {FIRST}\napplied  {SECOND}\napplied  {THIRD}\n3 applied, 0 pending\n"));
        assert_eq!(run(&t, dir, &["down"]), format!("reverted {THIRD}\n2 applied, 1 pending\n"));
        assert_eq!(run(&t, dir, &["fresh"]), format!("applied  {FIRST}\napplied  {SECOND}\napplied  {THIRD}\n3 applied, 0 pending\n"));
    }
}

test_support::backend_tests! {
    /// Switching from the original app: one command on its database.
    async fn the_original_database_takes_one_command(t: TestDb) {
        original_app::create(&t.db).await;
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        assert_eq!(
            run(&t, dir, &["up"]),
            format!("adopted  {FIRST} (recorded as applied without running it)\napplied  {SECOND}\napplied  {THIRD}\n3 applied, 0 pending\n")
        );
        assert_eq!(run(&t, dir, &["status"]), format!("applied  {FIRST}\napplied  {SECOND}\napplied  {THIRD}\n3 applied, 0 pending\n"));
        assert_eq!(run(&t, dir, &["up"]), "3 applied, 0 pending\n");
    }

    /// Tables that differ: exit 1, one line for each difference and the way out.
    async fn differing_tables_are_listed_and_exit_1(t: TestDb) {
        original_app::create(&t.db).await;
        original_app::execute(&t.db, &["ALTER TABLE tasks DROP COLUMN status"]).await;
        let dir = tempfile::tempdir().unwrap();
        let output = tracker(
            dir.path(),
            &["migrate", "up"],
            &[t.settings.url.child_env()],
        );
        assert_eq!(output.status.code(), Some(1));
        assert_eq!(
            text(&output).1,
            format!(
                "error: {}: the existing tables differ from what migration {FIRST} creates, so nothing was changed:\n  \
                 tasks.status: missing column (text)\n  \
                 fix the tables, or record the migration as applied without checking: `tracker migrate baseline --to {FIRST}`\n",
                t.settings.url.target()
            )
        );
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
