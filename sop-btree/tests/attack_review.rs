//! Review attacks on the guarantees of commit d7419f1 ("Issue 11
//! correctness"): GC by low-water mark, stale handles, cancel-safe commit,
//! count checks, opacity of `run_*`, range bounds.
//!
//! Each test states the invariant it attacks, from a user's side. Tests
//! marked `BROKE` failed on d7419f1 and pass since the fix named in their
//! doc; tests marked `HOLDS` passed from the start.

mod common;

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use sop_btree::{Config, Database, ErrorKind, StoreOptions};
use sop_core::{
    BlobStore, Error, Handle, Intent, IntentState, LogicalId, PublishRequest, Registry, Result, StoreInfo,
    TxId,
};
use sop_registry::MemRegistry;
use sop_store::ObjectBlobStore;

fn big(n: u8) -> Vec<u8> {
    vec![n; 3000]
}

fn big_opts() -> StoreOptions {
    StoreOptions { value_in_node_threshold: 64, ..StoreOptions::default() }
}

async fn mem_db(grace: Duration) -> Database {
    let mut config = Config::memory();
    config.gc_grace = grace;
    Database::open(config).await.unwrap()
}

/// Store `s` with large values `k0..k{n}` = big(1), and `small` = "x".
async fn seed_big(db: &Database, n: u8) {
    db.create_store("s", big_opts()).await.unwrap();
    db.run_write(move |tx| async move {
        let s = tx.bytes_store("s").await?;
        for i in 0..n {
            s.insert(format!("k{i}").as_bytes(), &big(1)).await?;
        }
        s.insert(b"small", b"x").await
    })
    .await
    .unwrap();
}

async fn replace_all(db: &Database, n: u8, v: u8) {
    db.run_write(move |tx| async move {
        let s = tx.bytes_store("s").await?;
        for i in 0..n {
            s.upsert(format!("k{i}").as_bytes(), &big(v)).await?;
        }
        Ok(())
    })
    .await
    .unwrap();
}

/// A read that may legitimately fail with a conflict, `Closed` or `Timeout`,
/// or succeed with the old value; anything else (above all `Corruption`,
/// "the blob is missing") breaks "GC never deletes what a live
/// transaction may read".
fn assert_old_or_retryable(got: Result<Option<Bytes>>, old: &[u8], what: &str) {
    match got {
        Ok(Some(v)) => assert_eq!(&v[..], old, "{what}: a wrong value"),
        Ok(None) => panic!("{what}: an existing key read as absent"),
        Err(e) => assert!(
            e.is_conflict() || matches!(e.kind(), ErrorKind::Closed | ErrorKind::Timeout),
            "{what}: {:?}: {e}",
            e.kind()
        ),
    }
}

// ---------------------------------------------------------------------------
// 1. GC and the low-water mark
// ---------------------------------------------------------------------------

/// BROKE (fixed). A cursor buffers a whole leaf's items (value blob pointers
/// included). `Cursor::next` serves buffered items through `value_of`
/// without `check_live`, so after its transaction committed (and released
/// its epoch) the cursor still reads value blobs that a later commit made
/// obsolete and GC deleted: `Corruption` instead of `Closed`.
#[tokio::test]
async fn attack_cursor_buffer_outlives_its_transaction_commit() {
    for end in ["commit", "rollback"] {
        let db = mem_db(Duration::ZERO).await;
        seed_big(&db, 5).await;
        let reader = db.begin_read().await.unwrap();
        let s = reader.bytes_store("s").await.unwrap();
        let mut cur = s.range(Bound::Unbounded, Bound::Unbounded);
        let (k, v) = cur.next().await.unwrap().unwrap();
        assert_eq!((&k[..], &v[..]), (&b"k0"[..], &big(1)[..]));
        if end == "commit" {
            reader.commit().await.unwrap();
        } else {
            reader.rollback().await;
        }
        replace_all(&db, 5, 2).await;
        tokio::time::timeout(Duration::from_secs(10), db.flush_gc()).await.expect("flush hangs").unwrap();
        let got = cur.next().await.map(|o| o.map(|(_, v)| v));
        assert_old_or_retryable(got, &big(1), &format!("cursor after {end}"));
    }
}

/// BROKE (fixed). `Database::remove_store` deletes every blob of the store at once
/// (`remove_store_contents`), bypassing the low-water mark: a live reader
/// that already loaded the leaf reads a value blob that is gone and gets
/// `Corruption` (a serial order puts it before the removal: it should read
/// the value, or at worst conflict).
#[tokio::test]
async fn attack_remove_store_under_a_live_reader() {
    let db = mem_db(Duration::ZERO).await;
    seed_big(&db, 3).await;
    let reader = db.begin_read().await.unwrap();
    let s = reader.bytes_store("s").await.unwrap();
    assert_eq!(s.get(b"small").await.unwrap().as_deref(), Some(&b"x"[..])); // loads the leaf
    db.remove_store("s").await.unwrap();
    db.flush_gc().await.unwrap();
    assert_old_or_retryable(s.get(b"k1").await, &big(1), "get after remove_store");
}

