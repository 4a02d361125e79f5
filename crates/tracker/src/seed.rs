//! Demo data for a fresh database.

use chrono::NaiveDate;

use crate::error::Result;
use crate::service::{EmployeeInput, Page, TaskInput, Tracker};

/// Adds three employees and a small task tree, unless employees exist
/// already. Returns how many employees and tasks it created.
pub async fn seed(tracker: &Tracker) -> Result<(usize, usize)> {
    if !tracker
        .list_employees(Page {
            limit: 1,
            ..Page::default()
        })
        .await?
        .is_empty()
    {
        return Ok((0, 0));
    }
    let mut ids = Vec::new();
    for (full_name, position) in [
        ("Ada Lovelace", "Engineer"),
        ("Grace Hopper", "Team lead"),
        ("Alan Turing", "Researcher"),
    ] {
        let employee = tracker
            .create_employee(EmployeeInput {
                full_name: full_name.to_owned(),
                position: position.to_owned(),
            })
            .await?;
        ids.push(employee.id);
    }
    let date = |m, d| NaiveDate::from_ymd_opt(2026, m, d);
    // (title, parent index in this list, assignee index, deadline, status)
    let plan = [
        (
            "Launch the tracker",
            None,
            Some(1),
            date(12, 1),
            "in_progress",
        ),
        ("Design the schema", Some(0), Some(0), date(10, 15), "done"),
        (
            "Write the migrations",
            Some(1),
            Some(0),
            date(10, 20),
            "done",
        ),
        (
            "Build the API",
            Some(0),
            Some(2),
            date(11, 10),
            "in_progress",
        ),
        ("Error handling", Some(3), Some(2), date(11, 20), "review"),
        ("Benchmarks", Some(0), None, date(11, 30), "todo"),
        ("Write the docs", None, None, None, "todo"),
    ];
    let mut tasks: Vec<i32> = Vec::new();
    for (title, parent, assignee, deadline, status) in plan {
        let task = tracker
            .create_task(TaskInput {
                title: title.to_owned(),
                status: status.to_owned(),
                parent_id: parent.map(|i: usize| tasks[i]),
                assignee_id: assignee.map(|i: usize| ids[i]),
                deadline,
            })
            .await?;
        tasks.push(task.id);
    }
    Ok((ids.len(), tasks.len()))
}
