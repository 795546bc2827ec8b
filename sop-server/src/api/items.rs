//! Item routes: get, put, delete, range reads, and the one-call batch.

use std::collections::HashMap;
use std::time::Instant;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::Deserialize;
use sop_btree::{ErrorKind, Store, Transaction};
use utoipa::IntoParams;

use super::openapi::errors;
use super::{
    ApiError, ApiResult, AppState, ErrorCode, body_bytes, check_key, parse_json, parse_object, path_params,
    value_bytes,
};
use crate::schema::{DEFAULT_LIMIT, MAX_BATCH_OPS, MAX_LIMIT};
use crate::wire::{Batch, BatchResult, BatchResults, Done, Item, ItemsPage, OpKind};

/// The `{tx}/{store}` of a range read.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub(crate) struct StoreInTx {
    /// The transaction id from `POST /v1/tx`.
    tx: String,
    /// The store's name.
    #[param(schema_with = crate::schema::store_name, required = true)]
    store: String,
}

/// The `{tx}/{store}/{key}` of the item routes.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub(crate) struct ItemInTx {
    /// The transaction id from `POST /v1/tx`.
    tx: String,
    /// The store's name.
    #[param(schema_with = crate::schema::store_name, required = true)]
    store: String,
    /// The key.
    #[param(schema_with = crate::schema::path_key, required = true)]
    key: String,
}

async fn open_store(tx: &Transaction, name: &str) -> ApiResult<Store> {
    tx.bytes_store(name).await.map_err(ApiError::store)
}

fn no_key(key: &str, store: &str) -> ApiError {
    ApiError::new(ErrorCode::NotFound, format!("no key {key:?} in store {store:?}"))
}

errors!(GetErrors: storage, InvalidInput, TxNotFound, StoreNotFound, NotFound, Expired, Closed, TooLarge, NotJson);

/// Reads one item.
#[utoipa::path(
    get,
    path = "/tx/{tx}/stores/{store}/items/{key}",
    operation_id = "get_item",
    params(ItemInTx),
    responses((status = 200, description = "The item", body = Item), GetErrors)
)]
pub(crate) async fn get(
    State(s): State<AppState>,
    path: Result<Path<ItemInTx>, PathRejection>,
) -> ApiResult<Json<Item>> {
    let ItemInTx { tx, store, key } = path_params(path)?;
    check_key(&key)?;
    let open = s.txs.get(&tx)?;
    let st = open_store(&open.tx, &store).await?;
    match st.get(key.as_bytes()).await? {
        Some(bytes) => {
            let value = crate::page::decode_value(&key, &bytes)?;
            Ok(Json(Item { key, value }))
        }
        None => Err(no_key(&key, &store)),
    }
}

errors!(
    PutErrors: storage, InvalidInput, BadJson, BadBody, WrongMode, TxNotFound, StoreNotFound, Expired, Closed,
    TooLarge
);

/// Upserts one item; visible to others after commit.
#[utoipa::path(
    put,
    path = "/tx/{tx}/stores/{store}/items/{key}",
    operation_id = "put_item",
    params(ItemInTx),
    request_body(
        content = inline(serde_json::Value),
        description = "The value: any JSON (at most 64 MiB serialized)"
    ),
    responses((status = 204, description = "Written"), PutErrors)
)]
pub(crate) async fn put(
    State(s): State<AppState>,
    path: Result<Path<ItemInTx>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<StatusCode> {
    let ItemInTx { tx, store, key } = path_params(path)?;
    check_key(&key)?;
    let value: serde_json::Value = parse_json(&body_bytes(body)?)?;
    let bytes = value_bytes(&value)?;
    let open = s.txs.get(&tx)?;
    open.check_writable()?;
    let st = open_store(&open.tx, &store).await?;
    st.upsert(key.as_bytes(), &bytes).await?;
    Ok(StatusCode::NO_CONTENT)
}

errors!(
    RemoveErrors: storage, InvalidInput, WrongMode, TxNotFound, StoreNotFound, NotFound, Expired, Closed,
    TooLarge
);

/// Deletes one item.
#[utoipa::path(
    delete,
    path = "/tx/{tx}/stores/{store}/items/{key}",
    operation_id = "delete_item",
    params(ItemInTx),
    responses((status = 204, description = "Deleted"), RemoveErrors)
)]
pub(crate) async fn remove(
    State(s): State<AppState>,
    path: Result<Path<ItemInTx>, PathRejection>,
) -> ApiResult<StatusCode> {
    let ItemInTx { tx, store, key } = path_params(path)?;
    check_key(&key)?;
    let open = s.txs.get(&tx)?;
    open.check_writable()?;
    let st = open_store(&open.tx, &store).await?;
    if st.remove(key.as_bytes()).await? { Ok(StatusCode::NO_CONTENT) } else { Err(no_key(&key, &store)) }
}