/// HOLDS. Replaced values stay readable to a live reader across flushes,
/// for point reads and a cursor (still live) that buffered the leaf, with
/// and without a grace period; `flush_gc` returns although the reader is
/// live; the old blobs go once it ends.
#[tokio::test]
async fn attack_live_cursor_across_commits_and_flushes() {
    for grace in [Duration::ZERO, Duration::from_millis(30)] {
        let db = mem_db(grace).await;
        seed_big(&db, 6).await;
        let reader = db.begin_read().await.unwrap();
        let s = reader.bytes_store("s").await.unwrap();
        let mut cur = s.range(Bound::Included(b"k0"), Bound::Included(b"k5"));
        assert_eq!(cur.next().await.unwrap().unwrap().1, big(1));
        for round in 2..5 {
            replace_all(&db, 6, round).await;
            tokio::time::timeout(Duration::from_secs(10), db.flush_gc()).await.expect("flush hangs").unwrap();
        }
        tokio::time::sleep(grace * 3).await;
        for i in 1..6 {
            let (k, v) = cur.next().await.unwrap().unwrap();
            assert_eq!(k, format!("k{i}").as_bytes());
            assert_eq!(v, big(1), "grace {grace:?}");
        }
        assert!(cur.next().await.unwrap().is_none());
        assert_eq!(s.get(b"k3").await.unwrap().unwrap(), big(1));
        assert!(reader.commit().await.unwrap_err().is_conflict());
        db.flush_gc().await.unwrap();
        common::assert_healthy(&db).await;
        let blobs = db.check().await.unwrap().blobs;
        assert!(blobs <= 7, "old value blobs never collected: {blobs}");
    }
}

/// HOLDS. A transaction clone and a store handle kept after commit fail
/// with `Closed`, never read collected blobs.
#[tokio::test]
async fn attack_handles_kept_after_commit() {
    let db = mem_db(Duration::ZERO).await;
    seed_big(&db, 2).await;
    let tx = db.begin_write().await.unwrap();
    let clone = tx.clone();
    let s = tx.bytes_store("s").await.unwrap();
    s.get(b"small").await.unwrap();
    tx.commit().await.unwrap();
    replace_all(&db, 2, 9).await;
    db.flush_gc().await.unwrap();
    assert_eq!(s.get(b"k0").await.unwrap_err().kind(), ErrorKind::Closed);
    assert_eq!(clone.bytes_store("s").await.unwrap_err().kind(), ErrorKind::Closed);
    assert_eq!(
        s.range(Bound::Unbounded, Bound::Unbounded).next().await.unwrap_err().kind(),
        ErrorKind::Closed
    );
    assert_eq!(clone.commit().await.unwrap_err().kind(), ErrorKind::Closed);
}

/// HOLDS. `close` with a live reader returns (does not wait for it) and does
/// not delete what it may read; the parked deletion runs when it ends.
#[tokio::test]
async fn attack_close_with_a_live_transaction() {
    for grace in [Duration::ZERO, Duration::from_millis(50)] {
        let db = mem_db(grace).await;
        seed_big(&db, 2).await;
        let reader = db.begin_read().await.unwrap();
        let s = reader.bytes_store("s").await.unwrap();
        s.get(b"small").await.unwrap();
        replace_all(&db, 2, 3).await;
        tokio::time::timeout(Duration::from_secs(10), db.close()).await.expect("close hangs").unwrap();
        // The cache is closed; a read may fail, but not with data loss.
        if let Err(e) = s.get(b"k1").await {
            assert_ne!(e.kind(), ErrorKind::Corruption, "{e}");
        }
        drop((s, reader));
    }
}

async fn shared_db(registry: Arc<dyn Registry>, blobs: Arc<dyn BlobStore>, timeout: Duration) -> Database {
    let mut config = Config::from_parts(registry, blobs, false);
    config.gc_grace = Duration::ZERO;
    config.tx_timeout = timeout;
    Database::open(config).await.unwrap()
}

/// BROKE (fixed). Shared backends: recovery (at open, or periodic, of any
/// database on the same parts) finishes a *committed* intent once the
/// intent is older than `tx_timeout`, measured from the intent's creation
/// (before staging), not from the publish. A transaction that began while
/// the commit was staging is still live (its deadline is its own begin +
/// `tx_timeout`) when recovery deletes the obsolete value blob it may read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_shared_recovery_outruns_a_reader_that_began_during_staging() {
    let registry: Arc<dyn Registry> = Arc::new(MemRegistry::new());
    let slow = common::TestBlobs::memory();
    let blobs: Arc<dyn BlobStore> = slow.clone();
    let timeout = Duration::from_millis(1000);
    let a = shared_db(registry.clone(), blobs.clone(), timeout).await;
    seed_big(&a, 1).await;
    slow.put_delay_ms.store(800, Ordering::SeqCst);
    let t0 = tokio::time::Instant::now();
    let writer = {
        let a = a.clone();
        tokio::spawn(async move {
            let tx = a.begin_write().await?;
            tx.bytes_store("s").await?.upsert(b"k0", &big(2)).await?;
            tx.commit().await
        })
    };
    tokio::time::sleep_until(t0 + Duration::from_millis(400)).await;
    // Begins while the commit stages: its deadline is t0 + 1.4 s.
    let reader = a.begin_read().await.unwrap();
    let s = reader.bytes_store("s").await.unwrap();
    assert_eq!(s.get(b"small").await.unwrap().as_deref(), Some(&b"x"[..])); // the leaf, before the publish
    writer.await.unwrap().unwrap();
    slow.put_delay_ms.store(0, Ordering::SeqCst);
    // Another database (another process, in real life) opens on the parts.
    tokio::time::sleep_until(t0 + Duration::from_millis(1100)).await;
    let other = shared_db(registry.clone(), blobs.clone(), timeout).await;
    assert!(t0.elapsed() < Duration::from_millis(1300), "too slow a machine for this timing");
    assert_old_or_retryable(s.get(b"k0").await, &big(1), "reader still live after another open");
    drop(other);
}

