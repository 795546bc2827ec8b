//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub(crate) mod attack;

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use sop_core::{BlobStore, Error, PhysicalId};

use sop_btree::{Config, Database, StoreOptions};

/// An in-memory database with immediate cleanup (no grace period).
pub(crate) async fn memory_db() -> Database {
    let mut config = Config::memory();
    config.gc_grace = Duration::ZERO;
    Database::open(config).await.expect("open memory db")
}

/// The richest backend of this build in `dir`, with immediate cleanup:
/// the embedded default (feature `embedded`), else the memory registry over
/// blob files in `dir` (for tests that do not reopen).
pub(crate) async fn default_db(dir: &std::path::Path) -> Database {
    #[cfg(feature = "embedded")]
    return embedded_db(dir).await;
    #[cfg(not(feature = "embedded"))]
    {
        let blobs = sop_store::ObjectBlobStore::local(dir.join("blobs"), false).expect("a blob directory");
        let registry = Arc::new(sop_registry::MemRegistry::new());
        let mut config = Config::from_parts(registry, Arc::new(blobs), true);
        config.gc_grace = Duration::ZERO;
        Database::open(config).await.expect("open")
    }
}

#[cfg(feature = "embedded")]
/// An embedded database in `dir` with immediate cleanup (default blob
/// placement: the registry's RocksDB).
pub(crate) async fn embedded_db(dir: &std::path::Path) -> Database {
    embedded_db_with(dir, sop_btree::EmbeddedBlobs::default()).await
}

#[cfg(feature = "embedded")]
/// An embedded database with blobs where `blobs` says.
pub(crate) async fn embedded_db_with(dir: &std::path::Path, blobs: sop_btree::EmbeddedBlobs) -> Database {
    let mut config = Config::embedded(dir);
    config.gc_grace = Duration::ZERO;
    config.embedded_blobs = blobs;
    Database::open(config).await.expect("open embedded db")
}

/// Store options with a small slot length, so splits and merges happen.
pub(crate) fn small(slot_length: u32) -> StoreOptions {
    StoreOptions { slot_length, ..StoreOptions::default() }
}

/// Asserts that `Database::check` finds nothing wrong.
pub(crate) async fn assert_healthy(db: &Database) {
    let report = db.check().await.expect("check runs");
    assert!(report.is_ok(), "check found problems: {:#?}", report.problems);
}

/// Creates store `name` with `accounts` accounts (`u32 -> i64`) of 100 each.
pub(crate) async fn open_accounts(db: &Database, name: &'static str, slot: u32, accounts: u32) {
    db.create_store(name, small(slot)).await.expect("create accounts");
    db.run_write(|tx| async move {
        let s = tx.store::<u32, i64>(name).await?;
        for a in 0..accounts {
            s.insert(&a, &100).await?;
        }
        Ok(())
    })
    .await
    .expect("seed accounts");
}

/// Creates store `name` (slot length 4) holding `i -> i` for `i` in `0..n`.
pub(crate) async fn seeded_store(db: &Database, name: &'static str, n: u32) {
    db.create_store(name, small(4)).await.expect("create store");
    db.run_write(|tx| async move {
        let s = tx.store::<u32, u32>(name).await?;
        for i in 0..n {
            s.insert(&i, &i).await?;
        }
        Ok(())
    })
    .await
    .expect("seed store");
}

