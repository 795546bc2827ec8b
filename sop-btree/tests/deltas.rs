//! Leaf deltas: a commit that changes a little of a leaf writes a delta on
//! the leaf's base instead of the whole leaf; readers (cold caches, other
//! processes) see the same contents; consolidation writes the leaf whole
//! again and frees the old base; nothing leaks.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use sop_btree::{Config, Database};
use sop_cache::{CacheConfig, DiskTier};
use sop_core::{BlobStore, LeafDelta};
use sop_registry::MemRegistry;
use sop_store::ObjectBlobStore;

use common::{assert_healthy, small};

async fn open(registry: &Arc<MemRegistry>, blobs: &Arc<ObjectBlobStore>) -> Database {
    let mut config = Config::from_parts(registry.clone(), blobs.clone(), true);
    config.gc_grace = Duration::ZERO;
    Database::open(config).await.unwrap()
}

/// (full node blobs, delta blobs, total bytes) in the blob store.
async fn census(blobs: &ObjectBlobStore) -> (usize, usize, usize) {
    let (mut full, mut deltas, mut bytes) = (0, 0, 0);
    for id in blobs.list().await.unwrap() {
        let b: Bytes = blobs.get(id).await.unwrap();
        bytes += b.len();
        if LeafDelta::is_delta(&b) { deltas += 1 } else { full += 1 }
    }
    (full, deltas, bytes)
}

fn key(i: u32) -> [u8; 4] {
    i.to_be_bytes()
}

async fn put(db: &Database, keys: Vec<u32>, value: &'static [u8]) {
    db.run_write(move |tx| {
        let keys = keys.clone();
        async move {
            let s = tx.bytes_store("s").await?;
            for k in keys {
                s.upsert(&key(k), value).await?;
            }
            Ok(())
        }
    })
    .await
    .unwrap();
}

