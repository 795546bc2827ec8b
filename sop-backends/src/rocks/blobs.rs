//! [`RocksBlobStore`]: blobs in the registry's own RocksDB database.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use rocksdb::{ColumnFamilyDescriptor, IteratorMode, Options, WriteBatch};
use sop_core::{BlobStore, Error, LogicalId, PhysicalId, Result, Subject};

use super::{CF_BLOBS, Inner, from_rocks};

/// The share of blob files (oldest first) whose live blobs a compaction
/// relocates; `RocksRegistry::compact` raises it to all of them.
pub(super) const GC_AGE_CUTOFF: &str = "0.25";

/// Blobs of this size and more go to RocksDB's blob files; smaller ones
/// (node blobs, leaf deltas, most values) stay in the SST files.
///
/// Decided by measurement (`docs/BENCHMARKS.md`, 2026-12-02): with node
/// blobs in blob files from 4 KiB, the replaced leaves of a 100 000-item
/// load sat in blob files that blob garbage collection (which runs only
/// as compactions pass) had not reclaimed: 48 MiB of blob files for
/// about 13 MiB of live leaves, 120 MiB on disk in all; in the SST files,
/// the compactions that merge a leaf's deletion with its bytes reclaim
/// them: 46.5 MiB, with fewer bytes written per item (1 550 against
/// 1 811) and the same insert rate.
const MIN_BLOB_FILE_VALUE: u64 = 256 << 10;

/// The memtable size of the `blobs` column family: with the WAL bound
/// (`MAX_WAL_BYTES`), what keeps the log and unflushed garbage small.
const BLOBS_WRITE_BUFFER: usize = 16 << 20;

/// The `blobs` column family: values of [`MIN_BLOB_FILE_VALUE`] and more
/// in blob files, so that large values do not churn through compactions.
/// Blob garbage collection relocates the live blobs of the oldest quarter
/// of the files as compactions pass over them, and forces a compaction of
/// the files whose blobs are half garbage.
pub(super) fn descriptor() -> ColumnFamilyDescriptor {
    let mut opts = Options::default();
    opts.set_enable_blob_files(true);
    opts.set_min_blob_size(MIN_BLOB_FILE_VALUE);
    opts.set_write_buffer_size(BLOBS_WRITE_BUFFER);
    opts.set_blob_file_size(16 << 20);
    opts.set_enable_blob_gc(true);
    opts.set_blob_gc_age_cutoff(0.25);
    opts.set_blob_gc_force_threshold(0.5);
    ColumnFamilyDescriptor::new(CF_BLOBS, opts)
}

/// A [`BlobStore`] in the registry's RocksDB database.
///
/// Puts are written to the WAL without a sync of their own; the synced
/// publish that makes a commit visible comes later in the same WAL, so it
/// makes the blobs durable too: a durable commit costs one WAL sync. A
/// database's commits go further and stage their blobs in the publish's
/// own batch (`Registry::publish_with_blobs`): one write per commit.
#[derive(Debug, Clone)]
pub struct RocksBlobStore {
    inner: Arc<Inner>,
}

impl RocksBlobStore {
    pub(super) fn new(inner: Arc<Inner>) -> Self {
        Self { inner }
    }

    fn put_sync(&self, id: PhysicalId, data: &[u8]) -> Result<()> {
        let inner = &self.inner;
        let cf = inner.cf(CF_BLOBS)?;
        let _guard = inner.stripes.lock_one(LogicalId::from_u128(id.as_u128()));
        let exists = inner.db.get_pinned_cf(cf, id.to_bytes()).map_err(|e| from_rocks(e, "reading blob"))?;
        if exists.is_some() {
            return Err(Error::AlreadyExists(Subject::Blob(id)));
        }
        let mut batch = WriteBatch::default();
        batch.put_cf(cf, id.to_bytes(), data);
        inner.write_lazy(batch)
    }
}

#[async_trait]
impl BlobStore for RocksBlobStore {
    async fn put(&self, id: PhysicalId, data: Bytes) -> Result<()> {
        self.put_sync(id, &data)
    }

    async fn get(&self, id: PhysicalId) -> Result<Bytes> {
        let cf = self.inner.cf(CF_BLOBS)?;
        match self.inner.db.get_cf(cf, id.to_bytes()).map_err(|e| from_rocks(e, "reading blob"))? {
            Some(v) => Ok(Bytes::from(v)),
            None => Err(Error::NotFound(Subject::Blob(id))),
        }
    }

    async fn delete(&self, id: PhysicalId) -> Result<()> {
        let mut batch = WriteBatch::default();
        batch.delete_cf(self.inner.cf(CF_BLOBS)?, id.to_bytes());
        self.inner.write_lazy(batch)
    }

    /// One existence probe (`multi_get`) and one unsynced `WriteBatch` for
    /// all of them, under their stripes: a commit's staging is one WAL
    /// write, not one per blob.
    async fn put_many(&self, blobs: Vec<(PhysicalId, Bytes)>) -> Result<()> {
        let inner = &self.inner;
        let cf = inner.cf(CF_BLOBS)?;
        let _guards = inner.stripes.lock_all(blobs.iter().map(|(id, _)| LogicalId::from_u128(id.as_u128())));
        let keys: Vec<[u8; 16]> = blobs.iter().map(|(id, _)| id.to_bytes()).collect();
        let mut sorted = keys.clone();
        sorted.sort_unstable();
        if let Some(twice) = sorted.windows(2).find(|w| w[0] == w[1]) {
            return Err(Error::AlreadyExists(Subject::Blob(PhysicalId::from_bytes(twice[0]))));
        }
        let found = inner.db.batched_multi_get_cf(cf, &keys, false);
        for ((id, _), got) in blobs.iter().zip(found) {
            if got.map_err(|e| from_rocks(e, "reading blob"))?.is_some() {
                return Err(Error::AlreadyExists(Subject::Blob(*id)));
            }
        }
        let mut batch = WriteBatch::default();
        for (key, (_, data)) in keys.iter().zip(&blobs) {
            batch.put_cf(cf, key, data);
        }
        inner.write_lazy(batch)
    }

    async fn delete_many(&self, ids: &[PhysicalId]) -> Result<()> {
        let cf = self.inner.cf(CF_BLOBS)?;
        let mut batch = WriteBatch::default();
        for id in ids {
            batch.delete_cf(cf, id.to_bytes());
        }
        self.inner.write_lazy(batch)
    }

    async fn list(&self) -> Result<Vec<PhysicalId>> {
        let cf = self.inner.cf(CF_BLOBS)?;
        let mut out = Vec::new();
        for kv in self.inner.db.iterator_cf(cf, IteratorMode::Start) {
            let (k, _) = kv.map_err(|e| from_rocks(e, "listing blobs"))?;
            let key: [u8; 16] = (*k).try_into().map_err(|_| Error::corruption("blob", "bad key length"))?;
            out.push(PhysicalId::from_bytes(key));
        }
        Ok(out)
    }
}