/// A registry whose publish of a write transaction applies and then loses
/// its reply (`Indeterminate`), as a remote registry may.
#[derive(Debug)]
struct LostReply {
    inner: MemRegistry,
    armed: AtomicBool,
}

#[async_trait]
impl Registry for LostReply {
    async fn get_handles(&self, ids: &[LogicalId]) -> Result<Vec<Option<Handle>>> {
        self.inner.get_handles(ids).await
    }
    async fn publish(&self, request: &PublishRequest) -> Result<()> {
        self.inner.publish(request).await?;
        if request.intent.is_some() && self.armed.swap(false, Ordering::SeqCst) {
            return Err(Error::Indeterminate("the reply was lost".into()));
        }
        Ok(())
    }
    async fn create_store(&self, info: &StoreInfo, root: &Handle) -> Result<()> {
        self.inner.create_store(info, root).await
    }
    async fn get_store(&self, name: &str) -> Result<Option<StoreInfo>> {
        self.inner.get_store(name).await
    }
    async fn list_stores(&self) -> Result<Vec<StoreInfo>> {
        self.inner.list_stores().await
    }
    async fn remove_store(&self, name: &str) -> Result<StoreInfo> {
        self.inner.remove_store(name).await
    }
    async fn put_intent(&self, intent: &Intent) -> Result<()> {
        self.inner.put_intent(intent).await
    }
    async fn get_intent(&self, tx_id: TxId) -> Result<Option<Intent>> {
        self.inner.get_intent(tx_id).await
    }
    async fn list_intents(&self, created_before_ms: u64) -> Result<Vec<Intent>> {
        self.inner.list_intents(created_before_ms).await
    }
    async fn damaged_intents(&self) -> Result<Vec<String>> {
        self.inner.damaged_intents().await
    }
    async fn remove_intent(&self, tx_id: TxId) -> Result<()> {
        self.inner.remove_intent(tx_id).await
    }
    async fn abort_intent(&self, tx_id: TxId) -> Result<Option<IntentState>> {
        self.inner.abort_intent(tx_id).await
    }
    async fn list_handles(&self) -> Result<Vec<Handle>> {
        self.inner.list_handles().await
    }
}

/// BROKE (fixed). Exclusive mode: a publish that applied but reported
/// `Indeterminate` leaves a *committed* intent and drops its claim;
/// periodic recovery then deletes its obsolete blobs at once, ignoring the
/// low-water mark, while a reader of this process that began before the
/// publish is live and may read them: `Corruption`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_periodic_recovery_ignores_the_low_water_mark_after_a_lost_reply() {
    let registry = Arc::new(LostReply { inner: MemRegistry::new(), armed: AtomicBool::new(false) });
    let mut config = Config::from_parts(registry.clone(), Arc::new(ObjectBlobStore::memory()), true);
    config.gc_grace = Duration::ZERO;
    config.tx_timeout = Duration::from_secs(2); // periodic recovery every 2 s
    let t0 = tokio::time::Instant::now();
    let db = Database::open(config).await.unwrap();
    seed_big(&db, 1).await;
    tokio::time::sleep_until(t0 + Duration::from_millis(1300)).await;
    let reader = db.begin_read().await.unwrap(); // deadline t0 + 3.3 s
    let s = reader.bytes_store("s").await.unwrap();
    s.get(b"small").await.unwrap();
    registry.armed.store(true, Ordering::SeqCst);
    let tx = db.begin_write().await.unwrap();
    tx.bytes_store("s").await.unwrap().upsert(b"k0", &big(2)).await.unwrap();
    let e = tx.commit().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Indeterminate);
    // The periodic recovery tick at t0 + ~2 s.
    tokio::time::sleep_until(t0 + Duration::from_millis(2600)).await;
    assert_old_or_retryable(s.get(b"k0").await, &big(1), "reader live across periodic recovery");
    drop((s, reader));
    // Recovery does finish the intent eventually (so the test above is not vacuous).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(6);
    while !registry.list_intents(u64::MAX).await.unwrap().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "the committed intent was never recovered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// HOLDS. Many readers scanning (cursors over several leaves, point reads)
