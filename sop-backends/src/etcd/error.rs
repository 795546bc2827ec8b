//! Converts etcd client errors into `sop_core::Error`, once, at the boundary.

use sop_core::{Error, ErrorKind};

/// Maps an etcd error (with what was being done) to a `sop-core` error:
/// a deadline is `Timeout`, an argument etcd refused (too many operations,
/// a request too large) `InvalidInput`, anything else `Io`.
pub(super) fn from_etcd(e: etcd_client::Error, context: &str) -> Error {
    let kind = match &e {
        etcd_client::Error::GRpcStatus(s) => match s.code() {
            tonic::Code::DeadlineExceeded => ErrorKind::Timeout,
            tonic::Code::InvalidArgument => ErrorKind::InvalidInput,
            _ => ErrorKind::Io,
        },
        etcd_client::Error::InvalidArgs(_) | etcd_client::Error::InvalidUri(_) => ErrorKind::InvalidInput,
        _ => ErrorKind::Io,
    };
    Error::backend_while("etcd", kind, context, e)
}

/// Whether etcd certainly did not apply the request that failed with `e`:
/// it refused its arguments (checked before anything is proposed).
pub(super) fn surely_not_applied(e: &Error) -> bool {
    e.kind() == ErrorKind::InvalidInput
}

/// Whether no member can have received the request that failed with `e`:
/// the connection was refused (a dead member), so it is safe to send again.
pub(super) fn never_sent(e: &etcd_client::Error) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = match e {
        etcd_client::Error::GRpcStatus(s) => Some(s),
        etcd_client::Error::TransportError(t) => Some(t),
        etcd_client::Error::IoError(io) => Some(io),
        _ => None,
    };
    while let Some(err) = cur {
        if err
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
        {
            return true;
        }
        cur = err.source();
    }
    false
}
