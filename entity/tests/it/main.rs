//! The generated entities and the hand-written links, on every backend.

use entity::links::{TaskToParent, TaskToSubtasks};
use entity::{employees, tasks};
use migration::{Migrator, MigratorTrait};
use sea_orm::{ActiveModelTrait, EntityTrait, ModelTrait, QueryOrder, Set};
use test_support::TestDb;

async fn employee(t: &TestDb, name: &str) -> employees::Model {
    employees::ActiveModel {
        full_name: Set(name.to_owned()),
        position: Set("dev".to_owned()),
        ..Default::default()
    }
    .insert(t.db.conn())
    .await
    .unwrap()
}

async fn task(t: &TestDb, title: &str, parent: Option<i32>, assignee: Option<i32>) -> tasks::Model {
    tasks::ActiveModel {
        title: Set(title.to_owned()),
        parent_id: Set(parent),
        assignee_id: Set(assignee),
        deadline: Set(Some(
            sea_orm::prelude::Date::from_ymd_opt(2026, 1, 31).unwrap(),
        )),
        status: Set("todo".to_owned()),
        ..Default::default()
    }
    .insert(t.db.conn())
    .await
    .unwrap()
}

test_support::backend_tests! {
    async fn every_relation_resolves(t: TestDb) {
        Migrator::up(t.db.conn(), None).await.unwrap();
        let ann = employee(&t, "Ann").await;
        let root = task(&t, "root", None, Some(ann.id)).await;
        let child = task(&t, "child", Some(root.id), None).await;
        let sibling = task(&t, "sibling", Some(root.id), Some(ann.id)).await;
        assert_eq!(child.deadline.unwrap().to_string(), "2026-01-31");

        // task → assignee
        let (found, assignee) = tasks::Entity::find_by_id(root.id)
            .find_also_related(employees::Entity)
            .one(t.db.conn())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(found, root);
        assert_eq!(assignee, Some(ann.clone()));

        // employee → tasks
        let mut theirs = ann.find_related(tasks::Entity).all(t.db.conn()).await.unwrap();
        theirs.sort_by_key(|t| t.id);
        assert_eq!(theirs, [root.clone(), sibling.clone()]);

        // task → parent
        let parents = child.find_linked(TaskToParent).all(t.db.conn()).await.unwrap();
        assert_eq!(parents, std::slice::from_ref(&root));
        assert!(root.find_linked(TaskToParent).all(t.db.conn()).await.unwrap().is_empty());

        // task → subtasks
        let subtasks = root
            .find_linked(TaskToSubtasks)
            .order_by_asc(tasks::Column::Id)
            .all(t.db.conn())
            .await
            .unwrap();
        assert_eq!(subtasks, [child, sibling]);
    }
}
