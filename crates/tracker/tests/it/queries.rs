//! The service's queries: no N+1, one recursive query per subtree.

use db_core::Db;
use sea_orm::ConnectionTrait as _;
use test_support::TestDb;
use tracker::{EmployeeInput, Page, TaskInput, Tracker};

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
    async fn reads_take_a_fixed_number_of_statements(t: TestDb) {
        migrate(&t).await;
        let tracker = Tracker::new(t.db.clone());
        let employees = tree(&tracker).await;

        let (page, n) = statements(&t.db, tracker.list_tasks(Page::default())).await;
        assert_eq!(page.unwrap().len(), 13);
        assert_eq!(n, 1, "a page of tasks took {n} statements");

        let (subtree, n) = statements(&t.db, tracker.subtree(1)).await;
        let subtree = subtree.unwrap();
        assert_eq!(subtree.len(), 12);
        assert!(subtree.windows(2).all(|w| w[0].id < w[1].id));
        assert_eq!(n, 1, "a subtree took {n} statements");

        let (found, n) = statements(&t.db, tracker.employee_tasks(employees[0])).await;
        assert_eq!(found.unwrap().iter().map(|t| t.id).collect::<Vec<_>>(), [1]);
        assert_eq!(n, 2, "an employee's tasks took {n} statements");

        let (task, n) = statements(&t.db, tracker.task(1)).await;
        assert_eq!(task.unwrap().assignee_id, Some(employees[0]));
        assert_eq!(n, 1, "a task took {n} statements");
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
    /// A chain deeper than a backend walks in one recursive query (1,000
    /// levels on MariaDB, which stops there without an error) or cascades a
    /// delete (15 levels on MySQL's InnoDB, 1,000 on SQLite): its subtree is
    /// whole, moving its root under its last task is refused, and deleting
    /// the root deletes the chain.
    async fn a_deep_chain_is_read_checked_and_deleted_whole(t: TestDb) {
        migrate(&t).await;
        let tracker = Tracker::new(t.db.clone());
        let rows: Vec<String> = (1..=1100)
            .map(|i| match i {
                1 => "(1, 't1', 'todo', NULL)".to_owned(),
                i => format!("({i}, 't{i}', 'todo', {})", i - 1),
            })
            .collect();
        let insert = format!("INSERT INTO tasks (id, title, status, parent_id) VALUES {}", rows.join(", "));
        t.db.autocommit().execute_unprepared(&insert).await.unwrap();
        let subtree = tracker.subtree(1).await.unwrap();
        assert_eq!(subtree.iter().map(|t| t.id).collect::<Vec<_>>(), (2..=1100).collect::<Vec<_>>());
        let err = tracker
            .update_task(1, TaskInput {
                title: "t1".into(),
                status: "todo".into(),
                parent_id: Some(1100),
                assignee_id: None,
                deadline: None,
            })
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "parent_id: task 1100 is a subtask of task 1");
        assert_eq!(tracker.delete_task(1).await.unwrap().title, "t1");
        assert!(tracker.list_tasks(Page::default()).await.unwrap().is_empty());
    }

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

/// On MySQL, a delete that races a move of a deep chain under the task
/// (here: the move is made and not yet committed when the delete starts)
/// deletes the chain with it: InnoDB's cascade, which reads the rows as
/// they are now and stops at 15 levels, finds nothing left to do.
#[test_support::needs(mysql)]
#[tokio::test]
async fn on_mysql_a_delete_racing_a_move_under_it_deletes_the_moved_chain() {
    let t = TestDb::new(test_support::Backend::MySql).await;
    migrate(&t).await;
    let tracker = Tracker::new(t.db.clone());
    // Task 1, and a chain of 20 from task 2 (not under task 1).
    let rows: Vec<String> = (1..=21)
        .map(|i| match i {
            1 | 2 => format!("({i}, 't{i}', 'todo', NULL)"),
            i => format!("({i}, 't{i}', 'todo', {})", i - 1),
        })
        .collect();
    let insert = format!(
        "INSERT INTO tasks (id, title, status, parent_id) VALUES {}",
        rows.join(", ")
    );
    t.db.autocommit().execute_unprepared(&insert).await.unwrap();
    let mover = t.db.begin().await.unwrap();
    mover
        .execute_unprepared("UPDATE tasks SET parent_id = 1 WHERE id = 2")
        .await
        .unwrap();
    let delete = tokio::spawn({
        let tracker = tracker.clone();
        async move { tracker.delete_task(1).await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    mover.commit().await.unwrap();
    let deleted = delete.await.unwrap();
    assert_eq!(
        deleted.map(|task| task.title).map_err(|e| e.to_string()),
        Ok("t1".to_owned())
    );
    assert!(
        tracker
            .list_tasks(Page::default())
            .await
            .unwrap()
            .is_empty()
    );
}
