//! [`NodeCache`]: the foyer hybrid cache keyed by physical id.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use foyer::{
    BlockEngineConfig, DeviceBuilder, Event, EventListener, FsDeviceBuilder, HybridCache, HybridCacheBuilder,
    S3FifoConfig,
};
use sop_core::{BlobStore, DeltaOp, Error, ErrorKind, KeyIndex, LeafDelta, Node, PhysicalId, Result};

use crate::inflight::Inflight;
use crate::{CachedBlob, DeltaLeaf, Layers};

fn value_as_node(id: PhysicalId) -> Error {
    Error::corruption("node", format!("blob {id} is cached as a value"))
}

/// A node as [`NodeCache::node_and_base`] returns it.
#[derive(Debug, Clone)]
pub struct LoadedNode {
    /// The node (a delta blob materialized).
    pub node: Arc<Node>,
    /// Its keys' search index.
    pub index: Arc<KeyIndex>,
    /// The full leaf blob the node's delta applies to, when it is a delta.
    pub base: Option<PhysicalId>,
    /// The earlier links of the delta's chain, oldest first (empty for a
    /// full node or a delta with no chain).
    pub chain: Vec<PhysicalId>,
}

/// A local disk tier for the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskTier {
    /// The directory holding the cache files (created if missing).
    pub dir: PathBuf,
    /// Disk capacity in bytes (at least 4 MiB).
    pub capacity_bytes: usize,
}

/// Open-time settings of a [`NodeCache`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheConfig {
    /// Memory tier capacity in (approximate) bytes; default 256 MiB.
    pub memory_bytes: usize,
    /// Optional disk tier; default none.
    pub disk: Option<DiskTier>,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self { memory_bytes: 256 << 20, disk: None }
    }
}

/// Counters of a [`NodeCache`] since it was built.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Requests served without loading from the blob store.
    pub hits: u64,
    /// Loads from the blob store (one per deduplicated miss).
    pub misses: u64,
    /// Entries evicted from the memory tier.
    pub evictions: u64,
}

#[derive(Debug, Default)]
struct Counters {
    requests: AtomicU64,
    misses: AtomicU64,
    evictions: AtomicU64,
}

struct Evictions(Arc<Counters>);

impl EventListener for Evictions {
    type Key = u128;
    type Value = CachedBlob;

    fn on_leave(&self, reason: Event, _key: &u128, _value: &CachedBlob) {
        if reason == Event::Evict {
            self.0.evictions.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("sop_cache_evictions_total").increment(1);
        }
    }
}

/// `PhysicalId -> CachedBlob`, with a memory tier and an optional disk tier.
///
/// Entries are never stale (blobs are immutable), so there is no
/// invalidation; [`NodeCache::remove`] only frees space early.
#[derive(Clone)]
pub struct NodeCache {
    cache: HybridCache<u128, CachedBlob>,
    counters: Arc<Counters>,
    /// Misses in flight, when there is no disk tier (`crate::inflight`).
    inflight: Option<Arc<Inflight>>,
}

impl std::fmt::Debug for NodeCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeCache").field("stats", &self.stats()).finish_non_exhaustive()
    }
}

fn foyer_err(e: foyer::Error) -> Error {
    if let Some(inner) = e.downcast_ref::<Error>() {
        return inner.clone();
    }
    Error::backend("foyer", ErrorKind::Io, e)
}

