//! Recovery by another process racing a slow commit: recovery aborts the
//! commit's pending intent and deletes its staged blobs; the commit's
//! publish must then fail (and merge into a fresh attempt) instead of
//! publishing handles that point at deleted blobs.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{assert_healthy, seeded_store, small};
use sop_btree::{CommitStep, Config, Database};
use sop_core::{BlobStore, Registry};
use sop_registry::MemRegistry;
use sop_store::ObjectBlobStore;

fn shared_config(registry: Arc<dyn Registry>, blobs: Arc<dyn BlobStore>) -> Config {
    let mut config = Config::from_parts(registry, blobs, false);
    config.gc_grace = Duration::ZERO;
    config.tx_timeout = Duration::from_secs(60);
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_whose_intent_was_recovered_cannot_publish() {
    let registry: Arc<dyn Registry> = Arc::new(MemRegistry::new());
    let blobs: Arc<dyn BlobStore> = Arc::new(ObjectBlobStore::memory());
    let armed = Arc::new(AtomicBool::new(false));
    let mut config = shared_config(registry.clone(), blobs.clone());
    let (reg2, blobs2, armed2) = (registry.clone(), blobs.clone(), armed.clone());
    config.failpoint = Some(Arc::new(move |step| {
        if step == CommitStep::BlobsStaged && armed2.swap(false, Ordering::SeqCst) {
            // Another process opens the database and, judging this commit
            // abandoned (a zero timeout), recovers its intent right now.
            let (reg, blobs) = (reg2.clone(), blobs2.clone());
            // Intents are stamped in milliseconds: let this one age.
            std::thread::sleep(Duration::from_millis(5));
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                rt.block_on(async {
                    let mut config = shared_config(reg, blobs);
                    config.tx_timeout = Duration::ZERO;
                    Database::open(config).await.unwrap().recover().await.unwrap();
                });
            })
            .join()
            .unwrap();
        }
        Ok(())
    }));
    let db = Database::open(config).await.unwrap();
    seeded_store(&db, "s", 20).await;

    armed.store(true, Ordering::SeqCst);
    let tx = db.begin_write().await.unwrap();
    let s = tx.store::<u32, u32>("s").await.unwrap();
    for i in 20..40 {
        s.insert(&i, &i).await.unwrap();
    }
    let info = tx.commit().await.unwrap();
    assert!(!armed.load(Ordering::SeqCst), "the recovery ran during the commit");
    assert_eq!(info.merges, 1, "the first publish was refused, the merged attempt published");
    let n = db.run_read(|tx| async move { tx.store::<u32, u32>("s").await?.count().await }).await.unwrap();
    assert_eq!(n, 40);
    assert_healthy(&db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_databases_recover_crashed_peers_periodically() {
    let registry: Arc<dyn Registry> = Arc::new(MemRegistry::new());
    let blobs: Arc<dyn BlobStore> = Arc::new(ObjectBlobStore::memory());
    let mut config = shared_config(registry.clone(), blobs.clone());
    config.tx_timeout = Duration::from_secs(1);
    let db = Database::open(config).await.unwrap();
    // A crashed peer's leftovers: a pending intent and its staged blob.
    let staged = sop_core::PhysicalId::new();
    blobs.put(staged, bytes::Bytes::from_static(b"staged")).await.unwrap();
    let intent = sop_core::Intent::pending(sop_core::TxId::new(), vec![staged]);
    registry.put_intent(&intent).await.unwrap();
    let mut cleaned = false;
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if registry.get_intent(intent.tx_id).await.unwrap().is_none() {
            cleaned = true;
            break;
        }
    }
    assert!(cleaned, "the open database recovered the peer's intent");
    assert_eq!(blobs.get(staged).await.unwrap_err().kind(), sop_btree::ErrorKind::NotFound);
    assert_healthy(&db).await;
}

#[tokio::test]
async fn a_store_recreated_by_another_process_is_found_again() {
    let registry: Arc<dyn Registry> = Arc::new(MemRegistry::new());
    let blobs: Arc<dyn BlobStore> = Arc::new(ObjectBlobStore::memory());
    let one = Database::open(shared_config(registry.clone(), blobs.clone())).await.unwrap();
    let two = Database::open(shared_config(registry, blobs)).await.unwrap();
    one.create_store("s", small(4)).await.unwrap();
    one.run_write(|tx| async move { tx.store::<u32, u32>("s").await?.insert(&1, &1).await }).await.unwrap();
    // The other process removes the store and creates a new one by that name.
    two.remove_store("s").await.unwrap();
    two.create_store("s", small(8)).await.unwrap();
    two.run_write(|tx| async move { tx.store::<u32, u32>("s").await?.insert(&2, &2).await }).await.unwrap();
    // The first process's cached metadata is stale; it must recover from it.
    one.run_write(|tx| async move { tx.store::<u32, u32>("s").await?.insert(&3, &3).await }).await.unwrap();
    let keys = one
        .run_read(|tx| async move {
            let s = tx.store::<u32, u32>("s").await?;
            Ok(s.range(.., false, 10).await?.into_iter().map(|(k, _)| k).collect::<Vec<_>>())
        })
        .await
        .unwrap();
    assert_eq!(keys, vec![2, 3], "the new store, with the first process's write in it");
    assert_healthy(&one).await;
}
