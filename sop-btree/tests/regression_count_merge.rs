//! Regression (issue 11, item 4): a blind upsert logs no read, but its
//! count delta depends on whether the key existed, and `count()` returns
//! the committed count plus the transaction's own delta. Swarm merge
//! re-checked only the committed count, so a transaction could commit
//! having observed a count that no serial order produces. A merge now
//! fails when the own delta a logged `count()` included has changed.

mod common;

use common::memory_db;
use sop_btree::{Database, StoreOptions, Transaction};

/// A store holding key 1, and T1: it upserts 2 (absent: +1) and sees a
/// count of 2, uncommitted.
async fn t1_counted_its_upsert() -> (Database, Transaction) {
    let db = memory_db().await;
    db.create_store("s", StoreOptions::default()).await.unwrap();
    db.run_write(|tx| async move { tx.store::<u32, u32>("s").await?.insert(&1, &1).await }).await.unwrap();
    let t1 = db.begin_write().await.unwrap();
    let s1 = t1.store::<u32, u32>("s").await.unwrap();
    s1.upsert(&2, &10).await.unwrap();
    assert_eq!(s1.count().await.unwrap(), 2);
    (db, t1)
}

#[tokio::test]
async fn a_count_that_included_a_changed_delta_is_a_conflict() {
    let (db, t1) = t1_counted_its_upsert().await;
    // T3 removes 1 and commits; then T2 (begun after T3 committed) inserts 2.
    db.run_write(|tx| async move { tx.store::<u32, u32>("s").await?.remove(&1).await.map(|_| ()) })
        .await
        .unwrap();
    db.run_write(|tx| async move { tx.store::<u32, u32>("s").await?.insert(&2, &20).await }).await.unwrap();
    // The committed count is 1 again, as T1 saw it, but T1's upsert is now
    // an update: no serial order lets T1 see 2.
    let err = t1.commit().await.unwrap_err();
    assert!(err.is_conflict(), "{err}");
    let tx = db.begin_read().await.unwrap();
    assert_eq!(tx.store::<u32, u32>("s").await.unwrap().get(&2).await.unwrap(), Some(20));
}

#[tokio::test]
async fn a_count_whose_basis_held_still_merges() {
    let (db, t1) = t1_counted_its_upsert().await;
    // A concurrent update of key 1 moves the leaf, but not the count basis.
    db.run_write(|tx| async move { tx.store::<u32, u32>("s").await?.update(&1, &5).await }).await.unwrap();
    let info = t1.commit().await.unwrap();
    assert_eq!(info.merges, 1);
    assert_eq!(db.store_info("s").await.unwrap().count, 2);
}
