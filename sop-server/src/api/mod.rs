//! The HTTP API: routes, shared state, authentication and body parsing.
//!
//! Every response to a failed request is JSON `{"error","message"}`; see
//! `openapi.json` (served at `/v1/openapi.json`) for the whole contract.

mod error;
mod items;
mod stores;
mod txs;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::de::DeserializeOwned;
use sop_btree::{Database, MAX_KEY_LEN, MAX_VALUE_LEN};

pub(crate) use error::{ApiError, ApiResult};
pub(crate) use txs::{TxLimits, TxTable};

use crate::wire::Health;

/// The OpenAPI 3 description of this API.
pub(crate) const OPENAPI: &str = include_str!("openapi.json");

/// The largest request body: a 64 MiB value, its key, and room for JSON.
const BODY_LIMIT: usize = MAX_VALUE_LEN + MAX_KEY_LEN + (1 << 20);

/// What every handler shares.
#[derive(Debug, Clone)]
pub(crate) struct AppState {
    pub(crate) db: Database,
    pub(crate) txs: Arc<TxTable>,
    pub(crate) metrics: Option<PrometheusHandle>,
    /// When set, every route but `/health` needs `Bearer <token>`.
    pub(crate) token: Option<Arc<str>>,
}

/// The whole API.
pub(crate) fn router(state: AppState) -> Router {
    let v1 = Router::new()
        .route("/stores", get(stores::list))
        .route("/stores/{store}", put(stores::create).delete(stores::remove))
        .route("/tx", post(stores::begin))
        .route("/tx/{tx}/commit", post(stores::commit))
        .route("/tx/{tx}/rollback", post(stores::rollback))
        .route("/tx/{tx}/stores/{store}/items", get(items::list))
        .route("/tx/{tx}/stores/{store}/items/{key}", get(items::get).put(items::put).delete(items::remove))
        .route("/batch", post(items::batch))
        .route("/openapi.json", get(openapi));
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(crate::metrics::render))
        .nest("/v1", v1)
        .fallback(no_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(middleware::from_fn(refuse_oversize))
        .layer(middleware::from_fn_with_state(state.clone(), auth))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

async fn health() -> Json<Health> {
    Json(Health { status: "ok".into() })
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

async fn no_route() -> ApiError {
    ApiError::not_found("no_route", "no such route; see GET /v1/openapi.json")
}

async fn wrong_method() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "method not allowed on this route")
}

/// Bearer-token check for every route but `/health`.
async fn auth(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if let Some(token) = &state.token
        && req.uri().path() != "/health"
    {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !given.is_some_and(|g| constant_time_eq(g.as_bytes(), token.as_bytes())) {
            return ApiError::unauthorized().into_response();
        }
    }
    next.run(req).await
}

/// Answers `413` from the `Content-Length` alone, before the body is sent
/// (bodies without one are limited while read, by `DefaultBodyLimit`).
async fn refuse_oversize(req: Request, next: Next) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > BODY_LIMIT as u64) {
        let mut resp = ApiError::too_large(format!("request body over {BODY_LIMIT} bytes")).into_response();
        resp.headers_mut().insert(header::CONNECTION, axum::http::HeaderValue::from_static("close"));
        return resp;
    }
    next.run(req).await
}

/// Compares without an early exit on the first differing byte.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Parses a JSON body; an empty body gives `T::default()`.
pub(crate) fn json_body<T: DeserializeOwned + Default>(body: Result<Bytes, BytesRejection>) -> ApiResult<T> {
    let bytes = body_bytes(body)?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    parse_json(&bytes)
}

/// A body's bytes, or `413`/`400`.
pub(crate) fn body_bytes(body: Result<Bytes, BytesRejection>) -> ApiResult<Bytes> {
    body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large(format!(
                "request body over {} bytes",
                MAX_VALUE_LEN + MAX_KEY_LEN + (1 << 20)
            ))
        } else {
            ApiError::bad_request("bad_body", r.body_text())
        }
    })
}

/// Parses JSON, or `400 bad_json`.
pub(crate) fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> ApiResult<T> {
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request("bad_json", format!("malformed JSON body: {e}")))
}

/// Rejects a key longer than [`MAX_KEY_LEN`] bytes.
pub(crate) fn check_key(key: &str) -> ApiResult<()> {
    if key.len() > MAX_KEY_LEN {
        return Err(ApiError::too_large(format!("key of {} bytes exceeds {MAX_KEY_LEN}", key.len())));
    }
    Ok(())
}

/// A JSON value as stored bytes, or `413` above [`MAX_VALUE_LEN`].
pub(crate) fn value_bytes(value: &serde_json::Value) -> ApiResult<Vec<u8>> {
    let bytes = serde_json::to_vec(value).map_err(|e| ApiError::bad_request("bad_json", e.to_string()))?;
    if bytes.len() > MAX_VALUE_LEN {
        return Err(ApiError::too_large(format!("value of {} bytes exceeds {MAX_VALUE_LEN}", bytes.len())));
    }
    Ok(bytes)
}

impl From<crate::page::Undecodable> for ApiError {
    fn from(e: crate::page::Undecodable) -> Self {
        let kind = match e {
            crate::page::Undecodable::Key(_) => "not_utf8",
            crate::page::Undecodable::Value(_) => "not_json",
        };
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, kind, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_compares() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secrets"));
        assert!(!constant_time_eq(b"", b"x"));
    }
}
