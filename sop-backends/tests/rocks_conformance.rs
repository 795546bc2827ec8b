//! The registry conformance suite against `RocksRegistry`, plus reopen.

use std::sync::Arc;

use sop_backends::{RocksConfig, RocksRegistry};
use sop_core::{ErrorKind, Registry};

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
    // Regression (issue 11, item 8): this was an `Io` error, which the
    // server told apart by searching its text for "lock".
    let dir = tempfile::tempdir().unwrap();
    let first = RocksRegistry::open(dir.path(), &RocksConfig::default()).unwrap();
    let err = RocksRegistry::open(dir.path(), &RocksConfig::default()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Locked, "{err}");
    drop(first);
    RocksRegistry::open(dir.path(), &RocksConfig::default()).unwrap();
}

#[tokio::test]
async fn an_undecodable_intent_is_reported_and_skipped() {
    // Regression (issue 11, item 8): one undecodable intent made
    // `list_intents` (and so opening a database) fail.
    use sop_core::{Intent, TxId};
    let dir = tempfile::tempdir().unwrap();
    let good = Intent::pending(TxId::new(), Vec::new());
    {
        let reg = RocksRegistry::open(dir.path(), &RocksConfig::default()).unwrap();
        reg.put_intent(&good).await.unwrap();
    }
    {
        let cfs = ["handles", "stores", "counts", "intents", "meta", "blobs"];
        let mut opts = rocksdb::Options::default();
        opts.create_if_missing(false);
        let raw = rocksdb::DB::open_cf(&opts, dir.path(), cfs).unwrap();
        let cf = raw.cf_handle("intents").unwrap();
        raw.put_cf(cf, [7u8; 16], b"not an intent").unwrap();
    }
    let reg = RocksRegistry::open(dir.path(), &RocksConfig::default()).unwrap();
    let listed = reg.list_intents(u64::MAX).await.unwrap();
    assert_eq!(listed.iter().map(|i| i.tx_id).collect::<Vec<_>>(), vec![good.tx_id]);
    let damaged = reg.damaged_intents().await.unwrap();
    assert_eq!(damaged.len(), 1, "{damaged:?}");
    assert!(damaged[0].contains("07070707"), "{damaged:?}");
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