/// while writers replace large values and `flush_gc` runs in a loop, with
/// transactions beginning and ending around every commit: no read ever
/// finds a blob missing, and a reader that commits sees one snapshot or
/// conflicts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_gc_stress_readers_writers_flushes() {
    for grace in [Duration::ZERO, Duration::from_millis(5)] {
        let db = mem_db(grace).await;
        let opts = StoreOptions { value_in_node_threshold: 16, slot_length: 4, ..StoreOptions::default() };
        db.create_store("s", opts).await.unwrap();
        db.run_write(|tx| async move {
            let s = tx.bytes_store("s").await?;
            for i in 0..16u8 {
                s.insert(&[i], &[0u8; 40]).await?;
            }
            Ok(())
        })
        .await
        .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for w in 0..2u8 {
            let (db, stop) = (db.clone(), stop.clone());
            tasks.push(tokio::spawn(async move {
                let mut round = 1u8;
                while !stop.load(Ordering::Relaxed) {
                    round = round.wrapping_add(1);
                    let v = round;
                    let r = db
                        .run_write(move |tx| async move {
                            let s = tx.bytes_store("s").await?;
                            // All 16 values always equal: a snapshot invariant.
                            for i in 0..16u8 {
                                s.upsert(&[i], &[v; 40]).await?;
                            }
                            Ok(())
                        })
                        .await;
                    if let Err(e) = r {
                        assert!(e.is_conflict(), "writer {w}: {e}");
                    }
                }
            }));
        }
        {
            let (db, stop) = (db.clone(), stop.clone());
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    db.flush_gc().await.unwrap();
                    tokio::task::yield_now().await;
                }
            }));
        }
        for r in 0..3 {
            let (db, stop) = (db.clone(), stop.clone());
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let tx = db.begin_read().await.unwrap();
                    let s = tx.bytes_store("s").await.unwrap();
                    let mut seen = Vec::new();
                    let mut cur = if r % 2 == 0 {
                        s.range(Bound::Unbounded, Bound::Unbounded)
                    } else {
                        s.range_rev(Bound::Unbounded, Bound::Unbounded)
                    };
                    let mut failed = None;
                    loop {
                        match cur.next().await {
                            Ok(Some((_, v))) => {
                                seen.push(v[0]);
                                tokio::task::yield_now().await;
                            }
                            Ok(None) => break,
                            Err(e) => {
                                failed = Some(e);
                                break;
                            }
                        }
                    }
                    if let Some(e) = failed {
                        assert!(e.is_conflict(), "reader {r}: {:?}: {e}", e.kind());
                        continue;
                    }
                    assert_eq!(seen.len(), 16);
                    match tx.commit().await {
                        Ok(_) => {
                            assert!(seen.iter().all(|v| *v == seen[0]), "a torn snapshot committed: {seen:?}")
                        }
                        Err(e) => assert!(e.is_conflict(), "{e}"),
                    }
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(1500)).await;
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            t.await.unwrap();
        }
        db.flush_gc().await.unwrap();
        common::assert_healthy(&db).await;
    }
}

// ---------------------------------------------------------------------------
// 2. Stale handles and missing blobs
// ---------------------------------------------------------------------------

/// HOLDS. A current handle whose blob is gone (node or value) is
/// `Corruption`, never "absent" or a conflict: a cold database on parts
/// whose blobs were deleted underneath.
#[tokio::test]
async fn attack_missing_blob_of_a_current_handle_is_corruption() {
    for what in ["node", "value"] {
        let registry: Arc<dyn Registry> = Arc::new(MemRegistry::new());
        let blobs: Arc<dyn BlobStore> = Arc::new(ObjectBlobStore::memory());
        let mut config = Config::from_parts(registry.clone(), blobs.clone(), true);
        config.gc_grace = Duration::ZERO;
        let db = Database::open(config.clone()).await.unwrap();
        seed_big(&db, 1).await;
        let report = db.check().await.unwrap();
        assert!(report.is_ok());
        db.close().await.unwrap();
        drop(db);
        // Delete the value blob (the 3000-byte one) or the node blobs.
        for id in blobs.list().await.unwrap() {
            let len = blobs.get(id).await.unwrap().len();
            if (len == 3000) == (what == "value") {
                blobs.delete(id).await.unwrap();
            }
        }
        let db = Database::open(config).await.unwrap();
        let got = db.begin_read().await.unwrap().bytes_store("s").await.unwrap().get(b"k0").await;
        let e = got.expect_err("a read through a missing blob succeeded");
        assert_eq!(e.kind(), ErrorKind::Corruption, "{what}: {e}");
        assert!(!db.check().await.unwrap().is_ok());
    }
}

