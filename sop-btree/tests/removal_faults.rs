//! Store removal in pieces (`removal.rs`: detach in one publish, then
//! sweep a chunk at a time) under registry faults: whatever step fails or
//! loses its reply, the store is either still whole or gone, and once the
//! faults stop, recovery finishes the sweep: no handle, blob or intent of
//! the removed store is left, and `check` is clean.

mod common;

use std::sync::atomic::Ordering;

use std::sync::Arc;
use std::time::Duration;

use common::{assert_healthy, small};
use sop_btree::{Config, Database, ErrorKind, StoreOptions};
use sop_core::testkit::fault::FaultConfig;
use sop_core::{BlobStore, LeafDelta, Registry};
use sop_registry::{FaultyRegistry, MemRegistry};
use sop_store::ObjectBlobStore;

async fn open(registry: Arc<dyn Registry>, blobs: Arc<dyn BlobStore>) -> Result<Database, sop_btree::Error> {
    let mut config = Config::from_parts(registry, blobs, true);
    config.gc_grace = Duration::ZERO;
    Database::open(config).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_removal_is_finished_by_recovery() {
    let (mut failed, mut finished_by_recovery) = (0, 0);
    for seed in 0..12u64 {
        let inner: Arc<dyn Registry> = Arc::new(MemRegistry::new());
        let faults = FaultConfig {
            seed,
            fail_ratio: 0.08,
            timeout_ratio: 0.05,
            delay_ratio: 0.0,
            delay: Duration::ZERO,
        };
        let faulty = Arc::new(FaultyRegistry::new(inner.clone(), faults));
        faulty.set_enabled(false);
        let blobs: Arc<dyn BlobStore> = Arc::new(ObjectBlobStore::memory());
        let db = open(faulty.clone(), blobs.clone()).await.unwrap();
        db.create_store("big", small(4)).await.unwrap();
        db.create_store("kept", small(4)).await.unwrap();
        db.run_write(|tx| async move {
            let big = tx.store::<u32, u32>("big").await?;
            for k in 0..400 {
                big.insert(&k, &k).await?;
            }
            tx.store::<u32, u32>("kept").await?.insert(&7, &7).await
        })
        .await
        .unwrap();
        let nodes = db.check().await.unwrap().nodes;
        assert!(nodes > 100, "{nodes} nodes: the sweep takes a few chunks of 48");

        faulty.set_enabled(true);
        let removed = db.remove_store("big").await;
        faulty.set_enabled(false);
        failed += usize::from(removed.is_err());
        let left =
            inner.list_intents(u64::MAX).await.unwrap().iter().filter(|i| !i.detached.is_empty()).count();
        finished_by_recovery += left;
        db.close().await.unwrap();

        // Recovery at open finishes whatever the faults interrupted (a
        // store whose tree was detached but whose record is left is
        // finished off).
        let db = open(faulty.clone(), blobs.clone()).await.unwrap();
        let gone = db.list_stores().await.unwrap().iter().all(|s| s.name != "big");
        if removed.is_ok() {
            assert!(gone, "seed {seed}: removal acknowledged but the store is listed");
        }
        if gone {
            assert!(inner.list_intents(u64::MAX).await.unwrap().is_empty(), "seed {seed}: an intent is left");
            let report = db.check().await.unwrap();
            assert_eq!((report.stores, report.items, report.nodes), (1, 1, 1), "seed {seed}: {report:?}");
        } else {
            // Not removed: the store is whole, and removing it now works.
            let n = db.run_read(|tx| async move { tx.store::<u32, u32>("big").await?.count().await }).await;
            assert_eq!(n.unwrap(), 400, "seed {seed}");
            db.remove_store("big").await.unwrap();
            db.flush_gc().await.unwrap();
        }
        assert_healthy(&db).await;
        assert_eq!(inner.list_handles().await.unwrap().len(), 1, "seed {seed}: only kept's root");
        assert_eq!(blobs.list().await.unwrap().len(), 1, "seed {seed}: only kept's root leaf");
    }
    // The seeds must have tried both paths: a removal that failed, and a
    // sweep left to recovery.
    assert!(
        failed > 0 && finished_by_recovery > 0,
        "failed {failed}, swept by recovery {finished_by_recovery}"
    );
}

/// A sweep cut after a chunk's blobs were deleted and before its handles
/// were removed (the registry failing at that publish), at each of its
/// first chunks in turn: the removal still returns (the store is gone),
/// and recovery at the next open removes what is left, first the nodes
/// whose blobs are gone (their children went before them), then the rest:
/// only the kept store's root handle and blob remain, and `check` is
/// clean. Cutting the same chunk a second time in recovery is survived
/// too (the third open finishes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_cut_between_blobs_and_handles_is_finished_by_recovery() {
    for cut in 1..=4u64 {
        let reg = Arc::new(common::attack::LostReply::default());
        let blobs: Arc<dyn BlobStore> = Arc::new(ObjectBlobStore::memory());
        let db = open(reg.clone(), blobs.clone()).await.unwrap();
        db.create_store("big", small(4)).await.unwrap();
        db.create_store("kept", small(4)).await.unwrap();
        db.run_write(|tx| async move {
            let big = tx.store::<u32, u32>("big").await?;
            for k in 0..300 {
                big.insert(&k, &k).await?;
            }
            tx.store::<u32, u32>("kept").await?.insert(&7, &7).await
        })
        .await
        .unwrap();
        reg.fail_sweep.store(cut, Ordering::SeqCst);
        db.remove_store("big").await.expect("the store goes; its sweep is left to recovery");
        assert!(reg.sweeps.load(Ordering::SeqCst) >= cut, "cut {cut}: the sweep never reached that chunk");
        assert!(db.list_stores().await.unwrap().iter().all(|s| s.name != "big"));
        let left = reg.inner.list_handles().await.unwrap().len();
        assert!(left > 1, "cut {cut}: the cut left nothing to finish");
        db.close().await.unwrap();

        // The same chunk number fails once more, in recovery's sweep.
        reg.sweeps.store(0, Ordering::SeqCst);
        let db = open(reg.clone(), blobs.clone()).await.unwrap();
        db.close().await.unwrap();
        reg.fail_sweep.store(0, Ordering::SeqCst);
        let db = open(reg.clone(), blobs.clone()).await.unwrap();
        assert!(reg.inner.list_intents(u64::MAX).await.unwrap().is_empty(), "cut {cut}: an intent is left");
        assert_eq!(reg.inner.list_handles().await.unwrap().len(), 1, "cut {cut}: only kept's root");
        assert_eq!(blobs.list().await.unwrap().len(), 1, "cut {cut}: only kept's root leaf");
        assert_healthy(&db).await;
    }
}

