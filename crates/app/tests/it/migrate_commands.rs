//! `tracker migrate ...` does what the `migration` binary does, without `just`.

use std::ffi::OsString;

use test_support::{TestDb, original_app};

use crate::cli::{os, text, tracker};

const FIRST: &str = "m20261124_000001_create_employees_and_tasks";

/// The project's migrations, oldest first (a new one breaks no test here).
fn names() -> Vec<String> {
    <migration::Migrator as migration::MigratorTrait>::migrations()
        .iter()
        .map(|m| m.name().to_owned())
        .collect()
}

/// Report lines: `verb` as the report pads it, then each name.
fn lines(verb: &str, names: &[String]) -> String {
    names.iter().map(|n| format!("{verb} {n}\n")).collect()
}

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
        let (all, n) = (names(), names().len());
        let every = format!("{}{n} applied, 0 pending\n", lines("applied ", &all));
        assert_eq!(run(&t, dir, &["status"]), format!("{}0 applied, {n} pending\n", lines("pending ", &all)));
        assert_eq!(run(&t, dir, &["up"]), every);
        assert_eq!(run(&t, dir, &["status"]), every);
        assert_eq!(run(&t, dir, &["down"]), format!("{}{} applied, 1 pending\n", lines("reverted", &all[n - 1..]), n - 1));
        assert_eq!(run(&t, dir, &["fresh"]), every);
    }
}

test_support::backend_tests! {
    /// Switching from the original app: one command on its database.
    async fn the_original_database_takes_one_command(t: TestDb) {
        original_app::create(&t.db).await;
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        let (all, n) = (names(), names().len());
        assert_eq!(
            run(&t, dir, &["up"]),
            format!("adopted  {FIRST} (recorded as applied without running it)\n{}{n} applied, 0 pending\n", lines("applied ", &all[1..]))
        );
        assert_eq!(run(&t, dir, &["status"]), format!("{}{n} applied, 0 pending\n", lines("applied ", &all)));
        assert_eq!(run(&t, dir, &["up"]), format!("{n} applied, 0 pending\n"));
    }

    /// Tables that differ: exit 1, one line for each difference and the way out.
    async fn differing_tables_are_listed_and_exit_1(t: TestDb) {
        original_app::create(&t.db).await;
        original_app::execute(&t.db, &["ALTER TABLE tasks DROP COLUMN status"]).await;
        let dir = tempfile::tempdir().unwrap();
        // Standard error is compared whole: on a busy machine MariaDB's
        // catalog query can pass the 1 s slow-statement threshold and add a
        // warning that is not what this test is about.
        let output = tracker(
            dir.path(),
            &["migrate", "up"],
            &[t.settings.url.child_env(), ("DB_SLOW_STATEMENT_THRESHOLD", os("off"))],
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

/// A new migration's name becomes part of a module name: anything else is
/// refused before a file is written, with exit code 2.
#[test]
fn generate_refuses_a_name_that_is_not_a_module_name() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["", "a/b", "x.y", "Add-Priority"] {
        let output = tracker(dir.path(), &["migrate", "generate", name], &[]);
        let (_, stderr) = text(&output);
        assert_eq!(output.status.code(), Some(2), "{name:?}: {stderr}");
        let expected = format!(
            "error: invalid value '{name}' for '<NAME>': expected lower-case letters, digits and _, like add_task_priority"
        );
        assert!(stderr.starts_with(&expected), "{stderr}");
    }
}
