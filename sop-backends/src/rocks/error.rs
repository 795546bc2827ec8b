//! Converts RocksDB errors into `sop_core::Error`, once, at the boundary.

use rocksdb::ErrorKind as RocksKind;
use sop_core::{Error, ErrorKind};

/// Maps a RocksDB error (with what was being done) to a `sop-core` error.
pub(super) fn from_rocks(e: rocksdb::Error, context: &str) -> Error {
    let kind = match e.kind() {
        RocksKind::NotFound => ErrorKind::NotFound,
        RocksKind::Corruption => ErrorKind::Corruption,
        RocksKind::NotSupported => ErrorKind::Unsupported,
        RocksKind::InvalidArgument => ErrorKind::InvalidInput,
        RocksKind::IOError => ErrorKind::Io,
        RocksKind::TimedOut | RocksKind::Busy | RocksKind::TryAgain => ErrorKind::Timeout,
        RocksKind::ShutdownInProgress | RocksKind::ColumnFamilyDropped => ErrorKind::Closed,
        _ => ErrorKind::Backend,
    };
    Error::backend_while("rocksdb", kind, context, e)
}
