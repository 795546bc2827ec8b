//! [`ApiError`]: every failure of a request, as an [`ErrorCode`] (which
//! fixes the status) and a JSON body.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use sop_btree::{Error, ErrorKind};

pub(crate) use crate::code::ErrorCode;
use crate::wire::ErrorBody;

/// A failed request: `{"error":"<code>","message":".."}` with the code's
/// status.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub(crate) code: ErrorCode,
    pub(crate) message: String,
}

impl ApiError {
    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }

    pub(crate) fn status(&self) -> StatusCode {
        self.code.status()
    }

    pub(crate) fn too_large(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::TooLarge, message)
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidInput, message)
    }

    pub(crate) fn unauthorized() -> Self {
        Self::new(ErrorCode::Unauthorized, "missing or wrong bearer token")
    }

    /// A store lookup's error: `NotFound` becomes `store_not_found`.
    pub(crate) fn store(e: Error) -> Self {
        if e.kind() == ErrorKind::NotFound {
            Self::new(ErrorCode::StoreNotFound, e.to_string())
        } else {
            e.into()
        }
    }

    pub(crate) fn tx_not_found(tx: &str) -> Self {
        Self::new(ErrorCode::TxNotFound, format!("no open transaction {tx:?}"))
    }

    pub(crate) fn expired(tx: &str) -> Self {
        Self::new(ErrorCode::Expired, format!("transaction {tx} passed its timeout and was rolled back"))
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let code = match e.kind() {
            ErrorKind::Conflict => ErrorCode::Conflict,
            ErrorKind::NotFound => ErrorCode::NotFound,
            ErrorKind::AlreadyExists => ErrorCode::AlreadyExists,
            ErrorKind::InvalidInput => ErrorCode::InvalidInput,
            ErrorKind::Timeout => ErrorCode::Expired,
            ErrorKind::Closed => ErrorCode::Closed,
            ErrorKind::Unsupported => ErrorCode::Unsupported,
            ErrorKind::Indeterminate => ErrorCode::Indeterminate,
            ErrorKind::Corruption => ErrorCode::Corruption,
            ErrorKind::Io => ErrorCode::Io,
            _ => ErrorCode::Internal,
        };
        Self::new(code, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(kind = self.code.as_str(), "request failed: {}", self.message);
        }
        let body = ErrorBody { error: self.code.as_str().to_owned(), message: self.message };
        let mut resp = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(axum::http::header::WWW_AUTHENTICATE, axum::http::HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

/// The result of a handler.
pub(crate) type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_serialize_as_their_names() {
        for code in [ErrorCode::BadJson, ErrorCode::TooManyTransactions, ErrorCode::NotUtf8, ErrorCode::Io] {
            let json = serde_json::to_value(code).unwrap_or_default();
            assert_eq!(json, code.as_str(), "{code:?}");
        }
    }
}