impl NodeCache {
    /// Builds a cache.
    ///
    /// # Errors
    /// `InvalidInput` for a disk tier under 4 MiB; `Io` when the disk tier's
    /// directory cannot be used.
    pub async fn new(config: &CacheConfig) -> Result<Self> {
        let counters = Arc::new(Counters::default());
        let builder = HybridCacheBuilder::new()
            .with_name("sop-node-cache")
            .with_event_listener(Arc::new(Evictions(counters.clone())))
            .memory(config.memory_bytes.max(1))
            // S3-FIFO: a hit bumps an atomic frequency under the shard's
            // read lock, so concurrent readers never serialize (foyer's
            // default w-TinyLFU takes the shard's write lock on every get).
            .with_eviction_config(S3FifoConfig::default())
            .with_weighter(|_: &u128, v: &CachedBlob| v.weight())
            .storage();
        let cache = match &config.disk {
            None => builder.build().await,
            Some(disk) => {
                if disk.capacity_bytes < 4 << 20 {
                    return Err(Error::invalid(
                        "disk cache",
                        format!("disk cache capacity {} is under 4 MiB", disk.capacity_bytes),
                    ));
                }
                std::fs::create_dir_all(&disk.dir)
                    .map_err(|e| Error::io(format!("creating {}", disk.dir.display()), e))?;
                let device = FsDeviceBuilder::new(&disk.dir)
                    .with_capacity(disk.capacity_bytes)
                    .build()
                    .map_err(foyer_err)?;
                let engine = BlockEngineConfig::new(device).with_block_size(1 << 20);
                builder.with_engine_config(engine).build().await
            }
        }
        .map_err(foyer_err)?;
        let inflight = config.disk.is_none().then(|| Arc::new(Inflight::default()));
        Ok(Self { cache, counters, inflight })
    }

    /// The node stored in blob `id`: from memory, else the disk tier, else
    /// `blobs` (decoded once and cached). A leaf delta blob is materialized:
    /// its base (a full leaf, through this cache) with its changes applied.
    ///
    /// # Errors
    /// The blob store's error (`NotFound` for a missing blob), `Corruption`
    /// for a blob that does not decode, a delta whose base is not a full
    /// leaf, or an id cached as a value.
    pub async fn node(&self, id: PhysicalId, blobs: &Arc<dyn BlobStore>) -> Result<Arc<Node>> {
        self.node_and_base(id, blobs).await.map(|loaded| loaded.node)
    }

    /// As [`NodeCache::node`], with the node's key index and the base blob
    /// when `id` is a delta.
    ///
    /// # Errors
    /// As [`NodeCache::node`].
    pub async fn node_and_base(&self, id: PhysicalId, blobs: &Arc<dyn BlobStore>) -> Result<LoadedNode> {
        match self.node_blob(id, blobs).await? {
            CachedBlob::Delta { leaf, base } => {
                let (node, index) = leaf.merged();
                let chain = leaf.chain().to_vec();
                Ok(LoadedNode { node: node.clone(), index: index.clone(), base: Some(base), chain })
            }
            CachedBlob::Node { node, index, .. } => {
                Ok(LoadedNode { node, index, base: None, chain: Vec::new() })
            }
            CachedBlob::Value(_) => Err(value_as_node(id)),
        }
    }

    /// Node blob `id` as cached: a node, or a leaf delta not merged (a
    /// writer takes its base and changes as they are); never a value.
    ///
    /// # Errors
    /// As [`NodeCache::node`].
    pub async fn node_blob(&self, id: PhysicalId, blobs: &Arc<dyn BlobStore>) -> Result<CachedBlob> {
        let got = match self.get_in_memory(id) {
            // A hit clones neither the cache nor the blob store (the loader
            // below needs both).
            Some(hit) => hit,
            None => self.load_node(id, blobs).await?,
        };
        match got {
            CachedBlob::Value(_) => Err(value_as_node(id)),
            node => Ok(node),
        }
    }

