//! Regression (issue 11, items 2 and 8): a node handle cached by one
//! database, older than the registry's, whose blob another database had
//! since collected, failed every transaction through that node at read
//! time with a retryable conflict, for ever (the cache entry was dropped
//! only at publish, which such a transaction never reached). A read that
//! finds its blob missing now refreshes the handle from the registry and
//! goes on; a handle that is current and still has no blob is reported as
//! `Corruption`, never as a conflict or "not found".

mod common;

use std::sync::Arc;
use std::time::Duration;

use sop_btree::{Config, Database, ErrorKind, StoreOptions};
use sop_core::{BlobStore, Registry, RegistryExt};
use sop_registry::MemRegistry;
use sop_store::ObjectBlobStore;

async fn pair() -> (Database, Database, Arc<dyn Registry>, Arc<dyn BlobStore>) {
    let registry: Arc<dyn Registry> = Arc::new(MemRegistry::new());
    let blobs: Arc<dyn BlobStore> = Arc::new(ObjectBlobStore::memory());
    let open = || {
        let mut config = Config::from_parts(registry.clone(), blobs.clone(), false);
        config.gc_grace = Duration::ZERO;
        // Shared backends keep obsolete blobs for `tx_timeout`: keep it short.
        config.tx_timeout = Duration::from_millis(200);
        // A node cache too small to keep the old node: reads go to the blobs.
        config.cache.memory_bytes = 1;
        Database::open(config)
    };
    let (a, b) = (open().await.unwrap(), open().await.unwrap());
    (a, b, registry, blobs)
}

#[tokio::test]
async fn a_stale_cached_handle_costs_no_more_than_a_refresh() {
    let (a, b, _, _) = pair().await;
    for name in ["s", "other"] {
        a.create_store(name, StoreOptions::default()).await.unwrap();
        a.run_write(move |tx| async move { tx.store::<u32, u32>(name).await?.insert(&1, &1).await })
            .await
            .unwrap();
    }
    // `b` caches the root's handle; reading another store evicts the node.
    let read = |name: &'static str| {
        b.run_read(move |tx| async move { tx.store::<u32, u32>(name).await?.get(&1).await })
    };
    assert_eq!(read("s").await.unwrap(), Some(1));
    assert_eq!(read("other").await.unwrap(), Some(1));
    for v in 2..5 {
        a.run_write(move |tx| async move { tx.store::<u32, u32>("s").await?.upsert(&1, &v).await })
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(400)).await; // past `tx_timeout`
    a.flush_gc().await.unwrap();
    let before = b.stats();
    let got = b.run_read(|tx| async move { tx.store::<u32, u32>("s").await?.get(&1).await }).await;
    assert_eq!(got.unwrap(), Some(4));
    assert!(b.stats().retries - before.retries <= 1, "a stale handle cost {:?}", b.stats());
    // And writes through `b` work too.
    b.run_write(|tx| async move { tx.store::<u32, u32>("s").await?.upsert(&1, &5).await }).await.unwrap();
}

#[tokio::test]
async fn a_current_handle_whose_blob_is_gone_is_corruption() {
    let (a, _b, registry, blobs) = pair().await;
    let info = a.create_store("s", StoreOptions::default()).await.unwrap();
    a.run_write(|tx| async move { tx.store::<u32, u32>("s").await?.insert(&1, &1).await }).await.unwrap();
    let root = registry.get_handle(info.root).await.unwrap().unwrap();
    blobs.delete(root.physical_id).await.unwrap();
    blobs.reclaim().await.unwrap(); // the root leaf was its record's one part
    // A fresh database: nothing cached, so the blob must come from the store.
    let mut config = Config::from_parts(registry.clone(), blobs.clone(), false);
    config.gc_grace = Duration::ZERO;
    let c = Database::open(config).await.unwrap();
    let err =
        c.run_read(|tx| async move { tx.store::<u32, u32>("s").await?.get(&1).await }).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corruption, "{err}");
}
