//! [`Database`]: opening, stores, transactions and the retry helpers.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sop_cache::NodeCache;
use sop_core::{
    BlobStore, Error, Handle, HandleCache, LogicalId, PhysicalId, Registry, Result, StoreInfo, StoreOptions,
};
use sop_registry::{MemRegistry, RocksConfig, RocksRegistry};
use sop_store::ObjectBlobStore;

use crate::config::{Backend, CommitStep, Config, EmbeddedBlobs};
use crate::tx::Transaction;

/// The physical id of an empty root leaf: it has no blob, so that creating
/// a store is one atomic registry call.
pub(crate) const EMPTY_ROOT: PhysicalId = PhysicalId::from_u128(0);

/// Counters since the database was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DbStats {
    /// Transactions committed (read and write).
    pub commits: u64,
    /// Commits that failed with `Conflict`.
    pub conflicts: u64,
    /// Node-level clashes resolved by swarm merge.
    pub merges: u64,
    /// Retries made by `run_write`/`run_read`.
    pub retries: u64,
    /// Transactions rolled back (explicitly or on drop).
    pub rollbacks: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) commits: AtomicU64,
    pub(crate) conflicts: AtomicU64,
    pub(crate) merges: AtomicU64,
    pub(crate) retries: AtomicU64,
    pub(crate) rollbacks: AtomicU64,
}

/// The shared state behind a [`Database`] handle.
#[derive(Debug)]
pub(crate) struct DbInner {
    pub(crate) registry: Arc<dyn Registry>,
    pub(crate) blobs: Arc<dyn BlobStore>,
    pub(crate) cache: NodeCache,
    pub(crate) handles: HandleCache,
    pub(crate) config: Config,
    pub(crate) counters: Counters,
    /// Deferred deletions of obsolete blobs, and the flushes that hurry them.
    pub(crate) gc: sop_core::GcGate,
    /// This process's live transactions: deletions wait for the older ones.
    pub(crate) epochs: Arc<crate::epoch::Epochs>,
    /// Intents this process is still working on (a commit in progress, or
    /// a clean-up not yet done), which periodic recovery leaves alone.
    pub(crate) owned: std::sync::Mutex<rustc_hash::FxHashSet<sop_core::TxId>>,
    /// Whether no other process shares the registry and blob store.
    pub(crate) exclusive: bool,
    /// Store metadata by name. A store's root id and options never change,
    /// so an entry stays valid until the store is removed; its `count` is
    /// not used (counts are read from the registry when asked for).
    pub(crate) store_cache: std::sync::RwLock<rustc_hash::FxHashMap<String, StoreInfo>>,
}

/// A SOP-rs database: many named stores (B-trees), transactional.
///
/// Cheap to clone; all clones share one database.
#[derive(Debug, Clone)]
pub struct Database {
    pub(crate) inner: Arc<DbInner>,
}

impl Database {
    /// Opens a database and runs recovery: intents left by crashed commits
    /// are finished (committed: obsolete blobs deleted) or undone (pending:
    /// staged blobs deleted), and half-removed stores are removed. An intent
    /// or store whose recovery fails (a flaky backend) is logged and left
    /// for the next open: it only holds garbage, so the database opens.
    ///
    /// # Errors
    /// `Io` (directory unusable or locked by another process, or a backend
    /// failing to list intents or stores), `Corruption` (foreign or damaged
    /// registry), `InvalidInput` (config).
    pub async fn open(config: Config) -> Result<Self> {
        let (registry, blobs, exclusive): (Arc<dyn Registry>, Arc<dyn BlobStore>, bool) = match &config
            .backend
        {
            Backend::Embedded(path) => {
                let rocks = RocksConfig { sync: config.sync, ..RocksConfig::default() };
                let registry = RocksRegistry::open(path.join("registry"), &rocks)?;
                let blobs: Arc<dyn BlobStore> = match config.embedded_blobs {
                    EmbeddedBlobs::Directory => {
                        Arc::new(ObjectBlobStore::local(path.join("blobs"), config.sync)?)
                    }
                    EmbeddedBlobs::Registry => Arc::new(registry.blob_store()),
                };
                (Arc::new(registry), blobs, true)
            }
            Backend::Memory => (Arc::new(MemRegistry::new()), Arc::new(ObjectBlobStore::memory()), true),
            Backend::Parts { registry, blobs, exclusive } => (registry.clone(), blobs.clone(), *exclusive),
        };
        let cache = NodeCache::new(&config.cache).await?;
        let inner = DbInner {
            registry,
            blobs,
            cache,
            handles: HandleCache::new(),
            config,
            counters: Counters::default(),
            gc: sop_core::GcGate::new(),
            epochs: Arc::default(),
            owned: std::sync::Mutex::default(),
            exclusive,
            store_cache: std::sync::RwLock::default(),
        };
        let db = Self { inner: Arc::new(inner) };
        let left = db.recover(exclusive).await?;
        if left > 0 {
            tracing::warn!(left, "recovery left intents or store removals for the next open");
        }
        crate::recovery::spawn_periodic(&db.inner);
        Ok(db)
    }

