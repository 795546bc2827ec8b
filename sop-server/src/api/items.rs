//! Item routes: get, put, delete, range reads, and the one-call batch.

use std::collections::HashMap;
use std::time::Instant;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use sop_btree::{ErrorKind, Store, Transaction};

use super::{ApiError, ApiResult, AppState, body_bytes, check_key, parse_json, value_bytes};
use crate::wire::{Batch, BatchResults, Item, ItemsPage, OpKind};

/// Items per range page when `limit` is not given.
const DEFAULT_LIMIT: usize = 1000;
/// The largest `limit` accepted.
const MAX_LIMIT: usize = 100_000;
/// Operations per batch at most.
const MAX_BATCH_OPS: usize = 100_000;

async fn open_store(tx: &Transaction, name: &str) -> ApiResult<Store> {
    tx.bytes_store(name).await.map_err(ApiError::store)
}

/// `GET /v1/tx/{tx}/stores/{store}/items/{key}`.
pub(crate) async fn get(
    State(s): State<AppState>,
    Path((tx, store, key)): Path<(String, String, String)>,
) -> ApiResult<Json<Item>> {
    check_key(&key)?;
    let open = s.txs.get(&tx)?;
    let st = open_store(&open.tx, &store).await?;
    match st.get(key.as_bytes()).await? {
        Some(bytes) => {
            let value = crate::page::decode_value(&key, &bytes)?;
            Ok(Json(Item { key, value }))
        }
        None => Err(ApiError::not_found("not_found", format!("no key {key:?} in store {store:?}"))),
    }
}

/// `PUT /v1/tx/{tx}/stores/{store}/items/{key}`: upsert.
pub(crate) async fn put(
    State(s): State<AppState>,
    Path((tx, store, key)): Path<(String, String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<StatusCode> {
    check_key(&key)?;
    let value: Value = parse_json(&body_bytes(body)?)?;
    let bytes = value_bytes(&value)?;
    let open = s.txs.get(&tx)?;
    open.check_writable()?;
    let st = open_store(&open.tx, &store).await?;
    st.upsert(key.as_bytes(), &bytes).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /v1/tx/{tx}/stores/{store}/items/{key}`.
pub(crate) async fn remove(
    State(s): State<AppState>,
    Path((tx, store, key)): Path<(String, String, String)>,
) -> ApiResult<StatusCode> {
    check_key(&key)?;
    let open = s.txs.get(&tx)?;
    open.check_writable()?;
    let st = open_store(&open.tx, &store).await?;
    if st.remove(key.as_bytes()).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("not_found", format!("no key {key:?} in store {store:?}")))
    }
}

/// The query of a range read.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RangeQuery {
    from: Option<String>,
    to: Option<String>,
    limit: Option<usize>,
    reverse: Option<bool>,
}

/// `GET /v1/tx/{tx}/stores/{store}/items?from=&to=&limit=&reverse=`.
pub(crate) async fn list(
    State(s): State<AppState>,
    Path((tx, store)): Path<(String, String)>,
    query: Result<Query<RangeQuery>, QueryRejection>,
) -> ApiResult<Json<ItemsPage>> {
    let Query(q) = query.map_err(|e| ApiError::bad_request("invalid_input", e.body_text()))?;
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::bad_request("invalid_input", format!("limit must be 1..={MAX_LIMIT}")));
    }
    let open = s.txs.get(&tx)?;
    let st = open_store(&open.tx, &store).await?;
    let page = crate::page::read(&st, q.from.as_deref(), q.to.as_deref(), limit, q.reverse.unwrap_or(false))
        .await??;
    Ok(Json(page))
}

/// `POST /v1/batch`: every op in one transaction, retried on conflict.
pub(crate) async fn batch(
    State(s): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<BatchResults>> {
    let batch: Batch = parse_json(&body_bytes(body)?)?;
    if batch.ops.len() > MAX_BATCH_OPS {
        return Err(ApiError::too_large(format!(
            "{} ops exceed the limit of {MAX_BATCH_OPS}",
            batch.ops.len()
        )));
    }
    let mut writes = Vec::with_capacity(batch.ops.len());
    for (i, op) in batch.ops.iter().enumerate() {
        check_key(&op.key)?;
        writes.push(match (op.op, &op.value) {
            (OpKind::Put, Some(v)) => Some(value_bytes(v)?),
            (OpKind::Put, None) => {
                return Err(ApiError::bad_request("invalid_input", format!("op {i}: put needs a value")));
            }
            (_, Some(_)) => {
                return Err(ApiError::bad_request(
                    "invalid_input",
                    format!("op {i}: only put takes a value"),
                ));
            }
            _ => None,
        });
    }
    let ops = &batch.ops;
    let writes = &writes;
    let writable = ops.iter().any(|o| o.op != OpKind::Get);
    let run = |tx: Transaction| async move {
        let mut stores: HashMap<&str, Store> = HashMap::new();
        let mut raw = Vec::with_capacity(ops.len());
        for (op, bytes) in ops.iter().zip(writes) {
            if !stores.contains_key(op.store.as_str()) {
                stores.insert(&op.store, tx.bytes_store(&op.store).await?);
            }
            let st = &stores[op.store.as_str()];
            raw.push(match (op.op, bytes) {
                (OpKind::Get, _) => st.get(op.key.as_bytes()).await?,
                (OpKind::Put, Some(b)) => st.upsert(op.key.as_bytes(), b).await.map(|()| None)?,
                _ => st.remove(op.key.as_bytes()).await.map(|_| None)?,
            });
        }
        Ok(raw)
    };
    let started = Instant::now();
    let outcome = if writable { s.db.run_write(run).await } else { s.db.run_read(run).await };
    metrics::histogram!("sop_batch_seconds").record(started.elapsed().as_secs_f64());
    let raw =
        outcome.map_err(|e| if e.kind() == ErrorKind::NotFound { ApiError::store(e) } else { e.into() })?;
    let mut results = Vec::with_capacity(ops.len());
    for (op, got) in ops.iter().zip(raw) {
        results.push(match (op.op, got) {
            (OpKind::Get, Some(v)) => {
                json!({ "key": op.key, "value": crate::page::decode_value(&op.key, &v)? })
            }
            (OpKind::Get, None) => Value::Null,
            _ => json!({ "ok": true }),
        });
    }
    Ok(Json(BatchResults { results }))
}
