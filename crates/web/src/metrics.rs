//! `/metrics` in the Prometheus text format: db-core's pool, statement,
//! retry and replica series, the HTTP series (each route's handles are made
//! here; the layer around each route, `layer.rs`, records them), and the
//! process's RSS, CPU time and open file descriptors.
//!
//! | metric | kind | labels |
//! | --- | --- | --- |
//! | `http_requests_total` | counter | `method`, `route`, `status` |
//! | `http_request_duration_seconds` | histogram | `method`, `route` |
//! | `log_lines_dropped_total` | counter | |
//!
//! `route` is the route template that matched (`/tasks/{task_id}`), or
//! `unmatched`; it never holds a request's own path. Each route is also the
//! operation that db-core times statements under, as `GET /tasks/{task_id}`.
//! `log_lines_dropped_total` is the binary's count of log lines lost because
//! its log buffer was full ([`Metrics::count_dropped_log_lines`]).

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock, RwLock};
use std::time::Duration;

use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use db_core::Db;
use db_core::metrics::Operation;
use metrics::{Counter, Histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

const REQUESTS: &str = "http_requests_total";
const DURATION: &str = "http_request_duration_seconds";
const LOG_LINES_DROPPED: &str = "log_lines_dropped_total";

/// How often histogram samples are folded into their buckets when nobody
/// scrapes, so that memory stays bounded: the exporter buffers every sample
/// until then.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(1);

/// The process's metrics recorder, and what `/metrics` renders. There is one
/// per process ([`Metrics::install`] fails the second time), so it lives as
/// long as the process and a handle on it is a plain reference: copying one
/// for a request touches no shared counter.
#[derive(Clone, Copy)]
pub struct Metrics(&'static Inner);

struct Inner {
    handle: PrometheusHandle,
    process: metrics_process::Collector,
    /// Each route template's handles, by method label.
    routes: RwLock<HashMap<String, Vec<&'static Route>>>,
    /// The dropped log lines' counter and where its value comes from.
    dropped_log_lines: OnceLock<(Counter, DroppedLogLines)>,
}

type DroppedLogLines = Box<dyn Fn() -> u64 + Send + Sync>;

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// Why the recorder could not be installed.
#[derive(Debug, thiserror::Error)]
#[error("installing the metrics recorder: {0}")]
pub struct InstallError(String);

impl Metrics {
    /// Installs the Prometheus recorder for this process and turns db-core's
    /// recording on. Call it before connecting, so the pools are measured.
    pub fn install() -> Result<Metrics, InstallError> {
        let handle = PrometheusBuilder::new()
            .set_buckets(db_core::metrics::HISTOGRAM_BUCKETS)
            .and_then(PrometheusBuilder::install_recorder)
            .map_err(|e| InstallError(e.to_string()))?;
        db_core::metrics::enable();
        metrics::describe_counter!(REQUESTS, "HTTP requests by route template and status");
        metrics::describe_histogram!(
            DURATION,
            metrics::Unit::Seconds,
            "HTTP request latency by route template"
        );
        let process = metrics_process::Collector::default();
        process.describe();
        let inner = Inner {
            handle,
            process,
            routes: RwLock::default(),
            dropped_log_lines: OnceLock::new(),
        };
        Ok(Metrics(Box::leak(Box::new(inner))))
    }

    /// Folds histogram samples into buckets every second, for as long as
    /// the runtime runs.
    pub fn spawn_upkeep(&self) {
        let handle = self.0.handle.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(UPKEEP_INTERVAL).await;
                handle.run_upkeep();
            }
        });
    }

    /// Reports `dropped()`, how many log lines the binary lost because its
    /// log buffer was full, as `log_lines_dropped_total`, read whenever
    /// `/metrics` is. The series exists from this call on, at 0 while
    /// nothing is lost. Only the first call counts.
    pub fn count_dropped_log_lines(&self, dropped: impl Fn() -> u64 + Send + Sync + 'static) {
        metrics::describe_counter!(
            LOG_LINES_DROPPED,
            "Log lines dropped because the log buffer was full"
        );
        let counter = metrics::counter!(LOG_LINES_DROPPED);
        counter.absolute(dropped());
        let _ = self.0.dropped_log_lines.set((counter, Box::new(dropped)));
    }

    /// The text that `/metrics` answers with, after sampling the pools, the
    /// replicas (state and lag), the process and the dropped log lines.
    pub async fn render(&self, db: &Db) -> String {
        db_core::metrics::sample();
        if let Some((counter, dropped)) = self.0.dropped_log_lines.get() {
            counter.absolute(dropped());
        }
        // Sets the replicas' state and lag gauges.
        db.replica_status().await;
        self.0.process.collect();
        self.0.handle.render()
    }

    /// The handles of `method` on the route template `path` (`None`: no
    /// route matched), made on first use and kept for the life of the
    /// process, like the series they feed. Method labels and the router's
    /// templates bound how many there are.
    pub(crate) fn route(&self, method: &Method, path: Option<&str>) -> &'static Route {
        let (method, path) = (method_label(method), path.unwrap_or("unmatched"));
        let find = |routes: &HashMap<String, Vec<&'static Route>>| {
            let of_path = routes.get(path)?;
            of_path.iter().find(|r| r.method == method).copied()
        };
        let routes = &self.0.routes;
        if let Some(route) = find(&routes.read().unwrap_or_else(|e| e.into_inner())) {
            return route;
        }
        let mut routes = routes.write().unwrap_or_else(|e| e.into_inner());
        if let Some(route) = find(&routes) {
            return route;
        }
        let route: &'static Route = Box::leak(Box::new(Route::new(method, path)));
        routes.entry(path.to_owned()).or_default().push(route);
        route
    }
}

