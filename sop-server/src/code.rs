//! [`ErrorCode`]: the `error` field of every error body, and the one HTTP
//! status each code has. Below the wire types and the routes, which both
//! name it.

use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;

/// What went wrong: the `error` field of every error body. Each code has
/// one status, so the document's statuses follow from the codes a route
/// lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ErrorCode {
    /// 400: the body is not the JSON the route takes.
    BadJson,
    /// 400: the body could not be read.
    BadBody,
    /// 400: a value outside its documented range.
    InvalidInput,
    /// 401: missing or wrong bearer token.
    Unauthorized,
    /// 404: no such key.
    NotFound,
    /// 404: no such store.
    StoreNotFound,
    /// 404: no such open transaction.
    TxNotFound,
    /// 404: no such route.
    NoRoute,
    /// 404: metrics are disabled.
    NoMetrics,
    /// 405: the route does not take this method.
    MethodNotAllowed,
    /// 409: something the transaction read changed; retry it.
    Conflict,
    /// 409: the store exists.
    AlreadyExists,
    /// 409: a write in a read transaction (the same request succeeds in a
    /// write transaction, so the transaction's state is what refuses it).
    WrongMode,
    /// 410: the transaction passed its timeout and was rolled back.
    Expired,
    /// 410: the transaction or database is already closed.
    Closed,
    /// 413: a body, key, value or batch over its limit.
    TooLarge,
    /// 422: a stored key is not UTF-8 (written through another API).
    NotUtf8,
    /// 422: a stored value is not JSON (written through another API).
    NotJson,
    /// 429: too many open transactions.
    TooManyTransactions,
    /// 500: stored data failed its checks.
    Corruption,
    /// 500: a commit whose outcome is unknown.
    Indeterminate,
    /// 500: an unexpected failure.
    Internal,
    /// 501: the backend does not support the operation.
    Unsupported,
    /// 503: the storage backend failed; retry later.
    Io,
}

impl ErrorCode {
    /// The status every answer with this code has.
    pub(crate) const fn status(self) -> StatusCode {
        match self {
            Self::BadJson | Self::BadBody | Self::InvalidInput => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::NotFound | Self::StoreNotFound | Self::TxNotFound | Self::NoRoute | Self::NoMetrics => {
                StatusCode::NOT_FOUND
            }
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict | Self::AlreadyExists | Self::WrongMode => StatusCode::CONFLICT,
            Self::Expired | Self::Closed => StatusCode::GONE,
            Self::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::NotUtf8 | Self::NotJson => StatusCode::UNPROCESSABLE_ENTITY,
            Self::TooManyTransactions => StatusCode::TOO_MANY_REQUESTS,
            Self::Corruption | Self::Indeterminate | Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Unsupported => StatusCode::NOT_IMPLEMENTED,
            Self::Io => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The code as it appears in the body.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::BadJson => "bad_json",
            Self::BadBody => "bad_body",
            Self::InvalidInput => "invalid_input",
            Self::WrongMode => "wrong_mode",
            Self::Unauthorized => "unauthorized",
            Self::NotFound => "not_found",
            Self::StoreNotFound => "store_not_found",
            Self::TxNotFound => "tx_not_found",
            Self::NoRoute => "no_route",
            Self::NoMetrics => "no_metrics",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::Conflict => "conflict",
            Self::AlreadyExists => "already_exists",
            Self::Expired => "expired",
            Self::Closed => "closed",
            Self::TooLarge => "too_large",
            Self::NotUtf8 => "not_utf8",
            Self::NotJson => "not_json",
            Self::TooManyTransactions => "too_many_transactions",
            Self::Corruption => "corruption",
            Self::Indeterminate => "indeterminate",
            Self::Internal => "internal",
            Self::Unsupported => "unsupported",
            Self::Io => "io",
        }
    }
}
