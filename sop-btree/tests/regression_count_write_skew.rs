//! Regression (issue 11, item 3): `RocksRegistry` compared `count_checks`
//! under a shared lock while other publishes applied count deltas under
//! disjoint stripe locks, so "if count(A) == 0 insert into B" and its
//! mirror could both commit (write skew: 178 of 200 rounds). Count checks
//! and count deltas of one store now exclude each other. This test runs
//! the pair concurrently, in a loop, on the embedded default.
#![cfg(feature = "embedded")]

mod common;

use sop_btree::{Database, Transaction};

/// Begins a transaction that reads `empty`'s count and, seeing zero,
/// inserts into `into` (not yet committed).
async fn if_empty_insert(db: &Database, empty: &str, into: &str) -> Transaction {
    let tx = db.begin_write().await.unwrap();
    assert_eq!(tx.store::<u32, u32>(empty).await.unwrap().count().await.unwrap(), 0);
    tx.store::<u32, u32>(into).await.unwrap().insert(&1, &1).await.unwrap();
    tx
}

/// Both read before either commits; then both commit at once.
async fn round(db: &Database) -> (bool, bool) {
    let (ta, tb) = (if_empty_insert(db, "a", "b").await, if_empty_insert(db, "b", "a").await);
    // Each commit in a task of its own, so that both run at once.
    let (ja, jb) =
        (tokio::spawn(async move { ta.commit().await }), tokio::spawn(async move { tb.commit().await }));
    let (ra, rb) = (ja.await.unwrap(), jb.await.unwrap());
    for r in [&ra, &rb] {
        if let Err(e) = r {
            assert!(e.is_conflict(), "unexpected error: {e}");
        }
    }
    (ra.is_ok(), rb.is_ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirrored_count_checks_never_both_commit() {
    let dir = tempfile::tempdir().unwrap();
    let db = common::embedded_db(dir.path()).await;
    let mut both = 0;
    for _ in 0..200 {
        for s in ["a", "b"] {
            let _ = db.remove_store(s).await;
            db.create_store(s, Default::default()).await.unwrap();
        }
        let (a, b) = round(&db).await;
        let (ca, cb) = (db.store_info("a").await.unwrap().count, db.store_info("b").await.unwrap().count);
        assert_eq!((ca, cb), (u64::from(b), u64::from(a)), "counts disagree with the commits");
        if a && b {
            both += 1;
        }
    }
    assert_eq!(both, 0, "write skew: both transactions committed in {both} of 200 rounds");
}
