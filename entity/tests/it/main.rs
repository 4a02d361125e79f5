//! The generated entities and the hand-written links, on every backend.

use entity::links::{TaskToParent, TaskToSubtasks};
use entity::{employees, tasks};
use sea_orm::{ActiveModelTrait, EntityTrait, ModelTrait, QueryOrder, Set};
use test_support::TestDb;

async fn employee(t: &TestDb, name: &str) -> employees::Model {
    let tx = t.db.begin().await.unwrap();
    let model = employees::ActiveModel {
        full_name: Set(name.to_owned()),
        position: Set("dev".to_owned()),
        ..Default::default()
    }
    .insert(&tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    model
}

async fn task(t: &TestDb, title: &str, parent: Option<i32>, assignee: Option<i32>) -> tasks::Model {
    let tx = t.db.begin().await.unwrap();
    let model = tasks::ActiveModel {
        title: Set(title.to_owned()),
        parent_id: Set(parent),
        assignee_id: Set(assignee),
        deadline: Set(Some(
            sea_orm::prelude::Date::from_ymd_opt(2026, 1, 31).unwrap(),
        )),
        status: Set("todo".to_owned()),
        ..Default::default()
    }
    .insert(&tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    model
}

test_support::backend_tests! {
    async fn every_relation_resolves(t: TestDb) {
        migration::up(&t.settings, std::time::Duration::from_secs(60)).await.unwrap();
        let ann = employee(&t, "Ann").await;
        let root = task(&t, "root", None, Some(ann.id)).await;
        let child = task(&t, "child", Some(root.id), None).await;
        let sibling = task(&t, "sibling", Some(root.id), Some(ann.id)).await;
        assert_eq!(child.deadline.unwrap().to_string(), "2026-01-31");
        let read = t.db.read().await.unwrap();

        // task → assignee
        let (found, assignee) = tasks::Entity::find_by_id(root.id)
            .find_also_related(employees::Entity)
            .one(&read)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(found, root);
        assert_eq!(assignee, Some(ann.clone()));

        // employee → tasks
        let mut theirs = ann.find_related(tasks::Entity).all(&read).await.unwrap();
        theirs.sort_by_key(|t| t.id);
        assert_eq!(theirs, [root.clone(), sibling.clone()]);

        // task → parent
        let parents = child.find_linked(TaskToParent).all(&read).await.unwrap();
        assert_eq!(parents, std::slice::from_ref(&root));
        assert!(root.find_linked(TaskToParent).all(&read).await.unwrap().is_empty());

        // task → subtasks
        let subtasks = root
            .find_linked(TaskToSubtasks)
            .order_by_asc(tasks::Column::Id)
            .all(&read)
            .await
            .unwrap();
        assert_eq!(subtasks, [child, sibling]);
    }
}
