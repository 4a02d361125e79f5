//! The service's queries: no N+1, one recursive query per subtree.

use db_core::Db;
use db_core::testing::TestDb;
use migration::{Migrator, MigratorTrait};
use tracker::{EmployeeInput, Page, TaskInput, Tracker};

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

db_core::backend_tests! {
    async fn pages_with_assignees_take_two_queries_and_subtrees_one(t: TestDb) {
        Migrator::up(t.db.conn(), None).await.unwrap();
        let tracker = Tracker::new(t.db.clone());
        let employees = tree(&tracker).await;

        let (page, n) = statements(&t.db, tracker.list_tasks_with_assignees(Page { skip: 0, limit: 100 })).await;
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
        Migrator::up(t.db.conn(), None).await.unwrap();
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