/// Two shared databases on one registry; `b` moves a node `a` has cached
/// and collects the old blob.
async fn stale_pair(cache_bytes: usize) -> (Database, Database) {
    let registry: Arc<dyn Registry> = Arc::new(MemRegistry::new());
    let blobs: Arc<dyn BlobStore> = Arc::new(ObjectBlobStore::memory());
    let open = |cache_bytes: usize| {
        let (registry, blobs) = (registry.clone(), blobs.clone());
        async move {
            let mut config = Config::from_parts(registry, blobs, false);
            config.gc_grace = Duration::ZERO;
            config.tx_timeout = Duration::from_millis(100);
            config.cache.memory_bytes = cache_bytes;
            Database::open(config).await.unwrap()
        }
    };
    let (a, b) = (open(cache_bytes).await, open(256 << 20).await);
    a.create_store("t", common::small(4)).await.unwrap();
    a.run_write(|tx| async move {
        let s = tx.store::<u32, u32>("t").await?;
        for i in 0..40 {
            s.insert(&i, &i).await?;
        }
        Ok(())
    })
    .await
    .unwrap();
    // `a` reads everything (handles and nodes cached).
    let n =
        a.run_read(
            |tx| async move { Ok(tx.store::<u32, u32>("t").await?.range(.., false, 100).await?.len()) },
        );
    assert_eq!(n.await.unwrap(), 40);
    for round in 0..2 {
        b.run_write(move |tx| async move {
            let s = tx.store::<u32, u32>("t").await?;
            for i in 0..40 {
                s.upsert(&i, &(1000 * (round + 1) + i)).await?;
            }
            Ok(())
        })
        .await
        .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    b.flush_gc().await.unwrap();
    (a, b)
}

/// Observation test (see report): with `a`'s node cache holding the old
/// nodes, a stale handle is never "found missing": the closure runs on the
/// stale view and the whole transaction is retried (a conflict), not one
/// refresh. The result is still right.
#[tokio::test]
async fn attack_stale_handle_across_two_databases_costs_a_retry() {
    let (a, _b) = stale_pair(256 << 20).await;
    let before = a.stats().retries;
    let got = a.run_read(|tx| async move { tx.store::<u32, u32>("t").await?.get(&7).await }).await.unwrap();
    assert_eq!(got, Some(2007), "a stale value was returned");
    let retries = a.stats().retries - before;
    eprintln!("stale handle cost {retries} retries");
    assert!(retries <= 1, "a stale handle cost {retries} retries");
}

/// HOLDS. With a tiny node cache (`a`'s old nodes evicted), the stale
/// handle's blob is found missing and one refresh heals it: right values,
/// no `Corruption`.
#[tokio::test]
async fn attack_stale_handle_with_an_evicted_cache_heals() {
    let (a, _b) = stale_pair(1).await;
    let got = a
        .run_read(|tx| async move { tx.store::<u32, u32>("t").await?.range(.., false, 100).await })
        .await
        .unwrap();
    assert_eq!(got.len(), 40);
    assert!(got.iter().all(|(k, v)| *v == 2000 + k), "stale values: {got:?}");
}

// ---------------------------------------------------------------------------
// 3. Range scans against a model
// ---------------------------------------------------------------------------

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Keys that stress escaping and prefixes: every string of 0..=3 bytes
/// over {0x00, 0x01, 0x7f, 0xff}.
fn nasty_keys() -> Vec<Vec<u8>> {
    let alphabet = [0x00u8, 0x01, 0x7f, 0xff];
    let mut keys = vec![Vec::new()];
    let mut frontier = vec![Vec::new()];
    for _ in 0..3 {
        let mut next = Vec::new();
        for k in &frontier {
            for &b in &alphabet {
                let mut k2: Vec<u8> = k.clone();
                k2.push(b);
                next.push(k2);
            }
        }
        keys.extend(next.iter().cloned());
        frontier = next;
    }
    keys
}

async fn collect(mut cur: sop_btree::Cursor, rng: &mut Rng) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    loop {
        // Mix `take` batches and single steps.
        let n = 1 + rng.below(5) as usize;
        let batch = cur.take(n).await.unwrap();
        let done = batch.len() < n;
        out.extend(batch.into_iter().map(|(k, v)| (k.to_vec(), v.to_vec())));
        if done {
            return out;
        }
    }
}

