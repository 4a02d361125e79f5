//! `/metrics` in the Prometheus text format: db-core's pool, statement,
//! retry and replica series, the HTTP series (each route's handles are made
//! here; the layer around each route, `layer.rs`, records them), and the
//! process's RSS, CPU time and open file descriptors.
//!
//! | metric | kind | labels |
//! | --- | --- | --- |
//! | `http_requests_total` | counter | `method`, `route`, `status` |
//! | `http_request_duration_seconds` | histogram | `method`, `route` |
//!
//! `route` is the route template that matched (`/tasks/{task_id}`), or
//! `unmatched`; it never holds a request's own path. Each route is also the
//! operation that db-core times statements under, as `GET /tasks/{task_id}`.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use db_core::Db;
use db_core::metrics::Operation;
use metrics::{Counter, Histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

const REQUESTS: &str = "http_requests_total";
const DURATION: &str = "http_request_duration_seconds";

/// How often histogram samples are folded into their buckets when nobody
/// scrapes, so that memory stays bounded.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// The process's metrics recorder, and what `/metrics` renders. There is one
/// per process: [`Metrics::install`] fails the second time.
#[derive(Clone)]
pub struct Metrics {
    handle: PrometheusHandle,
    process: Arc<metrics_process::Collector>,
    routes: Arc<RwLock<Routes>>,
}

/// Each route template's handles, by method.
type Routes = HashMap<String, Vec<(Method, Arc<Route>)>>;

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
        Ok(Metrics {
            handle,
            process: Arc::new(process),
            routes: Arc::default(),
        })
    }

    /// Folds histogram samples into buckets every few seconds, for as long
    /// as the runtime runs.
    pub fn spawn_upkeep(&self) {
        let handle = self.handle.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(UPKEEP_INTERVAL).await;
                handle.run_upkeep();
            }
        });
    }

    /// The text that `/metrics` answers with, after sampling the pools, the
    /// replicas (state and lag) and the process.
    pub async fn render(&self, db: &Db) -> String {
        db_core::metrics::sample();
        // Sets the replicas' state and lag gauges.
        db.replica_status().await;
        self.process.collect();
        self.handle.render()
    }

    /// The handles of the route template `path` (`None`: no route matched)
    /// and `method`, made on first use.
    pub(super) fn route(&self, method: &Method, path: Option<&str>) -> Arc<Route> {
        let path = path.unwrap_or("unmatched");
        let find = |routes: &Routes| {
            routes
                .get(path)
                .and_then(|r| r.iter().find(|(m, _)| m == method))
                .map(|(_, r)| r.clone())
        };
        if let Some(route) = find(&self.routes.read().unwrap_or_else(|e| e.into_inner())) {
            return route;
        }
        let mut routes = self.routes.write().unwrap_or_else(|e| e.into_inner());
        if let Some(route) = find(&routes) {
            return route;
        }
        let route = Arc::new(Route::new(method, path));
        routes
            .entry(path.to_owned())
            .or_default()
            .push((method.clone(), route.clone()));
        route
    }
}

/// One route template and method: its handles, made on first use (the
/// router's templates bound how many there are).
pub(super) struct Route {
    method: &'static str,
    path: String,
    pub(super) duration: Histogram,
    pub(super) operation: Operation,
    by_status: RwLock<Vec<(StatusCode, Counter)>>,
}

impl Route {
    fn new(method: &Method, path: &str) -> Self {
        let method = method_label(method);
        Route {
            method,
            path: path.to_owned(),
            duration: metrics::histogram!(DURATION, "method" => method, "route" => path.to_owned()),
            operation: Operation::new(format!("{method} {path}")),
            by_status: RwLock::default(),
        }
    }

    /// Counts one answer with `status`.
    pub(super) fn count(&self, status: StatusCode) {
        let found = self
            .by_status
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|(s, _)| *s == status)
            .map(|(_, c)| c.clone());
        let counter = found.unwrap_or_else(|| {
            let counter = metrics::counter!(
                REQUESTS,
                "method" => self.method,
                "route" => self.path.clone(),
                "status" => status.as_u16().to_string()
            );
            self.by_status
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .push((status, counter.clone()));
            counter
        });
        counter.increment(1);
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
pub(super) async fn answer(metrics: &Metrics, db: &Db) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        metrics.render(db).await,
    )
        .into_response()
}
