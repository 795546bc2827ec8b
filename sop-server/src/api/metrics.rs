//! `GET /metrics`: the engine's counters copied into the Prometheus
//! registry at scrape time, then rendered (the recorder is `crate::metrics`).

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::openapi::errors;
use super::{ApiError, AppState, ErrorCode};

errors!(MetricsErrors: NoMetrics);

/// Prometheus metrics: `sop_commits_total`, `sop_conflicts_total`,
/// `sop_rollbacks_total`, `sop_merges_total`, `sop_retries_total`,
/// `sop_commit_seconds`, `sop_batch_seconds`, `sop_cache_hits_total`,
/// `sop_cache_misses_total`, `sop_open_transactions`.
#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    responses(
        (status = 200, description = "Prometheus text format", body = String, content_type = "text/plain"),
        MetricsErrors
    )
)]
pub(crate) async fn render(State(s): State<AppState>) -> Response {
    let Some(handle) = &s.metrics else {
        return ApiError::new(ErrorCode::NoMetrics, "metrics are disabled").into_response();
    };
    let st = s.db.stats();
    metrics::counter!("sop_commits_total").absolute(st.commits);
    metrics::counter!("sop_conflicts_total").absolute(st.conflicts);
    metrics::counter!("sop_rollbacks_total").absolute(st.rollbacks);
    metrics::counter!("sop_merges_total").absolute(st.merges);
    metrics::counter!("sop_retries_total").absolute(st.retries);
    #[allow(clippy::cast_precision_loss)]
    metrics::gauge!("sop_open_transactions").set(s.txs.len() as f64);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], handle.render()).into_response()
}
