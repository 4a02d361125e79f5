//! The workload of `docs/bench-workload.md`: the data set, the operation
//! counts at a scale, and what a correct answer looks like.

use chrono::{Days, NaiveDate};
use tracker::{Employee, Task};

/// The operations, in the order they run.
pub const OPS: [&str; 8] = [
    "load",
    "get",
    "get_concurrent",
    "create",
    "update",
    "list",
    "list_after",
    "subtree",
];

/// Concurrent tasks and pool size of `get_concurrent`.
pub const CONCURRENCY: usize = 64;
/// Pool size of every stack (the workload's `get_concurrent` pool).
pub const POOL: u32 = 16;

/// Rows per page of `list` and `list_after`.
pub const PAGE: u64 = 100;

const STATUSES: [&str; 4] = ["todo", "in_progress", "review", "done"];

/// The data set at one scale.
#[derive(Debug, Clone, Copy)]
pub struct Workload {
    /// Scale factor (1 = 1,000 employees, 100,000 tasks).
    pub scale: f64,
    /// Employees `1..=employees`.
    pub employees: i32,
    /// Tasks `1..=tasks`.
    pub tasks: i32,
}

impl Workload {
    /// The data set at `scale`.
    pub fn new(scale: f64) -> Self {
        Workload {
            scale,
            employees: ((1000.0 * scale).round() as i32).max(1),
            tasks: ((100_000.0 * scale).round() as i32).max(1),
        }
    }

    /// How many times `op` runs: its scale-1 count, reduced proportionally
    /// below scale 0.1.
    pub fn n(&self, op: &str) -> usize {
        let full = match op {
            "load" => return (self.employees + self.tasks) as usize,
            "get" => 20_000,
            "get_concurrent" => 50_000,
            "create" | "update" => 5000,
            "list" | "list_after" => 2000,
            "subtree" => 300,
            _ => 0,
        };
        ((full as f64 * (10.0 * self.scale).min(1.0)).floor() as usize).max(1)
    }

    /// The employees to load.
    pub fn employee_rows(&self) -> Vec<Employee> {
        (1..=self.employees)
            .map(|i| Employee {
                id: i,
                full_name: format!("Employee {i}"),
                position: format!("Position {}", i % 17),
            })
            .collect()
    }

    /// The assignee of task `i`: a pseudo-random employee for `i % 10 != 0`.
    pub fn assignee(&self, i: i32) -> Option<i32> {
        (i % 10 != 0).then(|| (i64::from(i) * 2_654_435_761 % i64::from(self.employees)) as i32 + 1)
    }

    /// The tasks to load: a 10-ary forest, parents before children.
    pub fn task_rows(&self) -> Vec<Task> {
        let start = NaiveDate::from_ymd_opt(2026, 1, 1).expect("a valid date");
        (1..=self.tasks)
            .map(|i| Task {
                id: i,
                title: format!("Task {i}"),
                parent_id: (i >= 10).then_some(i / 10),
                assignee_id: self.assignee(i),
                deadline: start.checked_add_days(Days::new((i % 365) as u64)),
                status: STATUSES[(i % 4) as usize].to_owned(),
            })
            .collect()
    }

    /// The ids `subtree` starts from: 10..=99, capped by the task count.
    pub fn subtree_roots(&self) -> std::ops::RangeInclusive<i32> {
        10..=self.tasks.clamp(10, 99)
    }

    /// How many loaded tasks descend from task `k`.
    pub fn descendants(&self, k: i32) -> usize {
        let (mut low, mut high, mut count) = (i64::from(k) * 10, i64::from(k) * 10 + 9, 0i64);
        let max = i64::from(self.tasks);
        while low <= max {
            count += high.min(max) - low + 1;
            low *= 10;
            high = high * 10 + 9;
        }
        count as usize
    }
}

/// Fails the run on a wrong answer: a benchmark that returns nothing fast
/// must not look fast.
pub fn check(ok: bool, what: impl FnOnce() -> String) -> Result<(), crate::Error> {
    if ok {
        Ok(())
    } else {
        Err(crate::Error::WrongAnswer(what()))
    }
}
