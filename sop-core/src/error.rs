//! The error type shared by every SOP-rs layer, with a matchable kind.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::{LogicalId, PhysicalId, TxId};

/// `Result` with [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The category of an [`Error`], stable across layers so that a caller of
/// `sop-btree` can match `Conflict` even when the error began in a registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A concurrent transaction changed something this one depends on; retry.
    Conflict,
    /// The named thing (blob, store, handle, intent) does not exist.
    NotFound,
    /// The named thing already exists and may not be overwritten.
    AlreadyExists,
    /// Stored bytes failed a checksum, version or structure check.
    Corruption,
    /// An operating-system or network I/O error.
    Io,
    /// The caller passed an argument outside the documented limits.
    InvalidInput,
    /// An operation did not finish within its time bound.
    Timeout,
    /// The backend does not support the requested operation.
    Unsupported,
    /// The database, transaction or backend is closed.
    Closed,
    /// Another process holds the database open (its directory is locked).
    Locked,
    /// A commit's outcome is unknown (for example a timeout during publish).
    Indeterminate,
    /// Any other backend failure.
    Backend,
}

/// One handle whose version differed from what a transaction expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionConflict {
    /// The logical id whose version moved.
    pub id: LogicalId,
    /// The version the transaction saw (`None`: it expected the id absent).
    pub expected: Option<u64>,
    /// The version found at publish time (`None`: the id is gone).
    pub actual: Option<u64>,
}

/// What an error is about: the thing missing, already there, or changed.
/// Callers match on it instead of reading messages.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Subject {
    /// A store, by name.
    Store(String),
    /// One item of a store, by key: the key as the caller gave it to the
    /// store API for `NotFound`/`AlreadyExists` (a typed store's key in its
    /// order-preserving encoding); as stored for a conflict (a non-unique
    /// store's stored key is the escaped key plus a 16-byte suffix).
    Key {
        /// The store's name.
        store: String,
        /// The key's bytes.
        key: Bytes,
    },
    /// A range of a store's keys that a transaction read.
    Range {
        /// The store's name.
        store: String,
    },
    /// A store's item count.
    Count(String),
    /// A B-tree node (or its registry handle), by logical id.
    Node(LogicalId),
    /// A blob, by physical id.
    Blob(PhysicalId),
    /// A commit intent, by its transaction's id.
    Intent(TxId),
    /// A transaction, by id.
    Transaction(TxId),
    /// Anything else, described in words (an application's own condition).
    Other(String),
}

impl std::fmt::Display for Subject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Store(name) => write!(f, "store {name:?}"),
            Self::Key { store, key } => write!(f, "key {key:?} of store {store:?}"),
            Self::Range { store } => write!(f, "a range of store {store:?}"),
            Self::Count(store) => write!(f, "the count of store {store:?}"),
            Self::Node(id) => write!(f, "node {id}"),
            Self::Blob(id) => write!(f, "blob {id}"),
            Self::Intent(id) => write!(f, "the intent of transaction {id}"),
            Self::Transaction(id) => write!(f, "transaction {id}"),
            Self::Other(what) => f.write_str(what),
        }
    }
}

/// The error of every SOP-rs operation.
///
/// Each variant names the thing involved; [`Error::kind`] gives the
/// category to match on.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Validate-and-publish found handles whose versions moved.
    #[error("conflict: {} handle(s) changed since they were read{}", .conflicts.len(), fmt_first(.conflicts))]
    Conflict {
        /// Every handle that failed validation.
        conflicts: Vec<VersionConflict>,
    },
    /// An item-level conflict: something a transaction read changed.
    #[error("conflict: {subject} {detail}")]
    ItemConflict {
        /// What changed.
        subject: Subject,
        /// How (for people).
        detail: String,
    },
    /// The named thing does not exist.
    #[error("{0} not found")]
    NotFound(Subject),
    /// The named thing already exists.
    #[error("{0} already exists")]
    AlreadyExists(Subject),
    /// Stored bytes failed a checksum.
    #[error("corrupt {what}: checksum mismatch (stored {expected:#010x}, computed {got:#010x})")]
    ChecksumMismatch {
        /// What was being decoded.
        what: &'static str,
        /// The checksum computed over the bytes.
        got: u32,
        /// The checksum stored with the bytes.
        expected: u32,
    },
    /// Stored bytes carry a format version this build does not read.
    #[error("corrupt {what}: unsupported format version {version}")]
    UnsupportedVersion {
        /// What was being decoded.
        what: &'static str,
        /// The version found.
        version: u8,
    },
    /// Stored bytes are malformed (truncated, bad tag, bad length).
    #[error("corrupt {what}: {detail}")]
    Corruption {
        /// What was being decoded.
        what: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// An argument is outside the documented limits.
    #[error("invalid {what}: {detail}")]
    InvalidInput {
        /// Which argument: `key`, `value`, `store name`, `options`,
        /// `timeout`, `url`, ...
        what: &'static str,
        /// What is wrong with it.
        detail: String,
    },
    /// An I/O error, with what was being done.
    #[error("I/O error while {context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: Arc<std::io::Error>,
    },
    /// An operation ran past its time bound.
    #[error("{what} timed out after {after:?}")]
    Timeout {
        /// What timed out.
        what: String,
        /// The bound that was exceeded.
        after: Duration,
    },
    /// The backend does not support an operation.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// The object is closed.
    #[error("{0} is closed")]
    Closed(String),
    /// Another process holds the database open.
    #[error("{path} is in use by another process")]
    Locked {
        /// The locked directory.
        path: String,
    },
    /// The outcome of a commit is unknown.
    #[error("outcome unknown: {0}")]
    Indeterminate(String),
    /// A backend failure, with its kind and source.
    #[error("{backend} error: {source}")]
    Backend {
        /// The backend's name (`rocksdb`, `object_store`, `foyer`, ...).
        backend: &'static str,
        /// The category a caller may match on.
        kind: ErrorKind,
        /// The backend's own error.
        #[source]
        source: Arc<dyn std::error::Error + Send + Sync>,
    },
}

