//! Regression (issue 11, item 6): `run_read`/`run_write` returned the
//! application's own error without validating what it had read, so a
//! closure checking an invariant (`a + b == 100`) could fail on a view no
//! serial run produces. Before returning a closure's error, the helpers
//! now validate its reads, and retry as for a conflict when they moved.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use common::memory_db;
use sop_btree::{Database, Error, StoreOptions};

/// The invariant holds over keys 0 and `LAST`, which live in different
/// leaves (slot length 4), so a read of one does not load the other.
const LAST: u32 = 39;

async fn transfer(db: &Database, amount: i64) {
    db.run_write(move |tx| async move {
        let s = tx.store::<u32, i64>("acc").await?;
        let (a, b) = (s.get(&0).await?.unwrap_or(0), s.get(&LAST).await?.unwrap_or(0));
        s.update(&0, &(a - amount)).await?;
        s.update(&LAST, &(b + amount)).await
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_closure_error_seen_on_a_torn_view_is_retried() {
    for writable in [false, true] {
        let db = memory_db().await;
        db.create_store("acc", StoreOptions { slot_length: 4, ..StoreOptions::default() }).await.unwrap();
        db.run_write(|tx| async move {
            let s = tx.store::<u32, i64>("acc").await?;
            for k in 0..40u32 {
                s.insert(&k, &if k == 0 || k == LAST { 50 } else { 0 }).await?;
            }
            Ok(())
        })
        .await
        .unwrap();
        let calls = Arc::new(AtomicU32::new(0));
        let f = |tx: sop_btree::Transaction| {
            let (db, calls) = (db.clone(), calls.clone());
            async move {
                let s = tx.store::<u32, i64>("acc").await?;
                let a = s.get(&0).await?.unwrap_or(0);
                if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                    transfer(&db, 10).await; // between the two reads
                }
                let b = s.get(&LAST).await?.unwrap_or(0);
                if a + b != 100 {
                    return Err(Error::invalid("invariant", format!("broken: {a} + {b}")));
                }
                Ok(a + b)
            }
        };
        let got = if writable { db.run_write(f).await } else { db.run_read(f).await };
        assert_eq!(got.unwrap(), 100, "writable={writable}");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }
}

#[tokio::test]
async fn a_closure_error_on_a_consistent_view_is_returned_at_once() {
    let db = memory_db().await;
    db.create_store("acc", StoreOptions::default()).await.unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    let c = calls.clone();
    let err = db
        .run_write(move |tx| {
            let c = c.clone();
            async move {
                c.fetch_add(1, Ordering::SeqCst);
                tx.store::<u32, i64>("acc").await?.get(&0).await?;
                Err::<(), _>(Error::invalid("test", "no"))
            }
        })
        .await
        .unwrap_err();
    assert_eq!(err.kind(), sop_btree::ErrorKind::InvalidInput);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}
