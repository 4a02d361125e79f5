//! The service's queries: no N+1, one recursive query per subtree.

use db_core::{Db, SessionOptions};
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use test_support::{Backend, TestDb};
use tracker::{Compaction, EmployeeInput, Page, TaskInput, Tracker};

use crate::support::migrate;

/// Runs `work` and returns how many statements it executed on `db`.
async fn statements<T>(db: &Db, work: impl std::future::Future<Output = T>) -> (T, u64) {
    let before = db.stats().statements;
    let value = work.await;
    (value, db.stats().statements - before)
}

async fn tree(tracker: &Tracker) -> Vec<i32> {
    let mut ids = Vec::new();
    for i in 0..5 {
        let employee = tracker
            .create_employee(EmployeeInput {
                full_name: format!("E{i}"),
                position: "dev".into(),
            })
            .await
            .unwrap();
        ids.push(employee.id);
    }
    // 1 root, 3 children, 9 grandchildren.
    let task = |title: String, parent: Option<i32>, assignee: Option<i32>| TaskInput {
        title,
        status: "todo".into(),
        parent_id: parent,
        assignee_id: assignee,
        deadline: None,
    };
    let root = tracker
        .create_task(task("root".into(), None, Some(ids[0])))
        .await
        .unwrap();
    for c in 0..3 {
        let child = tracker
            .create_task(task(format!("c{c}"), Some(root.id), Some(ids[c + 1])))
            .await
            .unwrap();
        for g in 0..3 {
            tracker
                .create_task(task(format!("g{c}{g}"), Some(child.id), None))
                .await
                .unwrap();
        }
    }
    ids
}

test_support::backend_tests! {
    async fn pages_with_assignees_take_two_queries_and_subtrees_one(t: TestDb) {
        migrate(&t).await;
        let tracker = Tracker::new(t.db.clone());
        let employees = tree(&tracker).await;

        let (page, n) = statements(&t.db, tracker.list_tasks_with_assignees(Page::default())).await;
        let page = page.unwrap();
        assert_eq!(page.len(), 13);
        assert_eq!(n, 2, "a page of tasks with assignees took {n} statements");
        let assigned: Vec<i32> = page.iter().filter_map(|(_, e)| e.as_ref().map(|e| e.id)).collect();
        assert_eq!(assigned, employees[..4]);

        let (subtree, n) = statements(&t.db, tracker.subtree(1)).await;
        let subtree = subtree.unwrap();
        assert_eq!(subtree.len(), 12);
        assert!(subtree.windows(2).all(|w| w[0].id < w[1].id));
        assert_eq!(n, 1, "a subtree took {n} statements");

        let (found, n) = statements(&t.db, tracker.task_with_assignee(1)).await;
        let (task, assignee) = found.unwrap();
        assert_eq!((task.id, assignee.map(|e| e.id)), (1, Some(employees[0])));
        assert_eq!(n, 1, "a task with its assignee took {n} statements");
    }

    async fn moving_a_task_under_its_own_subtree_is_refused(t: TestDb) {
        migrate(&t).await;
        let tracker = Tracker::new(t.db.clone());
        tree(&tracker).await;
        let grandchild = tracker.subtree(1).await.unwrap().pop().unwrap();
        let root = tracker.task(1).await.unwrap();
        let err = tracker
            .update_task(1, TaskInput {
                title: root.title,
                status: root.status,
                parent_id: Some(grandchild.id),
                assignee_id: None,
                deadline: None,
            })
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), format!("parent_id: task {} is a subtask of task 1", grandchild.id));
        assert_eq!(tracker.subtree(1).await.unwrap().len(), 12);
    }
}

test_support::backend_tests! {
    async fn import_keeps_ids_and_any_text_and_moves_the_counters(t: TestDb) {
        migrate(&t).await;
        let tracker = Tracker::new(t.db.clone());
        let odd = ["tab\there", "new\nline", "back\\slash", "\\N", "quote'\"", "ünï cödé", ""];
        let employees: Vec<tracker::Employee> = odd
            .iter()
            .enumerate()
            .map(|(i, s)| tracker::Employee { id: i as i32 + 10, full_name: s.to_string(), position: format!("{s}!") })
            .collect();
        let tasks: Vec<tracker::Task> = odd
            .iter()
            .enumerate()
            .map(|(i, s)| tracker::Task {
                id: i as i32 + 100,
                title: s.to_string(),
                parent_id: (i > 0).then_some(100),
                assignee_id: Some(i as i32 + 10),
                deadline: chrono::NaiveDate::from_ymd_opt(2026, 2, i as u32 + 1),
                status: "todo".into(),
            })
            .collect();
        tracker.import(&employees, &tasks).await.unwrap();
        assert_eq!(tracker.list_employees(Page::default()).await.unwrap(), employees);
        assert_eq!(tracker.list_tasks(Page::default()).await.unwrap(), tasks);
        let next = tracker
            .create_task(TaskInput { title: "after".into(), status: "todo".into(), parent_id: None, assignee_id: None, deadline: None })
            .await
            .unwrap();
        assert!(next.id > 106, "the id counter was not moved: {}", next.id);
        let next = tracker
            .create_employee(EmployeeInput { full_name: "after".into(), position: "x".into() })
            .await
            .unwrap();
        assert!(next.id > 16, "the id counter was not moved: {}", next.id);
    }
}