    /// Creates an empty store.
    ///
    /// # Errors
    /// `AlreadyExists`, or `InvalidInput` for a bad name or options.
    pub async fn create_store(&self, name: &str, options: StoreOptions) -> Result<StoreInfo> {
        let root = Handle::new(LogicalId::new(), EMPTY_ROOT);
        let info = StoreInfo::new(name, options, root.logical_id)?;
        self.inner.registry.create_store(&info, &root).await?;
        self.inner.handles.observe(root);
        Ok(info)
    }

    /// The store's metadata (options, committed count).
    ///
    /// # Errors
    /// `NotFound` when there is no such store.
    pub async fn store_info(&self, name: &str) -> Result<StoreInfo> {
        self.inner.registry.get_store(name).await?.ok_or_else(|| crate::tx::state::store_not_found(name))
    }

    /// Every store, sorted by name.
    ///
    /// # Errors
    /// Registry errors.
    pub async fn list_stores(&self) -> Result<Vec<StoreInfo>> {
        self.inner.registry.list_stores().await
    }

    /// Removes a store with all its nodes and blobs.
    ///
    /// # Errors
    /// `NotFound` when there is no such store; `Conflict` when a concurrent
    /// commit changed the store while it was being removed (retry).
    pub async fn remove_store(&self, name: &str) -> Result<()> {
        let info = self.store_info(name).await?;
        self.inner.forget_store(name);
        crate::recovery::remove_store_contents(&self.inner, &info).await?;
        self.inner.registry.remove_store(name).await.map(|_| ())
    }

    /// Starts a read-write transaction.
    ///
    /// # Errors
    /// None today; reserved for backends that must register transactions.
    pub async fn begin_write(&self) -> Result<Transaction> {
        Ok(Transaction::new(self.clone(), true))
    }

    /// Starts a read-only transaction (validated at commit, like any other).
    ///
    /// # Errors
    /// As [`Database::begin_write`].
    pub async fn begin_read(&self) -> Result<Transaction> {
        Ok(Transaction::new(self.clone(), false))
    }

    /// Starts a transaction with its own time limit instead of
    /// `Config::tx_timeout`.
    ///
    /// # Errors
    /// `InvalidInput` when `timeout` is zero or longer than
    /// `Config::tx_timeout` (recovery of shared databases treats intents
    /// older than that as abandoned).
    pub async fn begin_with_timeout(&self, writable: bool, timeout: Duration) -> Result<Transaction> {
        let max = self.inner.config.tx_timeout;
        if timeout.is_zero() || timeout > max {
            return Err(Error::InvalidInput(format!(
                "transaction timeout {timeout:?} is outside 1 ms..={max:?} (Config::tx_timeout)"
            )));
        }
        Ok(Transaction::with_timeout(self.clone(), writable, timeout))
    }