/// The query of a range read; other parameters are refused.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct RangeQuery {
    /// The first key (inclusive).
    #[param(schema_with = crate::schema::bound)]
    from: Option<String>,
    /// The end key (exclusive).
    #[param(schema_with = crate::schema::bound)]
    to: Option<String>,
    /// Items per page.
    #[serde(default, deserialize_with = "crate::wire::integer")]
    #[param(schema_with = crate::schema::limit)]
    limit: Option<usize>,
    /// Descending key order.
    #[param(schema_with = crate::schema::reverse)]
    reverse: Option<bool>,
}

errors!(ListErrors: storage, InvalidInput, TxNotFound, StoreNotFound, Expired, Closed, NotUtf8, NotJson);

/// Items in key order (descending with `reverse=true`). `next` is null at
/// the end; otherwise pass it as `from` (forward) or as `to` (reverse) to
/// read the next page.
#[utoipa::path(
    get,
    path = "/tx/{tx}/stores/{store}/items",
    operation_id = "list_items",
    params(StoreInTx, RangeQuery),
    responses((status = 200, description = "A page", body = ItemsPage), ListErrors)
)]
pub(crate) async fn list(
    State(s): State<AppState>,
    path: Result<Path<StoreInTx>, PathRejection>,
    query: Result<Query<RangeQuery>, QueryRejection>,
) -> ApiResult<Json<ItemsPage>> {
    let StoreInTx { tx, store } = path_params(path)?;
    let Query(q) = query.map_err(|e| ApiError::invalid(e.body_text()))?;
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::invalid(format!("limit must be 1..={MAX_LIMIT}")));
    }
    let open = s.txs.get(&tx)?;
    let st = open_store(&open.tx, &store).await?;
    let page = crate::page::read(&st, q.from.as_deref(), q.to.as_deref(), limit, q.reverse.unwrap_or(false))
        .await??;
    Ok(Json(page))
}

errors!(
    BatchErrors: storage, BadJson, BadBody, InvalidInput, StoreNotFound, Conflict, Indeterminate, TooLarge,
    NotJson, Expired
);

/// Runs every op in one transaction, retried automatically on conflict
/// (read-only when every op is a get).
#[utoipa::path(
    post,
    path = "/batch",
    operation_id = "batch",
    request_body = Batch,
    responses(
        (status = 200, description = "Results in op order", body = BatchResults),
        BatchErrors
    )
)]
pub(crate) async fn batch(
    State(s): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<BatchResults>> {
    let batch: Batch = parse_object(&body_bytes(body)?)?;
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
            (OpKind::Put, None) => return Err(ApiError::invalid(format!("op {i}: put needs a value"))),
            (_, Some(_)) => return Err(ApiError::invalid(format!("op {i}: only put takes a value"))),
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
                let value = crate::page::decode_value(&op.key, &v)?;
                Some(BatchResult::Got(Item { key: op.key.clone(), value }))
            }
            (OpKind::Get, None) => None,
            _ => Some(BatchResult::Done(Done { ok: true })),
        });
    }
    Ok(Json(BatchResults { results }))
}
