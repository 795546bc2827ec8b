//! The registry conformance suite against `RocksRegistry`, plus reopen.
#![cfg(feature = "rocksdb")]

use std::sync::Arc;

use sop_core::{ErrorKind, Registry};
use sop_registry::{RocksConfig, RocksRegistry};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conformance() {
    let dir = tempfile::tempdir().unwrap();
    let reg = RocksRegistry::open(dir.path(), &RocksConfig::default()).unwrap();
    sop_core::testkit::run_registry_suite(Arc::new(reg)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsynced_mode_passes_too() {
    let dir = tempfile::tempdir().unwrap();
    let config = RocksConfig { sync: false, lock_stripes: 3 };
    let reg = RocksRegistry::open(dir.path(), &config).unwrap();
    sop_core::testkit::run_registry_suite(Arc::new(reg)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopen_after_drop_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    sop_core::testkit::reopen_keeps_everything(|| {
        let path = path.clone();
        async move {
            Arc::new(RocksRegistry::open(&path, &RocksConfig::default()).unwrap()) as Arc<dyn Registry>
        }
    })
    .await;
}

#[tokio::test]
async fn second_open_of_a_locked_directory_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let _first = RocksRegistry::open(dir.path(), &RocksConfig::default()).unwrap();
    let err = RocksRegistry::open(dir.path(), &RocksConfig::default()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Io, "{err}");
}

#[tokio::test]
async fn blob_store_in_the_registry_conforms_and_survives_reopen() {
    use sop_core::{BlobStore, PhysicalId};
    let dir = tempfile::tempdir().unwrap();
    let id = PhysicalId::new();
    {
        let reg = RocksRegistry::open(dir.path(), &RocksConfig::default()).unwrap();
        let blobs = reg.blob_store();
        sop_core::testkit::run_blob_store_suite(&blobs).await;
        blobs.put(id, vec![9u8; 10_000].into()).await.unwrap();
    }
    let reg = RocksRegistry::open(dir.path(), &RocksConfig::default()).unwrap();
    assert_eq!(reg.blob_store().get(id).await.unwrap().len(), 10_000);
    assert_eq!(reg.blob_store().list().await.unwrap(), vec![id]);
}