fn fmt_first(conflicts: &[VersionConflict]) -> String {
    conflicts.first().map_or_else(String::new, |c| {
        format!(" (first: {} expected {:?}, found {:?})", c.id, c.expected, c.actual)
    })
}

impl Error {
    /// The category of this error.
    #[must_use]
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Conflict { .. } | Self::ItemConflict { .. } => ErrorKind::Conflict,
            Self::NotFound(_) => ErrorKind::NotFound,
            Self::AlreadyExists(_) => ErrorKind::AlreadyExists,
            Self::ChecksumMismatch { .. } | Self::UnsupportedVersion { .. } | Self::Corruption { .. } => {
                ErrorKind::Corruption
            }
            Self::InvalidInput { .. } => ErrorKind::InvalidInput,
            Self::Io { .. } => ErrorKind::Io,
            Self::Timeout { .. } => ErrorKind::Timeout,
            Self::Unsupported(_) => ErrorKind::Unsupported,
            Self::Closed(_) => ErrorKind::Closed,
            Self::Locked { .. } => ErrorKind::Locked,
            Self::Indeterminate(_) => ErrorKind::Indeterminate,
            Self::Backend { kind, .. } => *kind,
        }
    }

    /// Whether retrying the whole transaction may succeed.
    #[must_use]
    pub fn is_conflict(&self) -> bool {
        self.kind() == ErrorKind::Conflict
    }

    /// An [`Error::InvalidInput`] about argument `what`.
    pub fn invalid(what: &'static str, detail: impl Into<String>) -> Self {
        Self::InvalidInput { what, detail: detail.into() }
    }

    /// An [`Error::ItemConflict`]: `subject` changed, as `detail` says.
    pub fn changed(subject: Subject, detail: impl Into<String>) -> Self {
        Self::ItemConflict { subject, detail: detail.into() }
    }

    /// The subject of a `NotFound`, `AlreadyExists` or item conflict.
    #[must_use]
    pub fn subject(&self) -> Option<&Subject> {
        match self {
            Self::NotFound(s) | Self::AlreadyExists(s) | Self::ItemConflict { subject: s, .. } => Some(s),
            _ => None,
        }
    }

    /// A [`Error::Corruption`] for `what` with a detail message.
    pub fn corruption(what: &'static str, detail: impl Into<String>) -> Self {
        Self::Corruption { what, detail: detail.into() }
    }

    /// An [`Error::Io`] with the context of what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io { context: context.into(), source: Arc::new(source) }
    }

    /// An [`Error::Backend`] wrapping a backend's own error.
    pub fn backend(
        backend: &'static str,
        kind: ErrorKind,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self::Backend { backend, kind, source: Arc::new(source) }
    }

    /// An [`Error::Backend`] wrapping a backend's own error with what was
    /// being done when it failed.
    pub fn backend_while(
        backend: &'static str,
        kind: ErrorKind,
        context: &str,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self::backend(backend, kind, WithContext { context: context.to_owned(), source })
    }
}

/// A backend's error and what was being done (`Error::backend_while`).
#[derive(Debug)]
struct WithContext<E> {
    context: String,
    source: E,
}

impl<E: std::fmt::Display> std::fmt::Display for WithContext<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.context, self.source)
    }
}

impl<E: std::error::Error + 'static> std::error::Error for WithContext<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_survive_wrapping() {
        let e = Error::backend("x", ErrorKind::Timeout, std::io::Error::other("slow"));
        assert_eq!(e.kind(), ErrorKind::Timeout);
        let c = Error::Conflict {
            conflicts: vec![VersionConflict {
                id: LogicalId::from_u128(7),
                expected: Some(1),
                actual: Some(2),
            }],
        };
        assert!(c.is_conflict());
        assert!(c.to_string().contains("expected Some(1)"), "{c}");
        assert_eq!(Error::corruption("node", "x").kind(), ErrorKind::Corruption);
    }

    #[test]
    fn subjects_are_matchable_and_read_well() {
        let e = Error::NotFound(Subject::Store("orders".into()));
        assert_eq!(e.kind(), ErrorKind::NotFound);
        assert!(matches!(e.subject(), Some(Subject::Store(n)) if n == "orders"));
        assert_eq!(e.to_string(), "store \"orders\" not found");
        let key = Subject::Key { store: "s".into(), key: Bytes::from_static(b"k") };
        let c = Error::changed(key.clone(), "since it was read");
        assert!(c.is_conflict());
        assert_eq!(c.subject(), Some(&key));
        assert_eq!(c.to_string(), "conflict: key b\"k\" of store \"s\" since it was read");
        let i = Error::invalid("key", "too long");
        assert_eq!((i.kind(), i.to_string()), (ErrorKind::InvalidInput, "invalid key: too long".into()));
        assert_eq!(i.subject(), None);
    }
}