/// Rounds of a fault test: `SOP_FAULT_ROUNDS` (the long campaign,
/// `cargo xtask faults`), else `default` (the CI variant).
pub(crate) fn rounds(default: u32) -> u32 {
    std::env::var("SOP_FAULT_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The fault seed: `SOP_FAULT_SEED` (set by `cargo xtask faults`), else 7.
pub(crate) fn fault_seed() -> u64 {
    std::env::var("SOP_FAULT_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(7)
}

/// Runs `f`, failing the test if it takes over 60 s (a deadlock or a hang
/// under faults).
pub(crate) async fn bounded<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(std::time::Duration::from_secs(60), f).await.expect("an operation hung under faults")
}

/// A bound of kind 0 (included), 1 (excluded) or 2 (unbounded) at `key`.
pub(crate) fn bound(kind: u8, key: &[u8]) -> Bound<&[u8]> {
    match kind {
        0 => Bound::Included(key),
        1 => Bound::Excluded(key),
        _ => Bound::Unbounded,
    }
}

/// The model's range, empty where `BTreeMap::range` would panic (start
/// past end, or an empty excluded interval).
pub(crate) fn model_range(
    model: &BTreeMap<Vec<u8>, Vec<u8>>,
    lo: Bound<&[u8]>,
    hi: Bound<&[u8]>,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    if let (Bound::Included(a) | Bound::Excluded(a), Bound::Included(b) | Bound::Excluded(b)) = (lo, hi)
        && (a > b || (a == b && !matches!((lo, hi), (Bound::Included(_), Bound::Included(_)))))
    {
        return Vec::new();
    }
    let range = (lo.map(<[u8]>::to_vec), hi.map(<[u8]>::to_vec));
    model.range(range).map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// A blob store for tests over an in-memory one: batch puts (staging) and
/// gets can be slowed, and deletions and gets made to fail, while the
/// test runs.
#[derive(Debug)]
pub(crate) struct TestBlobs {
    inner: Arc<dyn BlobStore>,
    /// Delay of every `put_many`, in milliseconds (0: none).
    pub(crate) put_delay_ms: AtomicU64,
    /// Delay of every `get`, in milliseconds (0: none).
    pub(crate) get_delay_ms: AtomicU64,
    /// Whether `delete`/`delete_many` fail with an I/O error.
    pub(crate) fail_deletes: AtomicBool,
    /// `delete`/`delete_many` calls so far.
    pub(crate) deletes: AtomicU64,
    /// The number of the one `delete`/`delete_many` call that fails with
    /// an I/O error (0: none); a failing `delete_many` deletes the first
    /// half of its blobs first, as a deletion on object storage may.
    pub(crate) fail_delete_at: AtomicU64,
    /// When `n` > 0, every `n`th `get` fails with an I/O error (not
    /// "gone": a read to retry).
    pub(crate) fail_get_every: AtomicU64,
    gets: AtomicU64,
}

impl TestBlobs {
    /// Over `ObjectBlobStore::memory()`, undisturbed.
    pub(crate) fn memory() -> Arc<Self> {
        Self::over(Arc::new(sop_store::ObjectBlobStore::memory()))
    }

    /// Over `inner`, undisturbed.
    pub(crate) fn over(inner: Arc<dyn BlobStore>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            put_delay_ms: AtomicU64::new(0),
            get_delay_ms: AtomicU64::new(0),
            fail_deletes: AtomicBool::new(false),
            deletes: AtomicU64::new(0),
            fail_delete_at: AtomicU64::new(0),
            fail_get_every: AtomicU64::new(0),
            gets: AtomicU64::new(0),
        })
    }

    /// Whether this `delete`/`delete_many` call fails: `Err(true)` for the
    /// one cut deletion (which deletes half first), `Err(false)` while all
    /// deletions fail.
    fn delete_fault(&self) -> Result<(), bool> {
        let n = self.deletes.fetch_add(1, Ordering::SeqCst) + 1;
        if self.fail_delete_at.load(Ordering::SeqCst) == n {
            return Err(true);
        }
        if self.fail_deletes.load(Ordering::SeqCst) {
            return Err(false);
        }
        Ok(())
    }

    fn check_get(&self) -> sop_core::Result<()> {
        let every = self.fail_get_every.load(Ordering::SeqCst);
        if every > 0 && (self.gets.fetch_add(1, Ordering::SeqCst) + 1).is_multiple_of(every) {
            return Err(injected("reading"));
        }
        Ok(())
    }
}

fn injected(what: &str) -> Error {
    Error::io(what, std::io::Error::other("injected"))
}

#[async_trait]
impl BlobStore for TestBlobs {
    async fn put(&self, id: PhysicalId, data: Bytes) -> sop_core::Result<()> {
        self.inner.put(id, data).await
    }
    async fn get(&self, id: PhysicalId) -> sop_core::Result<Bytes> {
        let ms = self.get_delay_ms.load(Ordering::SeqCst);
        if ms > 0 {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        self.check_get()?;
        self.inner.get(id).await
    }
    async fn delete(&self, id: PhysicalId) -> sop_core::Result<()> {
        if self.delete_fault().is_err() {
            return Err(injected("deleting"));
        }
        self.inner.delete(id).await
    }
    async fn put_many(&self, blobs: Vec<(PhysicalId, Bytes)>) -> sop_core::Result<()> {
        let ms = self.put_delay_ms.load(Ordering::SeqCst);
        if ms > 0 {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        self.inner.put_many(blobs).await
    }
    async fn delete_many(&self, ids: &[PhysicalId]) -> sop_core::Result<()> {
        if let Err(cut) = self.delete_fault() {
            if cut {
                // Not atomic, as on object storage: the first half went.
                self.inner.delete_many(ids.get(..ids.len() / 2).unwrap_or_default()).await?;
            }
            return Err(injected("deleting"));
        }
        self.inner.delete_many(ids).await
    }
    async fn list(&self) -> sop_core::Result<Vec<PhysicalId>> {
        self.inner.list().await
    }
    fn allocate(&self, lens: &[usize]) -> Vec<PhysicalId> {
        self.inner.allocate(lens)
    }
    async fn reclaim(&self) -> sop_core::Result<()> {
        self.inner.reclaim().await
    }
}

/// Blobs under plain ids, not packed into records: a deleted blob is gone
/// at once (as in the RocksDB blob store), not when its record goes.
#[derive(Debug)]
pub(crate) struct Plain(pub(crate) sop_store::ObjectBlobStore);

#[async_trait]
impl BlobStore for Plain {
    async fn put(&self, id: PhysicalId, data: Bytes) -> sop_core::Result<()> {
        self.0.put(id, data).await
    }
    async fn get(&self, id: PhysicalId) -> sop_core::Result<Bytes> {
        self.0.get(id).await
    }
    async fn delete(&self, id: PhysicalId) -> sop_core::Result<()> {
        self.0.delete(id).await
    }
    async fn list(&self) -> sop_core::Result<Vec<PhysicalId>> {
        self.0.list().await
    }
}
