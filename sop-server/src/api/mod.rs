//! The HTTP API: routes, shared state, authentication and body parsing.
//!
//! Every response to a failed request is JSON `{"error","message"}`. The
//! OpenAPI document served at `/v1/openapi.json` is generated from the
//! handlers and wire types (`openapi.rs`, and `crate::schema`).

mod error;
mod items;
mod metrics;
pub(crate) mod openapi;
mod stores;
mod txs;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::de::DeserializeOwned;
use sop_btree::{Database, MAX_KEY_LEN, MAX_VALUE_LEN};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub(crate) use error::{ApiError, ApiResult, ErrorCode};
pub(crate) use txs::{TxLimits, TxTable};

use crate::wire::Health;

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

/// This server's OpenAPI document, rendered once.
#[derive(Debug, Clone)]
struct Document(Arc<str>);

/// Every documented route: the router and the document come from this one
/// list, so that neither has a route the other lacks.
fn routes() -> OpenApiRouter<AppState> {
    let v1 = OpenApiRouter::default()
        .routes(routes!(stores::list))
        .routes(routes!(stores::create, stores::remove))
        .routes(routes!(stores::begin))
        .routes(routes!(stores::commit))
        .routes(routes!(stores::rollback))
        .routes(routes!(items::list))
        .routes(routes!(items::get, items::put, items::remove))
        .routes(routes!(items::batch))
        .routes(routes!(openapi));
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(health))
        .routes(routes!(metrics::render))
        .nest("/v1", v1)
}

/// The whole API.
pub(crate) fn router(state: AppState) -> Router {
    let (router, api) = routes().split_for_parts();
    let limits = state.txs.limits();
    let settings = openapi::DocSettings {
        auth: state.token.is_some(),
        max_timeout_ms: u64::try_from(limits.max_timeout.as_millis()).unwrap_or(u64::MAX),
        default_timeout_ms: u64::try_from(limits.default_timeout.as_millis()).unwrap_or(u64::MAX),
    };
    let document = Document(openapi::render(api, settings).into());
    router
        .fallback(no_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(Extension(document))
        .layer(middleware::from_fn(refuse_oversize))
        .layer(middleware::from_fn_with_state(state.clone(), auth))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

/// Liveness; never needs a token.
#[utoipa::path(
    get,
    path = "/health",
    operation_id = "health",
    responses((status = 200, description = "Up", body = Health))
)]
async fn health() -> Json<Health> {
    Json(Health { status: "ok".into() })
}

/// This document (OpenAPI 3.1), generated from the code.
#[utoipa::path(
    get,
    path = "/openapi.json",
    operation_id = "openapi",
    responses((status = 200, description = "OpenAPI 3.1", body = Object, content_type = "application/json"))
)]
async fn openapi(Extension(doc): Extension<Document>) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], doc.0.to_string()).into_response()
}

async fn no_route() -> ApiError {
    ApiError::new(ErrorCode::NoRoute, "no such route; see GET /v1/openapi.json")
}

async fn wrong_method() -> ApiError {
    ApiError::new(ErrorCode::MethodNotAllowed, "method not allowed on this route")
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

/// Parses an optional JSON object body: an empty body or `null` gives
/// `T::default()`; anything but an object is `400 bad_json`.
pub(crate) fn json_body<T: DeserializeOwned + Default>(body: Result<Bytes, BytesRejection>) -> ApiResult<T> {
    let bytes = body_bytes(body)?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    match parse_json(&bytes)? {
        serde_json::Value::Null => Ok(T::default()),
        value => crate::wire::from_object(value).map_err(bad_json),
    }
}

/// Parses a JSON object body, or `400 bad_json`.
pub(crate) fn parse_object<T: DeserializeOwned>(bytes: &[u8]) -> ApiResult<T> {
    crate::wire::from_object(parse_json(bytes)?).map_err(bad_json)
}

/// A body's bytes, or `413`/`400`.
pub(crate) fn body_bytes(body: Result<Bytes, BytesRejection>) -> ApiResult<Bytes> {
    body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large(format!("request body over {BODY_LIMIT} bytes"))
        } else {
            ApiError::new(ErrorCode::BadBody, r.body_text())
        }
    })
}

/// Parses JSON, or `400 bad_json`.
pub(crate) fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> ApiResult<T> {
    serde_json::from_slice(bytes).map_err(bad_json)
}

fn bad_json(e: serde_json::Error) -> ApiError {
    ApiError::new(ErrorCode::BadJson, format!("malformed JSON body: {e}"))
}

/// Path parameters, or `400 invalid_input` (a segment that is not UTF-8
/// once percent-decoded).
pub(crate) fn path_params<T>(path: Result<Path<T>, PathRejection>) -> ApiResult<T> {
    path.map(|Path(p)| p).map_err(|e| ApiError::invalid(e.body_text()))
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
    let bytes = serde_json::to_vec(value).map_err(|e| ApiError::new(ErrorCode::BadJson, e.to_string()))?;
    if bytes.len() > MAX_VALUE_LEN {
        return Err(ApiError::too_large(format!("value of {} bytes exceeds {MAX_VALUE_LEN}", bytes.len())));
    }
    Ok(bytes)
}

impl From<crate::page::Undecodable> for ApiError {
    fn from(e: crate::page::Undecodable) -> Self {
        let code = match e {
            crate::page::Undecodable::Key(_) => ErrorCode::NotUtf8,
            crate::page::Undecodable::Value(_) => ErrorCode::NotJson,
        };
        ApiError::new(code, e.to_string())
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
