//! The engines under test, behind one synchronous interface.
//!
//! Every method is one transaction. Writers that conflict return
//! `Ok(false)` (aborted) instead of retrying, so that the contention
//! workload can count aborts; engines that serialize writers never abort.

mod btreemap;
mod lmdb;
mod redb_engine;
mod rocks;
mod sop;
mod sqlite;

use std::path::Path;

pub(crate) use btreemap::BTreeMapEngine;
pub(crate) use lmdb::LmdbEngine;
pub(crate) use redb_engine::RedbEngine;
pub(crate) use rocks::RocksEngine;
pub(crate) use sop::SopEngine;
pub(crate) use sqlite::SqliteEngine;

/// A benchmark error: one line.
pub(crate) type Result<T> = std::result::Result<T, String>;

/// Converts any displayable error into a benchmark error.
pub(crate) fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// The engine names, in report order.
pub(crate) const ALL: [&str; 6] = ["sop", "redb", "rocksdb", "lmdb", "sqlite", "btreemap"];

/// One engine with one open database.
pub(crate) trait Engine: Send + Sync {
    /// Writes every pair (insert or overwrite) in one transaction.
    fn put_batch(&self, items: &[(Vec<u8>, Vec<u8>)]) -> Result<()>;
    /// Reads one key in a read transaction.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>>;
    /// Reads every key in one read transaction; returns how many exist.
    fn get_batch(&self, keys: &[Vec<u8>]) -> Result<usize>;
    /// Reads up to `limit` items in key order from `from` (or the start)
    /// in one read transaction; returns how many it read.
    fn scan(&self, from: Option<&[u8]>, limit: usize) -> Result<usize>;
    /// Reads `key`, adds 1 to the little-endian u64 in its first 8 bytes,
    /// writes it back; `Ok(false)` when the commit conflicted.
    fn increment(&self, key: &[u8]) -> Result<bool>;
    /// Moves 1 from the u64 of `a` to the u64 of `b`; `Ok(false)` on a
    /// conflict.
    fn transfer(&self, a: &[u8], b: &[u8]) -> Result<bool>;
    /// Deletes every key in one transaction.
    fn delete_batch(&self, keys: &[Vec<u8>]) -> Result<()>;
    /// Closes the database: every call but `open_again` fails until then.
    fn close(&mut self) -> Result<()>;
    /// Opens the closed (or open) database again, with cold caches.
    fn open_again(&mut self) -> Result<()>;
    /// Closes and reopens the database (cold caches in the engine).
    fn reopen(&mut self) -> Result<()> {
        self.close()?;
        self.open_again()
    }
    /// Finishes the engine's own deferred work that a caller can ask for
    /// (SOP-rs: pending blob deletions); background flushes and
    /// compactions are waited for by watching the process's I/O.
    fn quiesce(&mut self) -> Result<()> {
        Ok(())
    }
    /// Reclaims the space of deleted data: every engine's full compaction
    /// (SOP-rs `Database::compact`, RocksDB `compact_range`, redb
    /// `compact`, LMDB a compacting copy, SQLite `VACUUM`).
    fn cleanup(&mut self) -> Result<()>;
}

/// Opens engine `name` in the empty directory `dir`.
pub(crate) fn open(name: &str, dir: &Path, sync: bool) -> Result<Box<dyn Engine>> {
    std::fs::create_dir_all(dir).map_err(err)?;
    Ok(match name {
        "sop" => Box::new(SopEngine::open(dir, sync)?),
        "redb" => Box::new(RedbEngine::open(dir, sync)?),
        "rocksdb" => Box::new(RocksEngine::open(dir, sync)?),
        "lmdb" => Box::new(LmdbEngine::open(dir, sync)?),
        "sqlite" => Box::new(SqliteEngine::open(dir, sync)?),
        "btreemap" => Box::new(BTreeMapEngine::default()),
        other => return Err(format!("unknown engine {other:?} (known: {})", ALL.join(", "))),
    })
}

/// The u64 in a value's first 8 bytes.
pub(crate) fn counter(v: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    let n = v.len().min(8);
    b[..n].copy_from_slice(&v[..n]);
    u64::from_le_bytes(b)
}

/// `v` with its first 8 bytes replaced by `n`.
pub(crate) fn with_counter(v: &[u8], n: u64) -> Vec<u8> {
    let mut out = v.to_vec();
    if out.len() < 8 {
        out.resize(8, 0);
    }
    out[..8].copy_from_slice(&n.to_le_bytes());
    out
}
