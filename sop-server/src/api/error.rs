//! [`ApiError`]: every failure of a request, as a status and a JSON body.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use sop_btree::{Error, ErrorKind};

use crate::wire::ErrorBody;

/// A failed request: `{"error":"<kind>","message":".."}` with a status.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) kind: &'static str,
    pub(crate) message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self { status, kind, message: message.into() }
    }

    pub(crate) fn bad_request(kind: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, kind, message)
    }

    pub(crate) fn not_found(kind: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, kind, message)
    }

    pub(crate) fn too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", message)
    }

    pub(crate) fn unauthorized() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", "missing or wrong bearer token")
    }

    /// A store lookup's error: `NotFound` becomes `store_not_found`.
    pub(crate) fn store(e: Error) -> Self {
        if e.kind() == ErrorKind::NotFound {
            Self::not_found("store_not_found", e.to_string())
        } else {
            e.into()
        }
    }

    pub(crate) fn tx_not_found(tx: &str) -> Self {
        Self::not_found("tx_not_found", format!("no open transaction {tx:?}"))
    }

    pub(crate) fn expired(tx: &str) -> Self {
        Self::new(
            StatusCode::GONE,
            "expired",
            format!("transaction {tx} passed its timeout and was rolled back"),
        )
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let message = e.to_string();
        let (status, kind) = match e.kind() {
            ErrorKind::Conflict => (StatusCode::CONFLICT, "conflict"),
            ErrorKind::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            ErrorKind::AlreadyExists => (StatusCode::CONFLICT, "already_exists"),
            ErrorKind::InvalidInput => (StatusCode::BAD_REQUEST, "invalid_input"),
            ErrorKind::Timeout => (StatusCode::GONE, "expired"),
            ErrorKind::Closed => (StatusCode::GONE, "closed"),
            ErrorKind::Unsupported => (StatusCode::NOT_IMPLEMENTED, "unsupported"),
            ErrorKind::Indeterminate => (StatusCode::INTERNAL_SERVER_ERROR, "indeterminate"),
            ErrorKind::Corruption => (StatusCode::INTERNAL_SERVER_ERROR, "corruption"),
            ErrorKind::Io => (StatusCode::SERVICE_UNAVAILABLE, "io"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        Self { status, kind, message }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(kind = self.kind, "request failed: {}", self.message);
        }
        let body = ErrorBody { error: self.kind.to_owned(), message: self.message };
        let mut resp = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(axum::http::header::WWW_AUTHENTICATE, axum::http::HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

/// The result of a handler.
pub(crate) type ApiResult<T> = Result<T, ApiError>;