/// HOLDS. Unique and non-unique stores (slot 4, so many leaves and fence
/// keys), random inserts and removes over escaping-heavy keys, every
/// combination of included / excluded / unbounded bounds, forward and
/// reverse, against a `BTreeMap` model; non-unique duplicates in insertion
/// order (reversed by a reverse scan).
#[tokio::test]
async fn attack_range_bounds_against_a_model() {
    let db = common::memory_db().await;
    let keys = nasty_keys();
    for unique in [true, false] {
        let name = if unique { "u" } else { "d" };
        db.create_store(name, StoreOptions { unique, slot_length: 4, ..StoreOptions::default() })
            .await
            .unwrap();
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ u64::from(unique));
        let mut model: BTreeMap<Vec<u8>, Vec<Vec<u8>>> = BTreeMap::new();
        let mut counter = 0u32;
        for round in 0..12 {
            // A batch of writes.
            let mut ops = Vec::new();
            for _ in 0..25 {
                let k = keys[rng.below(keys.len() as u64) as usize].clone();
                counter += 1;
                let remove = rng.below(3) == 0;
                ops.push((k, if remove { None } else { Some(counter.to_be_bytes().to_vec()) }));
            }
            let ops2 = ops.clone();
            db.run_write(move |tx| {
                let ops = ops2.clone();
                async move {
                    let s = tx.bytes_store(name).await?;
                    for (k, v) in ops {
                        match v {
                            Some(v) if unique => s.upsert(&k, &v).await?,
                            Some(v) => s.insert(&k, &v).await?,
                            None => {
                                s.remove(&k).await?;
                            }
                        }
                    }
                    Ok(())
                }
            })
            .await
            .unwrap();
            for (k, v) in ops {
                match v {
                    Some(v) if unique => {
                        model.insert(k, vec![v]);
                    }
                    Some(v) => model.entry(k).or_default().push(v),
                    None => {
                        if let Some(vs) = model.get_mut(&k) {
                            vs.remove(0);
                            if vs.is_empty() {
                                model.remove(&k);
                            }
                        }
                    }
                }
            }
            // Queries.
            let tx = db.begin_read().await.unwrap();
            let s = tx.bytes_store(name).await.unwrap();
            let total: u64 = model.values().map(|v| v.len() as u64).sum();
            assert_eq!(s.count().await.unwrap(), total, "round {round} count");
            for _ in 0..60 {
                let (a, b) = (
                    keys[rng.below(keys.len() as u64) as usize].clone(),
                    keys[rng.below(keys.len() as u64) as usize].clone(),
                );
                let (ka, kb) = (rng.below(3) as u8, rng.below(3) as u8);
                let (lo, hi) = (common::bound(ka, &a), common::bound(kb, &b));
                let mut expected: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
                let empty = match (lo, hi) {
                    (Bound::Included(x) | Bound::Excluded(x), Bound::Included(y) | Bound::Excluded(y)) => {
                        x > y || (x == y && !matches!((lo, hi), (Bound::Included(_), Bound::Included(_))))
                    }
                    _ => false,
                };
                if !empty {
                    let r = (lo.map(<[u8]>::to_vec), hi.map(<[u8]>::to_vec));
                    for (k, vs) in model.range(r) {
                        for v in vs {
                            expected.push((k.clone(), v.clone()));
                        }
                    }
                }
                let fwd = collect(s.range(lo, hi), &mut rng).await;
                assert_eq!(fwd, expected, "{name} forward {lo:?}..{hi:?} round {round}");
                let rev = collect(s.range_rev(lo, hi), &mut rng).await;
                let mut exp_rev = expected.clone();
                exp_rev.reverse();
                assert_eq!(rev, exp_rev, "{name} reverse {lo:?}..{hi:?} round {round}");
                // Point reads and duplicates.
                let got_all: Vec<Vec<u8>> =
                    s.get_all(&a).await.unwrap().into_iter().map(|(_, v)| v.to_vec()).collect();
                assert_eq!(got_all, model.get(&a).cloned().unwrap_or_default(), "{name} get_all {a:?}");
                // Seek inside a forward and a reverse cursor, to a key
                // within the range (out-of-range seeks: see
                // `attack_seek_outside_the_range`).
                let within = |k: &[u8]| {
                    let lo_ok = match lo {
                        Bound::Included(x) => k >= x,
                        Bound::Excluded(x) => k > x,
                        Bound::Unbounded => true,
                    };
                    let hi_ok = match hi {
                        Bound::Included(x) => k <= x,
                        Bound::Excluded(x) => k < x,
                        Bound::Unbounded => true,
                    };
                    lo_ok && hi_ok
                };
                if within(&b) {
                    let mut cur = s.range(lo, hi);
                    cur.seek(&b);
                    let after: Vec<_> = collect(cur, &mut rng).await;
                    let exp_after: Vec<_> =
                        expected.iter().filter(|(k, _)| k.as_slice() >= b.as_slice()).cloned().collect();
                    assert_eq!(after, exp_after, "{name} seek {b:?} in {lo:?}..{hi:?}");
                }
                if within(&a) {
                    let mut cur = s.range_rev(lo, hi);
                    cur.seek(&a);
                    let before: Vec<_> = collect(cur, &mut rng).await;
                    let exp_before: Vec<_> =
                        exp_rev.iter().filter(|(k, _)| k.as_slice() <= a.as_slice()).cloned().collect();
                    assert_eq!(before, exp_before, "{name} reverse seek {a:?} in {lo:?}..{hi:?}");
                }
            }
            tx.commit().await.unwrap();
        }
    }
    common::assert_healthy(&db).await;
}

