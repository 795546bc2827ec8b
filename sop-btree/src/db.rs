//! [`Database`]: the front end. It wires the layers below together —
//! backends, the shared state (`crate::inner`), recovery, transactions —
//! and adds the retry helpers.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use sop_cache::NodeCache;
use sop_core::{Error, Handle, LogicalId, PhysicalId, Result, StoreInfo, StoreOptions, Subject};

use crate::check::CheckReport;
use crate::config::{Backend, Config};
use crate::handles::EMPTY_ROOT;
use crate::inner::{DbInner, store_not_found};
use crate::tx::Transaction;

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
        let sop_backends::Backends { registry, blobs, exclusive, blobs_in_registry } = match &config.backend {
            #[cfg(feature = "embedded")]
            Backend::Embedded(path) => sop_backends::embedded(path, config.sync, config.embedded_blobs)?,
            Backend::Memory => sop_backends::memory(),
            Backend::Parts { registry, blobs, exclusive } => sop_backends::Backends {
                registry: registry.clone(),
                blobs: blobs.clone(),
                exclusive: *exclusive,
                blobs_in_registry: false,
            },
        };
        let cache = NodeCache::new(&config.cache).await?;
        let mut inner = DbInner::new(registry, blobs, cache, config, exclusive);
        inner.blobs_in_registry = blobs_in_registry;
        let inner = Arc::new(inner);
        // Exclusive: every intent left is this database's own, finished
        // before the first transaction. Shared: intents are other
        // processes' too (a crashed peer may leave thousands), finished
        // in the background from now on, as the periodic recovery does.
        if exclusive {
            let left = crate::recovery::recover(&inner, exclusive).await?;
            if left > 0 {
                tracing::warn!(left, "recovery left intents or store removals for the next open");
            }
        }
        crate::recovery::spawn_periodic(&inner, !exclusive);
        Ok(Self { inner })
    }

    /// Creates an empty store.
    ///
    /// # Errors
    /// `AlreadyExists`, or `InvalidInput` for a bad name or options.
    pub async fn create_store(&self, name: &str, options: StoreOptions) -> Result<StoreInfo> {
        let root = Handle::new(LogicalId::new(), EMPTY_ROOT);
        let info = StoreInfo::new(name, options, root.logical_id)?;
        let (inner, created) = (self.inner.clone(), info.clone());
        to_completion(async move {
            inner
                .bracketed(async {
                    inner.registry.create_store(&created, &root).await?;
                    inner.handles.observe(root);
                    Ok(())
                })
                .await
        })
        .await?;
        Ok(info)
    }

    /// The store's metadata (options, committed count).
    ///
    /// # Errors
    /// `NotFound` when there is no such store.
    pub async fn store_info(&self, name: &str) -> Result<StoreInfo> {
        self.inner.registry.get_store(name).await?.ok_or_else(|| store_not_found(name))
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
        let (inner, name) = (self.inner.clone(), name.to_owned());
        to_completion(async move {
            inner.forget_store(&name);
            crate::removal::remove_store_contents(&inner, &info).await?;
            // Only this store's record: recovery may have removed it already
            // and a new store of the same name may exist by now.
            inner.bracketed(inner.registry.remove_store_if_root(&name, info.root)).await.map(|_| ())
        })
        .await
    }

    /// Starts a read-write transaction.
    ///
    /// # Errors
    /// None today; reserved for backends that must register transactions.
    pub async fn begin_write(&self) -> Result<Transaction> {
        Ok(Transaction::new(self.inner.clone(), true))
    }

    /// Starts a read-only transaction (validated at commit, like any other).
    ///
    /// # Errors
    /// As [`Database::begin_write`].
    pub async fn begin_read(&self) -> Result<Transaction> {
        Ok(Transaction::new(self.inner.clone(), false))
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
            return Err(Error::invalid(
                "timeout",
                format!("transaction timeout {timeout:?} is outside 1 ms..={max:?} (Config::tx_timeout)"),
            ));
        }
        Ok(Transaction::with_timeout(self.inner.clone(), writable, timeout))
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
            let tx = Transaction::new(self.inner.clone(), writable);
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
        Err(last.unwrap_or_else(|| {
            Error::changed(Subject::Other("the transaction".into()), "was never attempted")
        }))
    }

    /// Verifies every store's structure (sorted keys, separator bounds,
    /// equal leaf depth, fill bounds, item counts, resolvable children) and
    /// reachability: no handle that no store reaches, no blob that nothing
    /// references (outside in-flight intents), no referenced blob missing.
    ///
    /// # Errors
    /// Backend errors while reading (`Io` also when a removed store's tree,
    /// still being swept, cannot be read whole: try again); problems found
    /// are in the report.
    pub async fn check(&self) -> Result<CheckReport> {
        crate::check::check(&self.inner).await
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

    /// Finishes abandoned intents now, as the background recovery does
    /// every `Config::tx_timeout`: on shared backends those older than the
    /// timeout (a crashed process's), rolled forward if committed, undone
    /// if not. Returns how many were left for a later round (an error on
    /// each is logged). An exclusive database recovers at open.
    ///
    /// # Errors
    /// The registry's, listing intents or stores.
    pub async fn recover(&self) -> Result<usize> {
        crate::recovery::recover(&self.inner, self.inner.exclusive).await
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

    /// Gives the space of deleted data back to the file system: runs the
    /// pending deletions of obsolete blobs (as [`Database::flush_gc`]),
    /// then compacts the registry's storage (for the embedded default, a
    /// full RocksDB compaction with blob garbage collection over every
    /// blob file), and reclaims the blob store's dead space (on object
    /// storage, records whose every part was deleted). Contents are
    /// unchanged, and transactions may run while it works.
    ///
    /// # Errors
    /// The backend's (`Io`); `Corruption` for an unreadable dead list.
    pub async fn compact(&self) -> Result<()> {
        self.flush_gc().await?;
        self.inner.registry.compact().await?;
        self.inner.blobs.reclaim().await
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

/// Runs a registry change in a task of its own, so that dropping the
/// caller's future neither leaves the change half-done nor ends its publish
/// bracket (`crate::clock`) while a registry call it started may still
/// apply.
async fn to_completion<T: Send + 'static>(
    change: impl Future<Output = Result<T>> + Send + 'static,
) -> Result<T> {
    tokio::spawn(change)
        .await
        .map_err(|e| Error::Indeterminate(format!("the store change's task failed: {e}")))?
}
