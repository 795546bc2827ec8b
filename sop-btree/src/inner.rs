//! [`DbInner`]: the shared state behind a `Database` and its transactions —
//! backends, caches, counters, the low-water mark of live transactions, the
//! GC gate — with the small lookups every layer above uses (store metadata,
//! handle resolution, failpoints). It imports nothing from the transaction
//! or front-end layers.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, PoisonError, RwLock};

use bytes::Bytes;
use rustc_hash::FxHashMap;
use sop_cache::NodeCache;
use sop_core::{
    BlobStore, Error, Handle, LogicalId, PhysicalId, PublishRequest, Registry, Result, StoreInfo, Subject,
    TxId,
};

use crate::claims::{Claim, Claims};
use crate::clock::{PublishClock, Stamp, resolve};
use crate::collector::Collector;
use crate::config::Config;
use crate::epoch::Epochs;
use crate::failpoint::CommitStep;
use crate::gc_gate::GcGate;
use crate::handles::HandleCache;

/// Event counters since the database was opened.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) commits: AtomicU64,
    pub(crate) conflicts: AtomicU64,
    pub(crate) merges: AtomicU64,
    pub(crate) retries: AtomicU64,
    pub(crate) rollbacks: AtomicU64,
}

/// A store's metadata as the database caches it: shared, not copied, by
/// every transaction that opens the store (a copy was four allocations a
/// transaction, a twentieth of a short scan's instructions).
#[derive(Debug, Clone)]
pub(crate) struct CachedStore {
    /// The name, as log entries share it.
    pub(crate) name: Arc<str>,
    /// Root and options (its `count` is not kept current).
    pub(crate) info: Arc<StoreInfo>,
}

/// The shared state behind a database handle.
#[derive(Debug)]
pub(crate) struct DbInner {
    pub(crate) registry: Arc<dyn Registry>,
    pub(crate) blobs: Arc<dyn BlobStore>,
    pub(crate) cache: NodeCache,
    pub(crate) handles: HandleCache,
    pub(crate) config: Config,
    pub(crate) counters: Counters,
    /// Deferred deletions of obsolete blobs, and the flushes that hurry them.
    pub(crate) gc: GcGate,
    /// The deferred clean-ups, run in batches (`crate::collector`).
    pub(crate) collector: Arc<Collector>,
    /// This process's live transactions: deletions wait for the older ones.
    pub(crate) epochs: Arc<Epochs>,
    /// Intents this process is still working on.
    pub(crate) claims: Arc<Claims>,
    /// Whether no other process shares the registry and blob store.
    pub(crate) exclusive: bool,
    /// Whether the blob store is the registry's own: a commit then stages
    /// its blobs in its publish's one write (`Registry::publish_with_blobs`).
    pub(crate) blobs_in_registry: bool,
    /// This process's publishes in flight and finished (`crate::clock`).
    pub(crate) clock: PublishClock,
    /// Store metadata by name. A store's root id and options never change,
    /// so an entry stays valid until the store is removed; its `count` is
    /// not used (counts are read from the registry when asked for).
    store_cache: RwLock<FxHashMap<String, CachedStore>>,
}

impl DbInner {
    /// The shared state over these backends, with empty caches.
    pub(crate) fn new(
        registry: Arc<dyn Registry>,
        blobs: Arc<dyn BlobStore>,
        cache: NodeCache,
        config: Config,
        exclusive: bool,
    ) -> Self {
        Self {
            registry,
            blobs,
            cache,
            // Fronts pin nodes past the node cache's eviction: a quarter
            // of its memory at most.
            handles: HandleCache::with_front_budget(config.cache.memory_bytes / 4),
            config,
            counters: Counters::default(),
            gc: GcGate::new(),
            collector: Arc::default(),
            epochs: Arc::default(),
            claims: Arc::default(),
            exclusive,
            blobs_in_registry: false,
            clock: PublishClock::default(),
            store_cache: RwLock::default(),
        }
    }

    /// A store's metadata from the cache, else the registry.
    pub(crate) async fn cached_store(&self, name: &str) -> Result<CachedStore> {
        let cached = self.store_cache.read().unwrap_or_else(PoisonError::into_inner).get(name).cloned();
        if let Some(store) = cached {
            return Ok(store);
        }
        let info = self.registry.get_store(name).await?.ok_or_else(|| store_not_found(name))?;
        let store = CachedStore { name: Arc::from(name), info: Arc::new(info) };
        let mut cache = self.store_cache.write().unwrap_or_else(PoisonError::into_inner);
        cache.insert(name.to_owned(), store.clone());
        Ok(store)
    }