/// BROKE (fixed). `Cursor::seek` is documented as "the next item is the first at
/// or after `key` ..., within the range", but it replaces the cursor's next
/// batch bound with `key` unclamped: a forward cursor sought below its
/// `lo` returns items below `lo` (scan_forward filters by `from` = the
/// seek key, and only `hi` is the cursor's), a reverse cursor sought above
/// its `hi` returns items above `hi`.
#[tokio::test]
async fn attack_seek_outside_the_range() {
    for unique in [true, false] {
        let db = common::memory_db().await;
        db.create_store("s", StoreOptions { unique, slot_length: 4, ..StoreOptions::default() })
            .await
            .unwrap();
        db.run_write(|tx| async move {
            let s = tx.bytes_store("s").await?;
            for i in 0..20u8 {
                s.insert(&[i], &[i]).await?;
            }
            Ok(())
        })
        .await
        .unwrap();
        let tx = db.begin_read().await.unwrap();
        let s = tx.bytes_store("s").await.unwrap();
        let mut fwd = s.range(Bound::Included(&[5u8][..]), Bound::Excluded(&[10u8][..]));
        fwd.seek(&[2]);
        let fwd_keys: Vec<u8> = fwd.take(100).await.unwrap().iter().map(|(k, _)| k[0]).collect();
        let mut rev = s.range_rev(Bound::Included(&[5u8][..]), Bound::Excluded(&[10u8][..]));
        rev.seek(&[15]);
        let rev_keys: Vec<u8> = rev.take(100).await.unwrap().iter().map(|(k, _)| k[0]).collect();
        assert_eq!(
            (fwd_keys, rev_keys),
            (vec![5, 6, 7, 8, 9], vec![9, 8, 7, 6, 5]),
            "(forward seek below lo, reverse seek above hi), unique={unique}"
        );
    }
}

// ---------------------------------------------------------------------------
// 4. Counts
// ---------------------------------------------------------------------------

#[cfg(feature = "embedded")]
/// HOLDS. Write skew through counts across two stores, on MemRegistry and
/// RocksRegistry (count checks atomic with count deltas), under real
/// concurrency and swarm merges: "if count(A) == 0 insert into B" racing
/// "if count(B) == 0 insert into A" never commits both; and a capped
/// insert ("if count < 5 insert") never overshoots.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_count_write_skew_and_cap() {
    let dir = tempfile::tempdir().unwrap();
    for embedded in [false, true] {
        let db = if embedded { common::embedded_db(dir.path()).await } else { common::memory_db().await };
        for round in 0..20u32 {
            let (a, b) = (format!("a{round}"), format!("b{round}"));
            db.create_store(&a, common::small(4)).await.unwrap();
            db.create_store(&b, common::small(4)).await.unwrap();
            let mut tasks = Vec::new();
            for (read, write) in [(a.clone(), b.clone()), (b.clone(), a.clone())] {
                let db = db.clone();
                tasks.push(tokio::spawn(async move {
                    db.run_write(move |tx| {
                        let (read, write) = (read.clone(), write.clone());
                        async move {
                            if tx.bytes_store(&read).await?.count().await? == 0 {
                                tx.bytes_store(&write).await?.insert(b"k", b"v").await?;
                            }
                            Ok(())
                        }
                    })
                    .await
                }));
            }
            for t in tasks {
                t.await.unwrap().unwrap();
            }
            let (na, nb) = (db.store_info(&a).await.unwrap().count, db.store_info(&b).await.unwrap().count);
            assert_eq!(na + nb, 1, "write skew through counts (embedded={embedded}, round {round})");
        }
        db.create_store("cap", common::small(4)).await.unwrap();
        let mut tasks = Vec::new();
        for w in 0..6u32 {
            let db = db.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..6u32 {
                    let r = db
                        .run_write(move |tx| async move {
                            let s = tx.store::<u32, u32>("cap").await?;
                            if s.count().await? < 5 {
                                s.upsert(&(w * 100 + i), &0).await?;
                            }
                            Ok(())
                        })
                        .await;
                    if let Err(e) = r {
                        assert!(e.is_conflict(), "{e}");
                    }
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let n = db.store_info("cap").await.unwrap().count;
        let real = db
            .run_read(|tx| async move {
                Ok(tx.store::<u32, u32>("cap").await?.range(.., false, 1000).await?.len())
            })
            .await
            .unwrap();
        assert_eq!(n, real as u64, "count drifted from the items (embedded={embedded})");
        assert!(n <= 5, "the count cap overshot: {n} (embedded={embedded})");
        common::assert_healthy(&db).await;
        db.close().await.unwrap();
    }
}

/// HOLDS. A blind upsert followed by `count()`: a concurrent insert of the
/// same key changes the upsert's delta; the merged commit must not return
/// a count that no serial order gives (it conflicts instead).
#[tokio::test]
async fn attack_count_after_blind_upsert_under_merge() {
    let db = common::memory_db().await;
    db.create_store("s", common::small(64)).await.unwrap();
    let tx = db.begin_write().await.unwrap();
    let s = tx.bytes_store("s").await.unwrap();
    s.upsert(b"k", b"mine").await.unwrap();
    let seen = s.count().await.unwrap();
    assert_eq!(seen, 1);
    db.run_write(|tx| async move {
        let s = tx.bytes_store("s").await?;
        s.insert(b"k", b"theirs").await?;
        s.insert(b"other", b"x").await
    })
    .await
    .unwrap();
    // `tx` cannot serialize before `theirs` (its upsert would make
    // `theirs`' insert fail) and after it `count()` gives 2, not 1: the
    // commit must conflict rather than merge.
    let r = tx.commit().await;
    assert!(r.as_ref().is_err_and(Error::is_conflict), "committed a count no serial order gives: {r:?}");
}

// ---------------------------------------------------------------------------
// 5. Opacity of run_read / run_write
// ---------------------------------------------------------------------------

/// HOLDS. A closure that sums all accounts with a cursor (several leaves)
/// and fails when the sum is wrong never has that error returned, while
/// transfers commit concurrently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_opacity_of_a_cursor_sum() {
    let db = common::memory_db().await;
    common::open_accounts(&db, "acc", 4, 24).await;
    let stop = Arc::new(AtomicBool::new(false));
    let mover = {
        let (db, stop) = (db.clone(), stop.clone());
        tokio::spawn(async move {
            let mut rng = Rng(42);
            while !stop.load(Ordering::Relaxed) {
                let (x, y) = (rng.below(24) as u32, rng.below(24) as u32);
                if x == y {
                    continue;
                }
                let r = db
                    .run_write(move |tx| async move {
                        let s = tx.store::<u32, i64>("acc").await?;
                        let (bx, by) = (s.get(&x).await?.unwrap_or(0), s.get(&y).await?.unwrap_or(0));
                        s.upsert(&x, &(bx - 7)).await?;
                        s.upsert(&y, &(by + 7)).await
                    })
                    .await;
                if let Err(e) = r {
                    assert!(e.is_conflict(), "{e}");
                }
            }
        })
    };
    for _ in 0..300 {
        let r = db
            .run_read(|tx| async move {
                let s = tx.bytes_store("acc").await?;
                let mut cur = s.range(Bound::Unbounded, Bound::Unbounded);
                let mut sum = 0i64;
                while let Some((_, v)) = cur.next().await? {
                    sum += postcard::from_bytes::<i64>(&v)
                        .map_err(|e| Error::invalid("value", e.to_string()))?;
                    tokio::task::yield_now().await;
                }
                if sum == 2400 { Ok(sum) } else { Err(Error::invalid("sum", format!("torn sum {sum}"))) }
            })
            .await;
        match r {
            Ok(sum) => assert_eq!(sum, 2400),
            Err(e) => assert!(e.is_conflict(), "run_read returned a closure error from a torn view: {e}"),
        }
    }
    stop.store(true, Ordering::Relaxed);
    mover.await.unwrap();
}

