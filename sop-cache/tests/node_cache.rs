//! NodeCache behaviour: hits, single-flight misses, errors, eviction, disk tier.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use sop_cache::{CacheConfig, CachedBlob, DiskTier, NodeCache};
use sop_core::{BlobStore, ErrorKind, Item, Node, PhysicalId, Result, TxId, Value};
use sop_store::ObjectBlobStore;

/// Counts gets and slows them down, so that concurrent misses overlap.
#[derive(Debug)]
struct CountingStore {
    inner: ObjectBlobStore,
    gets: AtomicU64,
    delay: Duration,
    /// The threads the gets ran on.
    threads: std::sync::Mutex<Vec<std::thread::ThreadId>>,
    /// Whether a get panics (after its delay).
    panics: std::sync::atomic::AtomicBool,
}

impl CountingStore {
    fn new(delay: Duration) -> Self {
        Self {
            inner: ObjectBlobStore::memory(),
            gets: AtomicU64::new(0),
            delay,
            threads: std::sync::Mutex::default(),
            panics: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

#[async_trait]
impl BlobStore for CountingStore {
    async fn put(&self, id: PhysicalId, data: Bytes) -> Result<()> {
        self.inner.put(id, data).await
    }
    async fn get(&self, id: PhysicalId) -> Result<Bytes> {
        self.gets.fetch_add(1, Ordering::SeqCst);
        self.threads.lock().unwrap().push(std::thread::current().id());
        tokio::time::sleep(self.delay).await;
        assert!(!self.panics.load(Ordering::SeqCst), "a blob store that panics");
        self.inner.get(id).await
    }
    async fn delete(&self, id: PhysicalId) -> Result<()> {
        self.inner.delete(id).await
    }
    async fn list(&self) -> Result<Vec<PhysicalId>> {
        self.inner.list().await
    }
    async fn put_many(&self, blobs: Vec<(PhysicalId, Bytes)>) -> Result<()> {
        self.inner.put_many(blobs).await
    }
    async fn delete_many(&self, ids: &[PhysicalId]) -> Result<()> {
        self.inner.delete_many(ids).await
    }
    fn allocate(&self, lens: &[usize]) -> Vec<PhysicalId> {
        self.inner.allocate(lens)
    }
    async fn reclaim(&self) -> Result<()> {
        self.inner.reclaim().await
    }
}

fn leaf(n: usize) -> Node {
    Node::Leaf {
        items: (0..n)
            .map(|i| Item {
                key: Bytes::from(format!("key{i:05}")),
                version: TxId::new(),
                value: Value::Inline(Bytes::from(vec![7u8; 100])),
            })
            .collect(),
    }
}

async fn store_with(node: &Node) -> (Arc<CountingStore>, Arc<dyn BlobStore>, PhysicalId) {
    store_with_delay(node, Duration::ZERO).await
}

async fn store_with_delay(
    node: &Node,
    delay: Duration,
) -> (Arc<CountingStore>, Arc<dyn BlobStore>, PhysicalId) {
    let counting = Arc::new(CountingStore::new(delay));
    let id = PhysicalId::new();
    counting.put(id, Bytes::from(node.encode())).await.unwrap();
    let dyn_store: Arc<dyn BlobStore> = counting.clone();
    (counting, dyn_store, id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_misses_load_once() {
    let node = leaf(10);
    let (counting, blobs, id) = store_with_delay(&node, Duration::from_millis(50)).await;
    let cache = NodeCache::new(&CacheConfig::default()).await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let (cache, blobs) = (cache.clone(), blobs.clone());
        tasks.push(tokio::spawn(async move { cache.node(id, &blobs).await.unwrap() }));
    }
    for t in tasks {
        assert_eq!(*t.await.unwrap(), node);
    }
    assert_eq!(counting.gets.load(Ordering::SeqCst), 1, "32 concurrent misses, one load");
    let stats = cache.stats();
    assert_eq!((stats.hits, stats.misses), (31, 1), "{stats:?}");
    cache.node(id, &blobs).await.unwrap();
    assert_eq!(cache.stats().hits, 32);
}

/// Many ids, many callers per id, on a multi-threaded runtime: each id is
/// loaded exactly once and every caller gets its own id's node.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_misses_on_many_ids_load_each_once() {
    let counting = Arc::new(CountingStore::new(Duration::from_millis(5)));
    let mut nodes = Vec::new();
    for n in 1..=16 {
        let (id, node) = (PhysicalId::new(), leaf(n));
        counting.put(id, Bytes::from(node.encode())).await.unwrap();
        nodes.push((id, node));
    }
    let blobs: Arc<dyn BlobStore> = counting.clone();
    let cache = NodeCache::new(&CacheConfig::default()).await.unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for round in 0..8 {
        for (i, (id, node)) in nodes.iter().enumerate() {
            let (cache, blobs, id, node) = (cache.clone(), blobs.clone(), *id, node.clone());
            tasks.spawn(async move {
                if (round + i) % 3 == 0 {
                    tokio::task::yield_now().await;
                }
                assert_eq!(*cache.node(id, &blobs).await.unwrap(), node);
            });
        }
    }
    while let Some(t) = tasks.join_next().await {
        t.unwrap();
    }
    assert_eq!(counting.gets.load(Ordering::SeqCst), 16, "one load per id");
    assert_eq!(cache.stats().misses, 16);
}

/// The caller that started a load is cancelled mid-load (a dropped request,
/// a timed-out transaction): the callers waiting on that load still get the
/// node, and nobody hangs.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cancelled_loader_does_not_strand_its_waiters() {
    let node = leaf(10);
    let (counting, blobs, id) = store_with_delay(&node, Duration::from_millis(200)).await;
    let cache = NodeCache::new(&CacheConfig::default()).await.unwrap();
    let leader = {
        let (cache, blobs) = (cache.clone(), blobs.clone());
        tokio::spawn(async move { cache.node(id, &blobs).await })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    let mut waiters = Vec::new();
    for _ in 0..8 {
        let (cache, blobs) = (cache.clone(), blobs.clone());
        waiters.push(tokio::spawn(async move { cache.node(id, &blobs).await }));
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    leader.abort();
    for w in waiters {
        let got = tokio::time::timeout(Duration::from_secs(30), w).await.expect("a waiter hung");
        assert_eq!(*got.unwrap().unwrap(), node);
    }
    assert_eq!(counting.gets.load(Ordering::SeqCst), 1, "the waiters carried the cancelled load on");
}

#[tokio::test]
async fn load_errors_keep_their_kind_and_are_not_cached() {
    let (_counting, blobs, _) = store_with(&leaf(1)).await;
    let cache = NodeCache::new(&CacheConfig::default()).await.unwrap();
    let missing = PhysicalId::new();
    let err = cache.node(missing, &blobs).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    blobs.put(missing, Bytes::from_static(b"not a node")).await.unwrap();
    let err = cache.node(missing, &blobs).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corruption, "a failed load must not be cached: {err}");
}

#[tokio::test]
async fn values_and_inserted_nodes_are_hits() {
    let (counting, blobs, _) = store_with(&leaf(1)).await;
    let cache = NodeCache::new(&CacheConfig::default()).await.unwrap();
    let vid = PhysicalId::new();
    blobs.put(vid, Bytes::from_static(b"big value")).await.unwrap();
    assert_eq!(cache.value(vid, &blobs).await.unwrap(), Bytes::from_static(b"big value"));
    assert_eq!(cache.value(vid, &blobs).await.unwrap(), Bytes::from_static(b"big value"));
    let nid = PhysicalId::new();
    let written = leaf(3);
    cache.insert(nid, CachedBlob::node(Arc::new(written.clone())));
    assert_eq!(cache.node(nid, &blobs).await.unwrap().as_ref(), &written);
    assert_eq!(counting.gets.load(Ordering::SeqCst), 1, "only the first value read loads");
    assert_eq!(cache.node(vid, &blobs).await.unwrap_err().kind(), ErrorKind::Corruption);
}

#[tokio::test]
async fn small_memory_tier_evicts_and_counts_it() {
    let cache = NodeCache::new(&CacheConfig { memory_bytes: 64 << 10, disk: None }).await.unwrap();
    let (_c, blobs, _) = store_with(&leaf(1)).await;
    let mut ids = Vec::new();
    for _ in 0..100 {
        let id = PhysicalId::new();
        blobs.put(id, Bytes::from(leaf(50).encode())).await.unwrap();
        cache.node(id, &blobs).await.unwrap();
        ids.push(id);
    }
    let stats = cache.stats();
    assert!(stats.evictions > 0, "100 nodes of ~10 KB in 64 KB must evict: {stats:?}");
    assert_eq!(stats.misses, 100);
    assert!(cache.get_in_memory(ids[0]).is_none(), "the oldest entry left");
}

#[tokio::test]
async fn disk_tier_serves_evicted_nodes_without_the_blob_store() {
    let dir = tempfile::tempdir().unwrap();
    let config = CacheConfig {
        memory_bytes: 16 << 10,
        disk: Some(DiskTier { dir: dir.path().to_path_buf(), capacity_bytes: 16 << 20 }),
    };
    let cache = NodeCache::new(&config).await.unwrap();
    let first_node = leaf(20);
    let (_counting, blobs, first) = store_with(&first_node).await;
    cache.node(first, &blobs).await.unwrap();
    // Far more than the memory tier holds, whatever shard `first` is in.
    for _ in 0..200 {
        let id = PhysicalId::new();
        blobs.put(id, Bytes::from(leaf(20).encode())).await.unwrap();
        cache.node(id, &blobs).await.unwrap();
    }
    assert!(cache.get_in_memory(first).is_none(), "evicted from memory");
    // Disk writes are asynchronous: poll with a loader that must not run.
    let mut from_disk = None;
    for _ in 0..100 {
        let got = cache
            .get_or_load(first, || async {
                Err(sop_core::Error::NotFound(sop_core::Subject::Other("not on disk yet".into())))
            })
            .await;
        if let Ok(CachedBlob::Node { node: n, .. }) = got {
            from_disk = Some(n);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(from_disk.as_deref(), Some(&first_node), "an evicted node must come back from the disk tier");
    cache.close().await.unwrap();
    let small =
        CacheConfig { memory_bytes: 1, disk: Some(DiskTier { dir: dir.path().into(), capacity_bytes: 1 }) };
    assert_eq!(NodeCache::new(&small).await.unwrap_err().kind(), ErrorKind::InvalidInput);
}

/// Corrupt deltas that name themselves or each other as their base are
/// `Corruption`, never a load that waits on itself: concurrent loads of
/// both deltas of a cycle included.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cyclic_delta_bases_are_corruption_not_a_hang() {
    use sop_core::LeafDelta;
    let counting = Arc::new(CountingStore::new(Duration::from_millis(20)));
    let blobs: Arc<dyn BlobStore> = counting.clone();
    let (own, a, b) = (PhysicalId::new(), PhysicalId::new(), PhysicalId::new());
    let delta = |base| Bytes::from(LeafDelta { base, chain: Vec::new(), ops: Vec::new() }.encode());
    blobs.put(own, delta(own)).await.unwrap();
    blobs.put(a, delta(b)).await.unwrap();
    blobs.put(b, delta(a)).await.unwrap();
    let cache = NodeCache::new(&CacheConfig::default()).await.unwrap();
    let within = |f| tokio::time::timeout(Duration::from_secs(5), f);
    let got = within(cache.node(own, &blobs)).await.expect("a self-based delta must not hang");
    assert_eq!(got.unwrap_err().kind(), ErrorKind::Corruption);
    let (ra, rb) = tokio::join!(within(cache.node(a, &blobs)), within(cache.node(b, &blobs)));
    for r in [ra, rb] {
        assert_eq!(
            r.expect("deltas based on each other must not hang").unwrap_err().kind(),
            ErrorKind::Corruption
        );
    }
}

/// A delta on a full leaf materializes as the base with its changes, and
/// reports its base; the delta's entry holds the base (it is not cached
/// under its own id as well).
#[tokio::test]
async fn a_delta_materializes_on_its_base() {
    use sop_core::{DeltaOp, LeafDelta};
    let base_node = leaf(3);
    let (_counting, blobs, base) = store_with(&base_node).await;
    let Node::Leaf { items } = &base_node else { unreachable!() };
    let gone = items[1].key.clone();
    let d = PhysicalId::new();
    blobs
        .put(d, Bytes::from(LeafDelta { base, chain: Vec::new(), ops: vec![DeltaOp::Delete(gone)] }.encode()))
        .await
        .unwrap();
    let cache = NodeCache::new(&CacheConfig::default()).await.unwrap();
    let loaded = cache.node_and_base(d, &blobs).await.unwrap();
    let (node, got_base) = (loaded.node, loaded.base);
    assert_eq!(got_base, Some(base));
    assert_eq!(*node, Node::Leaf { items: vec![items[0].clone(), items[2].clone()] });
    assert!(cache.get_in_memory(d).is_some(), "the delta leaf is cached");
    assert!(cache.get_in_memory(base).is_none(), "a reader cached the base too (twice the memory)");
}

/// A chain of deltas materializes as its base with every link's changes
/// applied in order, cold (every link read) and with the previous link
/// cached (only the newest read); it reports its base and links. A link
/// that belongs to another chain, or names the delta itself, is
/// `Corruption`; a link that is gone is `NotFound`.
#[tokio::test]
async fn a_chain_of_deltas_materializes_link_by_link() {
    use sop_core::{DeltaOp, LeafDelta};
    let base_node = leaf(4);
    let (counting, blobs, base) = store_with(&base_node).await;
    let Node::Leaf { items } = &base_node else { unreachable!() };
    let put = |k: &str, v: &str| {
        DeltaOp::Put(Item {
            key: Bytes::from(k.to_owned()),
            version: TxId::new(),
            value: Value::Inline(Bytes::from(v.to_owned())),
        })
    };
    // Link 1 deletes key1 and adds "key00001a"; link 2 puts key1 back and
    // rewrites "key00001a"; link 3 deletes "key00001a" (put by a link only).
    let steps = [
        vec![put("key00000a", "1"), DeltaOp::Delete(items[1].key.clone())],
        vec![put("key00000a", "2"), put("key00001", "back")],
        vec![DeltaOp::Delete(Bytes::from_static(b"key00000a"))],
    ];
    let mut chain = Vec::new();
    let mut expected = items.clone();
    for ops in steps {
        expected = LeafDelta::apply_ops(&expected, &ops);
        let id = PhysicalId::new();
        let delta = LeafDelta { base, chain: chain.clone(), ops };
        blobs.put(id, Bytes::from(delta.encode())).await.unwrap();
        chain.push(id);
    }
    let newest = *chain.last().unwrap();
    let earlier = chain[..2].to_vec();
    let cold = NodeCache::new(&CacheConfig::default()).await.unwrap();
    let gets = counting.gets.load(Ordering::SeqCst);
    let loaded = cold.node_and_base(newest, &blobs).await.unwrap();
    assert_eq!(*loaded.node, Node::Leaf { items: expected.clone() });
    assert_eq!((loaded.base, loaded.chain.clone()), (Some(base), earlier.clone()));
    assert_eq!(counting.gets.load(Ordering::SeqCst) - gets, 4, "the link, its base and two earlier links");
    // With the previous link cached, only the newest link is read.
    let warm = NodeCache::new(&CacheConfig::default()).await.unwrap();
    warm.node(chain[1], &blobs).await.unwrap();
    let gets = counting.gets.load(Ordering::SeqCst);
    assert_eq!(*warm.node(newest, &blobs).await.unwrap(), Node::Leaf { items: expected });
    assert_eq!(counting.gets.load(Ordering::SeqCst) - gets, 1, "the previous link's changes reused");
    // A link of another chain (it names other earlier links), a link that
    // names the delta itself, a link that is gone.
    let (stray, looped, gone) = (PhysicalId::new(), PhysicalId::new(), PhysicalId::new());
    let odd = LeafDelta { base, chain: vec![chain[1], chain[0]], ops: Vec::new() };
    blobs.put(stray, Bytes::from(odd.encode())).await.unwrap();
    let looping = LeafDelta { base, chain: vec![chain[0], looped], ops: Vec::new() };
    blobs.put(looped, Bytes::from(looping.encode())).await.unwrap();
    let missing = LeafDelta { base, chain: vec![chain[0], PhysicalId::new()], ops: Vec::new() };
    blobs.put(gone, Bytes::from(missing.encode())).await.unwrap();
    let fresh = NodeCache::new(&CacheConfig::default()).await.unwrap();
    for (id, kind) in
        [(stray, ErrorKind::Corruption), (looped, ErrorKind::Corruption), (gone, ErrorKind::NotFound)]
    {
        assert_eq!(fresh.node(id, &blobs).await.unwrap_err().kind(), kind, "{id}");
    }
}

/// A miss is loaded by the caller that awaits it, on its own thread (no
/// task of its own: with RocksDB, whose reads are synchronous, a read
/// transaction that misses takes no context switch).
#[test]
fn a_miss_is_loaded_on_the_callers_thread() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let node = leaf(10);
    let (counting, blobs, id) = rt.block_on(store_with(&node));
    let cache = rt.block_on(NodeCache::new(&CacheConfig::default())).unwrap();
    assert_eq!(*rt.block_on(cache.node(id, &blobs)).unwrap(), node);
    assert_eq!(*counting.threads.lock().unwrap(), vec![std::thread::current().id()]);
    assert_eq!(cache.stats().misses, 1);
}

/// A load every caller gave up on is dropped (nothing of it is kept,
/// the blob store included), and the next miss loads again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_every_caller_gave_up_on_is_dropped_and_the_next_miss_loads_again() {
    let node = leaf(10);
    let (counting, blobs, id) = store_with_delay(&node, Duration::from_millis(100)).await;
    let cache = NodeCache::new(&CacheConfig::default()).await.unwrap();
    let held = Arc::strong_count(&counting);
    let first = tokio::time::timeout(Duration::from_millis(20), cache.node(id, &blobs)).await;
    assert!(first.is_err(), "the only caller gave up mid-load");
    assert_eq!(Arc::strong_count(&counting), held, "the abandoned load still holds the blob store");
    let got = tokio::time::timeout(Duration::from_secs(30), cache.node(id, &blobs)).await.expect("stranded");
    assert_eq!(*got.unwrap(), node);
    assert_eq!(counting.gets.load(Ordering::SeqCst), 2, "loaded again");
    assert!(cache.get_in_memory(id).is_some(), "and cached");
}

/// A load that panics answers every waiter with an error (none hangs),
/// is not kept, and the next miss loads again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_that_panics_fails_its_waiters_and_is_not_kept() {
    let node = leaf(10);
    let (counting, blobs, id) = store_with_delay(&node, Duration::from_millis(50)).await;
    counting.panics.store(true, Ordering::SeqCst);
    let cache = NodeCache::new(&CacheConfig::default()).await.unwrap();
    let waiters: Vec<_> = (0..4)
        .map(|_| {
            let (cache, blobs) = (cache.clone(), blobs.clone());
            tokio::spawn(async move { cache.node(id, &blobs).await })
        })
        .collect();
    for w in waiters {
        let got = tokio::time::timeout(Duration::from_secs(30), w).await.expect("a waiter hung");
        assert_eq!(got.unwrap().unwrap_err().kind(), ErrorKind::Backend);
    }
    assert_eq!(counting.gets.load(Ordering::SeqCst), 1, "one load for all four");
    counting.panics.store(false, Ordering::SeqCst);
    assert_eq!(*cache.node(id, &blobs).await.unwrap(), node);
    assert_eq!(counting.gets.load(Ordering::SeqCst), 2);
}

/// A blob removed from the cache while its load is in flight (it was
/// deleted) is not cached by that load.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_removed_during_its_load_is_not_cached_by_it() {
    let node = leaf(10);
    let (_counting, blobs, id) = store_with_delay(&node, Duration::from_millis(100)).await;
    let cache = NodeCache::new(&CacheConfig::default()).await.unwrap();
    let reader = {
        let (cache, blobs) = (cache.clone(), blobs.clone());
        tokio::spawn(async move { cache.node(id, &blobs).await })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    cache.remove(id);
    assert_eq!(*reader.await.unwrap().unwrap(), node, "the reader still gets its answer");
    assert!(cache.get_in_memory(id).is_none(), "but it is not cached");
}