    /// Node `id` from the cache, else decoded from its blob (a delta over
    /// its base) and cached.
    async fn load_node(&self, id: PhysicalId, blobs: &Arc<dyn BlobStore>) -> Result<CachedBlob> {
        let (this, blobs) = (self.clone(), blobs.clone());
        self.get_or_load(id, move || async move {
            let bytes = blobs.get(id).await?;
            if !LeafDelta::is_delta(&bytes) {
                return Ok(CachedBlob::node(Arc::new(Node::decode(&bytes)?)));
            }
            let delta = LeafDelta::decode(&bytes)?;
            if delta.base == id || delta.chain.iter().any(|l| *l == id || *l == delta.base) {
                return Err(Error::corruption(
                    "leaf delta",
                    format!("the delta {id} names itself or its base as its base or a link"),
                ));
            }
            let (layers, links_read, restarts) = match this.cached_link(&delta) {
                // The earlier links as cached: this link's changes go on
                // top, as a link's (a restart written elsewhere is taken
                // for a link: the next restart here folds it again).
                Some((earlier, restarts)) => {
                    let sizes = earlier.sizes_with(&delta.ops);
                    (earlier.with_run(delta.ops, sizes), false, restarts)
                }
                None => {
                    let (base, index) = this.full_node(delta.base, &blobs).await?;
                    // Every link's changes folded, this one's last; a delete
                    // of a key the base lacks is dropped by `Layers::new`.
                    let ops = LeafDelta::fold(&read_links(&delta, &blobs).await?, &delta.ops, |_| true);
                    let layers = Layers::new(base, index, ops).map_err(|_| {
                        let what = format!("the base {} of {id} is not a leaf", delta.base);
                        Error::corruption("leaf delta", what)
                    })?;
                    // A delta with no chain is a restart (every change
                    // since the base); a chain read cold is taken as links.
                    if delta.chain.is_empty() { (layers.as_restart(), false, 1) } else { (layers, true, 0) }
                }
            };
            let mut leaf = DeltaLeaf::of_layers(layers).with_chain(delta.chain).with_restarts(restarts);
            if links_read {
                leaf = leaf.with_links_read();
            }
            Ok(CachedBlob::delta(leaf, delta.base))
        })
        .await
    }

    /// The base and the changes since it of `delta`'s last link, when that
    /// link is cached as layers of the same chain, and how many of the
    /// chain's oldest blobs are restarts (`DeltaLeaf::restarts`).
    fn cached_link(&self, delta: &LeafDelta) -> Option<(Layers, usize)> {
        let (last, earlier) = delta.chain.split_last()?;
        let Some(CachedBlob::Delta { leaf, base }) = self.get_in_memory(*last) else { return None };
        let layers = leaf.layers().filter(|_| base == delta.base && leaf.chain() == earlier)?;
        Some((layers.clone(), leaf.restarts()))
    }

    /// A full node blob (a delta's base), never a delta, with its index:
    /// from the memory tier, else read and decoded here, and not cached
    /// under its own id (the delta's entry holds it). It never joins
    /// another load in flight, so deltas that name each other (corrupt
    /// blobs) cannot wait on each other's loads: a delta as a base decodes
    /// as `Corruption`.
    async fn full_node(
        &self,
        id: PhysicalId,
        blobs: &Arc<dyn BlobStore>,
    ) -> Result<(Arc<Node>, Arc<KeyIndex>)> {
        match self.get_in_memory(id) {
            Some(CachedBlob::Node { node, index, .. }) => return Ok((node, index)),
            Some(_) => {
                return Err(Error::corruption("leaf delta", format!("the base {id} is not a full node")));
            }
            None => {}
        }
        let bytes = blobs.get(id).await?;
        if LeafDelta::is_delta(&bytes) {
            return Err(Error::corruption("leaf delta", format!("the base {id} is itself a delta")));
        }
        let node = Arc::new(Node::decode(&bytes)?);
        let index = Arc::new(KeyIndex::of_node(&node));
        Ok((node, index))
    }

    /// The raw value blob `id`, from the cache or else loaded from `blobs`.
    ///
    /// # Errors
    /// The blob store's error.
    pub async fn value(&self, id: PhysicalId, blobs: &Arc<dyn BlobStore>) -> Result<Bytes> {
        let blobs = blobs.clone();
        let got =
            self.get_or_load(id, move || async move { blobs.get(id).await.map(CachedBlob::Value) }).await?;
        match got {
            CachedBlob::Value(b) => Ok(b),
            CachedBlob::Node { .. } | CachedBlob::Delta { .. } => {
                Err(Error::corruption("value", format!("blob {id} is cached as a node")))
            }
        }
    }