/// Another process, its store and node handles cached from before a
/// store's removal, reads the store while the sweep has deleted some
/// nodes' blobs but not yet their handles (the sweep's handle removals
/// failing): it gets a retryable conflict, as for a store removed, not
/// `Corruption` (which says data was lost). Once the faults stop, the
/// sweep finishes and `check` is clean.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_of_a_store_being_swept_gets_a_conflict_not_corruption() {
    let reg = Arc::new(common::attack::LostReply::default());
    let blobs: Arc<dyn BlobStore> = Arc::new(common::Plain(ObjectBlobStore::memory()));
    let shared = || {
        let mut config = Config::from_parts(reg.clone(), blobs.clone(), false);
        config.gc_grace = Duration::ZERO;
        config.tx_timeout = Duration::from_millis(200);
        config.cache.memory_bytes = 1; // nodes are read from the store
        Database::open(config)
    };
    let (a, b) = (shared().await.unwrap(), shared().await.unwrap());
    a.create_store("big", small(4)).await.unwrap();
    a.run_write(|tx| async move {
        let big = tx.store::<u32, u32>("big").await?;
        for k in 0..300 {
            big.insert(&k, &k).await?;
        }
        Ok(())
    })
    .await
    .unwrap();
    let read_all = |db: &Database| {
        let db = db.clone();
        async move {
            let tx = db.begin_read().await?;
            let big = tx.store::<u32, u32>("big").await?;
            for k in 0..300 {
                assert_eq!(big.get(&k).await?, Some(k));
            }
            Ok::<(), sop_btree::Error>(())
        }
    };
    read_all(&b).await.expect("b caches the store and its nodes' handles");

    reg.fail_sweeps_from.store(1, Ordering::SeqCst);
    a.remove_store("big").await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while reg.sweeps.load(Ordering::SeqCst) < 1 {
        assert!(std::time::Instant::now() < deadline, "the sweep never reached its first chunk");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let e = read_all(&b).await.expect_err("blobs of the removed store are gone");
    assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");

    reg.fail_sweeps_from.store(0, Ordering::SeqCst);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !reg.inner.list_handles().await.unwrap().is_empty() {
        assert!(std::time::Instant::now() < deadline, "the sweep was never finished");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    a.flush_gc().await.unwrap();
    assert_healthy(&a).await;
}

/// A store whose tree was detached but whose record was not yet removed
/// (a removal interrupted there, which recovery finishes in the
/// background): `check` does not report it as damage, and removing it
/// again finishes it instead of failing.
#[tokio::test]
async fn a_half_removed_store_is_neither_damage_nor_stuck() {
    let registry = Arc::new(MemRegistry::new());
    let blobs: Arc<dyn BlobStore> = Arc::new(ObjectBlobStore::memory());
    let mut config = Config::from_parts(registry.clone(), blobs, false);
    config.tx_timeout = Duration::from_secs(60); // no recovery during the test
    let db = Database::open(config).await.unwrap();
    let info = db.create_store("half", small(4)).await.unwrap();
    let root = registry.get_handles(&[info.root]).await.unwrap()[0].unwrap();
    let detach = sop_core::PublishRequest {
        tx_id: sop_core::TxId::new(),
        writes: vec![sop_core::HandleWrite::Remove { id: info.root, expected: root.version }],
        ..Default::default()
    };
    registry.publish(&detach).await.unwrap();
    assert!(db.list_stores().await.unwrap().iter().any(|s| s.name == "half"), "the record is still there");
    assert_healthy(&db).await;
    db.remove_store("half").await.expect("the removal is finished");
    assert!(db.list_stores().await.unwrap().is_empty());
    assert_healthy(&db).await;
}

/// Whether some blob in `blobs` is a leaf delta that names earlier links
/// (a chain).
async fn has_chain(blobs: &dyn BlobStore) -> bool {
    for id in blobs.list().await.unwrap() {
        let bytes = blobs.get(id).await.unwrap();
        if LeafDelta::is_delta(&bytes) && !LeafDelta::decode(&bytes).unwrap().chain.is_empty() {
            return true;
        }
    }
    false
}

/// A store of leaf delta chains and values in blobs of their own, over
/// blobs that are gone as soon as they are deleted (as in RocksDB), removed
/// with its sweep cut at each of its first deletions in turn (between the
/// values, the bases and links, and the nodes' own blobs of a chunk, half
/// of the cut deletion done, as on object storage), then
/// reopened while every third read fails (not "gone": the walk of a
/// sweep must stop, not drop an unreadable delta's base and links from
/// what it deletes). `check` between the cut and recovery reports no
/// problem. Once the faults stop and recovery runs, nothing of
/// the store is left — no handle, no blob (no base, link or value
/// orphaned by a blob deleted before it), no intent — and `check` is
/// clean.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_sweep_read_with_errors_orphans_no_part_of_a_chain() {
    let mut cut_sweeps = 0;
    for cut in 1..=6u64 {
        let registry: Arc<dyn Registry> = Arc::new(MemRegistry::new());
        let inner: Arc<dyn BlobStore> = Arc::new(common::Plain(ObjectBlobStore::memory()));
        let blobs = common::TestBlobs::over(inner.clone());
        let db = open(registry.clone(), blobs.clone()).await.unwrap();
        let opts = StoreOptions { slot_length: 32, value_in_node_threshold: 8, ..StoreOptions::default() };
        db.create_store("big", opts).await.unwrap();
        db.create_store("kept", small(4)).await.unwrap();
        db.run_write(|tx| async move {
            let big = tx.bytes_store("big").await?;
            for k in 0..200u32 {
                // Every other value is a blob of its own.
                big.insert(&k.to_be_bytes(), &vec![1; if k % 2 == 0 { 4 } else { 40 }]).await?;
            }
            tx.bytes_store("kept").await?.insert(b"k", b"v").await
        })
        .await
        .unwrap();
        // Small commits to a few leaves: deltas, then chains of links.
        for round in 0..24u32 {
            db.run_write(move |tx| async move {
                let big = tx.bytes_store("big").await?;
                let k = (round * 37) % 200;
                big.upsert(&k.to_be_bytes(), &vec![2; if round % 2 == 0 { 4 } else { 40 }]).await
            })
            .await
            .unwrap();
        }
        db.flush_gc().await.unwrap();
        assert!(has_chain(inner.as_ref()).await, "cut {cut}: no delta chain to remove");

        blobs.deletes.store(0, Ordering::SeqCst);
        blobs.fail_delete_at.store(cut, Ordering::SeqCst);
        db.remove_store("big").await.unwrap();
        let _ = db.flush_gc().await;
        // A cut sweep is work in flight, not damage: what is left of the
        // store (unreadable nodes among it) is neither orphaned nor lost.
        assert_healthy(&db).await;
        db.close().await.unwrap();
        // The cut deletion was reached, and left part of the store.
        let left = registry.list_handles().await.unwrap().len();
        cut_sweeps += usize::from(blobs.deletes.load(Ordering::SeqCst) >= cut && left > 1);
        blobs.fail_delete_at.store(0, Ordering::SeqCst);

        // Recovery while reads fail.
        blobs.fail_get_every.store(3, Ordering::SeqCst);
        if let Ok(db) = open(registry.clone(), blobs.clone()).await {
            let _ = db.flush_gc().await;
            let _ = db.close().await;
        }
        blobs.fail_get_every.store(0, Ordering::SeqCst);

        let db = open(registry.clone(), blobs.clone()).await.unwrap();
        db.flush_gc().await.unwrap();
        assert!(db.list_stores().await.unwrap().iter().all(|s| s.name != "big"), "cut {cut}");
        assert_healthy(&db).await;
        assert!(registry.list_intents(u64::MAX).await.unwrap().is_empty(), "cut {cut}: an intent is left");
        assert_eq!(registry.list_handles().await.unwrap().len(), 1, "cut {cut}: only kept's root");
        assert_eq!(inner.list().await.unwrap().len(), 1, "cut {cut}: only kept's root leaf");
    }
    assert!(cut_sweeps >= 3, "the cuts interrupted {cut_sweeps} sweeps");
}
