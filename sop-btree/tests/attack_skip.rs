//! Attacks on the read-only fast path: in exclusive mode a read-only
//! transaction that saw no publish start or finish since it began commits
//! without asking the registry (`crate::clock` in the engine). Each test
//! states what a user must still get.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use sop_btree::{Config, Database, ErrorKind, StoreOptions};
use sop_store::ObjectBlobStore;

use common::attack::{LostReply, SLOW};

async fn db_over(registry: Arc<LostReply>, exclusive: bool) -> Database {
    let mut config = Config::from_parts(registry, Arc::new(ObjectBlobStore::memory()), exclusive);
    config.gc_grace = Duration::ZERO;
    Database::open(config).await.unwrap()
}

async fn put(db: &Database, key: &'static [u8], value: &'static [u8]) -> sop_btree::Result<()> {
    db.run_write(move |tx| async move { tx.bytes_store("s").await?.upsert(key, value).await }).await
}

async fn read(tx: &sop_btree::Transaction, key: &[u8]) -> Option<Vec<u8>> {
    tx.bytes_store("s").await.unwrap().get(key).await.unwrap().map(|b| b.to_vec())
}

/// HOLDS. A read-only transaction that begins after the last commit
/// commits without a registry round trip, and still sees that commit.
#[tokio::test]
async fn a_quiet_read_only_commit_skips_the_registry() {
    let registry = Arc::new(LostReply::default());
    let db = db_over(registry.clone(), true).await;
    db.create_store("s", StoreOptions::default()).await.unwrap();
    put(&db, b"k", b"1").await.unwrap();
    let before = registry.publishes.load(Ordering::SeqCst);
    let tx = db.begin_read().await.unwrap();
    assert_eq!(read(&tx, b"k").await.as_deref(), Some(&b"1"[..]));
    tx.commit().await.unwrap();
    assert_eq!(registry.publishes.load(Ordering::SeqCst), before, "a quiet read-only commit validated");
}

/// HOLDS. A read-only transaction during which a commit landed validates,
/// and conflicts when something it read changed: the fast path never
/// commits a read that is no longer current.
#[tokio::test]
async fn a_commit_during_a_read_only_transaction_forces_validation() {
    let registry = Arc::new(LostReply::default());
    let db = db_over(registry.clone(), true).await;
    db.create_store("s", StoreOptions::default()).await.unwrap();
    put(&db, b"k", b"1").await.unwrap();
    let tx = db.begin_read().await.unwrap();
    assert_eq!(read(&tx, b"k").await.as_deref(), Some(&b"1"[..]));
    put(&db, b"k", b"2").await.unwrap();
    let before = registry.publishes.load(Ordering::SeqCst);
    let e = tx.commit().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
    assert_eq!(registry.publishes.load(Ordering::SeqCst), before + 1, "the commit did not validate");
    // A store change (not a node write) also moves the clock.
    let tx = db.begin_read().await.unwrap();
    assert_eq!(read(&tx, b"k").await.as_deref(), Some(&b"2"[..]));
    db.create_store("t", StoreOptions::default()).await.unwrap();
    let before = registry.publishes.load(Ordering::SeqCst);
    tx.commit().await.unwrap();
    assert_eq!(
        registry.publishes.load(Ordering::SeqCst),
        before + 1,
        "a store change did not force validation"
    );
}

/// BROKE without the bracket's forget (caught in development). A publish
/// that applied but whose reply was lost leaves the registry at the new
/// version while the commit reports `Indeterminate`. The next read-only
/// transaction must read the applied value: with the old handle still
/// cached and the clock quiet, it would read the old value and commit it
/// without validation.
#[tokio::test]
async fn a_read_after_a_lost_reply_sees_the_applied_value() {
    let registry = Arc::new(LostReply::default());
    let db = db_over(registry.clone(), true).await;
    db.create_store("s", StoreOptions::default()).await.unwrap();
    put(&db, b"k", b"1").await.unwrap();
    registry.armed.store(true, Ordering::SeqCst);
    let tx = db.begin_write().await.unwrap();
    tx.bytes_store("s").await.unwrap().upsert(b"k", b"2").await.unwrap();
    assert_eq!(tx.commit().await.unwrap_err().kind(), ErrorKind::Indeterminate);
    let tx = db.begin_read().await.unwrap();
    assert_eq!(read(&tx, b"k").await.as_deref(), Some(&b"2"[..]), "read a value the registry replaced");
    tx.commit().await.unwrap();
}