    /// The cached blob `id` from the memory tier only, with no I/O.
    #[must_use]
    pub fn get_in_memory(&self, id: PhysicalId) -> Option<CachedBlob> {
        let hit = self.cache.memory().get(&id.as_u128()).map(|e| e.value().clone());
        if hit.is_some() {
            self.count_hit();
        }
        hit
    }

    /// `id` from the cache, or else from `load`; concurrent misses on one id
    /// share one load.
    ///
    /// # Errors
    /// `load`'s error.
    pub async fn get_or_load<F, Fut>(&self, id: PhysicalId, load: F) -> Result<CachedBlob>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<CachedBlob>> + Send + 'static,
    {
        if let Some(hit) = self.get_in_memory(id) {
            return Ok(hit);
        }
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        let counters = self.counters.clone();
        if let Some(inflight) = &self.inflight {
            let counted = move || {
                let fut = load();
                async move {
                    counters.misses.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!("sop_cache_misses_total").increment(1);
                    fut.await
                }
            };
            let cached = || self.cache.memory().get(&id.as_u128()).map(|e| e.value().clone());
            let keep = |blob: &CachedBlob| self.insert(id, blob.clone());
            return inflight.load(id.as_u128(), cached, counted, keep).await;
        }
        let fut = load();
        let entry = self
            .cache
            .get_or_fetch(&id.as_u128(), move || async move {
                counters.misses.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("sop_cache_misses_total").increment(1);
                fut.await
            })
            .await
            .map_err(foyer_err)?;
        Ok(entry.value().clone())
    }

    /// Puts a blob this process just wrote, so its first read is a hit.
    pub fn insert(&self, id: PhysicalId, blob: CachedBlob) {
        // With no disk tier (`inflight` is kept then) the memory tier is
        // the whole cache: the hybrid cache's own insert and remove add two
        // clock reads for its metrics and a call to the empty disk tier, on
        // every node a commit writes or replaces.
        if self.inflight.is_some() {
            self.cache.memory().insert(id.as_u128(), blob);
        } else {
            self.cache.insert(id.as_u128(), blob);
        }
    }

    /// Drops `id` early (for example after its blob was deleted), and the
    /// load in flight for it, if any, is not kept.
    pub fn remove(&self, id: PhysicalId) {
        if let Some(inflight) = &self.inflight {
            inflight.forget(id.as_u128());
            self.cache.memory().remove(&id.as_u128());
        } else {
            self.cache.remove(&id.as_u128());
        }
    }

    /// Hit, miss and eviction counts since the cache was built.
    #[must_use]
    pub fn stats(&self) -> CacheStats {
        let requests = self.counters.requests.load(Ordering::Relaxed);
        let misses = self.counters.misses.load(Ordering::Relaxed);
        CacheStats {
            hits: requests.saturating_sub(misses),
            misses,
            evictions: self.counters.evictions.load(Ordering::Relaxed),
        }
    }

    fn count_hit(&self) {
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("sop_cache_hits_total").increment(1);
    }

    /// Flushes the disk tier and stops background work.
    ///
    /// # Errors
    /// `Io` when the disk tier cannot be flushed.
    pub async fn close(&self) -> Result<()> {
        self.cache.close().await.map_err(foyer_err)
    }
}

/// The changes of `delta`'s earlier links, every link's blob read and
/// folded in order. Each link must be a delta on the same base whose own
/// chain is the links before it.
async fn read_links(delta: &LeafDelta, blobs: &Arc<dyn BlobStore>) -> Result<Vec<DeltaOp>> {
    let links = futures::future::try_join_all(delta.chain.iter().map(|l| blobs.get(*l))).await?;
    let mut ops: Vec<DeltaOp> = Vec::new();
    for (i, (bytes, id)) in links.iter().zip(&delta.chain).enumerate() {
        let link = LeafDelta::decode(bytes)?;
        if link.base != delta.base || delta.chain.get(..i) != Some(link.chain.as_slice()) {
            return Err(Error::corruption("leaf delta", format!("the link {id} belongs to another chain")));
        }
        ops = LeafDelta::fold(&ops, &link.ops, |_| true);
    }
    Ok(ops)
}