test_support::backend_tests! {
    /// Every way to ask for a page answers what OFFSET over the whole list
    /// answers: with gaps in the ids, past the end, and after an id that is
    /// not there.
    async fn pages_from_any_start_are_the_offset_pages(t: TestDb) {
        migrate(&t).await;
        let tracker = Tracker::new(t.db.clone());
        tree(&tracker).await;
        // Leaves, so the ids get gaps: 1-3, 5-7, 9-11 are left.
        for id in [4, 8, 12, 13] {
            tracker.delete_task(id).await.unwrap();
        }
        let all = tracker.list_tasks(Page { limit: 1000, ..Page::default() }).await.unwrap();
        let ids: Vec<i32> = all.iter().map(|t| t.id).collect();
        assert_eq!(ids, [1, 2, 3, 5, 6, 7, 9, 10, 11]);
        for after_id in [None, Some(0), Some(1), Some(4), Some(10), Some(11), Some(13), Some(i32::MAX)] {
            let rest: Vec<_> = all.iter().filter(|t| after_id.is_none_or(|a| t.id > a)).collect();
            for skip in 0..=rest.len() as u64 + 1 {
                for limit in [0, 1, 3, 1000] {
                    let page = Page { skip, limit, after_id };
                    let expected: Vec<_> = rest.iter().skip(skip as usize).take(limit as usize).map(|t| (*t).clone()).collect();
                    assert_eq!(tracker.list_tasks(page).await.unwrap(), expected, "{page:?}");
                }
            }
        }
        let employees = tracker.list_employees(Page::default()).await.unwrap();
        let page = Page { skip: 1, limit: 2, after_id: Some(employees[0].id) };
        assert_eq!(tracker.list_employees(page).await.unwrap(), employees[2..4]);
    }
}

/// Runs `sql` on `db`, outside a transaction.
async fn exec(db: &Db, sql: &str) {
    let session = db
        .session(SessionOptions::single_statement())
        .await
        .unwrap();
    session.execute_unprepared(sql).await.unwrap();
}

/// The one number `sql` answers.
async fn number(db: &Db, sql: &str) -> i64 {
    let read = db.read().await.unwrap();
    let row = read.query_one_raw(Statement::from_string(DbBackend::Postgres, sql));
    row.await.unwrap().unwrap().try_get_by_index(0).unwrap()
}

/// Blocks whose kept count differs from the rows they hold.
const MISCOUNTED: &str = "SELECT count(*) FROM \
    (SELECT id >> 10 AS block, count(*) AS n FROM tasks GROUP BY 1) AS held \
    FULL JOIN (SELECT block, sum(n) AS n FROM task_blocks GROUP BY block HAVING sum(n) <> 0) AS kept \
    USING (block) WHERE held.n IS DISTINCT FROM kept.n";

/// Every deep page answers what `OFFSET` answers, and every block count is exact.
async fn deep_pages_are_the_offset_pages(tracker: &Tracker) {
    assert_eq!(
        number(tracker.db(), MISCOUNTED).await,
        0,
        "a block count is wrong"
    );
    let all = tracker.list_tasks(Page {
        limit: 1_000_000,
        ..Page::default()
    });
    let all: Vec<i32> = all.await.unwrap().iter().map(|t| t.id).collect();
    let n = all.len() as u64;
    for skip in [
        1023,
        1024,
        1025,
        2047,
        2048,
        3000,
        n - 1,
        n,
        n + 1,
        u64::MAX,
    ] {
        for limit in [1, 100] {
            let page = Page {
                skip,
                limit,
                after_id: None,
            };
            let ids: Vec<i32> = tracker
                .list_tasks(page)
                .await
                .unwrap()
                .iter()
                .map(|t| t.id)
                .collect();
            let expected: Vec<i32> = all
                .iter()
                .copied()
                .skip(skip as usize)
                .take(limit as usize)
                .collect();
            assert_eq!(ids, expected, "{page:?}");
            let (joined, n) =
                statements(tracker.db(), tracker.list_tasks_with_assignees(page)).await;
            let joined = joined.unwrap();
            // From 1,024 rows deep, one statement joins the page.
            let want = if skip < 1024 { 2 } else { 1 };
            assert_eq!(
                n, want,
                "a page with assignees took {n} statements, {page:?}"
            );
            let ids: Vec<i32> = joined.iter().map(|(t, _)| t.id).collect();
            assert_eq!(ids, expected, "with assignees, {page:?}");
            for (task, assignee) in &joined {
                assert_eq!(
                    task.assignee_id,
                    assignee.as_ref().map(|e| e.id),
                    "{task:?}"
                );
            }
        }
    }
}