/// HOLDS. Shared mode: another process's commits do not move this
/// process's clock, so a read-only transaction there always validates; a
/// stale cached read conflicts instead of committing.
#[tokio::test]
async fn shared_mode_always_validates() {
    let registry = Arc::new(LostReply::default());
    let blobs = Arc::new(ObjectBlobStore::memory());
    let open = |exclusive| {
        let mut config = Config::from_parts(registry.clone(), blobs.clone(), exclusive);
        config.gc_grace = Duration::ZERO;
        config.tx_timeout = Duration::from_secs(1);
        Database::open(config)
    };
    let (one, two) = (open(false).await.unwrap(), open(false).await.unwrap());
    one.create_store("s", StoreOptions::default()).await.unwrap();
    put(&one, b"k", b"1").await.unwrap();
    let tx = one.begin_read().await.unwrap();
    assert_eq!(read(&tx, b"k").await.as_deref(), Some(&b"1"[..])); // cached in `one`
    tx.commit().await.unwrap();
    put(&two, b"k", b"2").await.unwrap();
    let tx = one.begin_read().await.unwrap();
    let seen = read(&tx, b"k").await;
    match tx.commit().await {
        Ok(_) => assert_eq!(seen.as_deref(), Some(&b"2"[..]), "committed a stale read in shared mode"),
        Err(e) => assert_eq!(e.kind(), ErrorKind::Conflict, "{e}"),
    }
}

/// HOLDS. A registry that holds a visible write not yet durable (its sync
/// failed, or has not run) makes a quiet read-only transaction validate:
/// the fast path never acknowledges a read that a crash could take back.
#[tokio::test]
async fn a_registry_with_writes_not_yet_durable_makes_readers_validate() {
    let registry = Arc::new(LostReply::default());
    let db = db_over(registry.clone(), true).await;
    db.create_store("s", StoreOptions::default()).await.unwrap();
    put(&db, b"k", b"1").await.unwrap();
    registry.undurable.store(true, Ordering::SeqCst);
    let before = registry.publishes.load(Ordering::SeqCst);
    let tx = db.begin_read().await.unwrap();
    assert_eq!(read(&tx, b"k").await.as_deref(), Some(&b"1"[..]));
    tx.commit().await.unwrap();
    assert_eq!(
        registry.publishes.load(Ordering::SeqCst),
        before + 1,
        "skipped validation over undurable writes"
    );
    registry.undurable.store(false, Ordering::SeqCst);
    let tx = db.begin_read().await.unwrap();
    assert_eq!(read(&tx, b"k").await.as_deref(), Some(&b"1"[..]));
    tx.commit().await.unwrap();
    assert_eq!(registry.publishes.load(Ordering::SeqCst), before + 1, "a durable quiet read validated");
}

/// HOLDS. Dropping `remove_store`'s future while a registry call it made
/// is still under way neither leaves the store half-removed nor leaves
/// a reader the removed store's contents: the removal runs to completion.
#[tokio::test]
async fn a_dropped_store_removal_finishes_and_readers_see_it_gone() {
    let registry = Arc::new(LostReply::default());
    let db = db_over(registry.clone(), true).await;
    db.create_store("s", StoreOptions::default()).await.unwrap();
    put(&db, b"k", b"1").await.unwrap();
    registry.slow.store(true, Ordering::SeqCst);
    let dropped = tokio::time::timeout(SLOW / 4, db.remove_store("s")).await;
    assert!(dropped.is_err(), "the removal should still be under way");
    let tx = db.begin_read().await.unwrap();
    let _ = tx.bytes_store("s").await.map(|_| ()); // may run before or after the removal lands
    tx.rollback().await;
    tokio::time::sleep(SLOW * 5).await;
    registry.slow.store(false, Ordering::SeqCst);
    assert_eq!(db.store_info("s").await.unwrap_err().kind(), ErrorKind::NotFound, "half-removed store");
    let got = db.run_read(|tx| async move { tx.bytes_store("s").await?.get(b"k").await }).await;
    assert_eq!(got.unwrap_err().kind(), ErrorKind::NotFound, "read a removed store");
    common::assert_healthy(&db).await;
}