// ---------------------------------------------------------------------------
// 6. Cancel-safe commit and periodic recovery
// ---------------------------------------------------------------------------

/// HOLDS. Transfers whose commit futures are dropped at random points
/// (timeouts of 0..3 ms), racing each other (swarm merges), on a slow
/// blob store, with periodic recovery (exclusive mode, every 1 s) running
/// meanwhile: every commit applies fully or not at all (the total never
/// changes), no intent or orphan blob remains, and the tree is healthy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_cancelled_commits_with_merges_and_periodic_recovery() {
    let registry: Arc<dyn Registry> = Arc::new(MemRegistry::new());
    let slow = common::TestBlobs::memory();
    let mut config = Config::from_parts(registry.clone(), slow.clone(), true);
    config.gc_grace = Duration::ZERO;
    config.tx_timeout = Duration::from_millis(500);
    let db = Database::open(config).await.unwrap();
    common::open_accounts(&db, "acc", 4, 16).await;
    slow.put_delay_ms.store(2, Ordering::SeqCst);
    let mut tasks = Vec::new();
    for w in 0..4u64 {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng(7 + w);
            let start = tokio::time::Instant::now();
            while start.elapsed() < Duration::from_millis(2500) {
                let (x, y) = (rng.below(16) as u32, rng.below(16) as u32);
                let tx = db.begin_write().await.unwrap();
                let s = tx.store::<u32, i64>("acc").await.unwrap();
                let ok = async {
                    let (bx, by) = (s.get(&x).await?.unwrap_or(0), s.get(&y).await?.unwrap_or(0));
                    s.upsert(&x, &(bx - 3)).await?;
                    if x != y {
                        s.upsert(&y, &(by + 3)).await?;
                    } else {
                        s.upsert(&y, &bx).await?;
                    }
                    Ok::<_, Error>(())
                }
                .await;
                if ok.is_err() {
                    continue;
                }
                let budget = Duration::from_micros(rng.below(3000));
                match tokio::time::timeout(budget, tx.commit()).await {
                    Err(_) => {} // dropped mid-commit
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => assert!(e.is_conflict(), "{e}"),
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    slow.put_delay_ms.store(0, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(300)).await;
    db.flush_gc().await.unwrap();
    let total = db
        .run_read(|tx| async move {
            Ok(tx
                .store::<u32, i64>("acc")
                .await?
                .range(.., false, 100)
                .await?
                .iter()
                .map(|(_, v)| *v)
                .sum::<i64>())
        })
        .await
        .unwrap();
    assert_eq!(total, 1600, "a commit half-applied");
    assert!(registry.list_intents(u64::MAX).await.unwrap().is_empty(), "an intent was left behind");
    common::assert_healthy(&db).await;
}
