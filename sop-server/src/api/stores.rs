//! Store and transaction-lifecycle routes.

use std::time::Instant;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use sop_btree::ErrorKind;
use utoipa::IntoParams;

use super::openapi::errors;
use super::{ApiError, ApiResult, AppState, ErrorCode, json_body, path_params};
use crate::wire::{BeginTx, Committed, RolledBack, StoreEntry, StoreList, StoreOptionsJson, TxCreated};

/// The `{store}` of the store routes.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub(crate) struct StorePath {
    /// The store's name.
    #[param(schema_with = crate::schema::store_name, required = true)]
    store: String,
}

/// The `{tx}` of the transaction routes.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub(crate) struct TxPath {
    /// The transaction id from `POST /v1/tx`.
    tx: String,
}

errors!(ListErrors: storage);

/// Every store, sorted by name, with its committed item count.
#[utoipa::path(
    get,
    path = "/stores",
    operation_id = "list_stores",
    responses((status = 200, description = "The stores", body = StoreList), ListErrors)
)]
pub(crate) async fn list(State(s): State<AppState>) -> ApiResult<Json<StoreList>> {
    let stores =
        s.db.list_stores()
            .await?
            .into_iter()
            .map(|i| StoreEntry {
                name: i.name,
                count: i.count,
                options: StoreOptionsJson::from_options(&i.options),
            })
            .collect();
    Ok(Json(StoreList { stores }))
}

errors!(CreateErrors: storage, BadJson, BadBody, InvalidInput, AlreadyExists, TooLarge);

/// Creates a store. The body is optional; absent (or `null`) fields take
/// their defaults.
#[utoipa::path(
    put,
    path = "/stores/{store}",
    operation_id = "create_store",
    params(StorePath),
    request_body(content = Option<StoreOptionsJson>, description = "Options (optional)"),
    responses((status = 201, description = "Created", body = StoreEntry), CreateErrors)
)]
pub(crate) async fn create(
    State(s): State<AppState>,
    path: Result<Path<StorePath>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<(StatusCode, Json<StoreEntry>)> {
    let name = path_params(path)?.store;
    let opts: StoreOptionsJson = json_body(body)?;
    let info = s.db.create_store(&name, opts.to_options()).await.map_err(|e| match e.kind() {
        ErrorKind::AlreadyExists => ApiError::new(ErrorCode::AlreadyExists, format!("store {name:?} exists")),
        _ => e.into(),
    })?;
    let entry =
        StoreEntry { name: info.name, count: 0, options: StoreOptionsJson::from_options(&info.options) };
    Ok((StatusCode::CREATED, Json(entry)))
}

errors!(RemoveErrors: storage, InvalidInput, StoreNotFound, Conflict);

/// Removes a store and everything in it.
#[utoipa::path(
    delete,
    path = "/stores/{store}",
    operation_id = "remove_store",
    params(StorePath),
    responses((status = 204, description = "Removed"), RemoveErrors)
)]
pub(crate) async fn remove(
    State(s): State<AppState>,
    path: Result<Path<StorePath>, PathRejection>,
) -> ApiResult<StatusCode> {
    let name = path_params(path)?.store;
    s.db.remove_store(&name).await.map_err(ApiError::store)?;
    Ok(StatusCode::NO_CONTENT)
}

errors!(BeginErrors: storage, BadJson, BadBody, InvalidInput, TooManyTransactions, TooLarge);

/// Begins a transaction. It ends at commit, rollback, or `timeout_ms`
/// after it began; then the server rolls it back and later requests get
/// 410 `expired`.
#[utoipa::path(
    post,
    path = "/tx",
    operation_id = "begin",
    request_body(content = Option<BeginTx>, description = "Mode and timeout (optional)"),
    responses((status = 201, description = "Begun", body = TxCreated), BeginErrors)
)]
pub(crate) async fn begin(
    State(s): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<(StatusCode, Json<TxCreated>)> {
    let req: BeginTx = json_body(body)?;
    let tx = s.txs.begin(&s.db, req.mode, req.timeout_ms).await?;
    Ok((StatusCode::CREATED, Json(TxCreated { tx })))
}

errors!(CommitErrors: storage, InvalidInput, TxNotFound, Expired, Closed, Conflict, Indeterminate);

/// Validates and publishes atomically; the transaction is over whatever
/// the answer. 409 `conflict`: something it read changed, retry it;
/// 500 `indeterminate`: the commit may or may not have applied.
#[utoipa::path(
    post,
    path = "/tx/{tx}/commit",
    operation_id = "commit",
    params(TxPath),
    responses((status = 200, description = "Committed", body = Committed), CommitErrors)
)]
pub(crate) async fn commit(
    State(s): State<AppState>,
    path: Result<Path<TxPath>, PathRejection>,
) -> ApiResult<Json<Committed>> {
    let open = s.txs.take(&path_params(path)?.tx)?;
    let started = Instant::now();
    let outcome = open.tx.commit().await;
    metrics::histogram!("sop_commit_seconds").record(started.elapsed().as_secs_f64());
    outcome?;
    Ok(Json(Committed { committed: true }))
}

errors!(RollbackErrors: InvalidInput, TxNotFound, Expired);

/// Ends a transaction without publishing.
#[utoipa::path(
    post,
    path = "/tx/{tx}/rollback",
    operation_id = "rollback",
    params(TxPath),
    responses((status = 200, description = "Rolled back", body = RolledBack), RollbackErrors)
)]
pub(crate) async fn rollback(
    State(s): State<AppState>,
    path: Result<Path<TxPath>, PathRejection>,
) -> ApiResult<Json<RolledBack>> {
    let open = s.txs.take(&path_params(path)?.tx)?;
    open.tx.rollback().await;
    Ok(Json(RolledBack { rolled_back: true }))
}