    /// Runs `f` in a write transaction and commits it, retrying the whole
    /// transaction with jittered backoff when it conflicts, up to
    /// `Config::max_retries` attempts.
    ///
    /// # Errors
    /// `f`'s error, the commit's error, or `Conflict` after the last retry.
    pub async fn run_write<F, Fut, T>(&self, f: F) -> Result<T>
    where
        F: FnMut(Transaction) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        self.run(true, f).await
    }

    /// As [`Database::run_write`], in read-only transactions.
    ///
    /// # Errors
    /// As [`Database::run_write`].
    pub async fn run_read<F, Fut, T>(&self, f: F) -> Result<T>
    where
        F: FnMut(Transaction) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        self.run(false, f).await
    }

    async fn run<F, Fut, T>(&self, writable: bool, mut f: F) -> Result<T>
    where
        F: FnMut(Transaction) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let attempts = self.inner.config.max_retries.max(1);
        let mut last = None;
        for attempt in 0..attempts {
            if attempt > 0 {
                self.inner.counters.retries.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(backoff(attempt)).await;
            }
            let tx = Transaction::new(self.clone(), writable);
            let outcome = match f(tx.clone()).await {
                Ok(v) => tx.commit().await.map(|_| v),
                // The closure's own error may come from a view that no
                // serial run produces (it read across a concurrent commit):
                // return it only once its reads are shown consistent.
                Err(e) if !e.is_conflict() => match tx.validate().await {
                    Ok(()) => return Err(e),
                    Err(v) => Err(v),
                },
                Err(e) => {
                    tx.rollback().await;
                    Err(e)
                }
            };
            match outcome {
                Err(e) if e.is_conflict() => last = Some(e),
                other => return other,
            }
        }
        Err(last.unwrap_or_else(|| Error::ItemConflict("no attempt made".into())))
    }

    /// Counters since open.
    #[must_use]
    pub fn stats(&self) -> DbStats {
        let c = &self.inner.counters;
        DbStats {
            commits: c.commits.load(Ordering::Relaxed),
            conflicts: c.conflicts.load(Ordering::Relaxed),
            merges: c.merges.load(Ordering::Relaxed),
            retries: c.retries.load(Ordering::Relaxed),
            rollbacks: c.rollbacks.load(Ordering::Relaxed),
        }
    }

    /// The node cache's counters.
    #[must_use]
    pub fn cache_stats(&self) -> sop_cache::CacheStats {
        self.inner.cache.stats()
    }

    /// Runs pending deletions of obsolete blobs now (skipping the rest of
    /// their grace period) and waits for them, including deletions that
    /// commits register while it waits. It never deletes what a live
    /// transaction may still read, and never waits for one: a deletion
    /// held back by a live transaction of this process runs when that
    /// transaction ends, and on shared backends none runs sooner than
    /// `Config::tx_timeout` after its commit.
    ///
    /// # Errors
    /// None today; deletion failures are left for recovery.
    pub async fn flush_gc(&self) -> Result<()> {
        self.inner.gc.flush().await;
        Ok(())
    }

    /// Finishes background work and closes the cache.
    ///
    /// # Errors
    /// The cache's flush error.
    pub async fn close(&self) -> Result<()> {
        self.flush_gc().await?;
        self.inner.cache.close().await
    }
}

/// Exponential backoff with jitter: 1, 2, 4, ... ms (capped at 100 ms),
/// times a random factor in [0.5, 1.5).
fn backoff(attempt: u32) -> Duration {
    let base = (1u64 << attempt.min(7)).min(100);
    let jitter = (PhysicalId::new().as_u128() & 0x3ff) as u64; // 0..1023
    Duration::from_micros(base * 500 + base * jitter)
}

impl DbInner {
    /// A store's metadata from the cache, else the registry.
    pub(crate) async fn cached_store(&self, name: &str) -> Result<StoreInfo> {
        let cached =
            self.store_cache.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(name).cloned();
        if let Some(info) = cached {
            return Ok(info);
        }
        let info =
            self.registry.get_store(name).await?.ok_or_else(|| crate::tx::state::store_not_found(name))?;
        let mut cache = self.store_cache.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        cache.insert(name.to_owned(), info.clone());
        Ok(info)
    }

    /// Drops a store's cached metadata (removed, or found stale).
    pub(crate) fn forget_store(&self, name: &str) {
        self.store_cache.write().unwrap_or_else(std::sync::PoisonError::into_inner).remove(name);
    }

    /// Drops cached metadata naming `root` as its root (the root vanished:
    /// the store was removed, perhaps by another process).
    pub(crate) fn forget_store_with_root(&self, root: LogicalId) {
        let mut cache = self.store_cache.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        cache.retain(|_, info| info.root != root);
    }

    /// The current handle of `id`: from the handle cache, else the registry.
    pub(crate) async fn handle(&self, id: LogicalId) -> Result<Option<Handle>> {
        if let Some(h) = self.handles.get(id) {
            return Ok(Some(h));
        }
        let got = self.registry.get_handles(&[id]).await?.into_iter().next().flatten();
        if let Some(h) = got {
            self.handles.observe(h);
        }
        Ok(got)
    }

    /// The current handle of `id` from the registry, replacing whatever the
    /// handle cache held (a read found the cached handle's blob gone).
    pub(crate) async fn refresh_handle(&self, id: LogicalId) -> Result<Option<Handle>> {
        self.handles.forget(id);
        self.handle(id).await
    }

    /// Marks `tx_id`'s intent as this process's until the claim drops.
    pub(crate) fn claim(self: &Arc<Self>, tx_id: sop_core::TxId) -> crate::recovery::Claim {
        crate::recovery::Claim::new(self, tx_id)
    }

    /// Calls the failpoint, if any, at `step`.
    pub(crate) fn failpoint(&self, step: CommitStep) -> Result<()> {
        self.config.failpoint.as_ref().map_or(Ok(()), |f| f(step))
    }
}
