//! Prometheus metrics: the recorder (`GET /metrics` is `api/metrics.rs`).
//!
//! Engine counters ([`sop_btree::DbStats`]) are copied into the registry
//! at scrape time; the cache counts its hits and misses itself; commit and batch latencies are
//! recorded by the handlers as histograms.

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Latency buckets in seconds, 100 µs to 10 s.
const BUCKETS: &[f64] =
    &[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Installs the process-wide Prometheus recorder.
pub(crate) fn install() -> Result<PrometheusHandle, String> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS)
        .map_err(|e| format!("metrics: {e}"))?
        .install_recorder()
        .map_err(|e| format!("metrics: {e}"))?;
    metrics::describe_counter!("sop_commits_total", "Transactions committed");
    metrics::describe_counter!("sop_conflicts_total", "Commits that failed with a conflict");
    metrics::describe_counter!("sop_rollbacks_total", "Transactions rolled back");
    metrics::describe_counter!("sop_merges_total", "Node clashes resolved by swarm merge");
    metrics::describe_counter!("sop_retries_total", "Automatic retries of whole transactions");
    metrics::describe_gauge!("sop_open_transactions", "Transactions open on the server");
    metrics::describe_histogram!("sop_commit_seconds", "Latency of POST /v1/tx/{tx}/commit");
    metrics::describe_histogram!("sop_batch_seconds", "Latency of POST /v1/batch, retries included");
    metrics::describe_counter!("sop_cache_hits_total", "Node cache hits");
    metrics::describe_counter!(
        "sop_blob_requests_total",
        "Requests to an object-store blob store (--blobs file://, s3://, ...), by op"
    );
    metrics::describe_counter!("sop_blob_put_bytes_total", "Bytes put to an object-store blob store");
    metrics::describe_counter!("sop_cache_misses_total", "Node cache misses (loads)");
    // The cache counts these itself; register them so that they show
    // before the first hit.
    metrics::counter!("sop_cache_hits_total").increment(0);
    metrics::counter!("sop_cache_misses_total").increment(0);
    Ok(handle)
}
