//! The benchmark runs once, at a tiny scale, with every answer checked, so
//! its code cannot rot. (No timing is asserted: speed is for `just bench`.)

mod reference;

use bench::workload::{OPS, Workload};
use bench::{Options, STACKS};
use test_support::TestDb;

fn options(scale: f64) -> Options {
    Options {
        scale,
        ops: OPS.map(String::from).to_vec(),
        stacks: STACKS.map(String::from).to_vec(),
        seed: 7,
        reuse: false,
        rounds: 2,
    }
}

test_support::backend_tests! {
    async fn every_stack_answers_every_op_correctly(t: TestDb) {
        let mut out = Vec::new();
        let records = bench::run(&t.settings, &options(0.002), &mut out).await.unwrap();
        assert_eq!(records.len(), 2 * OPS.len() * STACKS.len());
        let lines: Vec<serde_json::Value> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), records.len());
        for (line, record) in lines.iter().zip(&records) {
            for key in ["stack", "op", "n", "secs", "ops_per_s"] {
                assert!(line.get(key).is_some(), "{line} lacks {key}");
            }
            assert_eq!(line["op"], record.op.as_str());
            assert!(record.n > 0);
        }
        let load = &records[0];
        assert_eq!((load.op.as_str(), load.n), ("load", 2 + 200));
        // Interleaved: each op on every stack in turn, in reverse order in round 2.
        let order = |round: usize, op: &str| -> Vec<&str> {
            records.iter().filter(|r| r.round == round && r.op == op).map(|r| r.stack.as_str()).collect()
        };
        assert_eq!(order(1, "list"), ["tracker", "seaorm-defaults", "raw"]);
        assert_eq!(order(2, "list_after"), ["raw", "seaorm-defaults", "tracker"]);
        // Each stack had its own database, each freshly loaded in each round.
        for stack in ["tracker", "raw"] {
            let settings = bench::on_own_database(&t.settings, stack);
            let db = db_core::Db::connect(&settings).await.unwrap();
            let tracker = tracker::Tracker::new(db.clone());
            let tasks = tracker.list_tasks(tracker::Page { limit: 1000, ..Default::default() }).await.unwrap();
            // The load's 200 tasks and the last round's creates, no more.
            assert_eq!(tasks.len(), 200 + bench::workload::Workload::new(0.002).n("create"), "{stack}");
            db.close().await;
        }
        let summary = bench::summary(&records);
        assert!(summary.lines().count() == OPS.len() + 2, "{summary}");
        let list = summary.lines().find(|l| l.starts_with("list")).unwrap();
        // The op, three ops/s, two ratios with their spread.
        assert_eq!(list.split_whitespace().count(), 1 + 3 + 2 * 2, "{summary}");
    }
}

#[test]
fn the_workload_follows_its_definition() {
    let w = Workload::new(1.0);
    assert_eq!((w.employees, w.tasks), (1000, 100_000));
    assert_eq!(
        [w.n("get"), w.n("get_concurrent"), w.n("subtree")],
        [20_000, 50_000, 300]
    );
    assert_eq!(Workload::new(0.01).n("get"), 2000);
    assert_eq!(Workload::new(0.1).n("get"), 20_000);
    // Task 10 has 10 children, 100 grandchildren, 1000 great-grandchildren
    // and one great-great-grandchild (100000).
    assert_eq!(w.descendants(10), 1111);
    assert_eq!(w.descendants(99), 1110);
    let tasks = w.task_rows();
    assert_eq!(tasks[9].parent_id, Some(1));
    assert_eq!(tasks[0].assignee_id, w.assignee(1));
    assert_eq!(w.assignee(10), None);
    assert!(
        tasks
            .iter()
            .all(|t| t.assignee_id.is_none_or(|a| (1..=1000).contains(&a)))
    );
    assert_eq!(tasks[363].deadline.unwrap().to_string(), "2026-12-31");
    assert_eq!(tasks[364].deadline.unwrap().to_string(), "2026-01-01");
    assert_eq!(tasks[3].status, "todo");
}

#[test]
fn unknown_names_are_refused() {
    let mut bad = options(1.0);
    bad.ops.push("fly".into());
    assert_eq!(
        bad.validate().unwrap_err().to_string(),
        "unknown op \"fly\"; expected one of load,get,get_concurrent,create,update,list,list_after,subtree"
    );
}

test_support::backend_tests! {
    async fn import_keeps_ids_and_any_text_and_moves_the_counters(t: TestDb) {
        migration::up(&t.settings, std::time::Duration::from_secs(60)).await.unwrap();
        let tracker = tracker::Tracker::new(t.db.clone());
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
        bench::ops::import(&t.db, &employees, &tasks).await.unwrap();
        assert_eq!(tracker.list_employees(tracker::Page::default()).await.unwrap(), employees);
        assert_eq!(tracker.list_tasks(tracker::Page::default()).await.unwrap(), tasks);
        let next = tracker
            .create_task(tracker::TaskInput { title: "after".into(), status: "todo".into(), parent_id: None, assignee_id: None, deadline: None })
            .await
            .unwrap();
        assert!(next.id > 106, "the id counter was not moved: {}", next.id);
        let next = tracker
            .create_employee(tracker::EmployeeInput { full_name: "after".into(), position: "x".into() })
            .await
            .unwrap();
        assert!(next.id > 16, "the id counter was not moved: {}", next.id);
    }
}