async fn all(db: &Database) -> Vec<(Bytes, Bytes)> {
    db.run_read(|tx| async move {
        tx.bytes_store("s")
            .await?
            .range(std::ops::Bound::Unbounded, std::ops::Bound::Unbounded)
            .take(1000)
            .await
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn a_small_change_writes_a_delta_that_a_cold_reader_materializes() {
    let (registry, blobs) = (Arc::new(MemRegistry::new()), Arc::new(ObjectBlobStore::memory()));
    let db = open(&registry, &blobs).await;
    db.create_store("s", small(200)).await.unwrap();
    put(&db, (0..150).collect(), b"first value, long enough to matter").await;
    db.flush_gc().await.unwrap();
    let (full, deltas, before) = census(&blobs).await;
    assert_eq!((full, deltas), (1, 0), "one full leaf after the load");
    put(&db, vec![7, 1000], b"second").await;
    db.flush_gc().await.unwrap();
    let (full, deltas, after) = census(&blobs).await;
    assert_eq!((full, deltas), (1, 1), "the base stays, one delta on it");
    assert!(
        after - before < before / 5,
        "the delta took {} bytes beside a {before}-byte base",
        after - before
    );
    let expected = all(&db).await;
    assert_eq!(expected.len(), 151);
    // Another database over the same parts: cold caches, a materialized read.
    let cold = open(&registry, &blobs).await;
    assert_eq!(all(&cold).await, expected);
    let seven =
        cold.run_read(|tx| async move { tx.bytes_store("s").await?.get(&key(7)).await }).await.unwrap();
    assert_eq!(seven.as_deref(), Some(&b"second"[..]));
    // A second small change adds a link to the chain: it writes only its
    // own change, and the first delta stays (the new one names it).
    put(&db, vec![8], b"third").await;
    db.flush_gc().await.unwrap();
    let (full, deltas, third) = census(&blobs).await;
    assert_eq!((full, deltas), (1, 2));
    assert!(third - after < 200, "the link took {} bytes for one item", third - after);
    let expected = all(&db).await;
    assert_eq!(all(&open(&registry, &blobs).await).await, expected, "a cold reader of the chain");
    assert_healthy(&db).await;
}

/// A writer that had to read a leaf's chain link by link (a cold cache)
/// restarts it: its commit writes one delta with no chain holding every
/// change since the base, and the links go, so the next cold read is two
/// blobs again. A warm writer (the chain folded in its cache) adds a link.
#[tokio::test]
async fn a_writer_that_read_a_chain_cold_restarts_it() {
    let (registry, blobs) = (Arc::new(MemRegistry::new()), Arc::new(ObjectBlobStore::memory()));
    let db = open(&registry, &blobs).await;
    db.create_store("s", small(200)).await.unwrap();
    put(&db, (0..150).collect(), b"value").await;
    for k in [3, 50, 120] {
        put(&db, vec![k], b"changed").await;
    }
    db.flush_gc().await.unwrap();
    assert_eq!(census(&blobs).await.1, 3, "a chain of three links");
    let cold = open(&registry, &blobs).await;
    put(&cold, vec![7], b"cold").await;
    cold.flush_gc().await.unwrap();
    let (full, deltas, _) = census(&blobs).await;
    assert_eq!((full, deltas), (1, 1), "restarted: the base and one delta");
    let expected = all(&cold).await;
    assert_eq!(expected.iter().filter(|(_, v)| v.as_ref() != b"value").count(), 4);
    put(&cold, vec![8], b"warm").await;
    cold.flush_gc().await.unwrap();
    assert_eq!(census(&blobs).await.1, 2, "a warm writer adds a link");
    assert_eq!(all(&open(&registry, &blobs).await).await, all(&cold).await);
    assert_healthy(&cold).await;
}

#[tokio::test]
async fn consolidation_rewrites_the_leaf_and_frees_the_old_base_and_deltas() {
    let (registry, blobs) = (Arc::new(MemRegistry::new()), Arc::new(ObjectBlobStore::memory()));
    let db = open(&registry, &blobs).await;
    db.create_store("s", small(200)).await.unwrap();
    put(&db, (0..150).collect(), b"value").await;
    let (mut seen_delta, mut consolidated, mut restarted, mut longest) = (false, false, false, 0);
    let mut last = 0;
    for round in 0..120u32 {
        put(&db, vec![round * 2 % 150], b"rewritten").await;
        db.flush_gc().await.unwrap();
        let (full, deltas, _) = census(&blobs).await;
        assert_eq!(full, 1, "round {round}: {full} full leaves for one leaf");
        assert!(deltas <= 16, "round {round}: a chain of {deltas} links");
        consolidated |= seen_delta && deltas == 0;
        // A restart of the links since the last restart keeps the
        // restarts before it: the chain shortens, to more than one blob.
        restarted |= last > deltas && deltas > 1;
        eprint!("{deltas} ");
        seen_delta |= deltas >= 1;
        longest = longest.max(deltas);
        last = deltas;
        assert_healthy(&db).await;
        if round % 5 == 4 {
            assert_eq!(all(&open(&registry, &blobs).await).await, all(&db).await, "round {round}: cold");
        }
    }
    assert!(longest > 9, "the chain never grew past its first level: {longest}");
    assert!(restarted, "a level of links was never folded into a restart");
    assert!(seen_delta, "no delta was ever written");
    assert!(consolidated, "the leaf was never written whole again");
    // Rewrites of 75 distinct keys outgrow half of the leaf: it was
    // consolidated at least once, and the reads still agree.
    let rows = all(&db).await;
    assert_eq!(rows.len(), 150);
    assert_eq!(rows.iter().filter(|(_, v)| v.as_ref() == b"rewritten").count(), 75);
    let cold = open(&registry, &blobs).await;
    assert_eq!(all(&cold).await, rows);
}

/// One key rewritten with a small value, commit after commit, on a leaf
/// of large values: the changes stay a small share of the base, so the
/// chain grows through its levels (links, then a restart of them, each
/// restart kept) to its bound of 16 blobs, and the next restart holds
/// every change since the base in one delta with no chain. Cold reads
/// agree all along, and every blob a chain drops is freed.
#[tokio::test]
async fn restarts_fill_their_level_then_one_delta_holds_every_change() {
    let (registry, blobs) = (Arc::new(MemRegistry::new()), Arc::new(ObjectBlobStore::memory()));
    let db = open(&registry, &blobs).await;
    db.create_store("s", small(200)).await.unwrap();
    put(&db, (0..150).collect(), &[b'v'; 120]).await;
    let mut seen = Vec::new();
    for round in 0..90u32 {
        put(&db, vec![7], if round % 2 == 0 { b"a" } else { b"b" }).await;
        db.flush_gc().await.unwrap();
        let (full, deltas, _) = census(&blobs).await;
        assert_eq!(full, 1, "round {round}: {full} full leaves for one leaf");
        assert!((1..=16).contains(&deltas), "round {round}: a chain of {deltas} blobs");
        seen.push(deltas);
        if round % 10 == 9 {
            assert_eq!(all(&open(&registry, &blobs).await).await, all(&db).await, "round {round}: cold");
        }
    }
    // A restart with no chain and links, 1..=9 blobs; a restart of those
    // links keeps the first restart (2..=10); ... the eighth level
    // reaches 16; then one delta with no chain, and again.
    let want: Vec<usize> = (0..8).flat_map(|level| (level + 1)..=(level + 9)).cycle().take(90).collect();
    assert_eq!(seen, want, "the chain's lengths, commit by commit");
    let rows = all(&db).await;
    assert_eq!(rows.len(), 150);
    assert_eq!(rows.iter().find(|(k, _)| k.as_ref() == key(7)).map(|(_, v)| v.as_ref()), Some(&b"b"[..]));
    assert_healthy(&db).await;
}

#[tokio::test]
async fn removing_a_store_frees_its_bases_and_deltas() {
    let (registry, blobs) = (Arc::new(MemRegistry::new()), Arc::new(ObjectBlobStore::memory()));
    let db = open(&registry, &blobs).await;
    db.create_store("s", small(16)).await.unwrap();
    put(&db, (0..200).collect(), b"value").await;
    for k in [3, 50, 120, 199] {
        put(&db, vec![k], b"changed").await;
    }
    db.flush_gc().await.unwrap();
    assert!(census(&blobs).await.1 > 0, "no delta to free");
    db.remove_store("s").await.unwrap();
    db.flush_gc().await.unwrap();
    assert_eq!(census(&blobs).await, (0, 0, 0), "blobs left after the store's removal");
    assert_healthy(&db).await;
}

/// A sweep cut after it deleted some of a chained leaf's base and links
/// (as a crash between `delete_many` calls would leave it) still frees the
/// rest: the leaf's own blob names them, read alone.
#[tokio::test]
async fn a_store_whose_chain_lost_some_links_is_still_removed_whole() {
    let registry = Arc::new(MemRegistry::new());
    let blobs = Arc::new(common::Plain(ObjectBlobStore::memory()));
    let open = |registry: &Arc<MemRegistry>, blobs: &Arc<common::Plain>| {
        let mut config = Config::from_parts(registry.clone(), blobs.clone(), true);
        config.gc_grace = Duration::ZERO;
        Database::open(config)
    };
    let db = open(&registry, &blobs).await.unwrap();
    db.create_store("s", small(200)).await.unwrap();
    put(&db, (0..150).collect(), b"value").await;
    for k in [3, 50, 120, 149] {
        put(&db, vec![k], b"changed").await;
    }
    db.flush_gc().await.unwrap();
    let mut newest = None;
    for id in blobs.list().await.unwrap() {
        let b = blobs.get(id).await.unwrap();
        if LeafDelta::is_delta(&b) {
            let d = LeafDelta::decode(&b).unwrap();
            if d.chain.len() == 3 {
                newest = Some(d);
            }
        }
    }
    let newest = newest.expect("a chain of four links");
    blobs.delete(newest.chain[1]).await.unwrap();
    blobs.delete(newest.base).await.unwrap();
    // A cold database: its cache does not hold the leaf.
    let cold = open(&registry, &blobs).await.unwrap();
    cold.remove_store("s").await.unwrap();
    cold.flush_gc().await.unwrap();
    assert_eq!(blobs.list().await.unwrap(), Vec::new(), "blobs left after the store's removal");
    assert_healthy(&cold).await;
}

/// Deleting every item of a leaf gives its bytes back: the emptied leaf is
/// written whole, not as a delta that keeps the deleted values alive in
/// its base.
#[tokio::test]
async fn deleting_a_leaf_s_items_does_not_keep_them_in_its_base() {
    let (registry, blobs) = (Arc::new(MemRegistry::new()), Arc::new(ObjectBlobStore::memory()));
    let db = open(&registry, &blobs).await;
    db.create_store("s", small(16)).await.unwrap();
    put(&db, (0..16).collect(), &[7u8; 1000]).await;
    db.flush_gc().await.unwrap();
    assert!(census(&blobs).await.2 > 16_000, "the load wrote the values inline");
    db.run_write(|tx| async move {
        let s = tx.bytes_store("s").await?;
        for k in 0..16 {
            assert!(s.remove(&key(k)).await?);
        }
        Ok(())
    })
    .await
    .unwrap();
    db.flush_gc().await.unwrap();
    let (full, deltas, bytes) = census(&blobs).await;
    assert_eq!((full, deltas), (1, 0), "an emptied leaf is one full blob");
    assert!(bytes < 1_000, "{bytes} bytes kept for an empty store");
    assert!(all(&db).await.is_empty());
    assert_healthy(&db).await;
}

/// Items deleted one commit at a time stay deltas on the leaf's base
/// until the changes and the bytes the base holds for nothing pass half of
/// it (`DELTA_SHARE`), and no further: 40 of 100 items deleted keep the
/// base the load wrote; 60 have rewritten it.
#[tokio::test]
async fn deletes_stay_deltas_until_half_the_base_is_dead() {
    let (registry, blobs) = (Arc::new(MemRegistry::new()), Arc::new(ObjectBlobStore::memory()));
    let db = open(&registry, &blobs).await;
    db.create_store("s", small(200)).await.unwrap();
    put(&db, (0..100).collect(), &[5u8; 100]).await;
    db.flush_gc().await.unwrap();
    let full_blobs = || async {
        let mut full = Vec::new();
        for id in blobs.list().await.unwrap() {
            let b: Bytes = blobs.get(id).await.unwrap();
            if !LeafDelta::is_delta(&b) {
                full.push(id);
            }
        }
        full
    };
    let loaded = full_blobs().await;
    assert_eq!(loaded.len(), 1, "one leaf");
    let remove = |k: u32| {
        db.run_write(move |tx| async move {
            assert!(tx.bytes_store("s").await?.remove(&key(k)).await?);
            Ok(())
        })
    };
    // Every other key first, so that no deleted run is at an end.
    for k in (0..80).step_by(2) {
        remove(k).await.unwrap();
    }
    db.flush_gc().await.unwrap();
    assert_eq!(full_blobs().await, loaded, "40 deletes of 100 rewrote the leaf");
    for k in (1..40).step_by(2) {
        remove(k).await.unwrap();
    }
    db.flush_gc().await.unwrap();
    assert_ne!(full_blobs().await, loaded, "60 of 100 items dead, and the base still the load's");
    assert_eq!(all(&db).await.len(), 40);
    assert_healthy(&db).await;
}

/// Splits write both halves whole: after appending one key per commit
/// (each split would otherwise leave a half whose base holds the moved
/// half) the full leaves take about the space of loading the same items
/// at once, not twice; the deltas on them add at most about half of it
/// (`DELTA_SHARE`) and their links' framing.
#[tokio::test]
async fn split_halves_do_not_keep_the_moved_items_in_their_base() {
    let value: &'static [u8] = &[9u8; 200];
    let whole = {
        let blobs = Arc::new(ObjectBlobStore::memory());
        let db = open(&Arc::new(MemRegistry::new()), &blobs).await;
        db.create_store("s", small(16)).await.unwrap();
        put(&db, (0..200).collect(), value).await;
        db.flush_gc().await.unwrap();
        census(&blobs).await.2
    };
    let (registry, blobs) = (Arc::new(MemRegistry::new()), Arc::new(ObjectBlobStore::memory()));
    let db = open(&registry, &blobs).await;
    db.create_store("s", small(16)).await.unwrap();
    for k in 0..200 {
        put(&db, vec![k], value).await;
    }
    db.flush_gc().await.unwrap();
    let appended = census(&blobs).await.2;
    let mut in_full = 0;
    for id in blobs.list().await.unwrap() {
        let b: Bytes = blobs.get(id).await.unwrap();
        in_full += if LeafDelta::is_delta(&b) { 0 } else { b.len() };
    }
    assert!(
        in_full * 10 <= whole * 13,
        "{in_full} bytes of full nodes after one append per commit, {whole} for one load of the same items"
    );
    assert!(appended * 10 <= whole * 18, "{appended} bytes in all, {whole} for one load");
    assert_eq!(all(&db).await.len(), 200);
    assert_healthy(&db).await;
}

#[tokio::test]
async fn a_key_put_and_deleted_again_in_one_transaction_writes_nothing() {
    let (registry, blobs) = (Arc::new(MemRegistry::new()), Arc::new(ObjectBlobStore::memory()));
    let db = open(&registry, &blobs).await;
    db.create_store("s", small(200)).await.unwrap();
    put(&db, (0..150).collect(), b"value").await;
    db.flush_gc().await.unwrap();
    check_put_and_delete_write_nothing(&registry, &blobs, &db).await;
    // Again on a leaf read through a delta (its base and changes apart).
    put(&db, vec![3, 500], b"changed").await;
    db.flush_gc().await.unwrap();
    assert_eq!(census(&blobs).await.1, 1, "a delta on the leaf");
    check_put_and_delete_write_nothing(&registry, &blobs, &db).await;
}

async fn check_put_and_delete_write_nothing(
    registry: &Arc<MemRegistry>,
    blobs: &Arc<ObjectBlobStore>,
    db: &Database,
) {
    let before = (census(blobs).await, all(db).await);
    let count = before.1.len() as u64;
    db.run_write(|tx| async move {
        let s = tx.bytes_store("s").await?;
        s.insert(&key(1000), b"brief").await?;
        assert_eq!(s.count().await?, count + 1);
        assert!(s.remove(&key(1000)).await?);
        // The leaf is as read again: later writes still go beside it.
        s.upsert(&key(2000), b"kept").await?;
        assert!(s.remove(&key(2000)).await?);
        Ok(())
    })
    .await
    .unwrap();
    db.flush_gc().await.unwrap();
    assert_eq!((census(blobs).await, all(db).await), before, "no blob written, nothing changed");
    assert_eq!(all(&open(registry, blobs).await).await, before.1);
    assert_healthy(db).await;
}

/// A cache whose memory tier holds almost nothing and whose disk tier
/// holds the rest: delta leaves come back from disk merged only (no base
/// and changes apart), and writers must still write the right deltas.
#[tokio::test]
async fn writes_through_a_disk_tier_cache_keep_every_item() {
    let dir = tempfile::tempdir().unwrap();
    let (registry, blobs) = (Arc::new(MemRegistry::new()), Arc::new(ObjectBlobStore::memory()));
    let mut config = Config::from_parts(registry.clone(), blobs.clone(), true);
    config.gc_grace = Duration::ZERO;
    config.cache = CacheConfig {
        memory_bytes: 16 << 10,
        disk: Some(DiskTier { dir: dir.path().to_path_buf(), capacity_bytes: 16 << 20 }),
    };
    let db = Database::open(config).await.unwrap();
    db.create_store("s", small(64)).await.unwrap();
    let mut model = std::collections::BTreeMap::new();
    put(&db, (0..400).collect(), b"first").await;
    model.extend((0..400u32).map(|k| (k, &b"first"[..])));
    for round in 0..12u32 {
        let keys: Vec<u32> = (0..8).map(|i| (round * 37 + i * 53) % 500).collect();
        put(&db, keys.clone(), b"again").await;
        model.extend(keys.into_iter().map(|k| (k, &b"again"[..])));
        let gone = (round * 41) % 400;
        db.run_write(move |tx| async move { tx.bytes_store("s").await?.remove(&key(gone)).await })
            .await
            .unwrap();
        model.remove(&gone);
    }
    let want: Vec<(Bytes, Bytes)> =
        model.iter().map(|(k, v)| (Bytes::copy_from_slice(&key(*k)), Bytes::from_static(v))).collect();
    assert_eq!(all(&db).await, want);
    assert_eq!(all(&open(&registry, &blobs).await).await, want, "a cold reader agrees");
    assert!(census(&blobs).await.1 > 0, "deltas were written");
    assert_healthy(&db).await;
}

/// A write transaction reads a leaf kept as a delta over its base (not
/// merged, no change of its own yet): a key the delta changed and a key
/// only the base holds both read as committed, before and after the
/// transaction's own change to a third key of the leaf.
#[tokio::test]
async fn a_writer_reads_a_delta_leaf_through_its_layers() {
    let (registry, blobs) = (Arc::new(MemRegistry::new()), Arc::new(ObjectBlobStore::memory()));
    let db = open(&registry, &blobs).await;
    db.create_store("s", small(200)).await.unwrap();
    put(&db, (0..150).collect(), b"base").await;
    put(&db, vec![7], b"delta").await;
    db.flush_gc().await.unwrap();
    let (full, deltas, _) = census(&blobs).await;
    assert_eq!((full, deltas), (1, 1), "the leaf is a base and one delta");
    let tx = db.begin_write().await.unwrap();
    let s = tx.bytes_store("s").await.unwrap();
    for round in ["before", "after"] {
        assert_eq!(s.get(&key(7)).await.unwrap().as_deref(), Some(&b"delta"[..]), "{round}: the delta's key");
        assert_eq!(s.get(&key(8)).await.unwrap().as_deref(), Some(&b"base"[..]), "{round}: a base key");
        assert_eq!(s.get(&key(999)).await.unwrap(), None, "{round}: an absent key");
        s.upsert(&key(9), b"own").await.unwrap();
    }
    assert_eq!(s.get(&key(9)).await.unwrap().as_deref(), Some(&b"own"[..]));
    tx.commit().await.unwrap();
}