/// How many statuses a route counts without a lock; more go to a list.
const STATUS_SLOTS: usize = 8;

/// One route template and method: its handles.
pub(crate) struct Route {
    method: &'static str,
    path: String,
    pub(crate) duration: Histogram,
    pub(crate) operation: Operation,
    /// The request counter of each status seen, filled in order.
    by_status: [OnceLock<(StatusCode, Counter)>; STATUS_SLOTS],
    more_statuses: Mutex<Vec<(StatusCode, Counter)>>,
}

impl Route {
    fn new(method: &'static str, path: &str) -> Self {
        Route {
            method,
            path: path.to_owned(),
            duration: metrics::histogram!(DURATION, "method" => method, "route" => path.to_owned()),
            operation: Operation::new(format!("{method} {path}")),
            by_status: Default::default(),
            more_statuses: Mutex::default(),
        }
    }

    /// Whether these are the handles of `method` on the template `path`.
    pub(crate) fn is(&self, method: &Method, path: Option<&str>) -> bool {
        self.method == method_label(method) && self.path == path.unwrap_or("unmatched")
    }

    /// Counts one answer with `status`.
    pub(crate) fn count(&self, status: StatusCode) {
        let counter = || {
            let status = status.as_u16().to_string();
            let route = self.path.clone();
            metrics::counter!(REQUESTS, "method" => self.method, "route" => route, "status" => status)
        };
        for slot in &self.by_status {
            let (seen, c) = slot.get_or_init(|| (status, counter()));
            if *seen == status {
                return c.increment(1);
            }
        }
        let mut more = self.more_statuses.lock().unwrap_or_else(|e| e.into_inner());
        match more.iter().find(|(seen, _)| *seen == status) {
            Some((_, c)) => c.increment(1),
            None => {
                let c = counter();
                c.increment(1);
                more.push((status, c));
            }
        }
    }
}

/// Methods as label values: the router's own, else `other`.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// The `/metrics` handler's answer.
pub(crate) async fn answer(metrics: &Metrics, db: &Db) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        metrics.render(db).await,
    )
        .into_response()
}
