//! Regression (issue 11, item 7): dropping a commit future (an HTTP client
//! that disconnects during commit) left a pending intent and staged blobs
//! that a long-running process leaked until restart, and an embedded
//! database recovered only at open. A commit now runs to its end in a task
//! of its own whatever happens to the future that awaits it, and recovery
//! of abandoned intents runs periodically in exclusive mode too.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use sop_btree::{Config, Database, StoreOptions};
use sop_core::{BlobStore, Intent, PhysicalId, Registry};
use sop_registry::MemRegistry;
use sop_store::ObjectBlobStore;

async fn open(registry: Arc<dyn Registry>, blobs: Arc<dyn BlobStore>, timeout: Duration) -> Database {
    let mut config = Config::from_parts(registry, blobs, true);
    config.gc_grace = Duration::ZERO;
    config.tx_timeout = timeout;
    Database::open(config).await.unwrap()
}

#[tokio::test]
async fn a_dropped_commit_future_still_finishes_its_commit() {
    let registry: Arc<dyn Registry> = Arc::new(MemRegistry::new());
    // Batch puts take a while, so the commit can be caught while staging.
    let slow = common::TestBlobs::memory();
    slow.put_delay_ms.store(100, std::sync::atomic::Ordering::SeqCst);
    let blobs: Arc<dyn BlobStore> = slow;
    let db = open(registry.clone(), blobs, Duration::from_secs(60)).await;
    db.create_store("s", StoreOptions::default()).await.unwrap();
    let tx = db.begin_write().await.unwrap();
    tx.store::<u32, u32>("s").await.unwrap().insert(&1, &1).await.unwrap();
    let cancelled = tokio::time::timeout(Duration::from_millis(20), tx.commit()).await;
    assert!(cancelled.is_err(), "the commit should still have been staging");
    drop(tx);
    // Whatever the outcome, nothing may be left behind once it settles.
    tokio::time::sleep(Duration::from_millis(400)).await;
    db.flush_gc().await.unwrap();
    assert!(registry.list_intents(u64::MAX).await.unwrap().is_empty(), "an intent was left behind");
    common::assert_healthy(&db).await;
    let got = db.run_read(|tx| async move { tx.store::<u32, u32>("s").await?.get(&1).await }).await.unwrap();
    assert_eq!(got, Some(1), "the commit was started, so it finishes");
}

#[tokio::test]
async fn an_exclusive_database_recovers_abandoned_intents_while_open() {
    let registry: Arc<dyn Registry> = Arc::new(MemRegistry::new());
    let blobs: Arc<dyn BlobStore> = Arc::new(ObjectBlobStore::memory());
    let db = open(registry.clone(), blobs.clone(), Duration::from_millis(200)).await;
    // An intent and a staged blob, as a commit abandoned mid-way leaves them.
    let staged = PhysicalId::new();
    blobs.put(staged, Bytes::from_static(b"staged")).await.unwrap();
    let mut intent = Intent::pending(sop_core::TxId::new(), vec![staged]);
    intent.created_at_ms = intent.created_at_ms.saturating_sub(10_000);
    registry.put_intent(&intent).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !registry.list_intents(u64::MAX).await.unwrap().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "the abandoned intent was never recovered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(blobs.list().await.unwrap().is_empty(), "its staged blob is still there");
    drop(db);
}

/// A delete whose future is dropped while it repairs the tree (its item
/// already removed, a sibling still loading) left a view that no longer
/// matched the write log and the counts: a later commit published the
/// removal without its count (count above items, an underfull leaf). Such
/// a transaction can now only be rolled back.
#[tokio::test]
async fn a_delete_cancelled_while_repairing_the_tree_cannot_be_committed() {
    let registry: Arc<dyn Registry> = Arc::new(MemRegistry::new());
    let slow = common::TestBlobs::memory();
    let blobs: Arc<dyn BlobStore> = slow.clone();
    let db = open(registry.clone(), blobs.clone(), Duration::from_secs(60)).await;
    db.create_store("s", common::small(4)).await.unwrap();
    db.run_write(|tx| async move {
        let s = tx.store::<u32, u32>("s").await?;
        for k in 0..40 {
            s.insert(&k, &k).await?;
        }
        Ok(())
    })
    .await
    .unwrap();
    db.close().await.unwrap();
    // A cold database whose blob reads are slow: a repair's sibling load
    // is where the delete is caught.
    let db = open(registry.clone(), blobs, Duration::from_secs(60)).await;
    slow.get_delay_ms.store(300, std::sync::atomic::Ordering::SeqCst);
    let tx = db.begin_write().await.unwrap();
    let s = tx.store::<u32, u32>("s").await.unwrap();
    assert_eq!(s.get(&0).await.unwrap(), Some(0), "the first leaf's path, loaded");
    let mut cancelled = false;
    for k in 0..8 {
        match tokio::time::timeout(Duration::from_millis(100), s.remove(&k)).await {
            Ok(removed) => assert!(removed.unwrap()),
            Err(_) => {
                cancelled = true;
                break;
            }
        }
    }
    assert!(cancelled, "a delete should have waited for a sibling");
    let err = tx.commit().await.expect_err("a transaction with a write cut midway committed");
    assert_eq!(err.kind(), sop_core::ErrorKind::Closed, "{err}");
    slow.get_delay_ms.store(0, std::sync::atomic::Ordering::SeqCst);
    let report = db.check().await.unwrap();
    assert!(report.is_ok(), "{:#?}", report.problems);
    assert_eq!(report.items, 40);
    let count =
        db.run_read(|tx| async move { tx.store::<u32, u32>("s").await?.count().await }).await.unwrap();
    assert_eq!(count, 40);
}
