//! Review attacks on the guarantees of commit d7419f1 ("Issue 11
//! correctness"), on stale handles: a missing blob of a current handle, two
//! databases on one registry. Each test states the invariant it attacks, from
//! a user's side. Tests marked `BROKE` failed on d7419f1 and pass since the
//! fix named in their doc; tests marked `HOLDS` passed from the start. (Split
//! from one file by theme; the shared helpers are `common/attack.rs`.)

mod common;

use std::sync::Arc;
use std::time::Duration;

use sop_btree::{Config, Database, ErrorKind};
use sop_core::{BlobStore, Registry};
use sop_registry::MemRegistry;
use sop_store::ObjectBlobStore;

use common::attack::*;

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
        // A record holding node blobs is reclaimed once they are all gone.
        blobs.reclaim().await.unwrap();
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
