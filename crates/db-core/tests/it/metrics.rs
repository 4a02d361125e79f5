//! The metrics db-core records, read back from a Prometheus recorder that
//! this test binary installs once. Counters are shared by every test of the
//! binary, so a test compares its own count with the rise it sees.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

fn recorder() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let handle = PrometheusBuilder::new()
            .install_recorder()
            .expect("installing the Prometheus recorder");
        db_core::metrics::enable();
        handle
    })
}

/// `db_transaction_retries_total{reason}` as the recorder renders it (0
/// before the first retry of that reason). Installs the recorder on first
/// use, so a test calls it before the work it counts.
pub fn retries(reason: &str) -> u64 {
    let series = format!("db_transaction_retries_total{{reason=\"{reason}\"}} ");
    recorder()
        .render()
        .lines()
        .find_map(|line| line.strip_prefix(&series))
        .map_or(0, |value| value.parse().expect("a counter's value"))
}

/// Installs the recorder (if no test did yet) and returns what it renders,
/// with every pool's gauges sampled first.
pub fn rendered() -> String {
    let handle = recorder();
    db_core::metrics::sample();
    handle.render()
}

/// The value of one series, `name{labels}` exactly as rendered.
pub fn value(series: &str) -> Option<f64> {
    let prefix = format!("{series} ");
    rendered()
        .lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .map(|value| value.parse().expect("a number"))
}