    /// Drops a store's cached metadata (removed, or found stale).
    pub(crate) fn forget_store(&self, name: &str) {
        self.store_cache.write().unwrap_or_else(PoisonError::into_inner).remove(name);
    }

    /// Drops cached metadata naming `root` as its root (the root vanished:
    /// the store was removed, perhaps by another process).
    pub(crate) fn forget_store_with_root(&self, root: LogicalId) {
        let mut cache = self.store_cache.write().unwrap_or_else(PoisonError::into_inner);
        cache.retain(|_, store| store.info.root != root);
    }

    /// The current handle of `id`: from the handle cache, else the registry.
    pub(crate) async fn handle(&self, id: LogicalId) -> Result<Option<Handle>> {
        resolve(&self.handles, &self.clock, self.registry.as_ref(), id).await
    }

    /// The current handle of `id` from the registry, replacing whatever the
    /// handle cache held (a read found the cached handle's blob gone).
    pub(crate) async fn refresh_handle(&self, id: LogicalId) -> Result<Option<Handle>> {
        self.handles.forget(id);
        self.handle(id).await
    }

    /// Validate-and-publish, bracketed on the clock: the handle cache holds
    /// the outcome (the new handles, or none of the written ids when the
    /// outcome is unknown or the future is dropped) before the publish
    /// counts as finished. A request that only validates changes nothing
    /// and is not bracketed.
    pub(crate) async fn publish(&self, request: &PublishRequest) -> Result<()> {
        if request.is_validation_only() {
            return self.registry.publish(request).await;
        }
        self.bracketed_publish(request, self.registry.publish(request)).await
    }

    /// As [`DbInner::publish`], staging `blobs` in the publish's own
    /// atomic write (the blob store is the registry's own).
    pub(crate) async fn publish_with_blobs(
        &self,
        request: &PublishRequest,
        blobs: Vec<(PhysicalId, Bytes)>,
    ) -> Result<()> {
        self.bracketed_publish(request, self.registry.publish_with_blobs(request, blobs)).await
    }

    /// Runs `call`, the registry's publish of `request`, bracketed on the
    /// clock.
    async fn bracketed_publish(
        &self,
        request: &PublishRequest,
        call: impl Future<Output = Result<()>>,
    ) -> Result<()> {
        // Marked before the publish is sent: a write-through must not refill
        // an entry forgotten while it was in flight (`HandleCache::observe_since`).
        let marks: Vec<u64> = request.writes.iter().map(|w| self.handles.mark(w.id())).collect();
        let bracket = self.clock.start(&self.handles, request.writes.iter().map(|w| w.id()).collect());
        call.await?;
        for (w, mark) in request.writes.iter().zip(marks) {
            match w.result() {
                Some(h) => self.handles.observe_since(h, mark),
                None => self.handles.forget(w.id()),
            }
        }
        bracket.applied();
        Ok(())
    }

    /// Whether a transaction that began at `begun` may skip validating what
    /// it read: in exclusive mode, when no publish started or finished
    /// since (nothing it read can have changed; see `crate::clock`) and the
    /// registry holds nothing that is not durable (a write whose sync
    /// failed is visible but may still be lost: validating waits for it).
    pub(crate) fn unchanged_since(&self, begun: Stamp) -> bool {
        self.exclusive && self.clock.quiet_since(begun) && self.registry.all_durable()
    }

    /// Runs a registry change that no handle write-through covers (store
    /// creation and removal) as a publish in flight.
    pub(crate) async fn bracketed<T>(&self, change: impl Future<Output = Result<T>>) -> Result<T> {
        let _bracket = self.clock.start(&self.handles, Vec::new());
        change.await
    }

    /// Marks `tx_id`'s intent as this process's until the claim drops.
    pub(crate) fn claim(&self, tx_id: TxId) -> Claim {
        self.claims.claim(tx_id)
    }

    /// Calls the failpoint, if any, at `step`.
    pub(crate) fn failpoint(&self, step: CommitStep) -> Result<()> {
        self.config.failpoint.as_ref().map_or(Ok(()), |f| f(step))
    }
}

/// The error for a store that does not exist.
pub(crate) fn store_not_found(name: &str) -> Error {
    Error::NotFound(Subject::Store(name.to_owned()))
}