/// On PostgreSQL a page 1,024 rows deep or more starts from the block counts
/// that triggers keep. Through bulk and single inserts, deletes, a changed id,
/// compactions running at once with inserts, and `TRUNCATE`, the pages stay
/// the `OFFSET` pages and the counts stay exact.
#[test_support::needs(postgres)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_pages_follow_the_block_counts_through_every_write() {
    let t = TestDb::new(Backend::Postgres).await;
    migrate(&t).await;
    let tracker = Tracker::new(t.db.clone());
    exec(
        &t.db,
        "INSERT INTO employees (full_name, position) VALUES ('a', 'x'), ('b', 'y')",
    )
    .await;
    exec(
        &t.db,
        "INSERT INTO tasks (title, status, assignee_id) \
         SELECT 't' || g, 'todo', nullif(g % 3, 0) FROM generate_series(1, 5000) g",
    )
    .await;
    exec(
        &t.db,
        "DELETE FROM tasks WHERE id % 7 = 0 OR id BETWEEN 2000 AND 2100",
    )
    .await;
    exec(&t.db, "UPDATE tasks SET id = 9000 WHERE id = 1500").await;
    assert!(
        number(&t.db, "SELECT count(*) FROM task_blocks").await > 5,
        "one row per statement and block"
    );
    deep_pages_are_the_offset_pages(&tracker).await;

    let task = |i: i32| TaskInput {
        title: format!("n{i}"),
        status: "todo".into(),
        parent_id: None,
        assignee_id: None,
        deadline: None,
    };
    let inserts = async {
        for i in 0..50 {
            tracker.create_task(task(i)).await.unwrap();
        }
    };
    let compactions = async {
        let mut folded = 0;
        for _ in 0..10 {
            let (a, b) = tokio::join!(tracker.compact_task_blocks(), tracker.compact_task_blocks());
            folded += a.unwrap() + b.unwrap();
        }
        folded
    };
    let ((), folded) = tokio::join!(inserts, compactions);
    assert!(folded > 0, "nothing was compacted");
    deep_pages_are_the_offset_pages(&tracker).await;
    tracker.compact_task_blocks().await.unwrap();
    let blocks = "SELECT count(*) FROM (SELECT block FROM task_blocks GROUP BY block HAVING count(*) > 1) AS b";
    assert_eq!(
        number(&t.db, blocks).await,
        0,
        "compaction left a block in several rows"
    );
    deep_pages_are_the_offset_pages(&tracker).await;

    exec(&t.db, "TRUNCATE tasks").await;
    assert_eq!(number(&t.db, "SELECT count(*) FROM task_blocks").await, 0);
    let page = Page {
        skip: 2000,
        ..Page::default()
    };
    assert!(tracker.list_tasks(page).await.unwrap().is_empty());
}

/// A `Compaction` folds the block counts while it runs, on a pool of its
/// own, and stops when it is stopped.
#[test_support::needs(postgres)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_folds_the_block_counts_until_it_stops() {
    let t = TestDb::new(Backend::Postgres).await;
    migrate(&t).await;
    let three_rows = || async {
        exec(
            &t.db,
            "INSERT INTO tasks (title, status) VALUES ('a', 'todo'), ('b', 'todo')",
        )
        .await;
        exec(
            &t.db,
            "INSERT INTO tasks (title, status) VALUES ('c', 'todo')",
        )
        .await;
        assert_eq!(
            number(&t.db, "SELECT sum(n)::bigint FROM task_blocks").await % 3,
            0
        );
    };
    let rows = "SELECT count(*) FROM task_blocks";
    let compaction = Compaction::start(&t.settings).await.unwrap().unwrap();
    three_rows().await;
    let started = std::time::Instant::now();
    while number(&t.db, rows).await > 1 {
        assert!(
            started.elapsed().as_secs() < 10,
            "not compacted within 10 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    compaction.stop().await;
    three_rows().await;
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    assert_eq!(number(&t.db, rows).await, 3, "compacted after it stopped");
    let sqlite = TestDb::new(Backend::Sqlite).await;
    assert!(Compaction::start(&sqlite.settings).await.unwrap().is_none());
}
