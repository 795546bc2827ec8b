//! Store and transaction-lifecycle routes.

use std::time::Instant;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use sop_btree::ErrorKind;

use super::{ApiError, ApiResult, AppState, json_body};
use crate::wire::{BeginTx, Committed, StoreEntry, StoreList, StoreOptionsJson, TxCreated};

/// `GET /v1/stores`.
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

/// `PUT /v1/stores/{store}`.
pub(crate) async fn create(
    State(s): State<AppState>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<(StatusCode, Json<StoreEntry>)> {
    let opts: StoreOptionsJson = json_body(body)?;
    let info = s.db.create_store(&name, opts.to_options()).await.map_err(|e| match e.kind() {
        ErrorKind::AlreadyExists => {
            ApiError::new(StatusCode::CONFLICT, "already_exists", format!("store {name:?} exists"))
        }
        _ => e.into(),
    })?;
    let entry =
        StoreEntry { name: info.name, count: 0, options: StoreOptionsJson::from_options(&info.options) };
    Ok((StatusCode::CREATED, Json(entry)))
}

/// `DELETE /v1/stores/{store}`.
pub(crate) async fn remove(State(s): State<AppState>, Path(name): Path<String>) -> ApiResult<StatusCode> {
    s.db.remove_store(&name).await.map_err(ApiError::store)?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/tx`.
pub(crate) async fn begin(
    State(s): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<(StatusCode, Json<TxCreated>)> {
    let req: BeginTx = json_body(body)?;
    let tx = s.txs.begin(&s.db, req.mode, req.timeout_ms).await?;
    Ok((StatusCode::CREATED, Json(TxCreated { tx })))
}

/// `POST /v1/tx/{tx}/commit`: the transaction is over whatever the outcome.
pub(crate) async fn commit(State(s): State<AppState>, Path(tx): Path<String>) -> ApiResult<Json<Committed>> {
    let open = s.txs.take(&tx)?;
    let started = Instant::now();
    let outcome = open.tx.commit().await;
    metrics::histogram!("sop_commit_seconds").record(started.elapsed().as_secs_f64());
    outcome?;
    Ok(Json(Committed { committed: true }))
}

/// `POST /v1/tx/{tx}/rollback`.
pub(crate) async fn rollback(
    State(s): State<AppState>,
    Path(tx): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let open = s.txs.take(&tx)?;
    open.tx.rollback().await;
    Ok(Json(serde_json::json!({ "rolled_back": true })))
}
